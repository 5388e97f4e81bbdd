"""SET, RESET, FORM and identical-pulse response of the emulated cells (CrossbarArray directly)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mock_hardware.array_model import CrossbarArray, PulseKind
from mock_hardware.device_params import preset

QUIET = {"drift_mean": 0.0, "drift_spread": 0.0, "read_noise": 0.0, "line_resistance": 0.0}


def make(name: str = "umass-ta-hfo2", seed: int = 0, **overrides: Any) -> CrossbarArray:
    return CrossbarArray(preset(name, **{**QUIET, **overrides}), seed=seed)


def pulse(array: CrossbarArray, kind: PulseKind, amplitude: float, v_gate: float, width: float,
          mask: np.ndarray | None = None) -> int:  # fmt: skip
    shape = (array.rows, array.cols)
    if mask is None:
        mask = np.ones(shape, bool)
    return array.apply_pulses(
        kind, 0, 0, np.full(shape, amplitude), np.full(shape, v_gate), np.full(shape, width), mask
    )


def full_reset(array: CrossbarArray) -> None:
    pulse(array, PulseKind.RESET, 1.8, 5.0, 1e-6)


def healthy(array: CrossbarArray) -> np.ndarray:
    return ~(array.stuck_low | array.stuck_high)


def test_gate_coded_set_lands_on_each_cells_compliance_line() -> None:
    array = make("ideal", rows=16, cols=16, set_slope_spread=0.15, set_intercept_spread=0.05)
    for v_gate in (0.7, 1.1, 1.6):
        full_reset(array)
        pulse(array, PulseKind.SET, 2.5, v_gate, 1e-6)
        expected = array.cells.set_slope * v_gate + array.cells.set_intercept
        np.testing.assert_allclose(array.conductance, expected, rtol=1e-9)


def test_set_never_lowers_conductance() -> None:
    array = make(rows=16, cols=16)
    full_reset(array)
    pulse(array, PulseKind.SET, 2.5, 1.6, 1e-6)
    high = array.conductance
    pulse(array, PulseKind.SET, 2.5, 0.7, 1e-6)
    assert np.all(array.conductance >= high)
    # ... and where the lower compliance sits well below, nothing moved at all.
    np.testing.assert_array_equal(array.conductance[healthy(array)], high[healthy(array)])


@pytest.mark.parametrize(("amplitude", "v_gate"), [(0.2, 1.6), (0.7, 1.6), (2.5, 0.3)])
def test_below_threshold_or_with_the_transistor_off_nothing_changes(amplitude: float, v_gate: float) -> None:
    array = make(rows=16, cols=16)
    full_reset(array)
    before = array.conductance
    assert pulse(array, PulseKind.SET, amplitude, v_gate, 1e-3) == 256
    np.testing.assert_array_equal(array.conductance, before)


def test_pulse_width_matters_weakly_and_very_short_pulses_fall_short() -> None:
    final = {}
    for width in (1e-9, 1e-7, 1e-6, 1e-5):
        array = make("ideal", rows=8, cols=8, set_width_exponent=0.02)
        full_reset(array)
        pulse(array, PulseKind.SET, 2.5, 1.4, width)
        final[width] = float(array.conductance.mean())
    target = 98e-6 * 1.4 + 120e-6
    assert final[1e-6] == pytest.approx(target, rel=1e-6)
    # Longer pulses approach compliance more closely: monotone, a few percent per decade.
    assert final[1e-7] < final[1e-6] < final[1e-5]
    assert final[1e-5] / final[1e-6] == pytest.approx(10**0.02, rel=1e-6)
    # 1 ns at 2.5 V is shorter than the switching time: the cell falls well short.
    assert final[1e-9] < 0.95 * final[1e-7]


def test_reset_depth_depends_on_amplitude() -> None:
    levels = []
    for amplitude in (0.5, 1.1, 1.2, 1.4, 1.8):
        array = make("ideal", rows=4, cols=4)
        full_reset(array)
        pulse(array, PulseKind.SET, 2.5, 3.6, 1e-6)  # 473 uS
        start = array.conductance
        pulse(array, PulseKind.RESET, amplitude, 5.0, 1e-6)
        levels.append(float(array.conductance.mean()))
    assert levels[0] == pytest.approx(float(start.mean()))  # below threshold: no change
    assert np.all(np.diff(levels) < 0)  # deeper with amplitude
    assert levels[1] > 2 * 100e-6  # 1.1 V: a partial RESET
    assert levels[-1] == pytest.approx(100e-6, rel=0.02)  # 1.8 V: down to the floor


def test_reset_never_raises_conductance() -> None:
    array = make(rows=16, cols=16)
    full_reset(array)
    low = array.conductance
    pulse(array, PulseKind.RESET, 1.0, 5.0, 1e-6)  # a shallow RESET's floor sits above these cells
    assert np.all(array.conductance <= low)


def test_identical_pulses_give_saturating_state_dependent_asymmetric_steps() -> None:
    # Short pulses near threshold: the identical-pulse regime.
    array = make("ideal", rows=1, cols=1)
    full_reset(array)
    trace = [float(array.conductance[0, 0])]
    for _ in range(20):
        pulse(array, PulseKind.SET, 1.2, 1.6, 100e-9)
        trace.append(float(array.conductance[0, 0]))
    up = np.diff(trace)
    assert np.all(up > 0) and np.all(np.diff(up) < 0)  # potentiation saturates
    assert trace[-1] < 98e-6 * 1.6 + 120e-6  # approaching compliance from below
    assert up[0] > 5 * up[-1]
    down_trace = [trace[-1]]
    for _ in range(20):
        pulse(array, PulseKind.RESET, 1.2, 5.0, 100e-9)
        down_trace.append(float(array.conductance[0, 0]))
    down = -np.diff(down_trace)
    assert np.all(down > 0) and np.all(np.diff(down) < 0)  # depression saturates too
    # Asymmetric: the first depression step from the top is not the first potentiation step
    # from the bottom.
    assert abs(down[0] - up[0]) > 0.1 * up[0]


def test_tsinghua_50ns_pulses_move_a_fraction_of_the_way() -> None:
    array = make("tsinghua-taox-hfox", rows=4, cols=4, write_noise=0.0, d2d_spread=0.0, set_slope_spread=0.0,
                 set_intercept_spread=0.0)  # fmt: skip
    pulse(array, PulseKind.RESET, 1.8, 5.0, 1e-6)
    start = array.conductance[healthy(array)]
    pulse(array, PulseKind.SET, 1.5, 2.0, 50e-9)
    target = 30e-6 * 2.0 - 10e-6
    fraction = (array.conductance[healthy(array)] - start) / (target - start)
    assert np.all((fraction > 0.1) & (fraction < 0.4))


def test_write_noise_is_the_cycle_to_cycle_sigma() -> None:
    array = make("ideal", rows=32, cols=32, write_noise=4e-6)
    cycles = []
    for _ in range(20):
        full_reset(array)
        pulse(array, PulseKind.SET, 2.5, 1.2, 1e-6)
        cycles.append(array.conductance)
    sigma = np.std(np.array(cycles), axis=0, ddof=1)
    assert float(np.sqrt(np.mean(sigma**2))) == pytest.approx(4e-6, rel=0.05)


def test_device_to_device_spread_of_k() -> None:
    array = make(rows=128, cols=64)
    k = array.cells.set_slope
    assert float(k.mean()) == pytest.approx(98e-6, rel=0.01)
    assert float(k.std() / k.mean()) == pytest.approx(0.15, rel=0.05)


def test_stuck_cells_exact_fractions_and_they_ignore_pulses() -> None:
    array = make(rows=128, cols=64)
    n = 128 * 64
    assert int(array.stuck_low.sum()) == round(0.09 * n)
    assert int(array.stuck_high.sum()) == round(0.02 * n)
    assert not np.any(array.stuck_low & array.stuck_high)
    before = array.conductance
    full_reset(array)
    pulse(array, PulseKind.SET, 2.5, 1.6, 1e-6)
    stuck = ~healthy(array)
    np.testing.assert_array_equal(array.conductance[stuck], before[stuck])
    assert np.all(array.conductance[array.stuck_low] < 20e-6)
    assert np.all(array.conductance[array.stuck_high] > 800e-6)


def test_only_masked_cells_are_pulsed_and_the_count_is_returned() -> None:
    array = make("ideal", rows=8, cols=8)
    full_reset(array)
    before = array.conductance
    mask = np.zeros((8, 8), bool)
    mask[2, 3] = mask[5, 1] = True
    assert pulse(array, PulseKind.SET, 2.5, 1.5, 1e-6, mask) == 2
    changed = array.conductance != before
    np.testing.assert_array_equal(changed, mask)


def test_a_region_is_placed_where_asked() -> None:
    array = make("ideal", rows=8, cols=8)
    full_reset(array)
    before = array.conductance
    shape = (2, 3)
    array.apply_pulses(PulseKind.SET, 4, 5, np.full(shape, 2.5), np.full(shape, 1.5), np.full(shape, 1e-6),
                       np.ones(shape, bool))  # fmt: skip
    changed = array.conductance != before
    assert changed[4:6, 5:8].all() and changed.sum() == 6


def test_forming_virgin_cells() -> None:
    array = make("ideal", rows=8, cols=8, start_formed=False)
    assert not array.formed.any()
    assert np.all(array.conductance < 2e-6)  # virgin cells conduct little
    pulse(array, PulseKind.SET, 2.5, 1.5, 1e-6)  # a SET pulse is below the forming threshold
    assert not array.formed.any() and np.all(array.conductance < 2e-6)
    pulse(array, PulseKind.RESET, 1.8, 5.0, 1e-6)
    assert not array.formed.any() and np.all(array.conductance < 2e-6)
    mask = np.zeros((8, 8), bool)
    mask[:4] = True
    pulse(array, PulseKind.FORM, 3.5, 1.0, 1e-6, mask)
    np.testing.assert_array_equal(array.formed, mask)
    # Forming stops at the transistor's compliance.
    np.testing.assert_allclose(array.conductance[mask], 98e-6 * 1.0 + 120e-6, rtol=1e-9)
    # Once formed, cells switch normally.
    pulse(array, PulseKind.RESET, 1.8, 5.0, 1e-6, mask)
    assert np.all(array.conductance[mask] < 110e-6)
    pulse(array, PulseKind.SET, 2.5, 1.5, 1e-6, mask)
    np.testing.assert_allclose(array.conductance[mask], 98e-6 * 1.5 + 120e-6, rtol=1e-9)
    assert np.all(array.conductance[~mask] < 2e-6)


def test_forming_thresholds_vary_from_cell_to_cell() -> None:
    array = make(rows=32, cols=32, start_formed=False, d2d_spread=0.05)
    pulse(array, PulseKind.FORM, 3.0, 1.0, 1e-6)  # at the mean threshold: about half form
    fraction = float(array.formed[healthy(array)].mean())
    assert 0.3 < fraction < 0.7
    pulse(array, PulseKind.FORM, 3.6, 1.0, 1e-6)
    assert array.formed.all()


def test_garbage_in_unmasked_cells_is_ignored() -> None:
    array = make("ideal", rows=2, cols=2)
    before = array.conductance
    mask = np.array([[True, False], [False, False]])
    amplitude = np.array([[2.5, np.nan], [-7.0, np.inf]])
    width = np.array([[1e-6, -1.0], [np.nan, 0.0]])
    with np.errstate(all="raise"):
        count = array.apply_pulses(PulseKind.SET, 0, 0, amplitude, np.full((2, 2), 1.5), width, mask)
    assert count == 1
    assert np.isfinite(array.conductance).all()
    np.testing.assert_array_equal(array.conductance[~mask], before[~mask])
    assert array.conductance[0, 0] != before[0, 0]
