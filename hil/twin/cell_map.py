"""A twin's cell map: the chip's own cells, where the characterization saw them one by one.

A twin of the population only (fractions and spreads) predicts any chip with those figures; the
chip at hand has its defects in particular places and its devices' own k and c, and a network
placed on it meets those. The map (``.npz`` beside the twin file, loaded by the emulator through
``DeviceParameters.cell_map``) carries:

- defect positions: stuck low and stuck high from the yield map's classes (its "unformed" cells
  that forming tried and could not form counted stuck low, :mod:`hil.twin.defects`), virgin
  cells from the forming step's ``unformed_before`` that its ramp formed (and any cell the yield
  map still found unformed);
- stuck levels: the mean of the yield map's three reads of each stuck cell;
- ``k`` and ``c`` of each responsive cell, fitted on the gate calibration's linear window and
  shrunk toward the population mean by the share of their scatter that is the device's own (the
  fit's noise taken out, as in the population figures), so a twin cell is the best estimate of
  the chip's cell rather than that cell plus the fit's noise.

A map needs whole-array runs (the suite's); a procedure that covered part of the array
contributes nothing to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt

from hil.storage import RunData, RunFileError
from hil.twin.defects import formed_by_ramp, reconciled_classes
from hil.twin.wire_reads import device_conductance, gates_in_window
from protocols.calibration import fit_lines, typical_cells
from protocols.characterization.yield_map import CellClass

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
CellMap = dict[str, npt.NDArray[np.generic]]
MAP_PROCEDURES = ("forming", "yield-map", "gate-calibration")


def _whole_array(run: RunData, group: str, shape: tuple[int, int], name: str) -> npt.NDArray[np.generic] | None:
    """``group/name`` if its run covered the whole array from (0, 0)."""
    attrs = run.attrs.get(group, {})
    array = run.datasets.get(f"{group}/{name}")
    if array is None or int(attrs.get("row0", 0)) != 0 or int(attrs.get("col0", 0)) != 0:
        return None
    return array if array.shape[-2:] == shape else None


def defect_map(runs: Mapping[str, RunData], shape: tuple[int, int], r_segment: float = 0.0) -> CellMap:
    """Stuck-low, stuck-high and virgin cells, and the stuck cells' levels (the reads less the
    wires' series resistance ``r_segment`` per segment: hil/twin/wire_reads.py)."""
    cells: CellMap = {}
    yield_run = runs.get("yield-map")
    classes = _whole_array(yield_run, "yield", shape, "class") if yield_run else None
    reconciled = reconciled_classes(runs)
    if classes is not None and reconciled is not None:
        classes = reconciled[0]
    if yield_run is not None and classes is not None:
        stuck_low, stuck_high = classes == CellClass.STUCK_LOW, classes == CellClass.STUCK_HIGH
        cells["stuck_low"], cells["stuck_high"] = stuck_low, stuck_high
        cells["unformed"] = classes == CellClass.UNFORMED
        reads = [_whole_array(yield_run, "yield", shape, name) for name in ("g_initial", "g_set", "g_reset")]
        present = [device_conductance(r, r_segment, shape) for r in reads if r is not None]
        if present:
            level = np.mean(present, axis=0)
            cells["g_stuck"] = np.where((stuck_low | stuck_high) & (level > 0), level, np.nan)
    forming = runs.get("forming")
    virgin = _whole_array(forming, "forming", shape, "unformed_before") if forming else None
    if forming is not None and virgin is not None:
        found = formed_by_ramp(forming)
        assert found is not None  # unformed_before is there
        found = np.asarray(found, dtype=bool)
        if "unformed" in cells:
            stuck = np.asarray(cells["stuck_low"]) | np.asarray(cells["stuck_high"])
            found = (found | np.asarray(cells["unformed"])) & ~stuck
        cells["unformed"] = found
    return cells


def shrunk_gate_fits(v_gates: FloatArray, g_maps: FloatArray, cells: BoolArray) -> tuple[FloatArray, FloatArray]:
    """Each cell's ``(k, c)`` on ``g_maps`` (the window only), shrunk toward the population of ``cells``.

    The fit is parametrized by ``k`` and the level at the window's mean gate, whose fit errors are
    independent (variances ``D``). The two are shrunk together toward the population mean ``mu``:
    ``mu + S (S + D)^-1 (x - mu)``, with ``S`` the population's own covariance (the scatter's
    covariance less the mean fit noise). They must be shrunk jointly: the level carries ``k``'s
    spread times the mean gate, so shrinking each by its own factor leaves ``k``'s spread in ``c``
    (``c = level - k v_mean``) and over-disperses the cells' ``c`` when the fit is noisy (high write
    noise: 8.2 uS fitted against 6.0 uS true). NaN outside ``cells``.
    """
    v = np.asarray(v_gates, dtype=np.float64)
    n = v.size
    k, c, residual = fit_lines(v, g_maps)
    s2 = residual**2 * n / max(n - 2, 1)
    v_mean = float(v.mean())
    sxx = float(((v - v_mean) ** 2).sum())
    x = np.stack([k, k * v_mean + c], axis=-1)  # (..., 2): slope, level at the mean gate
    noise = np.stack([s2 / sxx, s2 / n], axis=-1)  # the fit's variances (uncorrelated)
    mean = x[cells].mean(axis=0)
    scatter = np.cov(x[cells], rowvar=False) - np.diag(noise[cells].mean(axis=0))
    values, vectors = np.linalg.eigh(scatter)
    own = (vectors * np.clip(values, 0.0, None)) @ vectors.T  # the devices' own covariance, PSD
    # A whisker of ridge keeps a noiseless fit of a degenerate population solvable.
    ridge = 1e-12 * max(float(np.trace(own)), np.finfo(float).tiny) * np.eye(2)
    total = own + ridge + noise[cells][:, :, None] * np.eye(2)  # (cells, 2, 2)
    gain = np.linalg.solve(total, np.broadcast_to(own, total.shape)).swapaxes(-1, -2)  # own @ total^-1
    estimate = mean + (gain @ (x[cells] - mean)[:, :, None])[:, :, 0]
    k_cell, c_cell = np.full(k.shape, np.nan), np.full(k.shape, np.nan)
    k_cell[cells] = estimate[:, 0]
    c_cell[cells] = estimate[:, 1] - estimate[:, 0] * v_mean
    return k_cell, c_cell


def gate_map(run: RunData, shape: tuple[int, int], r_segment: float = 0.0) -> CellMap:
    """Per-cell ``set_slope`` and ``set_intercept`` of the responsive cells (NaN elsewhere), fitted
    on the devices' conductances (the reads less the wires' ``r_segment`` per segment)."""
    g = _whole_array(run, "calibration", shape, "g")
    responsive = _whole_array(run, "calibration", shape, "responsive")
    window = gates_in_window(run)
    if g is None or responsive is None or window is None:
        return {}
    v, inside = window
    maps = device_conductance(g, r_segment, shape)[inside]
    cells = typical_cells(maps, np.asarray(responsive, dtype=bool))
    if cells.sum() < 3:
        return {}
    k, c = shrunk_gate_fits(v[inside], maps, cells)
    # The emulator's own bounds for a cell's values; a fit outside them is left to the draw.
    k = np.where((k > 0) & (k <= 0.1), k, np.nan)
    c = np.where(np.abs(c) < 0.1, c, np.nan)
    return {"set_slope": k, "set_intercept": c}


def fit_cell_map(runs: Mapping[str, RunData], shape: tuple[int, int], r_segment: float = 0.0) -> CellMap:
    """The chip's cells from whichever of forming, yield-map and gate-calibration were given;
    levels and lines of the devices behind the wires' ``r_segment`` ohm per segment."""
    cells = defect_map(runs, shape, r_segment)
    if "gate-calibration" in runs:
        cells |= gate_map(runs["gate-calibration"], shape, r_segment)
    return cells


def map_path_for(twin_path: Path) -> Path:
    """Where a twin file's cell map goes: ``chip7.toml`` -> ``chip7.cells.npz`` beside it."""
    return twin_path.with_name(f"{twin_path.stem}.cells.npz")


def write_cell_map(cells: CellMap, path: Path) -> Path:
    with path.open("wb") as out:
        np.savez_compressed(out, **cells)  # type: ignore[arg-type]
    return path


def read_cell_map(path: Path) -> CellMap:
    """A cell map written by :func:`write_cell_map` (an unreadable one is a ``RunFileError``)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: np.asarray(data[name]) for name in data.files}
    except (OSError, ValueError) as exc:
        raise RunFileError(f"cannot read cell map {path}: {getattr(exc, 'strerror', None) or exc}") from None


def map_changes(twin: CellMap, measured: CellMap) -> list[str]:
    """What moved between a twin's cells and a fresh characterization's, one line per finding:
    cells newly stuck (worn out) or no longer stuck, and how far the working cells' k moved."""

    def both(name: str) -> tuple[npt.NDArray[np.generic], npt.NDArray[np.generic]] | None:
        if name in twin and name in measured and np.shape(twin[name]) == np.shape(measured[name]):
            return twin[name], measured[name]
        return None

    lines = []
    for name in ("stuck_low", "stuck_high"):
        pair = both(name)
        if pair is not None:
            before, now = (np.asarray(m, dtype=bool) for m in pair)
            label = name.replace("_", " ")
            new, gone = int((now & ~before).sum()), int((before & ~now).sum())
            lines.append(f"cells {label}: {int(now.sum())} now, {int(before.sum())} in the twin; "
                         f"{new} newly {label}, {gone} no longer")  # fmt: skip
    slopes = both("set_slope")
    if slopes is not None:
        moved = np.asarray(slopes[1], dtype=np.float64) - np.asarray(slopes[0], dtype=np.float64)
        measured_both = np.isfinite(moved)
        if measured_both.any():
            rms = float(np.sqrt(np.mean(moved[measured_both] ** 2)))
            lines.append(f"k of {int(measured_both.sum())} working cells moved by {rms * 1e6:.2f} uS/V rms "
                         f"(mean {float(moved[measured_both].mean()) * 1e6:+.2f} uS/V)")  # fmt: skip
    return lines
