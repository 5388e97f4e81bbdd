"""The characterization's thresholds come from the chip's own scale (protocols.characterization.common.
auto_min_window), so a TaOx/HfOx chip (10-60 uS) is judged as a Ta/HfO2 one (100-900 uS) is; an
explicit option still wins."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from protocols.calibration import find_gate_window, fit_lines
from protocols.characterization.common import LEVEL_SHARE, auto_min_window
from protocols.characterization.forming import measure_forming
from protocols.characterization.gate_calibration import unclipped_window
from protocols.characterization.write_noise import measure_write_noise
from protocols.characterization.yield_map import (
    CellClass,
    YieldMapOptions,
    classify_levels,
    classify_switching,
    measure_yield_map,
)
from protocols.recording import MemoryRecorder


def synthetic_chip(scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Three reads of 400 cells: 300 working (floor 100 uS, SET level 316 uS, spreads 15 %), 60
    stuck low at 5 uS, 20 shorted at 1 mS, 20 virgin at 0.5 uS; 1 % read noise; all times ``scale``."""
    rng = np.random.default_rng(5)
    n_work, n_low, n_high, n_virgin = 300, 60, 20, 20
    floor = 100e-6 * (1 + 0.05 * rng.standard_normal(n_work))
    level = 316e-6 * (1 + 0.15 * rng.standard_normal(n_work))
    stuck = np.concatenate([np.full(n_low, 5e-6), np.full(n_high, 1e-3), np.full(n_virgin, 0.5e-6)])
    truth = np.concatenate([np.full(n_work, CellClass.NORMAL), np.full(n_low, CellClass.STUCK_LOW),
                            np.full(n_high, CellClass.STUCK_HIGH), np.full(n_virgin, CellClass.UNFORMED)])  # fmt: skip

    def read(values: np.ndarray) -> np.ndarray:
        return scale * (values * (1 + 0.01 * rng.standard_normal(values.size)))[None, :]

    g_initial = read(np.concatenate([floor, stuck]))
    g_set = read(np.concatenate([level, stuck]))
    g_reset = read(np.concatenate([floor, stuck]))
    return g_initial, g_set, g_reset, truth[None, :]


def test_a_chip_a_tenth_the_scale_is_classified_as_the_full_scale_one() -> None:
    options = YieldMapOptions(g_unformed_max=2e-6 * 0.1)  # the virgin level scaled too (it is not on chips)
    full = classify_switching(*synthetic_chip(1.0)[:3], YieldMapOptions())
    tenth = classify_switching(*synthetic_chip(0.1)[:3], options)
    truth = synthetic_chip(1.0)[3]
    assert (full == truth).all()
    assert (tenth == truth).all()


def test_the_old_fixed_window_calls_every_cell_of_a_small_chip_defective_and_an_explicit_option_wins() -> None:
    g_initial, g_set, g_reset, _ = synthetic_chip(0.1)
    # What the yield map did before (50 uS fixed): no cell of a 10-60 uS chip is normal.
    fixed = classify_switching(g_initial, g_set, g_reset, YieldMapOptions(min_window=50e-6))
    assert not (fixed == CellClass.NORMAL).any()
    auto = classify_switching(g_initial, g_set, g_reset, YieldMapOptions())
    assert (auto == CellClass.NORMAL).sum() == 300
    # On the full-scale chip, an explicit window above every window found is used as given.
    full = synthetic_chip(1.0)
    assert (classify_switching(*full[:3], YieldMapOptions()) == CellClass.NORMAL).sum() == 300
    assert not (classify_switching(*full[:3], YieldMapOptions(min_window=1e-3)) == CellClass.NORMAL).any()


def test_a_chip_with_no_working_cell_gets_no_normal_cell_from_its_read_noise() -> None:
    # Every cell stuck: the windows are read noise alone, whose 75th percentile a quarter of
    # would let half the cells pass; the per-cell guard (a share of the cell's own level) does not.
    rng = np.random.default_rng(8)
    level = np.concatenate([np.full(300, 5e-6), np.full(100, 1e-3)])

    def read() -> np.ndarray:
        return (level * (1 + 0.02 * rng.standard_normal(level.size)))[None, :]

    classes = classify_switching(read(), read(), read(), YieldMapOptions())
    assert not (classes == CellClass.NORMAL).any()
    window = np.abs(read() - read())
    assert np.all(auto_min_window(window, read()) >= LEVEL_SHARE * 0.9 * level)


def test_the_read_only_screen_scales_its_stuck_low_line() -> None:
    g = np.array([[11e-6, 10.5e-6, 12e-6, 9.8e-6, 2.5e-6, 0.5e-6]])  # RESET cells of a small chip, stuck, virgin
    classes = classify_levels(g, YieldMapOptions())
    assert classes.tolist() == [[0, 0, 0, 0, CellClass.STUCK_LOW, CellClass.UNFORMED]]
    # The fixed 10 uS line of before calls a RESET cell at 9.8 uS stuck low.
    assert classify_levels(g, YieldMapOptions(g_stuck_low_max=10e-6))[0, 3] == CellClass.STUCK_LOW


def test_yield_map_of_a_tsinghua_chip_finds_its_working_and_stuck_cells(tsinghua: Any) -> None:
    board = tsinghua(stuck_low_fraction=0.05, stuck_high_fraction=0.02)
    array = board._transport._endpoint.firmware.array  # type: ignore[attr-defined]
    result = measure_yield_map(board, MemoryRecorder())
    stuck = np.asarray(array.stuck_low | array.stuck_high)
    normal = result.classes == CellClass.NORMAL
    assert (normal == ~stuck).mean() >= 0.995
    assert ((result.classes == CellClass.STUCK_HIGH) == np.asarray(array.stuck_high)).all()
    assert result.bad_rows == () and result.bad_cols == ()
    # The fixed 50 uS of before: nearly every cell defective (a 42 uS window), most rows "bad".
    fixed = measure_yield_map(tsinghua(seed=4), MemoryRecorder(), min_window=50e-6)
    assert fixed.counts["normal"] < 0.1 * fixed.classes.size and len(fixed.bad_rows) > 16


def test_forming_counts_as_unformed_only_the_cells_its_ramp_formed(tsinghua: Any) -> None:
    # The preset's stuck-low cells read 1 uS, under the 2 uS line, as virgin ones (0.5 uS) do.
    board = tsinghua(stuck_low_fraction=0.1, unformed_fraction=0.15)
    array = board._transport._endpoint.firmware.array  # type: ignore[attr-defined]
    virgin = ~np.asarray(array.formed)
    result = measure_forming(board, MemoryRecorder())
    cells = virgin.size
    assert result.unformed_before.sum() == virgin.sum() + np.asarray(array.stuck_low).sum()
    assert result.figures["fraction_unformed"].value == pytest.approx(virgin.sum() / cells)
    assert result.figures["fraction_not_formed"].value == pytest.approx(np.asarray(array.stuck_low).sum() / cells)


def test_write_noise_finds_the_working_cells_of_a_small_window_chip(tsinghua: Any) -> None:
    board = tsinghua(stuck_low_fraction=0.1)
    array = board._transport._endpoint.firmware.array  # type: ignore[attr-defined]
    result = measure_write_noise(board, MemoryRecorder(), cycles=4)
    working = ~np.asarray(array.stuck_low | array.stuck_high)
    assert (result.working == working).mean() >= 0.99
    # The fixed 20 uS of before: most working cells of this chip (a 15 uS window at 1.2 V) are left out.
    fixed = measure_write_noise(tsinghua(seed=4, stuck_low_fraction=0.1), MemoryRecorder(), cycles=4, min_window=20e-6)
    assert fixed.working.mean() < 0.5


def _curves(v: np.ndarray, rng: np.random.Generator, ceiling_spread: float, noise: float) -> np.ndarray:
    """SET levels of 2,000 cells at gates ``v``: lines (k 30 uS/V +- 10 %, c -10 uS) above a 10 uS
    floor, each under its own ceiling (60 uS +- ``ceiling_spread``), two-read write noise."""
    cells = 2000
    k = 30e-6 * (1 + 0.1 * rng.standard_normal(cells))
    ceiling = 60e-6 * (1 + ceiling_spread * rng.standard_normal(cells))
    floor = 10e-6 * (1 + 0.05 * rng.standard_normal(cells))
    line = k[None, :] * v[:, None] - 10e-6
    level = np.clip(line, floor[None, :], ceiling[None, :])
    return level + noise * rng.standard_normal(level.shape)


def test_the_gate_window_is_narrowed_where_cells_sit_at_their_own_ceiling_or_floor() -> None:
    v = np.round(np.arange(0.2, 3.01, 0.1), 10)
    g = _curves(v, np.random.default_rng(4), ceiling_spread=0.05, noise=0.7e-6)[:, :, None]
    responsive = np.ones(g.shape[1:], dtype=bool)
    found = find_gate_window(v, np.median(g[:, :, 0], axis=1))
    first, last = unclipped_window(v, g, responsive, found)
    assert v[found.last] >= 2.1  # the median curve's soft knee: its window takes in clipped cells
    assert v[last] <= v[found.last] - 0.2 and v[first] >= v[found.first]
    truth_k = 30e-6
    k_found = fit_lines(v[found.first : found.last + 1], g[found.first : found.last + 1])[0].mean()
    k_kept = fit_lines(v[first : last + 1], g[first : last + 1])[0].mean()
    assert abs(k_found / truth_k - 1) > 0.02 and abs(k_kept / truth_k - 1) < 0.01


def test_a_shallow_noisy_line_that_saturates_at_one_gate_keeps_its_window() -> None:
    # Every cell stops at the same gate (the transistor's saturation): nothing is clipped before it,
    # however close to the plateau a shallow line's noisy reads come.
    rng = np.random.default_rng(6)
    v = np.round(np.arange(0.2, 3.01, 0.1), 10)
    cells = 2000
    k = 12e-6 * (1 + 0.05 * rng.standard_normal(cells))
    line = k[None, :] * np.minimum(v, 1.4)[:, None] + 13e-6
    level = np.where(v[:, None] >= 0.3, line, 6e-6) + 1.4e-6 * rng.standard_normal((v.size, cells))
    g = level[:, :, None]
    found = find_gate_window(v, np.median(level, axis=1))
    assert unclipped_window(v, g, np.ones((cells, 1), dtype=bool), found) == (found.first, found.last)


def test_the_window_starts_above_the_gates_where_the_floor_holds_cells_up() -> None:
    # The line crosses each cell's own floor (11.4 uS +- 5 %) near 0.7 V: at 0.8 V a seventh of the
    # cells (the low-k ones) still sit on their floor, by less than the per-cell test sees; their
    # mean shortfall gives the gate away.
    rng = np.random.default_rng(0)
    v = np.round(np.arange(0.2, 3.01, 0.1), 10)
    cells = 2000
    k = 30e-6 * (1 + 0.1 * rng.standard_normal(cells))
    c = -10e-6 + 0.5e-6 * rng.standard_normal(cells)
    floor = 11.4e-6 * (1 + 0.05 * rng.standard_normal(cells))
    ceiling = 60e-6 * (1 + 0.05 * rng.standard_normal(cells))
    line = k[None, :] * v[:, None] + c[None, :]
    level = np.clip(line, floor[None, :], ceiling[None, :]) + 0.7e-6 * rng.standard_normal((v.size, cells))
    found = find_gate_window(v, np.median(level, axis=1))
    first, _ = unclipped_window(v, level[:, :, None], np.ones((cells, 1), dtype=bool), found)
    held_up = (line < floor[None, :]).mean(axis=1)
    assert held_up[found.first] > 0.1  # the median curve's window starts among them
    assert held_up[first] < 0.05
