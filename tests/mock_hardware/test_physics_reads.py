"""Reads, VMM, read noise and the I-V curve of the emulated array."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mock_hardware.array_model import CrossbarArray, PulseKind
from mock_hardware.device_params import preset
from mock_hardware.physics.iv import IVCurve
from mock_hardware.physics.noise import fast_normal

STILL = {"drift_mean": 0.0, "drift_spread": 0.0, "line_resistance": 0.0}


def make(name: str = "umass-ta-hfo2", seed: int = 0, **overrides: Any) -> CrossbarArray:
    return CrossbarArray(preset(name, **{**STILL, **overrides}), seed=seed)


def test_read_noise_is_relative_and_unbiased() -> None:
    array = make(rows=16, cols=16)
    g = array.conductance
    reads = np.array([array.read_conductance(0, 0, 16, 16, 0.2) for _ in range(400)])
    relative = reads / g - 1
    assert float(relative.mean()) == pytest.approx(0.0, abs=5e-4)
    assert float(relative.std()) == pytest.approx(0.01, rel=0.03)


def test_ten_thousand_reads_at_0p2_volts_do_not_move_the_conductance() -> None:
    array = make(rows=4, cols=4)
    before = array.conductance
    for _ in range(10_000):
        array.read_conductance(1, 2, 1, 1, 0.2)
    array.vmm(np.full((10_000, 4), 0.2), 0, 0, 4)
    np.testing.assert_array_equal(array.conductance, before)


def test_reads_are_ohmic_at_0p2_volts_and_superlinear_above() -> None:
    array = make(read_noise=0.0, rows=4, cols=4)
    g = array.conductance
    np.testing.assert_allclose(array.read_conductance(0, 0, 4, 4, 0.2), g, rtol=1e-12)
    at_half_volt = array.read_conductance(0, 0, 4, 4, 0.5) / g
    at_tenth = array.read_conductance(0, 0, 4, 4, 0.1) / g
    iv = IVCurve(1.5, 0.2)
    np.testing.assert_allclose(at_half_volt, iv.factor(np.array(0.5)), rtol=1e-12)
    assert 1.03 < at_half_volt.min() < 1.2  # a few percent superlinear at 0.5 V
    assert 0.98 < at_tenth.max() < 1.0  # and about 1 % sublinear at half the reference voltage
    # Negative reads see the same magnitude (a symmetric curve).
    np.testing.assert_allclose(array.read_conductance(0, 0, 4, 4, -0.5), array.read_conductance(0, 0, 4, 4, 0.5))


def test_ohmic_cells_when_nonlinearity_is_zero() -> None:
    array = make(read_noise=0.0, iv_nonlinearity=0.0, rows=4, cols=4)
    np.testing.assert_allclose(array.read_conductance(0, 0, 4, 4, 0.5), array.conductance, rtol=1e-12)


def test_vmm_is_the_product_with_the_iv_curve_applied_to_the_inputs() -> None:
    array = make(read_noise=0.0, rows=8, cols=5)
    v = np.random.default_rng(0).uniform(-0.5, 0.5, (6, 8))
    g = array.conductance
    expected = (v * IVCurve(1.5, 0.2).factor(v)) @ g
    np.testing.assert_allclose(array.vmm(v, 0, 0, 5), expected, rtol=1e-12)
    np.testing.assert_allclose(array.vmm(v[:, 2:6], 2, 1, 3), expected_region(v[:, 2:6], g[2:6, 1:4]), rtol=1e-12)


def expected_region(v: np.ndarray, g: np.ndarray) -> np.ndarray:
    return np.asarray((v * IVCurve(1.5, 0.2).factor(v)) @ g)


def test_noisy_vmm_float32_path_agrees_with_the_exact_product_on_average() -> None:
    array = make(rows=64, cols=32)
    g = array.conductance
    v = np.random.default_rng(1).uniform(-0.5, 0.5, (2000, 64))
    exact = (v * IVCurve(1.5, 0.2).factor(v)) @ g
    spread = 0.01 * np.sqrt(((v * IVCurve(1.5, 0.2).factor(v)) ** 2) @ g**2)
    z = (array.vmm(v, 0, 0, 32) - exact) / spread
    # The noise is the per-cell read noise summed: standard normal once scaled by its predicted sigma.
    assert float(z.mean()) == pytest.approx(0.0, abs=0.01)
    assert float(z.std()) == pytest.approx(1.0, abs=0.01)


def test_repeated_vmm_noise_is_independent_between_vectors_and_calls() -> None:
    array = make(rows=32, cols=16)
    v = np.full((500, 32), 0.2)
    first, second = array.vmm(v, 0, 0, 16), array.vmm(v, 0, 0, 16)
    a, b = (first - first.mean(axis=0)).ravel(), (second - second.mean(axis=0)).ravel()
    assert abs(float(np.corrcoef(a, b)[0, 1])) < 0.03
    assert abs(float(np.corrcoef(a[:-16], a[16:])[0, 1])) < 0.03  # vector to vector


def test_column_currents_follow_the_protocols_sum() -> None:
    array = make(read_noise=0.0, iv_nonlinearity=0.0, rows=6, cols=4)
    g = array.conductance
    v_rows = np.array([0.2, 0.1, 0.0, -0.1, 0.3, 0.2])
    v_cols = np.array([0.0, 0.05, -0.05, 0.0])
    gate_on = np.array([True, True, False, True, False, True])
    expected = ((v_rows[:, None] - v_cols[None, :]) * g * gate_on[:, None]).sum(axis=0)
    np.testing.assert_allclose(array.column_currents(v_rows, v_cols, gate_on), expected, rtol=1e-12)


def test_fast_normal_sampler_is_standard_normal() -> None:
    z = fast_normal(np.random.default_rng(0), (1_000_000,)).astype(np.float64)
    assert float(z.mean()) == pytest.approx(0.0, abs=0.003)
    assert float(z.std()) == pytest.approx(1.0, abs=0.003)
    assert float(np.mean(z**4)) == pytest.approx(3.0, abs=0.03)  # Gaussian kurtosis
    assert float(np.mean(np.abs(z) > 2)) == pytest.approx(0.0455, abs=0.001)
    assert float(np.mean(np.abs(z) > 3)) == pytest.approx(0.0027, abs=0.0002)


def test_stuck_high_cells_are_read_as_shorts() -> None:
    array = make(rows=64, cols=64, read_noise=0.0, iv_nonlinearity=0.0)
    shape = (64, 64)
    array.apply_pulses(PulseKind.RESET, 0, 0, np.full(shape, 1.8), np.full(shape, 5.0), np.full(shape, 1e-6),
                       np.ones(shape, bool))  # fmt: skip
    g = array.read_conductance(0, 0, 64, 64, 0.2)
    assert np.all(g[array.stuck_high] > 5 * g[~array.stuck_high].max() / 2)
