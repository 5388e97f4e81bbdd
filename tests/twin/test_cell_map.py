"""A twin of one chip: its cell map carries the chip's defect positions and its devices' own k
and c, and the emulator loading the twin file (in process and served over TCP) has them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from drivers import open_board
from hil.twin.cell_map import map_changes, shrunk_gate_fits
from hil.twin.fit import fit_twin, write_twin
from hil.twin.suite_runner import run_suite_in_memory
from mock_hardware.array_model import CrossbarArray
from mock_hardware.device_params import preset
from mock_hardware.params_file import with_params_file
from tests.conftest import EmulatorFactory

CHIP: dict[str, Any] = {
    "rows": 32, "cols": 16, "write_noise": 8e-6, "stuck_low_fraction": 0.08, "stuck_high_fraction": 0.03,
    "unformed_fraction": 0.1, "bad_rows": "5", "bad_cols": "11", "v_gate_saturation": 2.0,
}  # fmt: skip
CHIP_SEED = 3


def gate_maps(
    seed: int, shape: tuple[int, int], k_mean: float, v: np.ndarray, noise: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cells with 15 % spread of k and 6 uS of c, and their conductance at each gate with ``noise``."""
    rng = np.random.default_rng(seed)
    k = k_mean * (1 + 0.15 * rng.standard_normal(shape))
    c = 120e-6 + 6e-6 * rng.standard_normal(shape)
    return k, c, k * v[:, None, None] + c + noise * rng.standard_normal((v.size, *shape))


def test_shrunk_fits_are_closer_to_the_devices_than_the_raw_fits() -> None:
    shape = (40, 50)
    v = np.linspace(0.6, 2.0, 8)
    k, c, g = gate_maps(0, shape, 100e-6, v, 20e-6)
    cells = np.ones(shape, dtype=bool)
    cells[0, 0] = False
    k_fit, c_fit = shrunk_gate_fits(v, g, cells)
    k_raw = np.polyfit(v, g.reshape(v.size, -1), 1)[0].reshape(shape)
    rms = {name: float(np.sqrt(np.mean((fit - k)[cells] ** 2))) for name, fit in (("shrunk", k_fit), ("raw", k_raw))}
    assert rms["shrunk"] < 0.8 * rms["raw"]
    assert np.mean(k_fit[cells]) == pytest.approx(np.mean(k_raw[cells]), rel=0.01)  # toward the mean
    # The level inside the window is better known than from the population alone.
    middle = float(v.mean())
    level_error = (k_fit * middle + c_fit - (k * middle + c))[cells]
    assert np.sqrt(np.mean(level_error**2)) < 0.5 * (k * middle + c)[cells].std()
    assert np.isnan(k_fit[0, 0]) and np.isnan(c_fit[0, 0])


def test_noisy_fits_do_not_lend_the_slopes_spread_to_the_intercepts() -> None:
    # A chip with high write noise: the level at the window's middle carries k's spread times the
    # mean gate; shrinking k and the level each on its own left that spread in c (over-dispersed).
    shape, v = (64, 64), np.linspace(0.6, 2.5, 12)
    _, c, g = gate_maps(1, shape, 98e-6, v, 16e-6)
    cells = np.ones(shape, dtype=bool)
    _, c_fit = shrunk_gate_fits(v, g, cells)
    assert c_fit.std() <= c.std()  # a best estimate is never more scattered than what it estimates
    assert np.sqrt(np.mean((c_fit - c) ** 2)) < c.std()  # and closer than the population's mean


@pytest.fixture(scope="module")
def twin_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    resource = f"emulator://?preset=umass-ta-hfo2&seed={CHIP_SEED}&" + "&".join(f"{k}={v}" for k, v in CHIP.items())
    with open_board(resource) as board:
        twin = fit_twin(run_suite_in_memory(board))
    return write_twin(twin, tmp_path_factory.mktemp("twin") / "chip.toml")


def test_the_twin_has_the_chips_own_cells(twin_file: Path) -> None:
    chip = CrossbarArray(preset("umass-ta-hfo2", **{k: str(v) for k, v in CHIP.items()}), seed=CHIP_SEED)
    name, fields = with_params_file(twin_file, None, {}, "umass-ta-hfo2")
    assert fields["cell_map"] == str(twin_file.parent / "chip.cells.npz")
    twin = CrossbarArray(preset(name, **fields), seed=99)  # another seed: the map, not the draw, decides
    assert np.array_equal(twin.stuck_low, chip.stuck_low)
    assert np.array_equal(twin.stuck_high, chip.stuck_high)
    assert np.array_equal(twin.formed, chip.formed)
    working = ~(chip.stuck_low | chip.stuck_high)
    error = (twin.cells.set_slope - chip.cells.set_slope)[working]
    assert np.sqrt(np.mean(error**2)) < 0.5 * chip.cells.set_slope[working].std()
    population = CrossbarArray(preset(name, **{**fields, "cell_map": ""}), seed=99)
    assert not np.array_equal(population.stuck_low, chip.stuck_low)  # without the map: any chip like it


def test_a_served_twin_loads_its_cell_map(twin_file: Path, emulator_process: EmulatorFactory) -> None:
    emulator = emulator_process("tcp", extra=("--params", str(twin_file)))
    chip = CrossbarArray(preset("umass-ta-hfo2", **{k: str(v) for k, v in CHIP.items()}), seed=CHIP_SEED)
    with open_board(emulator.resource) as board:
        g = board.read_map(0.2)
    assert np.all(g[chip.stuck_high] > 0.5e-3)
    assert np.all(g[~chip.formed] < 2e-6)


def test_map_changes_counts_worn_out_cells_and_moved_slopes() -> None:
    shape = (4, 5)
    before = {"stuck_low": np.zeros(shape, dtype=bool), "set_slope": np.full(shape, 100e-6)}
    after = {"stuck_low": before["stuck_low"].copy(), "set_slope": np.full(shape, 103e-6)}
    after["stuck_low"][1, 1] = after["stuck_low"][2, 3] = True
    after["set_slope"][after["stuck_low"]] = np.nan
    lines = map_changes(before, after)
    assert lines[0] == "cells stuck low: 2 now, 0 in the twin; 2 newly stuck low, 0 no longer"
    assert lines[1].startswith("k of 18 working cells moved by 3.00 uS/V rms (mean +3.00 uS/V)")
    assert map_changes(before, before)[0].endswith("0 newly stuck low, 0 no longer")
