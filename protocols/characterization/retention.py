"""Retention: (optionally program, then) read the cells at log-spaced times.

Between reads the board holds its idle state (``board.idle_for``: an emulator skips ahead on its
simulated clock, so 1e4 s take moments). Times come from the board's own clock, measured from
the end of programming (or from the start when nothing is programmed); a point averages
``reads_per_point`` map reads and is stamped with the time at which the drift law takes the
mean of its values at the reads' midpoints (each read's clock before and after it), which for
reads close together is their midpoint.

Datasets: ``retention/cells`` (n, 2); ``retention/time`` (m,) s; ``retention/g`` (m, n) S;
``retention/journal`` the reads done (a killed run resumes after the last one, on the board's
clock, :class:`~protocols.recording.Journal`). At the end the group gets ``drift_slope`` (S per
ln s): the slope of the mean conductance of the working cells against ln(t), the usual log-time
drift law ``G(t) = G(t1) + slope * ln(t / t1)``.

``program=set`` RESETs every selected cell first (read as ``retention/g_reset``), then SETs it:
every working cell is reprogrammed from a known state, so its drift clock restarts at the SET
whatever it held before. A cell is *working* when its first read after the SET is at least
``min_window`` above its RESET read (by default derived from those windows themselves,
:func:`~protocols.characterization.common.auto_min_window`) (``retention/working``); stuck cells do not drift, and the
drift figures are fitted on the working cells only: ``drift_mean`` and ``drift_spread`` (S per
unit of ``ln(1 + t / drift_time_constant)``, the spread across cells with the fit noise removed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, Self

import numpy as np
import numpy.typing as npt
from pydantic import Field, model_validator

from drivers import Board, PulseKind
from protocols.calibration import spread_uncertainty
from protocols.characterization.common import (
    BoolArray,
    CellOptions,
    FloatArray,
    IntArray,
    MinWindow,
    PulseWidth,
    ReadsPerPoint,
    ResetAmplitude,
    ResetGate,
    Selection,
    SetAmplitude,
    SetGate,
    auto_min_window,
    check_pulse,
    check_read_voltage,
    pulse,
    read,
    select_cells,
    start_group,
    write_cells,
)
from protocols.characterization.figures import Figure, record_figures
from protocols.recording import Journal, Recorder, StoredRecorder

GROUP = "retention"
MAX_WAIT = 1e7  # s, the longest SYST:WAIT the protocol allows
MAX_POINTS_PER_DECADE = 1000  # finer than the clock's resolution of a read long before this


class RetentionOptions(CellOptions):
    """Options of ``retention``."""

    program: Literal["none", "set", "reset"] = Field(
        "none", description="program the cells first: none, set (RESET, then SET at set_gate) or reset"
    )
    set_amplitude: SetAmplitude = 2.5
    set_gate: SetGate = 1.2
    reset_amplitude: ResetAmplitude = 1.8
    reset_gate: ResetGate = 5.0
    width: PulseWidth = 1e-6
    t_first: float = Field(1.0, ge=1e-6, description="time of the first read after programming, s")
    t_last: float = Field(1e4, gt=0, le=MAX_WAIT, description="time of the last read, s")
    points_per_decade: int = Field(4, ge=1, le=MAX_POINTS_PER_DECADE, description="read times per decade")
    reads_per_point: ReadsPerPoint = 1
    min_window: MinWindow = None
    drift_time_constant: float = Field(1.0, gt=0, description="t0 of the law ln(1 + t / t0) the figures use, s")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.t_last < self.t_first:
            raise ValueError(f"t_last {self.t_last:g} s is before t_first {self.t_first:g} s")
        return self


@dataclass(frozen=True)
class Retention:
    time: FloatArray
    g: FloatArray
    cells: IntArray
    drift_slope: float
    """S per ln(s), of the mean conductance of the working cells"""
    working: BoolArray | None = None
    """per cell: drifts (switched when programmed); every cell when nothing was programmed"""
    figures: dict[str, Figure] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def read_times(t_first: float, t_last: float, points_per_decade: int) -> FloatArray:
    """Log-spaced times from ``t_first`` to ``t_last`` (both included)."""
    decades = math.log10(t_last / t_first)
    count = max(1, math.ceil(decades * points_per_decade - 1e-9)) + 1
    return np.unique(np.geomspace(t_first, t_last, count))


def log_time_stamp(times: list[float], t0: float) -> float:
    """The time at which the drift law ``ln(1 + t / t0)`` takes its mean over reads taken at
    ``times``: what their average is the conductance of. On a slow link 64 map reads can take
    10 s, so the early points are averages over spans as long as the times themselves; their
    midpoint would put them late on the log scale and bias the slope."""
    x = np.log1p(np.maximum(np.asarray(times, dtype=np.float64), 0.0) / t0)
    return float(t0 * np.expm1(x.mean()))


def fit_log_drift(time: npt.ArrayLike, g: npt.ArrayLike) -> tuple[float, float]:
    """``(slope, intercept)`` of the mean conductance (over cells) against ln(t), t > 0 only.

    NaN when fewer than two distinct positive times are available.
    """
    t = np.asarray(time, dtype=np.float64).ravel()
    mean = np.nanmean(np.asarray(g, dtype=np.float64).reshape(len(t), -1), axis=1)
    usable = (t > 0) & np.isfinite(mean)
    if np.unique(t[usable]).size < 2:
        return math.nan, math.nan
    slope, intercept = np.polyfit(np.log(t[usable]), mean[usable], 1)
    return float(slope), float(intercept)


def drift_figures(time: FloatArray, g: FloatArray, t0: float) -> dict[str, Figure]:
    """Per-cell fits of ``G = a + nu ln(1 + t / t0)`` (``g`` is (times, cells)): the mean of ``nu``
    and its spread across cells with each fit's own noise removed."""
    x = np.log1p(np.asarray(time, dtype=np.float64) / t0)
    cells = g.shape[1]
    if x.size < 3 or cells < 2:
        return {}
    dx = x - x.mean()
    sxx = float(dx @ dx)
    nu = dx @ (g - g.mean(axis=0)) / sxx
    fitted = g.mean(axis=0) + np.outer(dx, nu)
    s2 = ((g - fitted) ** 2).sum(axis=0) / (x.size - 2)
    noise = float(np.mean(s2 / sxx))
    var = float(np.var(nu, ddof=1))
    spread = math.sqrt(max(var - noise, 0.0))
    # The sample variance of nu scatters by var sqrt(2 / (n - 1)), fit noise included: when the
    # noise is most of var, the spread is known far less well than sqrt(var / 2n) would say. The
    # noise estimate scatters by its cells' spread over sqrt(n); as in population_fit.
    var_sigma = math.hypot(var * math.sqrt(2 / (cells - 1)), float(np.std(s2 / sxx, ddof=1)) / math.sqrt(cells))
    spread_sigma = spread_uncertainty(spread, var_sigma)
    return {
        "drift_mean": Figure(float(nu.mean()), math.sqrt(var / cells), "S"),
        "drift_spread": Figure(spread, spread_sigma, "S"),
    }


def _programming(opts: RetentionOptions) -> tuple[PulseKind, float, float] | None:
    """The pulse that programs the cells before the first read (kind, amplitude, gate), if any."""
    return {
        "set": (PulseKind.SET, opts.set_amplitude, opts.set_gate),
        "reset": (PulseKind.RESET, opts.reset_amplitude, opts.reset_gate),
    }.get(opts.program)


def check_retention(board: Board, opts: RetentionOptions) -> Selection:
    """Every limit the run meets, checked before anything is sent; the cells it works on."""
    selection = select_cells(board, opts)
    check_read_voltage(board, opts.v_read)
    programming = _programming(opts)
    if programming is not None:
        check_pulse(board, selection, *programming, opts.width)
    if opts.program == "set":  # a RESET first, from a known state
        check_pulse(board, selection, PulseKind.RESET, opts.reset_amplitude, opts.reset_gate, opts.width)
    return selection


def measure_retention(board: Board, recorder: Recorder, **options: Any) -> Retention:
    """Program (optionally), then read every selected cell at log-spaced board-clock times."""
    opts = RetentionOptions.model_validate(options)
    selection = check_retention(board, opts)
    programming = _programming(opts)
    reset_first = opts.program == "set"
    times = read_times(opts.t_first, opts.t_last, opts.points_per_decade)
    write_cells(recorder, GROUP, selection)
    start_group(recorder, GROUP, "retention", opts)
    journal = Journal(recorder, GROUP)  # a step is the read at one time
    time_series = journal.series("time", unit="s")
    g_series = journal.series("g", unit="S")
    stamps: list[float] = [float(t) for t in time_series.earlier]
    reads: list[FloatArray] = list(g_series.earlier)
    g_reset: FloatArray | None = None
    if journal.done:  # a killed run, resumed: its clock runs on from the same start
        if isinstance(recorder, StoredRecorder):
            g_reset = recorder.read(f"{GROUP}/g_reset")
        t0 = float(journal.attrs["t0"])
        now = board.clock() - t0
        if now < stamps[-1]:
            raise ValueError(f"the board's clock ({now:g} s after the start) is behind the last read "
                             f"({stamps[-1]:g} s): it was restarted, and the read times cannot go on")  # fmt: skip
        recorder.progress(journal.done, len(times))
    else:
        if reset_first:  # from a known state: every working cell is reprogrammed by the SET
            pulse(board, selection, PulseKind.RESET, opts.reset_amplitude, opts.reset_gate, opts.width)
            g_reset = read(board, selection, opts.v_read)
            recorder.write(f"{GROUP}/g_reset", g_reset, unit="S")
        if programming is not None:
            pulse(board, selection, *programming, opts.width)
        t0 = board.clock()
        recorder.set_attrs(GROUP, t0=t0)
        now = 0.0
    for target in times[journal.done :]:
        if target > now:
            board.idle_for(min(float(target - now), MAX_WAIT))
        g_reads, middles = [], []
        for _ in range(opts.reads_per_point):
            before = board.clock()
            g_reads.append(read(board, selection, opts.v_read))
            after = board.clock()
            middles.append((before + after) / 2 - t0)
        g = np.mean(g_reads, axis=0)
        now = after - t0
        stamp = log_time_stamp(middles, opts.drift_time_constant)
        time_series.append(np.float64(stamp))
        g_series.append(g)
        stamps.append(stamp)
        reads.append(g)
        journal.step_done()
        recorder.progress(1, len(times), t=f"{stamp:.3g} s", g_mean_uS=round(float(g.mean()) * 1e6, 2))
    g_all = np.array(reads)
    working = np.ones(selection.count, dtype=bool)
    if reset_first and g_reset is not None and len(reads):
        window = g_all[0] - np.asarray(g_reset)
        min_window = opts.min_window if opts.min_window is not None else auto_min_window(window, g_all[0])
        working = window >= min_window
    recorder.write(f"{GROUP}/working", working)
    slope, intercept = fit_log_drift(stamps, g_all[:, working] if len(reads) else g_all)
    recorder.set_attrs(GROUP, drift_slope=slope, drift_intercept=intercept, drift_unit="S per ln(s)")
    figures = drift_figures(np.array(stamps), g_all[:, working], opts.drift_time_constant) if len(reads) else {}
    record_figures(recorder, GROUP, figures)
    notes = (f"drift fitted on {int(working.sum())} working cells of {working.size}",)
    return Retention(np.array(stamps), g_all, selection.cells, slope, working, figures, notes)
