"""SET conductance vs gate voltage: per-cell calibration of ``G = k * v_gate + c`` (Li 2018).

In a 1T1R cell the transistor's gate voltage sets the SET compliance current and so the
conductance a SET pulse leaves behind. :func:`calibrate_gate` measures that relation for every
cell at once (one RESET batch, one SET batch and one map read per gate voltage), fits a line per
cell, and returns a :class:`GateCalibration`; :func:`conductance_to_gate` inverts it for the
gate-coded programming and the trainer's updates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from drivers import Board, InvalidRequest, LimitError, PulseBatch, PulseKind, Region
from protocols.recording import Recorder

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# A cell whose fitted slope is below this fraction of the array's median slope does not respond
# to the gate (stuck low or shorted): its fit is not used to map targets to gates.
RESPONSIVE_SLOPE_FRACTION = 0.2


@dataclass(frozen=True)
class GateCalibration:
    """Per-cell fit of the SET conductance against the gate voltage, ``G = k * v_gate + c``.

    Every field is a plain number, tuple or numpy array, so :meth:`to_dict` /
    :meth:`from_dict` round-trip it through HDF5, ``.npz`` or JSON-like storage.
    """

    k: FloatArray
    """slope per cell, S/V"""
    c: FloatArray
    """intercept per cell, S"""
    residual: FloatArray
    """root-mean-square fit residual per cell, S"""
    v_gate_window: tuple[float, float]
    """lowest and highest gate voltage measured, V: the fit is trusted inside this window"""
    mask: BoolArray
    """cells that were calibrated"""
    origin: tuple[int, int] = (0, 0)
    """array coordinates (row, col) of the maps' first element"""
    v_gates: FloatArray = field(default_factory=lambda: np.zeros(0))
    """the gate voltages measured, V, ascending"""
    g_measured: FloatArray = field(default_factory=lambda: np.zeros((0, 0, 0)))
    """conductance read after the SET at each gate voltage, S, ``(len(v_gates), rows, cols)``"""

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.k.shape[0]), int(self.k.shape[1]))

    @property
    def region(self) -> Region:
        return Region(self.origin[0], self.origin[1], *self.shape)

    @property
    def responsive(self) -> BoolArray:
        """Calibrated cells whose conductance follows the gate (slope at least a fifth of the median)."""
        usable = self.mask & np.isfinite(self.k) & np.isfinite(self.c)
        if not usable.any():
            return usable
        median = float(np.median(self.k[usable]))
        if median <= 0:
            return np.zeros_like(usable)
        return np.asarray(usable & (self.k >= RESPONSIVE_SLOPE_FRACTION * median))

    def effective_fit(self) -> tuple[FloatArray, FloatArray]:
        """``(k, c)`` maps where unresponsive or uncalibrated cells take the responsive cells' median."""
        responsive = self.responsive
        if not responsive.any():
            raise InvalidRequest("the calibration has no responsive cell: no cell's conductance followed the gate")
        k = np.where(responsive, self.k, np.median(self.k[responsive]))
        c = np.where(responsive, self.c, np.median(self.c[responsive]))
        return k, c

    def conductance_at(self, v_gate: npt.ArrayLike) -> FloatArray:
        """Conductance the fit predicts after a SET at ``v_gate`` (scalar or map), S."""
        k, c = self.effective_fit()
        return np.asarray(k * np.asarray(v_gate, dtype=np.float64) + c)

    def reach(self) -> tuple[FloatArray, FloatArray]:
        """Lowest and highest conductance each cell reaches inside the gate window, S."""
        low, high = self.conductance_at(self.v_gate_window[0]), self.conductance_at(self.v_gate_window[1])
        return np.minimum(low, high), np.maximum(low, high)

    def to_dict(self) -> dict[str, Any]:
        """Plain arrays and numbers, for storage."""
        return {
            "k": self.k, "c": self.c, "residual": self.residual, "mask": self.mask,
            "v_gate_window": np.array(self.v_gate_window), "origin": np.array(self.origin),
            "v_gates": self.v_gates, "g_measured": self.g_measured,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateCalibration:
        """The inverse of :meth:`to_dict` (accepts anything indexable by those names, e.g. an ``.npz``)."""
        window = np.asarray(data["v_gate_window"], dtype=np.float64)
        origin = np.asarray(data.get("origin", (0, 0)), dtype=np.int64)
        return cls(
            k=np.asarray(data["k"], dtype=np.float64),
            c=np.asarray(data["c"], dtype=np.float64),
            residual=np.asarray(data["residual"], dtype=np.float64),
            v_gate_window=(float(window[0]), float(window[1])),
            mask=np.asarray(data["mask"], dtype=bool),
            origin=(int(origin[0]), int(origin[1])),
            v_gates=np.asarray(data.get("v_gates", np.zeros(0)), dtype=np.float64),
            g_measured=np.asarray(data.get("g_measured", np.zeros((0, 0, 0))), dtype=np.float64),
        )


def fit_lines(v_gates: FloatArray, g_maps: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Least-squares ``g = k * v + c`` for every cell at once: ``(k, c, rms residual)`` maps.

    ``v_gates`` is ``(n,)``; ``g_maps`` is ``(n, rows, cols)``.
    """
    v = np.asarray(v_gates, dtype=np.float64)
    v_mean = v.mean()
    dv = v - v_mean
    sxx = float(dv @ dv)
    if sxx == 0:
        raise InvalidRequest("a line fit needs at least two different gate voltages")
    g_mean = g_maps.mean(axis=0)
    k = np.tensordot(dv, g_maps - g_mean, axes=1) / sxx
    c = g_mean - k * v_mean
    predicted = k[None] * v[:, None, None] + c[None]
    residual = np.sqrt(np.mean((g_maps - predicted) ** 2, axis=0))
    return k, c, residual


@dataclass(frozen=True)
class GateWindow:
    """Where the SET conductance follows the gate linearly, found on the population's median curve.

    Below the transistor's turn-on a SET changes nothing (the curve stays at the RESET level);
    above saturation the compliance stops rising (a plateau). Between them the curve is the line
    ``G = k v_gate + c`` the gate-coded scheme relies on.
    """

    first: int
    """index of the first gate voltage of the linear part"""
    last: int
    """index of the last gate voltage of the linear part (inclusive)"""
    v_turn_on: float
    """estimated transistor turn-on, V: midway between the last off and the first on gate; NaN when
    the first gate measured is already on"""
    v_saturation: float
    """gate where the median line meets the plateau, V; NaN when no plateau was measured"""


class _SegmentSums:
    """Prefix sums of a curve, so any segment's flat or line least-squares misfit costs O(1)."""

    def __init__(self, v: FloatArray, g: FloatArray) -> None:
        def prefix(values: FloatArray) -> FloatArray:
            return np.concatenate([[0.0], np.cumsum(values)])

        self.n, self.v, self.g = prefix(np.ones_like(v)), prefix(v), prefix(g)
        self.vv, self.gg, self.vg = prefix(v * v), prefix(g * g), prefix(v * g)

    def _sums(self, a: int, b: int) -> tuple[float, ...]:
        return tuple(float(s[b] - s[a]) for s in (self.n, self.v, self.g, self.vv, self.gg, self.vg))

    def flat(self, a: int, b: int) -> float:
        """Misfit of points ``a .. b-1`` to their mean (0 for an empty segment)."""
        n, _, g, _, gg, _ = self._sums(a, b)
        return gg - g * g / n if n else 0.0

    def line(self, a: int, b: int) -> tuple[float, float, float]:
        """``(misfit, slope, intercept)`` of the least-squares line through points ``a .. b-1``."""
        n, v, g, vv, gg, vg = self._sums(a, b)
        sxx, sxy, syy = vv - v * v / n, vg - v * g / n, gg - g * g / n
        slope = sxy / sxx
        return max(syy - slope * sxy, 0.0), slope, (g - slope * v) / n


def find_gate_window(v_gates: FloatArray, median_curve: FloatArray) -> GateWindow:
    """The linear part of a flat-line-flat curve, by least squares over every pair of breakpoints.

    Each flat part (off below turn-on, plateau above saturation) is empty or holds at least two
    points (one point alone is always fitted exactly, so it proves nothing); the line holds at
    least three. A curve that is linear throughout keeps every point.
    """
    v, g = np.asarray(v_gates, dtype=np.float64), np.asarray(median_curve, dtype=np.float64)
    n = v.size
    sums = _SegmentSums(v, g)
    first, last = 0, n - 1
    best = sums.line(0, n)[0] * (1 + 1e-9) + 1e-30  # ties (noise-free data) go to the longest line
    for a in [0, *range(2, n - 2)]:
        for b in range(a + 2, n):
            if n - 1 - b == 1 or (a, b) == (0, n - 1):
                continue
            ssr = sums.flat(0, a) + sums.line(a, b + 1)[0] + sums.flat(b + 1, n)
            if ssr < best:
                best, first, last = ssr, a, b
    _, slope, intercept = sums.line(first, last + 1)
    v_on = float((v[first - 1] + v[first]) / 2) if first > 0 else float("nan")
    v_sat = float("nan")
    if last < n - 1 and slope > 0:
        v_sat = float((g[last + 1 :].mean() - intercept) / slope)
    return GateWindow(first, last, v_on, v_sat)


@dataclass(frozen=True)
class PopulationFit:
    """Population figures of a gate calibration: means and device-to-device spreads of ``k`` and
    ``c`` over the responsive cells, the spreads with the fit noise removed."""

    k_mean: float
    k_mean_sigma: float
    k_spread: float
    """device-to-device sigma of k, S/V (fit noise removed)"""
    k_spread_sigma: float
    c_mean: float
    c_mean_sigma: float
    c_spread: float
    """device-to-device sigma of c, S (fit noise removed)"""
    c_spread_sigma: float
    cells: int


def spread_uncertainty(spread: float, var_sigma: float) -> float:
    """Standard uncertainty of a spread ``sqrt(var - noise)`` whose ``var - noise`` is known to
    ``var_sigma`` (delta method: ``var_sigma / (2 spread)``).

    Near zero the delta method diverges while the spread itself cannot be known better than
    ``sqrt(var_sigma)`` (the scale of ``sqrt`` of a quantity scattering by ``var_sigma``): the
    smaller of the two, which meet at ``spread = sqrt(var_sigma) / 2``, so a spread fitted as 0
    gets a finite bound and the uncertainty is continuous in the spread.
    """
    if not var_sigma > 0:
        return 0.0
    bound = float(np.sqrt(var_sigma))
    return bound if spread <= bound / 2 else var_sigma / (2 * spread)


def population_fit(v_gates: FloatArray, g_maps: FloatArray, cells: BoolArray) -> PopulationFit:
    """Means and spreads of the per-cell line fits over ``cells`` (``g_maps`` over the window only).

    Each cell's fitted k and c carry the fit's own noise, ``s^2 / Sxx`` and ``s^2 (1/n + v^2/Sxx)``
    with ``s^2`` the cell's residual variance; their mean is subtracted from the observed
    variance across cells, leaving the devices' own spread. The spread's uncertainty counts the
    scatter of both: the sample variance's, ``var sqrt(2 / (cells - 1))`` (fit noise included,
    so where the noise is most of ``var`` the spread is known far less well than
    ``spread / sqrt(2 cells)``), and the noise estimate's (its cells' scatter over
    ``sqrt(cells)``); see :func:`spread_uncertainty`.
    """
    v = np.asarray(v_gates, dtype=np.float64)
    n = v.size
    k, c, residual = fit_lines(v, g_maps)
    cells = cells & typical_cells(g_maps, cells)
    k_cells, c_cells = k[cells], c[cells]
    count = int(cells.sum())
    if count < 2 or n < 3:
        raise InvalidRequest(f"a population fit needs two responsive cells and three gates ({count}, {n})")
    s2 = (residual[cells] ** 2) * n / (n - 2)
    sxx = float(((v - v.mean()) ** 2).sum())
    figures: list[float] = []
    for values, noise_per_cell in ((k_cells, s2 / sxx), (c_cells, s2 * (1 / n + v.mean() ** 2 / sxx))):
        var, noise = float(np.var(values, ddof=1)), float(np.mean(noise_per_cell))
        spread = float(np.sqrt(max(var - noise, 0.0)))
        var_sigma = float(np.hypot(var * np.sqrt(2 / (count - 1)), np.std(noise_per_cell, ddof=1) / np.sqrt(count)))
        figures += [float(values.mean()), float(np.sqrt(var / count)), spread, spread_uncertainty(spread, var_sigma)]
    k_mean, k_mean_sigma, k_spread, k_spread_sigma, c_mean, c_mean_sigma, c_spread, c_spread_sigma = figures
    return PopulationFit(
        k_mean=k_mean, k_mean_sigma=k_mean_sigma, k_spread=k_spread, k_spread_sigma=k_spread_sigma,
        c_mean=c_mean, c_mean_sigma=c_mean_sigma, c_spread=c_spread, c_spread_sigma=c_spread_sigma,
        cells=count,
    )  # fmt: skip


def typical_cells(g_maps: FloatArray, cells: BoolArray, tolerance: float = 8.0) -> BoolArray:
    """``cells`` whose mean level lies within ``tolerance`` robust sigmas (MAD) of the median.

    A shorted cell can pass the slope test on read noise alone when the population's slope is
    small; its level, far above any working cell's, gives it away.
    """
    level = g_maps.mean(axis=0)
    values = level[cells]
    if values.size < 3:
        return cells
    centre = float(np.median(values))
    sigma = 1.4826 * float(np.median(np.abs(values - centre)))
    if sigma <= 0:
        return cells
    return np.asarray(cells & (np.abs(level - centre) <= tolerance * sigma))


def calibrate_gate(
    board: Board,
    v_gates: Sequence[float] | npt.ArrayLike,
    amplitude: float = 2.5,
    width: float = 1e-6,
    v_reset: float = 1.8,
    v_gate_reset: float = 5.0,
    mask: npt.ArrayLike | None = None,
    region: Region | None = None,
    v_read: float = 0.2,
    recorder: Recorder | None = None,
    repeats: int = 1,
) -> GateCalibration:
    """Measure every masked cell's SET conductance at each gate voltage and fit ``G = k v_gate + c``.

    For each gate voltage, in ascending order: RESET every masked cell (``v_reset`` V on the
    column, gate ``v_gate_reset`` V, so the cell starts below anything the SET reaches, since SET
    only raises G), SET every masked cell at that gate (``amplitude`` V, ``width`` s), and read
    the map: three round trips per gate voltage, whatever the number of cells. Every pulse is
    checked against the board's limits before the first is sent.

    Args:
        board: the open board.
        v_gates: gate voltages to measure, V; at least two, strictly ascending.
        amplitude: SET amplitude on the row line, V.
        width: SET and RESET pulse width, s.
        v_reset: RESET amplitude on the column line, V.
        v_gate_reset: gate voltage during RESET, V (transistor fully on).
        mask: cells to calibrate, ``region``-shaped (default: all).
        region: part of the array to calibrate (default: all of it).
        v_read: read voltage, V.
        recorder: receives ``calibration/v_gate`` and ``calibration/g`` as rows per gate voltage,
            then the ``calibration/k``, ``c`` and ``residual`` maps; and progress per gate voltage.
        repeats: RESET/SET/read cycles per gate voltage, averaged (the write noise in each
            cell's fit shrinks by the square root).
    """
    if repeats < 1:
        raise InvalidRequest(f"repeats = {repeats}; expected at least 1")
    region = region if region is not None else Region(0, 0, *board.shape)
    gates = np.asarray(v_gates, dtype=np.float64).ravel()
    if gates.size < 2:
        raise InvalidRequest(f"v_gates has {gates.size} value(s); a line fit needs at least two")
    if not np.isfinite(gates).all():
        i = int(np.argmax(~np.isfinite(gates)))
        raise InvalidRequest(f"v_gates[{i}] = {gates[i]} is not finite")
    if (np.diff(gates) <= 0).any():
        i = int(np.argmax(np.diff(gates) <= 0)) + 1
        raise InvalidRequest(
            f"v_gates must be strictly ascending: v_gates[{i}] = {gates[i]:g} V follows {gates[i - 1]:g} V"
        )
    selected = _region_mask(mask, region)
    origin = (region.row0, region.col0)
    # Dry-check every batch before the first pulse: a bad gate voltage halfway refuses the whole run.
    reset_batch = board.check_pulses(PulseKind.RESET, v_reset, v_gate_reset, width, selected, origin)
    set_batches: list[PulseBatch] = [
        board.check_pulses(PulseKind.SET, amplitude, float(v), width, selected, origin) for v in gates
    ]
    maps = np.empty((gates.size, *region.shape))
    if recorder is not None:
        recorder.progress(0, total=int(gates.size), step="gate calibration")
    for i, (v_gate, set_batch) in enumerate(zip(gates, set_batches, strict=True)):
        reads = []
        for _ in range(repeats):
            board.apply_pulses(reset_batch)
            board.apply_pulses(set_batch)
            reads.append(board.read_map(v_read, region))
        maps[i] = np.mean(reads, axis=0)
        if recorder is not None:
            recorder.append("calibration/v_gate", np.array(v_gate))
            recorder.append("calibration/g", maps[i])
            if i == 0:  # the group exists now
                recorder.set_attrs("calibration", amplitude=amplitude, width=width, v_reset=v_reset,
                                   v_gate_reset=v_gate_reset, v_read=v_read, row0=region.row0,
                                   col0=region.col0)  # fmt: skip
            recorder.progress(1, v_gate=float(v_gate))
    k, c, residual = fit_lines(gates, maps)
    unselected = ~selected
    for plane in (k, c, residual):
        plane[unselected] = np.nan
    calibration = GateCalibration(
        k=k, c=c, residual=residual, v_gate_window=(float(gates[0]), float(gates[-1])), mask=selected,
        origin=origin, v_gates=gates, g_measured=maps,
    )  # fmt: skip
    window = gate_window_of(calibration)
    if window is not None and (window.first, window.last) != (0, gates.size - 1):
        # Fit only the linear part: points below turn-on or on the plateau bias k and c.
        inside = slice(window.first, window.last + 1)
        k, c, residual = fit_lines(gates[inside], maps[inside])
        for plane in (k, c, residual):
            plane[unselected] = np.nan
        calibration = replace(
            calibration, k=k, c=c, residual=residual,
            v_gate_window=(float(gates[window.first]), float(gates[window.last])),
        )  # fmt: skip
    if recorder is not None:
        recorder.write("calibration/k", k, unit="S/V")
        recorder.write("calibration/c", c, unit="S")
        recorder.write("calibration/residual", residual, unit="S")
        recorder.write("calibration/responsive", calibration.responsive)
    return calibration


def gate_window_of(calibration: GateCalibration) -> GateWindow | None:
    """The linear window of a calibration's measured curves (None without a responsive cell or
    with fewer than three gates). Uses the median over the cells that respond to the gate."""
    responsive = calibration.responsive
    if calibration.v_gates.size < 3 or not responsive.any():
        return None
    median_curve = np.median(calibration.g_measured[:, responsive], axis=1)
    return find_gate_window(calibration.v_gates, median_curve)


def conductance_to_gate(
    g_target: npt.ArrayLike, calibration: GateCalibration, clip: bool = False, mask: npt.ArrayLike | None = None
) -> FloatArray:
    """The gate voltage map that SETs each cell to ``g_target`` (S), from the calibration's fit.

    ``g_target`` has the calibration's shape (a scalar broadcasts). Cells outside ``mask``
    (default: the calibrated cells) get NaN. Unresponsive cells use the array's median fit, so
    they still get a sensible gate. A target outside what the gate window reaches at a cell is an
    error naming the cell, its target and its reach, unless ``clip`` (then the gate is clipped to
    the window).
    """
    target = np.broadcast_to(np.asarray(g_target, dtype=np.float64), calibration.shape)
    selected = calibration.mask if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool), calibration.shape)
    bad = selected & ~np.isfinite(target)
    if bad.any():
        r, c = _first(bad)
        row, col = r + calibration.origin[0], c + calibration.origin[1]
        raise InvalidRequest(f"g_target[{row}, {col}] = {target[r, c]} is not finite")
    k, c_map = calibration.effective_fit()
    v_low, v_high = calibration.v_gate_window
    with np.errstate(invalid="ignore", divide="ignore"):
        v_gate = (target - c_map) / k
    outside = selected & ((v_gate < v_low) | (v_gate > v_high) | ~np.isfinite(v_gate))
    if outside.any() and not clip:
        r, c = _first(outside)
        g_low, g_high = calibration.reach()
        raise LimitError(
            f"g_target[{r + calibration.origin[0]}, {c + calibration.origin[1]}] (reach of the gate window "
            f"{v_low:g}-{v_high:g} V at that cell; {int(outside.sum())} cell(s) outside, pass clip=True to clip)",
            float(target[r, c]), float(g_low[r, c]), float(g_high[r, c]), "S",
        )  # fmt: skip
    v_gate = np.clip(np.nan_to_num(v_gate, nan=v_low), v_low, v_high)
    return np.where(selected, v_gate, np.nan)


def _region_mask(mask: npt.ArrayLike | None, region: Region) -> BoolArray:
    if mask is None:
        return np.ones(region.shape, dtype=bool)
    selected = np.asarray(mask, dtype=bool)
    if selected.shape != region.shape:
        raise InvalidRequest(f"mask has shape {selected.shape}; expected {region.shape} (the region's shape)")
    return selected


def _first(where: BoolArray) -> tuple[int, int]:
    r, c = np.argwhere(where)[0]
    return int(r), int(c)
