"""A new training run from its config to its recorded end: the steps ``hil train`` and ``hil deploy`` share.

A run is checked whole against its boards before its file exists; a run refused before its first
pulse leaves no file behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hil.config import ConfigError
from hil.run_layout import pulses_recorded
from hil.storage import RunData, RunFile, RunFileError, read_run
from hil.training.config import TrainConfig
from hil.training.loop import TrainResult
from hil.training.run import PROCEDURE, preflight, run_training


def describe_resources(config: TrainConfig) -> str:
    """Where a run computes: its boards' resources, or exact arithmetic."""
    if config.update_rule == "exact":
        return "exact arithmetic"
    return ", ".join(b.resource for b in config.board_configs.values())


def create_run(config: TrainConfig, out: Path, overwrite: bool = False, parallel: bool = False) -> RunFile:
    """The run file of a new run, created only once the whole run has been checked against its boards
    (a parallel-mode config only where ``parallel``: :func:`execute` would train it as one copy)."""
    if config.parallel is not None and not parallel:
        raise ConfigError("parallel: a parallel-mode config runs through `hil parallel --config FILE`")
    if out.exists() and not overwrite:
        raise RunFileError(f"{out} exists; choose another name or pass --overwrite (nothing was measured)")
    identity = preflight(config)
    return RunFile(out, procedure=PROCEDURE, config=config.model_dump(mode="json"),
                   resource=describe_resources(config), board_identity=identity, overwrite=overwrite)  # fmt: skip


def execute(
    config: TrainConfig, run: RunFile, previous: RunData | None = None, allow_other_board: bool = False
) -> TrainResult:
    """Run (or resume) the training into ``run`` and close it; a new run refused before its first
    pulse (bad input found once the boards are open) leaves no file."""
    with no_file_if_refused(run, new=previous is None):
        return run_training(config, run, previous, allow_other_board=allow_other_board)


@contextmanager
def no_file_if_refused(run: RunFile, new: bool = True) -> Iterator[None]:
    """Work on ``run`` inside the block and close it; a new run refused before its first pulse (bad
    input found once the boards are open) leaves no file."""
    try:
        with run:
            yield
    except ValueError as exc:  # bad input (InvalidRequest, ConfigError, DatasetError, ...)
        if new and not pulses_recorded(read_run(run.path)):
            run.path.unlink(missing_ok=True)
        raise exc from None
