"""The array's clock and retention drift."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from mock_hardware.array_model import CrossbarArray, PulseKind
from mock_hardware.device_params import preset

DAY = 86_400.0


def make(seed: int = 0, **overrides: Any) -> CrossbarArray:
    fields = {"line_resistance": 0.0, "read_noise": 0.0, "stuck_low_fraction": 0.0, "stuck_high_fraction": 0.0}
    return CrossbarArray(preset("umass-ta-hfo2", **{**fields, **overrides}), seed=seed)


def program(array: CrossbarArray, v_gate: float = 1.2) -> None:
    shape = (array.rows, array.cols)
    ones = np.ones(shape)
    array.apply_pulses(PulseKind.RESET, 0, 0, 1.8 * ones, 5.0 * ones, 1e-6 * ones, ones.astype(bool))
    array.apply_pulses(PulseKind.SET, 0, 0, 2.5 * ones, v_gate * ones, 1e-6 * ones, ones.astype(bool))


def test_operations_advance_the_simulated_clock_by_their_duration() -> None:
    array = make(rows=4, cols=3, read_duration=2e-6)
    assert array.time == 0.0
    array.advance_time(0.5)
    assert array.time == 0.5
    shape = (4, 3)
    mask = np.zeros(shape, bool)
    mask[0, :2] = True
    array.apply_pulses(PulseKind.SET, 0, 0, np.full(shape, 2.5), np.full(shape, 1.2), np.full(shape, 3e-6), mask)
    assert array.time == pytest.approx(0.5 + 2 * 3e-6)  # masked pulses only, one after another
    array.read_conductance(0, 0, 4, 3, 0.2)
    assert array.time == pytest.approx(0.5 + 6e-6 + 12 * 2e-6)
    array.vmm(np.zeros((10, 4)), 0, 0, 3)
    assert array.time == pytest.approx(0.5 + 6e-6 + 24e-6 + 20e-6)
    array.wait(3600.0)
    assert array.time == pytest.approx(3600.5 + 50e-6)
    with pytest.raises(ValueError):
        array.advance_time(-1.0)


def test_wall_clock_mode_follows_real_time() -> None:
    array = make(rows=2, cols=2, clock="wall")
    array.advance_time(1000.0)  # latency is real on the wall clock: nothing to add
    assert array.time < 1.0
    start = time.monotonic()
    array.wait(0.05)
    assert time.monotonic() - start >= 0.05
    assert 0.05 <= array.time < 1.0


def test_drift_mean_and_spread_follow_the_hfox_log_law() -> None:
    array = make(rows=128, cols=64)
    program(array)
    g0 = array.conductance
    shifts = {}
    for t in (10.0, 1e3, DAY):
        array.wait(t - array.time)
        shifts[t] = array.conductance - g0
    for t, shift in shifts.items():
        log_time = np.log1p(t)
        assert float(shift.mean()) == pytest.approx(-0.09e-6 * log_time, rel=0.05)
        assert float(shift.std()) == pytest.approx(0.088e-6 * log_time, rel=0.05)
    assert float(shifts[DAY].std()) == pytest.approx(1e-6, rel=0.05)  # about 1 uS after a day


def test_drift_is_per_cell_and_restarts_at_reprogramming() -> None:
    array = make(rows=32, cols=32)
    program(array)
    array.wait(DAY)
    drifted = array.conductance
    program(array)  # the same level again: the drift starts over
    fresh = array.conductance
    assert float(np.mean(fresh - drifted)) > 0.5e-6
    array.wait(1.0)
    assert float(np.abs(array.conductance - fresh).max()) < 0.1e-6 * np.log1p(1.0) * 6


def test_stuck_and_virgin_cells_do_not_drift() -> None:
    array = make(rows=32, cols=32, start_formed=False, stuck_low_fraction=0.1)
    before = array.conductance
    array.wait(DAY)
    np.testing.assert_array_equal(array.conductance, before)


def test_same_seed_gives_the_same_drift() -> None:
    a, b = make(seed=5, rows=8, cols=8), make(seed=5, rows=8, cols=8)
    for array in (a, b):
        program(array)
        array.wait(1234.0)
    np.testing.assert_array_equal(a.conductance, b.conductance)


def test_drift_exponent_scales_every_cell_by_the_same_power_law() -> None:
    array = make(rows=16, cols=16, drift_mean=0.0, drift_spread=0.0, drift_exponent=0.05)
    program(array)
    g0 = array.conductance
    array.wait(DAY)
    ratio = array.conductance / g0
    # g0 is read just after the pulses (each cell already drifted for a few ms since its own), hence 1e-4.
    np.testing.assert_allclose(ratio, (1 + DAY) ** -0.05, rtol=1e-4)


def test_drift_exponent_adds_to_the_cells_own_log_drift() -> None:
    plain, scaled = make(seed=2, rows=16, cols=16), make(seed=2, rows=16, cols=16, drift_exponent=0.02)
    for array in (plain, scaled):
        program(array)
    g0 = plain.conductance
    for array in (plain, scaled):
        array.wait(3600.0)
    np.testing.assert_allclose(scaled.conductance - plain.conductance, g0 * ((1 + 3600.0) ** -0.02 - 1), rtol=1e-4,
                               atol=1e-12)  # fmt: skip
