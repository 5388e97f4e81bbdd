"""Run a :class:`~protocols.sequences.PulseSequence` on a board: check all of it dry, then execute it.

:func:`check_sequence` expands the loops into a flat plan and checks every element against the
board's limits and array bounds without sending a byte; one bad element anywhere refuses the whole
sequence with an error naming its step path, parameter, value and limit. :func:`run_sequence`
then executes the plan with one round trip per step whatever the number of target cells: a pulse
is one batch command over the targets' bounding region (masked to the targets), a read is one map
read of that region, a delay one ``idle_for``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from drivers import Board, InvalidRequest, LimitError, PulseBatch, Region
from drivers.board import MAX_IDLE
from drivers.limits import check_value
from protocols.recording import Recorder
from protocols.sequences import (
    MAX_EXPANDED_STEPS,
    Delay,
    LeafStep,
    Loop,
    Pulse,
    PulseSequence,
    Read,
    Step,
    expanded_size,
)

MAX_READ_VALUES = 50_000_000
"""Most conductances one run may return (reads x targets; 400 MB as float64)."""
MAX_CACHED_BATCH_BYTES = 64 * 1024 * 1024
"""Memory kept for pre-checked pulse batches; distinct pulses beyond it are re-checked when run."""
"""What ``Board.idle_for`` accepts (the protocol's ``SYST:WAIT`` range)."""

_KINDS = {"SET": "SET", "RESET": "RES", "FORM": "FORM"}


class SequenceCheckError(InvalidRequest):
    """A sequence the board cannot run; ``path`` names the step (``steps[3] (loop 1 of 5) > steps[0]``)."""

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        # Not super(): in SequenceLimitError's MRO that would be LimitError's own __init__.
        InvalidRequest.__init__(self, f"{path}: {detail}")


class SequenceLimitError(SequenceCheckError, LimitError):
    """A step outside the board's safety limits; ``parameter``, ``value``, ``low``, ``high`` as in LimitError."""

    def __init__(self, path: str, error: LimitError) -> None:
        self.parameter, self.value, self.low, self.high = error.parameter, error.value, error.low, error.high
        SequenceCheckError.__init__(self, path, str(error))


@dataclass(frozen=True)
class PlannedStep:
    """One pulse, read or delay of the flat plan. Loop iterations share one object."""

    step: LeafStep
    path: str
    """where the step is in the sequence, at its first run"""
    batch: PulseBatch | None = None
    """a Pulse's checked batch over the targets (None: re-checked when run, to bound memory)"""


@dataclass(frozen=True)
class CheckedSequence:
    """A sequence checked against one board, ready to run."""

    sequence: PulseSequence
    targets: npt.NDArray[np.int64]
    """``(n_targets, 2)`` zero-based (row, col), in the order reads report them"""
    region: Region
    """the targets' bounding rectangle: what each batch pulse and map read covers"""
    mask: npt.NDArray[np.bool_]
    """``region.shape``: True on target cells"""
    plan: tuple[PlannedStep, ...]
    """every step in execution order, loops expanded"""

    @property
    def n_reads(self) -> int:
        return sum(isinstance(p.step, Read) for p in self.plan)

    @property
    def n_pulses(self) -> int:
        """Pulse steps (each pulses every target once)."""
        return sum(isinstance(p.step, Pulse) for p in self.plan)

    def pick(self, region_map: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """The targets' values, in target order, from a map of :attr:`region`."""
        return region_map[self.targets[:, 0] - self.region.row0, self.targets[:, 1] - self.region.col0]


@dataclass(frozen=True)
class SequenceResult:
    """What a run read, in order."""

    checked: CheckedSequence
    reads: npt.NDArray[np.float64]
    """``(n_reads, n_targets)`` conductances, S; column ``j`` is ``checked.targets[j]``"""
    read_steps: npt.NDArray[np.int64]
    """``(n_reads,)`` index into ``checked.plan`` of each read"""
    read_times: npt.NDArray[np.float64] | None
    """``(n_reads,)`` board clock (s) just after each read, when asked for"""
    pulses_applied: int
    """total single-cell pulses the board reported applying"""

    @property
    def targets(self) -> npt.NDArray[np.int64]:
        return self.checked.targets


# ----------------------------------------------------------------------------- checking


def _check_targets(board: Board, targets: npt.NDArray[np.int64]) -> None:
    rows, cols = board.shape
    for axis, name, size in ((0, "row", rows), (1, "col", cols)):
        outside = np.flatnonzero(targets[:, axis] >= size)
        if outside.size:
            i = int(outside[0])
            cell = f"[{targets[i, 0]}, {targets[i, 1]}]"
            error = LimitError(f"{name} of target cell {cell}", int(targets[i, axis]), 0, size - 1)
            raise SequenceLimitError("targets", error)


def _check_read(board: Board, read: Read) -> None:
    board.check_read_voltage(read.v_read)


class _Planner:
    """Expands loops once per body (iterations share the body's planned steps) and checks each leaf."""

    def __init__(self, board: Board, region: Region, mask: npt.NDArray[np.bool_]) -> None:
        self.board, self.region, self.mask = board, region, mask
        self.batches: dict[tuple[str, float, float, float], PulseBatch | None] = {}
        self.cached_bytes = 0

    def expand(self, steps: list[Step], prefix: str) -> list[PlannedStep]:
        plan: list[PlannedStep] = []
        for i, step in enumerate(steps):
            path = f"{prefix}steps[{i}]"
            if isinstance(step, Loop):
                body = self.expand(step.steps, f"{path} (loop 1 of {step.repeat}) > ")
                plan.extend(body * step.repeat)  # limits do not change between iterations
            else:
                plan.append(self.leaf(step, path))
        return plan

    def leaf(self, step: LeafStep, path: str) -> PlannedStep:
        try:
            if isinstance(step, Pulse):
                return PlannedStep(step, path, self.batch(step))
            if isinstance(step, Read):
                _check_read(self.board, step)
            elif isinstance(step, Delay):
                check_value("seconds", step.seconds, MAX_IDLE, "s")
        except LimitError as exc:
            raise SequenceLimitError(path, exc) from None
        except InvalidRequest as exc:
            raise SequenceCheckError(path, str(exc)) from None
        return PlannedStep(step, path)

    def batch(self, pulse: Pulse) -> PulseBatch | None:
        key = (pulse.kind, pulse.amplitude, pulse.v_gate, pulse.width)
        if key in self.batches:
            return self.batches[key]
        origin = (self.region.row0, self.region.col0)
        batch = self.board.check_pulses(_KINDS[pulse.kind], *key[1:], mask=self.mask, origin=origin)
        # A file of many distinct pulses over a big region must not hold one batch each in memory.
        keep = self.cached_bytes + batch.planes.nbytes <= MAX_CACHED_BATCH_BYTES
        self.cached_bytes += batch.planes.nbytes if keep else 0
        self.batches[key] = batch if keep else None
        return self.batches[key]


def check_sequence(board: Board, sequence: PulseSequence) -> CheckedSequence:
    """Expand and check every element of ``sequence`` against ``board``; sends nothing.

    Raises :class:`SequenceLimitError` (a :class:`LimitError`) or :class:`SequenceCheckError`
    naming the step path, parameter, value and limit of the first element the board would refuse.
    """
    size = expanded_size(sequence.steps)  # again: the model may have been mutated after validation
    if size > MAX_EXPANDED_STEPS:
        raise SequenceCheckError("steps", f"expands to {size:,} steps; at most {MAX_EXPANDED_STEPS:,} are allowed")
    targets = sequence.targets.as_array()
    _check_targets(board, targets)
    low, high = targets.min(axis=0), targets.max(axis=0)
    region = Region(int(low[0]), int(low[1]), int(high[0] - low[0] + 1), int(high[1] - low[1] + 1))
    mask = np.zeros(region.shape, dtype=bool)
    mask[targets[:, 0] - region.row0, targets[:, 1] - region.col0] = True
    plan = tuple(_Planner(board, region, mask).expand(sequence.steps, ""))
    checked = CheckedSequence(sequence, targets, region, mask, plan)
    values = checked.n_reads * len(targets)
    if values > MAX_READ_VALUES:
        raise SequenceCheckError(
            "steps", f"{checked.n_reads:,} reads of {len(targets):,} cells return {values:,} values; "
            f"at most {MAX_READ_VALUES:,} are allowed in one run",
        )  # fmt: skip
    return checked


# ----------------------------------------------------------------------------- running


def run_sequence(
    board: Board, sequence: PulseSequence, recorder: Recorder | None = None, *, timestamps: bool = False
) -> SequenceResult:
    """Check ``sequence`` whole, then run it: one round trip per step for any number of targets.

    Each read is appended to ``recorder`` as ``sequence/reads`` (conductances of the targets, S)
    and ``sequence/read_step`` (its index in the plan) the moment it is taken, so an interrupted
    run keeps every read so far. ``timestamps`` adds one ``board.clock()`` round trip per read,
    recorded as ``sequence/read_time`` (s).
    """
    checked = check_sequence(board, sequence)
    if recorder is not None:
        recorder.write("sequence/targets", checked.targets, sequence=sequence.name, n_steps=len(checked.plan))
        recorder.progress(0, total=len(checked.plan), sequence=sequence.name)
    reads: list[npt.NDArray[np.float64]] = []
    read_steps: list[int] = []
    read_times: list[float] = []
    applied = 0
    for index, planned in enumerate(checked.plan):
        step = planned.step
        if isinstance(step, Pulse):
            batch = planned.batch
            if batch is None:  # not kept in memory: check again (sends nothing)
                origin = (checked.region.row0, checked.region.col0)
                batch = board.check_pulses(
                    _KINDS[step.kind], step.amplitude, step.v_gate, step.width, mask=checked.mask, origin=origin
                )
            applied += board.apply_pulses(batch)
        elif isinstance(step, Read):
            values = checked.pick(board.read_map(step.v_read, checked.region))
            reads.append(values)
            read_steps.append(index)
            if timestamps:
                read_times.append(board.clock())
            if recorder is not None:
                recorder.append("sequence/reads", values)
                recorder.append("sequence/read_step", index)
                if timestamps:
                    recorder.append("sequence/read_time", read_times[-1])
        else:
            board.idle_for(step.seconds)
        if recorder is not None:
            recorder.progress(1)
    n_targets = len(checked.targets)
    return SequenceResult(
        checked=checked,
        reads=np.array(reads, dtype=np.float64).reshape(len(reads), n_targets),
        read_steps=np.array(read_steps, dtype=np.int64),
        read_times=np.array(read_times, dtype=np.float64) if timestamps else None,
        pulses_applied=applied,
    )


__all__ = [
    "MAX_CACHED_BATCH_BYTES", "MAX_READ_VALUES", "CheckedSequence", "PlannedStep", "SequenceCheckError",
    "SequenceLimitError", "SequenceResult", "check_sequence", "run_sequence",
]  # fmt: skip
