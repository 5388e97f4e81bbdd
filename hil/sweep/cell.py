"""One cell on a worker: skip it if done, resume or start its run file, take a board, record the outcome.

Nothing here knows Dask: :func:`run_cell` is an ordinary function the runner ships to workers (and
tests call directly). It returns the cell's row of the results table, never raises for a failing
run (the error is in the row and in the run file's status), and stops at the next step when
``should_stop`` says so, leaving the run file ``interrupted`` and the board idle.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from drivers import BoardError
from drivers.errors import InvalidRequest
from drivers.lock import BoardBusy
from hil import run_layout as layout
from hil.config import BoardConfig
from hil.storage import RunData, RunFile, RunFileError, read_run
from hil.sweep.campaign import Cell
from hil.sweep.kinds import CellOutcome, execute, procedure_name, steps_done, stored_config
from protocols.recording import Attr

CELLS_FOLDER = "cells"
SWEEP_ATTRS = "sweep"
STOP_POLL = 1.0
"""Seconds between two looks at the stop flag (it may cost a round trip to the scheduler)."""
POOL_RETRY = 0.5
"""Seconds between two passes over a pool whose boards are all taken."""


class CampaignStopped(KeyboardInterrupt):
    """The campaign was stopped (Ctrl-C): the run ends as ``interrupted``, its board idled."""


def run_path(folder: str | Path, key: str) -> Path:
    return Path(folder) / CELLS_FOLDER / f"{key}.h5"


class _CellRunFile(RunFile):
    """A run file that stops the run at its next step once the campaign is stopped."""

    should_stop: Callable[[], bool] | None = None
    _next_look = 0.0

    def progress(self, advance: int = 0, total: int | None = None, **status: Attr) -> None:
        if self.should_stop is not None and time.monotonic() >= self._next_look:
            self._next_look = time.monotonic() + STOP_POLL
            if self.should_stop():
                raise CampaignStopped("the campaign was stopped")
        super().progress(advance, total, **status)


def in_process(resource: str) -> bool:
    """An emulator in the worker's own process: it dies with the worker, so its run cannot be continued."""
    return "://" in resource and not resource.startswith("serial://")


def previous_run(path: Path) -> RunData | None:
    """The cell's run file as it stands, or None if there is none or it cannot be read (a run killed
    before its first flush): then the cell starts over."""
    if not path.exists():
        return None
    try:
        return read_run(path)
    except RunFileError:
        return None


def completed_row(cell: Cell, previous: RunData) -> dict[str, Any] | None:
    """The row of a cell whose run file says it completed (None if it did not)."""
    if layout.status(previous) != layout.COMPLETED:
        return None
    # A run completed outside the campaign (e.g. ``hil train --resume`` on the cell's file) has no
    # outcome recorded by the campaign; it counts as done all the same, never run over.
    stored = previous.attrs.get(SWEEP_ATTRS, {})
    starts = Path(previous.path).with_suffix(".attempts")  # the cell's starts, beside its run file
    attempts = len(starts.read_text(encoding="utf-8").splitlines()) if starts.is_file() else 0
    return base_row(cell) | {
        "attempts": attempts,
        "status": "completed", "final_accuracy": stored.get("final_accuracy", math.nan),
        "best_accuracy": stored.get("best_accuracy", math.nan), "pulses": stored.get("pulses", 0),
        "seconds": stored.get("seconds", math.nan), "board": previous.root.get(layout.RESOURCE, ""),
        "path": str(previous.path), "resumed": layout.resumed_sessions(previous) > 0,
    }  # fmt: skip


def base_row(cell: Cell) -> dict[str, Any]:
    return {"key": cell.key, **cell.values, "seed": cell.seed, "status": "", "error": "",
            "final_accuracy": math.nan, "best_accuracy": math.nan, "pulses": 0, "seconds": math.nan,
            "board": "", "attempts": 0, "resumed": False, "board_failure": "", "path": ""}  # fmt: skip


def _log_attempt(folder: Path, key: str) -> int:
    """Note that this cell starts here; how many times it has started, this one included."""
    log = folder / CELLS_FOLDER / f"{key}.attempts"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"{time.time():.3f} {socket.gethostname()} {os.getpid()}\n")
    return len(log.read_text(encoding="utf-8").splitlines())


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".strip()


def is_board_failure(error: BaseException) -> bool:
    """A fault of the board or its link (not of the request, and not a board someone else holds)."""
    return isinstance(error, BoardError | OSError) and not isinstance(error, BoardBusy | InvalidRequest)


def run_cell(
    cell: Cell,
    folder: str | Path,
    *,
    pool: Sequence[str] = (),
    should_stop: Callable[[], bool] | None = None,
    resume: str = "auto",
    pool_wait: float = 3600.0,
) -> dict[str, Any] | None:
    """Run ``cell`` into ``folder/cells/<key>.h5``; its results-table row (None: stopped before it began)."""
    folder = Path(folder)
    path = run_path(folder, cell.key)
    previous = previous_run(path)
    if previous is not None and (done := completed_row(cell, previous)) is not None:
        return done
    if should_stop is not None and should_stop():
        return None
    attempts = _log_attempt(folder, cell.key)
    deadline = time.monotonic() + pool_wait
    while True:
        for resource in _candidates(cell, pool):
            if cell.resource is None and not _free(cell, resource):
                continue
            row = _attempt(cell, path, resource, should_stop, resume)
            if row is not None:
                return row | {"attempts": attempts}
        if should_stop is not None and should_stop():
            return None
        if time.monotonic() > deadline:
            error = f"NoBoardFree: every board of the pool stayed taken for {pool_wait:g} s"
            return base_row(cell) | {"status": "failed", "attempts": attempts, "error": error}
        time.sleep(POOL_RETRY)


def _candidates(cell: Cell, pool: Sequence[str]) -> list[str]:
    """The cell's own emulator, or the pool starting at a place set by the key (so cells spread out)."""
    if cell.resource is not None:
        return [cell.resource]
    start = int(cell.key, 16) % len(pool) if pool else 0
    return [*pool[start:], *pool[:start]]


def _free(cell: Cell, resource: str) -> bool:
    """Whether a pool board can be taken now (through its lock; another process may take it first)."""
    try:
        BoardConfig.model_validate({**cell.board, "resource": resource}).open().close()
    except BoardBusy:
        return False
    except Exception:  # a board that cannot even be opened fails in the attempt, which names why
        return True
    return True


def _attempt(
    cell: Cell, path: Path, resource: str, should_stop: Callable[[], bool] | None, resume: str
) -> dict[str, Any] | None:
    """One try on ``resource``; None when the board turned out taken (try another)."""
    config = cell.run_config(resource)
    previous = previous_run(path)
    can_continue = resume == "journal" or (resume == "auto" and not in_process(resource))
    if previous is not None and not (can_continue and steps_done(cell.kind, previous) > 0):
        previous = None
    started = time.perf_counter()
    row = base_row(cell) | {"board": resource, "path": str(path)}
    try:
        if previous is not None:
            run = _CellRunFile.reopen(path, show_progress=False)
            assert isinstance(run, _CellRunFile)
        else:
            procedure, stored = procedure_name(cell.kind, config), stored_config(cell.kind, config)
            run = _CellRunFile(path, procedure=procedure, config=stored, resource=resource, overwrite=True,
                               show_progress=False)  # fmt: skip
        run.should_stop = should_stop
        with run:
            outcome: CellOutcome = execute(cell.kind, config, run, previous)
            seconds = time.perf_counter() - started
            run.set_attrs(SWEEP_ATTRS, key=cell.key, final_accuracy=outcome.final_accuracy, seconds=seconds,
                          best_accuracy=outcome.best_accuracy, pulses=outcome.pulses)  # fmt: skip
    except CampaignStopped:
        return row | {"status": "interrupted", "seconds": time.perf_counter() - started}
    except BoardBusy:
        return None
    except Exception as exc:
        failure = _one_line(exc) if cell.resource is None and is_board_failure(exc) else ""
        return row | {"status": "failed", "error": _one_line(exc), "board_failure": failure,
                      "seconds": time.perf_counter() - started}  # fmt: skip
    return row | {"status": "completed", "final_accuracy": outcome.final_accuracy, "pulses": outcome.pulses,
                  "best_accuracy": outcome.best_accuracy, "seconds": seconds,
                  "resumed": previous is not None}  # fmt: skip
