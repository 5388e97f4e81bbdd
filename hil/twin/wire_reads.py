"""Map reads as the devices' own conductances: the wires' series resistance taken out.

A map read sees each cell alone behind the row and column wire between its driver and its TIA:
``1 / G_read = 1 / G + r * segments`` (``protocols.characterization.wire_resistance``). The
deficit grows as ``G^2``: 0.6 % at 170 uS and 1.5 % at 410 uS on a 128 x 64 array of 0.35-ohm
segments, so a line fitted to the gate calibration's reads has a slope 2 % below the devices'
(and the write noise at the write-noise step's level and the stuck-high level read 1.6 % and 3 %
low). A twin emulates the same wires, so it must be given the devices' values: its own reads then
lose what the chip's lost. Taken as read, every such figure would be lowered twice.

The correction needs the fitted segment resistance (the wire-resistance step) and the cells'
positions on the array (whole-array or offset regions alike). Cells are taken as ohmic at the
read voltage, as the wire-resistance fit takes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from drivers import InvalidRequest
from hil.storage import RunData
from protocols.calibration import population_fit
from protocols.characterization.figures import Figure, mean_of, read_figures
from protocols.characterization.wire_resistance import series_segments
from protocols.characterization.write_noise import WriteNoiseOptions, noise_figures
from protocols.characterization.yield_map import CellClass

FloatArray = npt.NDArray[np.float64]


def device_conductance(
    g_read: npt.ArrayLike, r_segment: float, array_shape: tuple[int, int], row0: int = 0, col0: int = 0
) -> FloatArray:
    """The device conductances behind map reads ``(..., rows, cols)`` of the region at
    ``(row0, col0)`` of an array of ``array_shape``, S.

    A read at or above what the wire alone conducts (``1 / (r * segments)``, never a device's) or
    at or below zero is left as read: no device value explains it.
    """
    g = np.asarray(g_read, dtype=np.float64)
    if r_segment <= 0:
        return g.copy()
    rows, cols = g.shape[-2:]
    series = r_segment * series_segments(*array_shape)[row0 : row0 + rows, col0 : col0 + cols]
    if series.shape != (rows, cols):
        raise ValueError(f"a {rows} x {cols} region at ({row0}, {col0}) does not fit a {array_shape} array")
    return _behind(g, series)


def device_conductance_of_cells(
    g_read: npt.ArrayLike, r_segment: float, array_shape: tuple[int, int], cells: npt.NDArray[np.int64]
) -> FloatArray:
    """The device conductances behind reads ``(..., n)`` of the listed cells ``(n, 2)`` (row, col), S."""
    g = np.asarray(g_read, dtype=np.float64)
    if r_segment <= 0:
        return g.copy()
    series = r_segment * series_segments(*array_shape)[cells[:, 0], cells[:, 1]]
    return _behind(g, series)


def _behind(g: FloatArray, series: FloatArray) -> FloatArray:
    """``g`` read through ``series`` ohm, as the device's conductance (a read no device explains: as read)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        corrected = g / (1.0 - g * series)
    explained = (g > 0) & (g * series < 1.0)
    return np.asarray(np.where(explained, corrected, g), dtype=np.float64)


@dataclass(frozen=True)
class Refit:
    """A parameter's figure fitted again on wire-corrected reads."""

    parameter: str
    procedure: str
    figure: str
    value: Figure


def _region_reads(run: RunData, group: str, name: str) -> tuple[FloatArray, int, int] | None:
    array = run.datasets.get(f"{group}/{name}")
    if array is None:
        return None
    attrs = run.attrs.get(group, {})
    return np.asarray(array, dtype=np.float64), int(attrs.get("row0", 0)), int(attrs.get("col0", 0))


def corrected_reads(
    run: RunData, group: str, name: str, r_segment: float, array_shape: tuple[int, int]
) -> FloatArray | None:
    """The dataset ``group/name`` of map reads as device conductances (None if absent)."""
    found = _region_reads(run, group, name)
    if found is None:
        return None
    reads, row0, col0 = found
    return device_conductance(reads, r_segment, array_shape, row0, col0)


def refit_on_devices(runs: Mapping[str, RunData], r_segment: float, array_shape: tuple[int, int]) -> list[Refit]:
    """The figures that map reads of high conductances bias, fitted again on the devices' values:
    the gate calibration's k and c (with their spreads) over its window, the write noise, and the
    stuck-high level."""
    refits: list[Refit] = []
    calibration = runs.get("gate-calibration")
    if calibration is not None:
        refits += _gate_refit(calibration, r_segment, array_shape)
    noise_run = runs.get("write-noise")
    if noise_run is not None:
        g_reset = corrected_reads(noise_run, "write_noise", "g_reset", r_segment, array_shape)
        g_set = corrected_reads(noise_run, "write_noise", "g_set", r_segment, array_shape)
        options = noise_run.options("write_noise")
        if g_reset is not None and g_set is not None:
            # The option as the run had it; null (the default): the chip's own, from these reads.
            min_window = options.get("min_window", WriteNoiseOptions().min_window)
            _, figures = noise_figures(g_reset, g_set, None if min_window is None else float(min_window))
            if "write_noise" in figures:
                refits.append(Refit("write_noise", "write-noise", "write_noise", figures["write_noise"]))
    yield_run = runs.get("yield-map")
    if yield_run is not None:
        classes = yield_run.datasets.get("yield/class")
        g_set = corrected_reads(yield_run, "yield", "g_set", r_segment, array_shape)
        if classes is not None and g_set is not None:
            stuck_high = np.asarray(classes) == CellClass.STUCK_HIGH
            if stuck_high.any():
                refits.append(Refit("g_stuck_high", "yield-map", "g_stuck_high", mean_of(g_set[stuck_high], "S")))
    return refits


def gates_in_window(run: RunData) -> tuple[FloatArray, npt.NDArray[np.bool_]] | None:
    """A gate calibration's gate voltages and which of them lie in the window it found (where its
    lines are fitted); ``None`` without a window or with fewer than three gates in it."""
    v = run.datasets.get("calibration/v_gate")
    figures = read_figures(run.attrs.get("calibration", {}))
    if v is None or "v_window_low" not in figures:
        return None
    v = np.asarray(v, dtype=np.float64)
    inside = (v >= figures["v_window_low"].value - 1e-9) & (v <= figures["v_window_high"].value + 1e-9)
    return (v, inside) if inside.sum() >= 3 else None


def _gate_refit(run: RunData, r_segment: float, array_shape: tuple[int, int]) -> list[Refit]:
    g = corrected_reads(run, "calibration", "g", r_segment, array_shape)
    responsive = run.datasets.get("calibration/responsive")
    window = gates_in_window(run)
    if g is None or responsive is None or window is None:
        return []
    v, inside = window
    try:
        fit = population_fit(v[inside], g[inside], np.asarray(responsive, dtype=bool))
    except InvalidRequest:  # too few responsive cells: the procedure's own figures stand
        return []
    return [
        Refit("set_slope", "gate-calibration", "k", Figure(fit.k_mean, fit.k_mean_sigma, "S/V")),
        Refit("set_intercept", "gate-calibration", "c", Figure(fit.c_mean, fit.c_mean_sigma, "S")),
        Refit("set_slope_spread", "gate-calibration", "k_spread_relative",
              Figure(fit.k_spread / fit.k_mean, fit.k_spread_sigma / fit.k_mean)),
        Refit("set_intercept_spread_abs", "gate-calibration", "c_spread",
              Figure(fit.c_spread, fit.c_spread_sigma, "S")),
    ]  # fmt: skip
