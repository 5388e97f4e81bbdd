"""Programming target conductances: open-loop gate-coded SET/RESET and closed-loop write-verify.

Both work on a whole target map at once. Every step is one batch command per pulse kind over all
cells that need it, plus one map read: the number of round trips grows with the iterations, never
with the number of cells.

Device behaviour both rely on (Li 2018; shared reference "How the UMass in-situ update works"):
a SET pulse leaves ``G = max(f(v_gate), G_before)``, where the gate voltage sets the compliance
current and ``f`` is roughly linear (``k v_gate + c``); so SET only raises G, and a cell above its
target must be RESET first. RESET (amplitude on the column, gate fully on) drives G down toward a
floor that is lower the higher the amplitude, and never raises G: a partial RESET at a moderate
amplitude stops part-way, which is how write-verify reaches targets below the lowest SET level.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

import numpy as np
import numpy.typing as npt

from drivers import Board, InvalidRequest, LimitError, PulseKind, Region
from protocols.calibration import GateCalibration, conductance_to_gate
from protocols.recording import Recorder

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int32]


class CellOutcome(IntEnum):
    """Per-cell result of :func:`write_verify`, stored as ``int8`` in :attr:`WriteVerifyResult.outcome`."""

    UNTOUCHED = 0
    """outside the mask: never read for a decision, never pulsed"""
    CONVERGED = 1
    """a verify read found it within the tolerance of its target"""
    GAVE_UP = 2
    """responded to pulses but did not converge (iteration cap, or no longer moving at its gate/amplitude cap)"""
    STUCK = 3
    """never responded: its conductance stayed within read noise over ``stuck_after`` attempts"""


_PENDING = -1  # internal: still being programmed
_SLOPE_SPACING = 0.3  # V: least gate difference between two SETs that a slope is learned from
_DEEP_RESET_RISE = 0.2  # V: deep-RESET amplitude rise when two deep RESET + SET pairs moved nothing


def check_target(
    g_target: npt.ArrayLike,
    shape: tuple[int, int],
    mask: npt.ArrayLike | None = None,
    g_window: tuple[float, float] = (0.0, 1.2e-3),
    origin: tuple[int, int] = (0, 0),
) -> tuple[FloatArray, BoolArray]:
    """Refuse a target map that has the wrong shape, a non-finite value or a value outside ``g_window``.

    Only masked cells are checked (so unmasked targets may be NaN). Errors name the cell in array
    coordinates (offset by ``origin``), its value and the limit. Returns ``(target, mask)``.
    """
    target = np.asarray(g_target, dtype=np.float64)
    if target.shape != shape:
        raise InvalidRequest(f"g_target has shape {target.shape}; expected {shape}; nothing was applied")
    if mask is None:
        selected = np.ones(shape, dtype=bool)
    else:
        selected = np.asarray(mask, dtype=bool)
        if selected.shape != shape:
            raise InvalidRequest(f"mask has shape {selected.shape}; expected {shape}; nothing was applied")
    nonfinite = selected & ~np.isfinite(target)
    if nonfinite.any():
        r, c = (int(i) for i in np.argwhere(nonfinite)[0])
        raise InvalidRequest(
            f"g_target[{r + origin[0]}, {c + origin[1]}] = {target[r, c]} is not finite; nothing was applied"
        )
    low, high = g_window
    outside = selected & ((target < low) | (target > high) | (target <= 0))
    if outside.any():
        r, c = (int(i) for i in np.argwhere(outside)[0])
        raise LimitError(f"g_target[{r + origin[0]}, {c + origin[1]}]", float(target[r, c]), low, high, "S")
    return target, selected


# ---------------------------------------------------------------------------- gate-coded (open loop)


@dataclass(frozen=True)
class GateCodedResult:
    """What :func:`program_gate_coded` did."""

    v_gate: FloatArray
    """gate voltage each cell was SET at, V (NaN where not pulsed): the trainer keeps it as the cell's last gate"""
    reset: BoolArray
    """cells RESET before their SET"""
    pulses: int
    """pulses applied (RESET and SET)"""
    round_trips: int
    """commands sent: map reads and batches"""


def program_gate_coded(
    board: Board,
    g_target: npt.ArrayLike,
    calibration: GateCalibration,
    mask: npt.ArrayLike | None = None,
    reset: Literal["needed", "always"] = "needed",
    amplitude: float = 2.5,
    width: float = 1e-6,
    v_reset: float = 1.8,
    v_gate_reset: float = 5.0,
    clip: bool = False,
    v_read: float = 0.2,
    recorder: Recorder | None = None,
) -> GateCodedResult:
    """Open-loop programming (Li 2018): RESET where needed, then SET at the gate mapped from the target.

    ``reset="needed"`` reads the map once and RESETs only cells that read above their target
    (SET cannot lower G); ``"always"`` skips the read and RESETs every masked cell, which costs
    a pulse per cell but no read. Then one SET batch sets every masked cell at the gate
    :func:`~protocols.calibration.conductance_to_gate` maps its target to. At most three round
    trips in all. The target map is validated, mapped to gates and every pulse checked against
    the limits before anything is applied.

    Args:
        board: the open board.
        g_target: target conductances, S, the calibration's shape (a region placed at its origin).
        calibration: the per-cell gate calibration.
        mask: cells to program (default: the calibrated cells).
        reset: ``"needed"`` or ``"always"``, see above.
        amplitude: SET amplitude, V.
        width: pulse width, s.
        v_reset: RESET amplitude, V: deep enough to bring a cell below every target.
        v_gate_reset: gate voltage during RESET, V.
        clip: clip targets a cell cannot reach to its gate window instead of refusing them.
        v_read: read voltage, V.
        recorder: receives ``gate_coded/v_gate`` and ``gate_coded/reset`` maps.
    """
    shape, origin = calibration.shape, calibration.origin
    selected = calibration.mask if mask is None else mask
    target, selected = check_target(g_target, shape, selected, (0.0, board.limits.g_cell_max), origin)
    v_gate = conductance_to_gate(target, calibration, clip=clip, mask=selected)
    if reset not in ("needed", "always"):
        raise InvalidRequest(f"reset = {reset!r}; expected 'needed' or 'always'")
    set_batch = board.check_pulses(PulseKind.SET, amplitude, np.nan_to_num(v_gate), width, selected, origin)
    board.check_pulses(PulseKind.RESET, v_reset, v_gate_reset, width, selected, origin)  # dry run only
    round_trips = 0
    if reset == "needed":
        g_now = board.read_map(v_read, calibration.region)
        round_trips += 1
        to_reset = selected & (g_now > target)
    else:
        to_reset = selected.copy()
    pulses = 0
    if to_reset.any():
        pulses += board.apply_pulses(PulseKind.RESET, v_reset, v_gate_reset, width, to_reset, origin)
        round_trips += 1
    if selected.any():
        pulses += board.apply_pulses(set_batch)
        round_trips += 1
    if recorder is not None:
        recorder.write("gate_coded/v_gate", v_gate, unit="V")
        recorder.write("gate_coded/reset", to_reset)
    return GateCodedResult(v_gate=v_gate, reset=to_reset, pulses=pulses, round_trips=round_trips)


# ---------------------------------------------------------------------------- write-verify (closed loop)


@dataclass(frozen=True)
class WriteVerifySettings:
    """Pulse parameters and the rules of :func:`write_verify`. SI units."""

    v_set: float = 2.5
    """SET amplitude on the row line, V"""
    width: float = 1e-6
    """SET and RESET pulse width, s"""
    v_gate_range: tuple[float, float] | None = None
    """lowest and highest SET gate voltage, V (default: the calibration's lowest gate, or 0.5 V,
    up to the board's gate limit)"""
    set_aim_fraction: float = 0.5
    """a SET aims this fraction of the tolerance below the target"""
    v_gate_step: float = 0.02
    """least gate rise after a SET that left a cell below its target, V"""
    v_reset_deep: float = 1.8
    """RESET amplitude before a SET re-programs a cell from below, V (Li 2018 code: 1.7-1.8 V)"""
    v_reset_start: float = 1.2
    """first amplitude of a partial RESET that walks a cell down onto a low target, V"""
    v_reset_step: float = 0.05
    """partial-RESET amplitude step, V; doubles (up to ``v_reset_step_max``) while G does not move"""
    v_reset_step_max: float = 0.2
    """largest partial-RESET amplitude step, V"""
    v_reset_max: float = 2.5
    """highest RESET amplitude, V"""
    v_gate_reset: float = 5.0
    """gate voltage during RESET (transistor fully on), V"""
    stuck_after: int = 3
    """attempts without a response after which a cell is abandoned (for a cell that never
    responded, the last of them is the strongest pulse toward its target)"""
    response_threshold: float = 0.05
    """relative change of G that counts as a response (several read-noise sigmas)"""
    response_floor: float = 2e-6
    """least absolute change of G that counts as a response, S"""
    nominal_slope: float = 98e-6
    """k of ``G = k v_gate + c`` used without a calibration, S/V (Li 2018 code)"""
    nominal_intercept: float = 120e-6
    """c used without a calibration, S (Li 2018 code)"""
    learning_rate_min: float = 0.3
    """floor of the weight a new observation gets in a cell's intercept estimate"""
    verify_reads: int = 1
    """map reads averaged per verify step (each is one round trip); more reads, less read noise"""
    v_read: float = 0.2
    """read voltage, V"""


@dataclass(frozen=True)
class WriteVerifyResult:
    """What :func:`write_verify` did, per cell and in total."""

    outcome: npt.NDArray[np.int8]
    """:class:`CellOutcome` per cell"""
    g_final: FloatArray
    """conductance of the last verify read, S"""
    g_target: FloatArray
    """the targets, S"""
    set_pulses: IntArray
    """SET pulses per cell"""
    reset_pulses: IntArray
    """RESET pulses per cell"""
    v_gate: FloatArray
    """gate of each cell's last SET, V (NaN if never SET)"""
    iterations: int
    """pulse rounds (each: at most one RESET batch and one SET batch)"""
    reads: int
    """map reads issued"""
    batches: int
    """pulse batches issued"""
    converged_history: tuple[float, ...]
    """fraction of working cells converged after each verify read"""
    wall_time: float
    """seconds the whole procedure took on the host's clock"""

    @property
    def pulses(self) -> IntArray:
        """All pulses per cell."""
        return np.asarray(self.set_pulses + self.reset_pulses, dtype=np.int32)

    @property
    def round_trips(self) -> int:
        """Commands sent to the board: reads plus batches."""
        return self.reads + self.batches

    @property
    def working(self) -> BoolArray:
        """Programmed cells that are not stuck."""
        return np.asarray((self.outcome != CellOutcome.UNTOUCHED) & (self.outcome != CellOutcome.STUCK))

    @property
    def converged_fraction(self) -> float:
        """Converged cells over working cells (1.0 if there are none)."""
        working = int(self.working.sum())
        return float((self.outcome == CellOutcome.CONVERGED).sum() / working) if working else 1.0

    def count(self, outcome: CellOutcome) -> int:
        return int((self.outcome == outcome).sum())


# What a cell received in the previous iteration, to interpret the next read.
_NOTHING, _SET, _DEEP_RESET_SET, _PARTIAL_RESET = 0, 1, 2, 3


class _Commands:
    """The board operations write-verify issues, counted. Each is one round trip while a map or
    batch fits the protocol's 16 MiB block (any array up to about a million cells)."""

    def __init__(self, board: Board, region: Region, settings: WriteVerifySettings) -> None:
        self.board, self.region, self.settings = board, region, settings
        self.origin = (region.row0, region.col0)
        self.reads = self.batches = 0

    def read(self) -> FloatArray:
        total = np.zeros(self.region.shape)
        for _ in range(self.settings.verify_reads):
            total += self.board.read_map(self.settings.v_read, self.region)
            self.reads += 1
        return total / self.settings.verify_reads

    def pulse(self, kind: PulseKind, amplitude: npt.ArrayLike, v_gate: npt.ArrayLike, where: BoolArray) -> None:
        if where.any():
            self.board.apply_pulses(kind, amplitude, v_gate, self.settings.width, where, self.origin)
            self.batches += 1


class _Cells:
    """Per-cell state of a write-verify run: what each cell got, what was learned about it."""

    def __init__(
        self, target: FloatArray, selected: BoolArray, k: FloatArray, c: FloatArray, prior_weight: float,
        gate_high: float, s: WriteVerifySettings,
    ) -> None:  # fmt: skip
        shape = target.shape
        self.target, self.k, self.c, self.gate_high = target, k, c, gate_high
        self.k_prior = k.copy()
        self.observations = np.full(shape, prior_weight)
        # Without a calibration the slope is learned too, from SETs at different gates.
        self.learn_slope = prior_weight == 0
        self.reference_gate = np.full(shape, np.nan)
        self.reference_g = np.full(shape, np.nan)
        self.idle_pairs = np.zeros(shape, dtype=np.int32)
        self.outcome = np.where(selected, _PENDING, CellOutcome.UNTOUCHED).astype(np.int8)
        self.set_pulses = np.zeros(shape, dtype=np.int32)
        self.reset_pulses = np.zeros(shape, dtype=np.int32)
        self.last_action = np.full(shape, _NOTHING, dtype=np.int8)
        self.v_gate_last = np.full(shape, np.nan)
        self.v_reset_last = np.full(shape, np.nan)
        self.v_reset_deep = np.full(shape, s.v_reset_deep)
        # Partial-RESET bracket: the highest amplitude seen to leave the cell above its target and
        # the lowest seen to take it below, with the conductance each left.
        self.a_above = np.full(shape, np.nan)
        self.g_above = np.full(shape, np.nan)
        self.a_below = np.full(shape, np.nan)
        self.g_below = np.full(shape, np.nan)
        self.reset_step = np.full(shape, s.v_reset_step)
        self.no_response = np.zeros(shape, dtype=np.int32)
        self.ever_responded = np.zeros(shape, dtype=bool)
        self.g_previous = np.zeros(shape)
        self.g_first: FloatArray | None = None

    def observe(self, g: FloatArray, tolerance: float, s: WriteVerifySettings) -> None:
        """Interpret a verify read against what each cell got last iteration."""
        if self.g_first is None:
            self.g_first = g
        last = self.last_action
        acted = last != _NOTHING
        if not acted.any():
            return
        target = self.target
        change = g - self.g_previous
        threshold = np.maximum(s.response_threshold * np.maximum(g, self.g_previous), s.response_floor)
        responded = acted & (np.abs(change) > threshold)
        self.ever_responded |= responded | (acted & (np.abs(g - self.g_first) > threshold))
        above, below = g > target + tolerance, g < target - tolerance

        # SET model. A SET leaves max(f(v_gate) + noise, G_before): when it raised G, or after a
        # deep RESET (which takes G below every SET level), the read is f(v_gate) + noise; when it
        # did not raise G, the read bounds f(v_gate) + noise from above.
        gate = np.nan_to_num(self.v_gate_last)
        raised = (last == _SET) & (change > s.response_floor)
        exact = raised | (last == _DEEP_RESET_SET)
        bound = (last == _SET) & ~raised
        if self.learn_slope:
            # Two exact observations far enough apart in gate voltage give the cell's own slope.
            spacing = gate - self.reference_gate
            apart = exact & np.isfinite(spacing) & (np.abs(spacing) >= _SLOPE_SPACING)
            with np.errstate(invalid="ignore", divide="ignore"):
                slope = np.clip((g - self.reference_g) / spacing, 0.25 * self.k_prior, 4.0 * self.k_prior)
            self.k = np.where(apart, 0.5 * (self.k + slope), self.k)
            self.reference_gate = np.where(exact, gate, self.reference_gate)
            self.reference_g = np.where(exact, g, self.reference_g)
        weight = np.maximum(1.0 / (self.observations + 1.0), s.learning_rate_min)
        self.c = np.where(exact, self.c + weight * (g - self.k * gate - self.c), self.c)
        self.observations += exact
        self.c = np.where(bound, np.minimum(self.c, g - self.k * gate), self.c)
        # A deep RESET + SET that twice in a row changed nothing: the RESET may be too shallow.
        idle_pair = (last == _DEEP_RESET_SET) & above & ~responded
        self.idle_pairs = np.where(idle_pair, self.idle_pairs + 1, np.where(acted, 0, self.idle_pairs))
        deeper = np.minimum(self.v_reset_deep + _DEEP_RESET_RISE, s.v_reset_max)
        self.v_reset_deep = np.where(self.idle_pairs >= 2, deeper, self.v_reset_deep)

        # Partial-RESET bracket (RESET never raises G, so a G left above means the amplitude was
        # too low, one left below means too high). Noise can contradict an older bound: drop it.
        partial = last == _PARTIAL_RESET
        a = self.v_reset_last
        new_above = partial & above & ~(a < self.a_above)
        new_below = partial & below & ~(a > self.a_below)
        self.a_above, self.g_above = np.where(new_above, a, self.a_above), np.where(new_above, g, self.g_above)
        self.a_below, self.g_below = np.where(new_below, a, self.a_below), np.where(new_below, g, self.g_below)
        self.a_below = np.where(new_above & (a >= self.a_below), np.nan, self.a_below)
        self.a_above = np.where(new_below & (a <= self.a_above), np.nan, self.a_above)
        idle = partial & above & ~responded
        doubled = np.minimum(2 * self.reset_step, s.v_reset_step_max)
        self.reset_step = np.where(idle, doubled, np.where(partial, s.v_reset_step, self.reset_step))

        # Attempts that count toward abandoning a cell. Never responded: any SET or deep RESET +
        # SET (a partial RESET still ramping up is expected to do nothing at first). Responded
        # before: only attempts at the cap (gate or RESET amplitude) can show that the target is
        # out of reach; small corrections near the target often move G less than read noise.
        decisive = (last == _SET) | (last == _DEEP_RESET_SET) | (partial & (a >= s.v_reset_max))
        at_cap = ((last == _SET) & (gate >= self.gate_high)) | (
            ((last == _DEEP_RESET_SET) | partial) & (a >= s.v_reset_max)
        )
        # A working cell that far from its target moves visibly when pulsed; near its target it
        # may not (the correction is within read noise), which says nothing about being stuck.
        far = np.abs(self.g_previous - target) > threshold
        counts = np.where(self.ever_responded, at_cap, decisive & far) & ~responded
        self.no_response = np.where(responded, 0, self.no_response + counts)

    def judge(self, g: FloatArray, tolerance: float, s: WriteVerifySettings) -> BoolArray:
        """Mark converged and abandoned cells; return the cells still pending."""
        pending = self.outcome == _PENDING
        converged = pending & (np.abs(g - self.target) <= tolerance)
        self.outcome[converged] = CellOutcome.CONVERGED
        pending &= ~converged
        abandoned = pending & (self.no_response >= s.stuck_after)
        self.outcome[abandoned & self.ever_responded] = CellOutcome.GAVE_UP
        self.outcome[abandoned & ~self.ever_responded] = CellOutcome.STUCK
        return np.asarray(pending & ~abandoned)

    def partial_reset_amplitude(self, s: WriteVerifySettings) -> FloatArray:
        """Next partial-RESET amplitude: inside the bracket when there is one, else a step beyond
        the side that is known."""
        has_above, has_below = np.isfinite(self.a_above), np.isfinite(self.a_below)
        width = self.a_below - self.a_above
        with np.errstate(invalid="ignore", divide="ignore"):
            share = (self.g_above - self.target) / (self.g_above - self.g_below)
        share = np.clip(np.nan_to_num(share, nan=0.5), 0.2, 0.8)  # keep clear of both ends
        inside = self.a_above + share * width
        amplitude = np.where(
            has_above & has_below, inside,
            np.where(has_above, self.a_above + self.reset_step,
                     np.where(has_below, self.a_below - self.reset_step, s.v_reset_start)),
        )  # fmt: skip
        return np.asarray(np.clip(amplitude, 0.0, s.v_reset_max))

    def record(self, g: FloatArray, action: npt.NDArray[np.int8], v_gate: FloatArray, v_reset: FloatArray) -> None:
        """Remember what each cell got this iteration."""
        gets_set = (action == _SET) | (action == _DEEP_RESET_SET)
        gets_reset = (action == _DEEP_RESET_SET) | (action == _PARTIAL_RESET)
        self.set_pulses += gets_set
        self.reset_pulses += gets_reset
        self.v_gate_last = np.where(gets_set, v_gate, self.v_gate_last)
        self.v_reset_last = np.where(gets_reset, v_reset, self.v_reset_last)
        self.last_action = action
        self.g_previous = g


def write_verify(
    board: Board,
    g_target: npt.ArrayLike,
    tolerance: float = 4e-6,
    max_iterations: int = 30,
    mask: npt.ArrayLike | None = None,
    recorder: Recorder | None = None,
    calibration: GateCalibration | None = None,
    origin: tuple[int, int] = (0, 0),
    g_window: tuple[float, float] | None = None,
    settings: WriteVerifySettings | None = None,
) -> WriteVerifyResult:
    """Program every masked cell to within ``tolerance`` of its target by read, compare, pulse.

    Each iteration reads the map once, then sends at most one RESET batch and one SET batch over
    all unconverged cells (per-cell amplitudes and gates in one batch). Each cell has a model of
    its SET level, ``G = k v_gate + c`` (``k`` from the calibration or ``settings.nominal_slope``;
    ``c`` re-estimated from what its own SET pulses gave), and is programmed one of two ways:

    - targets a SET can reach (the model's gate is inside the gate range): below target, SET at
      the model's gate, higher after each SET that fell short (SET never lowers G); above target,
      deep RESET then SET again in the same iteration;
    - targets below the lowest SET level: from above, partial RESET with the amplitude rising
      (RESET never raises G) until a read lands within tolerance, bracketing the amplitude after
      an undershoot; from below, SET at the lowest gate first.

    A cell is converged the first time a verify read finds it within tolerance and gets no more
    pulses. A cell that never responded gets, as its ``settings.stuck_after``-th attempt, the
    strongest pulse toward its target (SET at the highest gate, or RESET at the highest
    amplitude); if that does not move it either, it is STUCK. A cell that responded before but no
    longer moves at its gate or RESET cap over ``stuck_after`` attempts GAVE_UP (its target is
    out of its reach), as do cells still pending after ``max_iterations``.

    The targets are validated (shape, finite, within ``g_window``, default ``(0,
    board.limits.g_cell_max]``) and the pulse settings checked against the limits before
    anything is applied.

    Args:
        board: the open board.
        g_target: target conductances, S: the board's shape, or a region's placed at ``origin``.
        tolerance: accepted ``|G - g_target|`` on a verify read, S.
        max_iterations: cap on pulse rounds.
        mask: cells to program (default: all); other cells are UNTOUCHED and may have NaN targets.
        recorder: receives ``write_verify/g`` per verify read, the final maps, and progress per
            iteration with the converged fraction.
        calibration: per-cell gate calibration (its region must be the target's).
        origin: array coordinates of ``g_target[0, 0]``.
        g_window: plausible target window, S.
        settings: pulse parameters and rules.
    """
    started = time.perf_counter()
    s = settings if settings is not None else WriteVerifySettings()
    target_shape = np.shape(g_target)
    if len(target_shape) != 2:
        raise InvalidRequest(f"g_target has shape {target_shape}; expected a (rows, cols) map; nothing was applied")
    region = Region(origin[0], origin[1], int(target_shape[0]), int(target_shape[1]))
    if (region.row0 < 0 or region.col0 < 0 or region.row0 + region.nrows > board.shape[0]
            or region.col0 + region.ncols > board.shape[1]):  # fmt: skip
        raise InvalidRequest(
            f"g_target of shape {target_shape} at origin {origin} does not fit the {board.shape} array; "
            "nothing was applied"
        )
    window = g_window if g_window is not None else (0.0, board.limits.g_cell_max)
    target, selected = check_target(g_target, region.shape, mask, window, origin)
    _check_settings(s, tolerance, max_iterations)
    if calibration is not None and (calibration.shape != region.shape or calibration.origin != origin):
        raise InvalidRequest(
            f"the calibration covers {calibration.shape} at {calibration.origin}; the targets "
            f"{region.shape} at {origin}; nothing was applied"
        )
    if s.v_gate_range is not None:
        gate_low, gate_high = s.v_gate_range
    else:
        gate_low = calibration.v_gate_window[0] if calibration is not None else 0.5
        gate_high = board.limits.v_gate.max
    # Dry-run the extremes of every batch this run may send: limits fail here, before any pulse.
    for gate_extreme in (gate_low, gate_high):
        board.check_pulses(PulseKind.SET, s.v_set, gate_extreme, s.width, selected, origin)
    for reset_extreme in (min(s.v_reset_start, s.v_reset_deep), s.v_reset_max):
        board.check_pulses(PulseKind.RESET, reset_extreme, s.v_gate_reset, s.width, selected, origin)

    if calibration is not None:
        k, c = (a.copy() for a in calibration.effective_fit())
        prior_weight = 1.0  # the calibration counts as one observation of c
    else:
        k, c = np.full(region.shape, s.nominal_slope), np.full(region.shape, s.nominal_intercept)
        prior_weight = 0.0
    cells = _Cells(target, selected, k, c, prior_weight, gate_high, s)
    commands = _Commands(board, region, s)
    history: list[float] = []
    iterations = 0
    if recorder is not None:
        recorder.write("write_verify/g_target", target, unit="S")
        recorder.set_attrs("write_verify", tolerance=tolerance, max_iterations=max_iterations,
                           row0=region.row0, col0=region.col0)  # fmt: skip
        recorder.progress(0, total=max_iterations + 1, step="write-verify")

    for step in range(max_iterations + 1):
        g = commands.read()
        cells.observe(g, tolerance, s)
        pending = cells.judge(g, tolerance, s)
        working = selected & (cells.outcome != CellOutcome.STUCK)
        fraction = float((cells.outcome == CellOutcome.CONVERGED).sum() / max(1, int(working.sum())))
        history.append(fraction)
        if recorder is not None:
            recorder.append("write_verify/g", g)
            recorder.append("write_verify/converged_fraction", np.array(fraction))
            recorder.progress(1, converged=fraction, pending=int(pending.sum()), iteration=step)
        if not pending.any() or step == max_iterations:
            break

        below = pending & (g < target)
        above = pending & (g > target)
        # Aim a little low: an undershoot costs one more SET, an overshoot a RESET and a SET.
        v_gate = (target - s.set_aim_fraction * tolerance - cells.c) / cells.k
        reset_mode = v_gate < gate_low  # below the lowest SET level: come down with partial RESETs
        # Still below after a SET: never repeat a gate that did not get there.
        rising = below & (cells.last_action == _SET)
        v_gate = np.where(rising, np.maximum(v_gate, cells.v_gate_last + s.v_gate_step), v_gate)
        v_gate = np.clip(np.nan_to_num(v_gate, nan=gate_high), gate_low, gate_high)
        action = np.full(region.shape, _NOTHING, dtype=np.int8)
        action[below] = _SET
        action[above & ~reset_mode] = _DEEP_RESET_SET
        action[above & reset_mode] = _PARTIAL_RESET
        v_reset = np.where(action == _DEEP_RESET_SET, cells.v_reset_deep, cells.partial_reset_amplitude(s))
        # A cell that has not answered its first attempts gets the strongest pulse toward its
        # target: a SET at the highest gate, or a RESET at the highest amplitude alone. Any
        # working cell moves a long way; one that does not is stuck.
        probe = pending & ~cells.ever_responded & (cells.no_response >= s.stuck_after - 1)
        v_gate = np.where(probe & below, gate_high, v_gate)
        action[probe & above] = _PARTIAL_RESET
        v_reset = np.where(probe & above, s.v_reset_max, v_reset)
        gets_reset = (action == _DEEP_RESET_SET) | (action == _PARTIAL_RESET)
        commands.pulse(PulseKind.RESET, v_reset, s.v_gate_reset, gets_reset)
        commands.pulse(PulseKind.SET, s.v_set, v_gate, (action == _SET) | (action == _DEEP_RESET_SET))
        cells.record(g, action, v_gate, v_reset)
        iterations += 1

    outcome = cells.outcome
    outcome[outcome == _PENDING] = CellOutcome.GAVE_UP
    result = WriteVerifyResult(
        outcome=outcome, g_final=g, g_target=target, set_pulses=cells.set_pulses, reset_pulses=cells.reset_pulses,
        v_gate=cells.v_gate_last, iterations=iterations, reads=commands.reads, batches=commands.batches,
        converged_history=tuple(history), wall_time=time.perf_counter() - started,
    )  # fmt: skip
    if recorder is not None:
        recorder.write("write_verify/outcome", outcome, codes=", ".join(f"{o.value}={o.name}" for o in CellOutcome))
        recorder.write("write_verify/g_final", g, unit="S")
        recorder.write("write_verify/pulses", result.pulses)
        recorder.write("write_verify/v_gate", cells.v_gate_last, unit="V")
        recorder.set_attrs("write_verify", iterations=iterations, round_trips=result.round_trips,
                           converged_fraction=result.converged_fraction)  # fmt: skip
    return result


def _check_settings(s: WriteVerifySettings, tolerance: float, max_iterations: int) -> None:
    if not (np.isfinite(tolerance) and tolerance > 0):
        raise InvalidRequest(f"tolerance = {tolerance} S; expected a positive number; nothing was applied")
    if max_iterations < 0:
        raise InvalidRequest(f"max_iterations = {max_iterations}; expected 0 or more")
    if s.stuck_after < 1 or s.verify_reads < 1:
        raise InvalidRequest(f"stuck_after = {s.stuck_after} and verify_reads = {s.verify_reads} must be at least 1")
    if not (s.v_reset_start <= s.v_reset_max and s.v_reset_deep <= s.v_reset_max):
        raise InvalidRequest(
            f"v_reset_start = {s.v_reset_start} V and v_reset_deep = {s.v_reset_deep} V must not exceed "
            f"v_reset_max = {s.v_reset_max} V"
        )
    if s.v_gate_range is not None and not s.v_gate_range[0] <= s.v_gate_range[1]:
        raise InvalidRequest(f"v_gate_range = {s.v_gate_range} V is not ascending")
    if s.nominal_slope <= 0:
        raise InvalidRequest(f"nominal_slope = {s.nominal_slope} S/V; expected a positive slope")
