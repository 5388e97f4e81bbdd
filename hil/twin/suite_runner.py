"""Running the twin suite on one board: one run file per procedure in a folder, resumable.

The board is opened once for the whole suite, so an in-process emulator keeps its state from
one step to the next (forming, then the yield map of the formed array, ...). Run again on the
same folder, completed files are kept, a step killed part-way continues from its journal (the
long ones) or starts over (the short ones), and the steps not begun run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from drivers import Board, InvalidRequest
from hil import run_layout as layout
from hil.config import BoardConfig, ConfigError, validation_problems
from hil.figure_report import report_lines
from hil.storage import RunData, RunFile, RunFileError, read_run
from protocols.characterization.suite import TWIN_SUITE, SuiteStep, planned_pulses, planned_reads, step_options
from protocols.recording import MemoryRecorder

Overrides = Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True)
class PlannedStep:
    step: SuiteStep
    options: BaseModel
    pulses: int
    reads: int
    path: Path | None = None
    state: str = "to run"
    """to run, resume, or done (a completed file is kept)"""


def plan(shape: tuple[int, int], overrides: Overrides | None = None, out_dir: Path | None = None) -> list[PlannedStep]:
    """Every step with its options, its pulse and read budget, and (with a folder) what is left to do."""
    overrides = overrides or {}
    unknown = set(overrides) - {s.procedure for s in TWIN_SUITE}
    if unknown:
        names = ", ".join(s.procedure for s in TWIN_SUITE)
        raise ValueError(f"no suite step named {sorted(unknown)[0]!r}; steps: {names}")
    planned = []
    for step in TWIN_SUITE:
        try:
            options = step_options(step, overrides.get(step.procedure))
        except ValidationError as exc:  # a --set value: named as the step and field the user typed
            problems = "; ".join(f"{step.procedure}.{line.strip()}" for line in validation_problems(exc).splitlines())
            raise ConfigError(f"bad --set: {problems}") from None
        path = out_dir / f"{step.procedure}.h5" if out_dir is not None else None
        state = "to run"
        if path is not None and path.exists():
            previous = read_run(path)
            if previous.procedure != step.procedure:
                raise RunFileError(f"{path} is a {previous.procedure!r} run, not {step.procedure!r}")
            state = "done" if layout.status(previous) == layout.COMPLETED else "resume"
        planned.append(PlannedStep(step, options, planned_pulses(step, options, shape),
                                   planned_reads(step, options), path, state))  # fmt: skip
    return planned


def check_plan(board: Board, steps: list[PlannedStep]) -> None:
    """Every step still to run checked against the board's limits before the suite's first pulse:
    a step the board would refuse is refused with the suite, not after the steps before it spent
    their pulses (the step's name leads the message)."""
    for s in steps:
        if s.state == "done":
            continue
        try:
            s.step.check(board, s.options)
        except InvalidRequest as exc:
            raise InvalidRequest(f"{s.step.procedure}: {exc}") from None


def budget_table(steps: list[PlannedStep], shape: tuple[int, int]) -> str:
    """The plan as the lines shown before asking for confirmation."""
    cells = shape[0] * shape[1]
    lines = [f"{'step':<18}{'pulses (at most)':>18}{'per cell':>10}{'reads':>8}  state"]
    for s in steps:
        lines.append(f"{s.step.procedure:<18}{s.pulses:>18,}{s.pulses / cells:>10.1f}{s.reads:>8}  {s.state}")
    todo = [s for s in steps if s.state != "done"]
    total = sum(s.pulses for s in todo)
    lines.append(f"{'to spend':<18}{total:>18,}{total / cells:>10.1f}{sum(s.reads for s in todo):>8}")
    return "\n".join(lines)


def run_step(board: Board, planned: PlannedStep, config: BoardConfig, show_progress: bool = True) -> RunData:
    """One step into its file (new, resumed or restarted); returns what the file then holds."""
    assert planned.path is not None
    options = planned.options
    if planned.state == "resume":
        previous = read_run(planned.path)
        recorded = previous.config.get("options")
        if recorded is not None and recorded != json.loads(options.model_dump_json()):
            raise RunFileError(f"{planned.path} was run with other options; remove it to start that step over")
        run = RunFile.reopen(planned.path, show_progress=show_progress)
        journaled = any(name.endswith("/journal") for name in previous.datasets)
        if not journaled:
            run.clear()
    else:
        run = RunFile(planned.path, procedure=planned.step.procedure, overwrite=True, show_progress=show_progress,
                      config={"options": options.model_dump(mode="json"),
                              "board": config.model_dump(mode="json") | {"resource": board.resource}},
                      resource=board.resource, board_identity=str(board.identity))  # fmt: skip
    with run:
        result = planned.step.measure(board, run, **dict(options))
    lines = report_lines(result)
    if lines:
        print(f"{planned.step.procedure}:\n" + "\n".join(lines), flush=True)
    return read_run(planned.path)


def run_suite(
    board: Board, out_dir: Path, overrides: Overrides | None = None, config: BoardConfig | None = None,
    show_progress: bool = True,
) -> list[RunData]:  # fmt: skip
    """Every step not done yet, in order, on one open board; the runs of every step."""
    out_dir.mkdir(parents=True, exist_ok=True)
    config = config or BoardConfig(resource=board.resource)
    steps = plan(board.shape, overrides, out_dir)
    check_plan(board, steps)
    runs = []
    for planned in steps:
        if planned.state == "done":
            assert planned.path is not None
            runs.append(read_run(planned.path))
            continue
        runs.append(run_step(board, planned, config, show_progress))
    return runs


def run_suite_in_memory(board: Board, overrides: Overrides | None = None) -> list[RunData]:
    """The suite with in-memory recorders (scripts, tests, benchmarks): the same data as the files."""
    steps = plan(board.shape, overrides)
    check_plan(board, steps)
    runs = []
    for planned in steps:
        recorder = MemoryRecorder()
        planned.step.measure(board, recorder, **dict(planned.options))
        datasets = dict(recorder.datasets)
        attrs = {name: dict(values) for name, values in recorder.attrs.items()}
        root = {"procedure": planned.step.procedure, "status": "completed", "resource": board.resource}
        runs.append(RunData(Path(f"<memory:{planned.step.procedure}>"), root, datasets, attrs))
    return runs
