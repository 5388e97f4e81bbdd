"""Gate calibration (protocols/calibration.py) on the in-process emulator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from drivers import Board, InvalidRequest, LimitError, Region, open_board
from protocols.calibration import GateCalibration, calibrate_gate, conductance_to_gate, fit_lines
from protocols.recording import MemoryRecorder
from tests.protocols.counting import CountingBoard

# Preset means (mock_hardware/device_params.py, from the Li 2018 code): G = k * v_gate + c.
K_MEAN, C_MEAN = 98e-6, 120e-6
GATES = np.linspace(0.7, 4.5, 8)


def _board(query: str) -> Iterator[Board]:
    with open_board(f"emulator://?{query}") as board:
        yield board


@pytest.fixture
def ideal() -> Iterator[Board]:
    yield from _board("preset=ideal&seed=1&rows=16&cols=8")


@pytest.fixture
def realistic() -> Iterator[Board]:
    yield from _board("preset=umass-ta-hfo2&seed=1&rows=32&cols=16")


def test_fit_lines_recovers_every_cells_line() -> None:
    rng = np.random.default_rng(0)
    k = rng.uniform(50e-6, 150e-6, (3, 4))
    c = rng.uniform(0, 200e-6, (3, 4))
    v = np.array([0.5, 1.0, 2.0, 3.0])
    fitted_k, fitted_c, residual = fit_lines(v, k[None] * v[:, None, None] + c[None])
    np.testing.assert_allclose(fitted_k, k, rtol=1e-9)
    np.testing.assert_allclose(fitted_c, c, rtol=1e-9, atol=1e-15)
    assert residual.max() < 1e-15


def test_ideal_board_calibrates_exactly(ideal: Board) -> None:
    calibration = calibrate_gate(ideal, GATES)
    np.testing.assert_allclose(calibration.k, K_MEAN, rtol=0.005)
    np.testing.assert_allclose(calibration.c, C_MEAN, rtol=0.005)
    assert calibration.residual.max() < 0.5e-6
    assert calibration.responsive.all()
    assert calibration.v_gate_window == (GATES[0], GATES[-1])
    assert calibration.g_measured.shape == (len(GATES), 16, 8)


def test_realistic_board_recovers_the_preset_means(realistic: Board) -> None:
    calibration = calibrate_gate(realistic, GATES)
    responsive = calibration.responsive
    # The preset makes 9 % of cells stuck low and 2 % stuck high: they must not count as responsive.
    assert 0.85 < responsive.mean() < 0.93
    assert abs(np.median(calibration.k[responsive]) / K_MEAN - 1) < 0.10
    assert abs(np.median(calibration.c[responsive]) / C_MEAN - 1) < 0.10
    # Device-to-device spread of k is 15 % in the preset: the fit sees it, not a flat map.
    spread = np.std(calibration.k[responsive]) / np.mean(calibration.k[responsive])
    assert 0.08 < spread < 0.25
    # Unresponsive cells barely follow the gate.
    assert np.all(np.abs(calibration.k[~responsive]) < 0.2 * K_MEAN)


def test_three_commands_per_gate_voltage_and_no_per_cell_calls(realistic: Board) -> None:
    counter = CountingBoard(realistic)
    recorder = MemoryRecorder()
    calibrate_gate(realistic, GATES, recorder=recorder)
    assert counter.calls == {"read_map": len(GATES), "apply_pulses": 2 * len(GATES), "read_cell": 0, "pulse": 0}
    assert recorder.datasets["calibration/g"].shape == (len(GATES), 32, 16)
    np.testing.assert_allclose(recorder.datasets["calibration/v_gate"], GATES)
    assert recorder.datasets["calibration/k"].shape == (32, 16)
    assert recorder.steps_done == len(GATES) and recorder.total == len(GATES)


def test_mask_and_region_limit_what_is_pulsed() -> None:
    with open_board("emulator://?preset=ideal&seed=1&rows=16&cols=8&g_initial_spread=20e-6") as board:
        before = board.read_map()
        region = Region(4, 2, 6, 4)
        mask = np.zeros(region.shape, dtype=bool)
        mask[::2] = True
        calibration = calibrate_gate(board, GATES, mask=mask, region=region)
        after = board.read_map()
    inside = np.zeros(board.shape, dtype=bool)
    inside[4:10, 2:6] = mask
    np.testing.assert_array_equal(after[~inside], before[~inside])
    assert not np.allclose(after[inside], before[inside])
    assert calibration.origin == (4, 2) and calibration.shape == (6, 4)
    assert np.isnan(calibration.k[~mask]).all() and np.isfinite(calibration.k[mask]).all()


@pytest.mark.parametrize(
    ("gates", "message"),
    [([1.0], "at least two"), ([1.0, 0.8, 1.2], "strictly ascending"), ([1.0, np.nan], "not finite"),
     ([1.0, 6.0], "SET v_gate")],
)  # fmt: skip
def test_bad_gate_lists_are_refused_before_any_pulse(ideal: Board, gates: list[float], message: str) -> None:
    before = ideal.read_map()
    counter = CountingBoard(ideal)
    with pytest.raises(InvalidRequest, match=message):
        calibrate_gate(ideal, gates)
    assert counter.calls["apply_pulses"] == 0
    np.testing.assert_array_equal(ideal.read_map(), before)


def test_conductance_to_gate_inverts_the_fit(ideal: Board) -> None:
    calibration = calibrate_gate(ideal, GATES)
    target = np.linspace(250e-6, 450e-6, 16 * 8).reshape(16, 8)
    v_gate = conductance_to_gate(target, calibration)
    np.testing.assert_allclose(calibration.conductance_at(v_gate), target, rtol=1e-12)
    assert np.all((v_gate >= GATES[0]) & (v_gate <= GATES[-1]))


def test_conductance_to_gate_refuses_what_the_window_cannot_reach(ideal: Board) -> None:
    calibration = calibrate_gate(ideal, GATES)
    target = np.full((16, 8), 300e-6)
    target[3, 5] = 900e-6  # above k * 4.5 V + c = 561 uS
    with pytest.raises(LimitError, match=r"g_target\[3, 5\].*0\.0009 S"):
        conductance_to_gate(target, calibration)
    clipped = conductance_to_gate(target, calibration, clip=True)
    assert clipped[3, 5] == GATES[-1]
    target[3, 5] = np.nan
    with pytest.raises(InvalidRequest, match=r"g_target\[3, 5\] = nan"):
        conductance_to_gate(target, calibration)
    masked = conductance_to_gate(target, calibration, mask=np.isfinite(target))
    assert np.isnan(masked[3, 5]) and np.isfinite(masked[np.isfinite(target)]).all()


def test_unresponsive_cells_take_the_median_fit() -> None:
    k = np.full((2, 2), 100e-6)
    k[0, 0] = 1e-7  # a stuck cell
    calibration = GateCalibration(
        k=k, c=np.full((2, 2), 100e-6), residual=np.zeros((2, 2)), v_gate_window=(0.5, 3.0),
        mask=np.ones((2, 2), dtype=bool),
    )  # fmt: skip
    assert not calibration.responsive[0, 0] and calibration.responsive.sum() == 3
    v_gate = conductance_to_gate(200e-6, calibration)
    np.testing.assert_allclose(v_gate, 1.0)


def test_save_and_load_round_trip(ideal: Board, tmp_path: Path) -> None:
    calibration = calibrate_gate(ideal, GATES, region=Region(2, 1, 8, 4))
    np.savez(tmp_path / "calibration.npz", **calibration.to_dict())
    with np.load(tmp_path / "calibration.npz") as stored:
        loaded = GateCalibration.from_dict(dict(stored))
    assert loaded.origin == (2, 1) and loaded.v_gate_window == calibration.v_gate_window
    for name in ("k", "c", "residual", "mask", "v_gates", "g_measured"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(calibration, name))
