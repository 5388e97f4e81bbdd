"""Where a killed characterization run stands: its procedure, options, board and completed steps.

The run file says all of it (docs/data-format.md); ``hil characterize --resume`` only reports.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from drivers.resources import is_in_process
from hil import procedure_registry
from hil import run_layout as layout
from hil.config import BoardConfig
from hil.procedures import ProcedureSpec
from hil.storage import RunData, RunFileError, check_not_live, read_run
from protocols.recording import journaled_steps


@dataclass(frozen=True)
class ResumePoint:
    spec: ProcedureSpec
    options: BaseModel
    board: BoardConfig
    resource: str
    """the board to continue on: the one given, or the one the run used"""
    completed_steps: int
    """journaled steps; 0 for a short procedure (no journal), which starts over in its file"""
    previous: RunData

    @property
    def fresh_board(self) -> bool:
        """An in-process emulator died with the process that began the run: it answers as a new array."""
        return is_in_process(self.resource)


def resume_point(path: str, resource: str | None = None) -> ResumePoint:
    previous = read_run(path)
    spec = procedure_registry.REGISTRY.get(previous.procedure)
    if spec is None:
        raise RunFileError(f"{path} is a {previous.procedure!r} run, not a characterization run")
    check_not_live(path, previous)
    if layout.status(previous) == layout.COMPLETED:
        raise RunFileError(f"{path}: the {spec.name} run is already completed; there is nothing to resume")
    if "options" not in previous.config:
        raise RunFileError(f"{path} does not record the options of its {spec.name} run; it cannot be resumed")
    options = spec.options.model_validate(previous.config["options"])
    board = BoardConfig.model_validate(previous.config.get("board", {}))
    resource = resource or str(previous.root.get(layout.RESOURCE) or board.resource)
    return ResumePoint(spec, options, board, resource, journaled_steps(previous.datasets), previous)
