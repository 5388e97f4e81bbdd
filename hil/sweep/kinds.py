"""What a cell runs, by campaign kind: check its config, run it into a run file, say how far it got.

Each kind goes through the platform's public entry points, so a cell's run file is the file the
same run started from ``hil train`` or ``hil characterize`` would write (``hil show`` and
``--resume`` work on it).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from hil import procedure_registry
from hil.config import BoardConfig, ConfigError, validation_problems
from hil.procedures import ProcedureSpec
from hil.run_layout import completed_updates, prepared
from hil.storage import RunData, RunFile
from hil.training.config import TrainConfig, load_train_config
from hil.training.run import PROCEDURE as TRAIN_PROCEDURE
from hil.training.run import check_run_data, run_training
from protocols.recording import journaled_steps
from protocols.runner import run_sequence
from protocols.sequences import PulseSequence, SequenceFileError, parse_sequence

SEQUENCE_PROCEDURE = "sequence"


@dataclass
class CellOutcome:
    """What a finished cell reports into the campaign's table."""

    final_accuracy: float = math.nan
    best_accuracy: float = math.nan
    pulses: int = 0


def _board(config: dict[str, Any]) -> BoardConfig:
    try:
        return BoardConfig.model_validate(config.get("board", {}))
    except ValidationError as exc:
        raise ConfigError(f"board has errors:\n{validation_problems(exc)}") from None


def _procedure(config: dict[str, Any]) -> tuple[ProcedureSpec, BaseModel]:
    name = config.get("procedure")
    spec = procedure_registry.REGISTRY.get(str(name))
    if spec is None:
        raise ConfigError(f"base.procedure: {name!r} is not one of {sorted(procedure_registry.REGISTRY)}")
    try:
        return spec, spec.options.model_validate(config.get("options", {}))
    except ValidationError as exc:
        raise ConfigError(f"options of {spec.name} have errors:\n{validation_problems(exc)}") from None


def _sequence(config: dict[str, Any]) -> PulseSequence:
    try:
        return parse_sequence(config.get("sequence"), "base.sequence")
    except SequenceFileError as exc:
        raise ConfigError(str(exc)) from None


def _check_train_data(config: TrainConfig, checked: set[str]) -> None:
    """The cell's data against its network, once per distinct data and network in ``checked`` (a
    campaign of hundreds of cells shares a few; a cell would find it only after its calibration and
    programming)."""
    key = json.dumps([config.dataset_name, config.dataset_options, config.network, config.model], sort_keys=True,
                     default=str)  # fmt: skip
    if key in checked:
        return
    try:
        check_run_data(config)
    except ValueError as exc:  # PlanError, DatasetError: one line naming the field
        raise ConfigError(str(exc)) from None
    checked.add(key)


def validate_run_config(kind: str, config: dict[str, Any], checked: set[str] | None = None) -> None:
    """Raise :class:`ConfigError` naming the field if ``config`` is not a valid run of ``kind``;
    ``checked``: the training data already found to fit in this validation (filled in)."""
    if kind == "train":
        _check_train_data(load_train_config("", config), set() if checked is None else checked)
        return
    allowed = {"board", "procedure", "options"} if kind == "characterize" else {"board", "sequence"}
    if unknown := set(config) - allowed:
        raise ConfigError(f"base.{sorted(unknown)[0]}: not a field of a {kind} cell")
    _board(config)
    if kind == "characterize":
        _procedure(config)
    else:
        _sequence(config)


def procedure_name(kind: str, config: dict[str, Any]) -> str:
    return {"train": TRAIN_PROCEDURE, "sequence": SEQUENCE_PROCEDURE}.get(kind) or str(config["procedure"])


def stored_config(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """The config as the run file stores it (as ``hil train``/``hil characterize`` store theirs)."""
    if kind == "train":
        return load_train_config("", config).model_dump(mode="json")
    board = _board(config).model_dump(mode="json")
    if kind == "characterize":
        _, options = _procedure(config)
        return {"options": options.model_dump(mode="json"), "board": board}
    return {"sequence": _sequence(config).model_dump(mode="json"), "board": board}


def steps_done(kind: str, previous: RunData) -> int:
    """Completed steps an interrupted run journaled (0: nothing to resume from)."""
    if kind == "train":
        return completed_updates(previous) if prepared(previous) else 0
    if kind == "characterize":
        return journaled_steps(previous.datasets)
    return 0  # a pulse sequence keeps no journal: it starts over


def execute(kind: str, config: dict[str, Any], run: RunFile, previous: RunData | None) -> CellOutcome:
    """Run the cell into ``run``; with ``previous`` (a journaled interrupted run), continue it."""
    if kind == "train":
        result = run_training(TrainConfig.model_validate(config), run, previous)
        return CellOutcome(result.final_test_accuracy, result.best_test_accuracy, result.pulses)
    board_config = _board(config)
    with board_config.open() as board:  # idled on every way out
        if kind == "characterize":
            spec, options = _procedure(config)
            spec.run(board, run, **dict(options))
        else:
            run_sequence(board, _sequence(config), run)
        return CellOutcome(pulses=board.pulses_applied)
