"""Device-to-device variation: every cell's own parameters, drawn once from the seed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from mock_hardware.device_params import DeviceParameters
from mock_hardware.physics.cell_map import load_cell_map, measured_or

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def _relative(rng: np.random.Generator, mean: float, spread: float, shape: tuple[int, int]) -> FloatArray:
    """``mean * (1 + spread * N(0, 1))``, kept on the mean's side of zero (a 10x tail guard)."""
    values = mean * (1.0 + spread * rng.standard_normal(shape))
    if mean > 0:
        values = np.maximum(values, 0.1 * mean)
    return np.asarray(values)


def _log_normal(rng: np.random.Generator, median: float, sigma: float, shape: tuple[int, int]) -> FloatArray:
    return np.asarray(median * np.exp(sigma * rng.standard_normal(shape)))


@dataclass(frozen=True)
class CellPopulation:
    """Per-cell parameters of an ``(rows, cols)`` array; every field has the array's shape."""

    set_slope: FloatArray
    set_intercept: FloatArray
    g_min: FloatArray
    g_max: FloatArray
    v_set_threshold: FloatArray
    v_reset_threshold: FloatArray
    v_form_threshold: FloatArray
    set_time: FloatArray
    reset_time: FloatArray
    stuck_low: BoolArray
    stuck_high: BoolArray
    g_stuck: FloatArray
    """Conductance a stuck cell is frozen at (meaningless where the cell is not stuck)."""
    unformed: BoolArray
    """Cells that start virgin even when the array starts formed (never a stuck cell)."""

    @property
    def stuck(self) -> BoolArray:
        return np.asarray(self.stuck_low | self.stuck_high)

    @classmethod
    def draw(cls, params: DeviceParameters, seed: np.random.SeedSequence) -> CellPopulation:
        """Draw every cell's parameters. Each quantity has its own child stream, so changing one
        spread or fraction leaves the others' draws unchanged for the same seed."""
        p = params
        shape = (p.rows, p.cols)
        streams = [np.random.default_rng(s) for s in seed.spawn(10)]
        spread = p.d2d_spread
        g_min = _relative(streams[2], p.g_min, spread, shape)
        # Keep every cell's ceiling above its floor whatever the spreads.
        g_max = np.maximum(_relative(streams[3], p.g_max, spread, shape), 1.05 * g_min)

        # Defects: exact counts at random positions, so a 128x64 array has the preset's
        # fractions to within one cell rather than within binomial scatter.
        n_cells = p.rows * p.cols
        order = streams[8].permutation(n_cells)
        n_low = round(p.stuck_low_fraction * n_cells)
        n_high = min(round(p.stuck_high_fraction * n_cells), n_cells - n_low)
        stuck_low = np.zeros(n_cells, dtype=bool)
        stuck_high = np.zeros(n_cells, dtype=bool)
        stuck_low[order[:n_low]] = True
        stuck_high[order[n_low : n_low + n_high]] = True
        stuck_low, stuck_high = stuck_low.reshape(shape), stuck_high.reshape(shape)
        # Spawned after the first ten, so the draws above stay what they were before these existed.
        unformed_rng, intercept_rng = (np.random.default_rng(s) for s in seed.spawn(2))
        # A broken row or column line: every cell on it is stuck low, whatever was drawn there.
        bad_line = np.zeros(shape, dtype=bool)
        bad_line[list(p.bad_row_list), :] = True
        bad_line[:, list(p.bad_col_list)] = True
        # A chip's measured cells (a twin's cell map) replace the drawn ones where given.
        cell_map = load_cell_map(p.cell_map, shape) if p.cell_map else {}
        stuck_low = cell_map.get("stuck_low", stuck_low)
        stuck_high = cell_map.get("stuck_high", stuck_high)
        stuck_low, stuck_high = stuck_low | bad_line, stuck_high & ~bad_line & ~stuck_low
        unformed = np.zeros(n_cells, dtype=bool)
        n_unformed = round(p.unformed_fraction * n_cells)
        if n_unformed:
            candidates = unformed_rng.permutation(np.flatnonzero(~(stuck_low | stuck_high).ravel()))
            unformed[candidates[:n_unformed]] = True
        unformed = cell_map.get("unformed", unformed.reshape(shape)) & ~(stuck_low | stuck_high)
        intercept = _relative(streams[1], p.set_intercept, p.set_intercept_spread, shape)
        if p.set_intercept_spread_abs:
            intercept = intercept + p.set_intercept_spread_abs * intercept_rng.standard_normal(shape)
        g_stuck = np.where(
            stuck_high,
            _relative(streams[9], p.g_stuck_high, spread, shape),
            _relative(streams[9], p.g_stuck_low, spread, shape),
        )
        set_slope = _relative(streams[0], p.set_slope, p.set_slope_spread, shape)
        return cls(
            set_slope=measured_or(set_slope, cell_map.get("set_slope")),
            set_intercept=measured_or(np.asarray(intercept), cell_map.get("set_intercept")),
            g_min=g_min,
            g_max=np.asarray(g_max),
            v_set_threshold=_relative(streams[4], p.v_set_threshold, spread, shape),
            v_reset_threshold=_relative(streams[5], p.v_reset_threshold, spread, shape),
            v_form_threshold=_relative(streams[6], p.v_form_threshold, spread, shape),
            set_time=_log_normal(streams[7], p.set_time, spread, shape),
            reset_time=_log_normal(streams[7], p.reset_time, spread, shape),
            stuck_low=stuck_low,
            stuck_high=stuck_high,
            g_stuck=measured_or(np.asarray(g_stuck), cell_map.get("g_stuck")),
            unformed=np.asarray(unformed, dtype=bool),
        )

    def at(self, cells: npt.NDArray[np.intp]) -> CellPopulation:
        """The same parameters of the cells at flat indices ``cells`` (1-D copies)."""
        return CellPopulation(**{name: np.take(getattr(self, name), cells) for name in self.__dataclass_fields__})

    def region(self, rows: slice, cols: slice) -> CellPopulation:
        """The same parameters restricted to a rectangle of cells (views, not copies)."""
        return CellPopulation(**{name: getattr(self, name)[rows, cols] for name in self.__dataclass_fields__})
