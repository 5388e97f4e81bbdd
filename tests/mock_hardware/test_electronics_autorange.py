"""The autoranged measurement against a per-sample reference written from its definition."""

from __future__ import annotations

import numpy as np
import pytest

from mock_hardware.electronics import Electronics


def reference(electronics: Electronics, current: np.ndarray) -> np.ndarray:
    full_scale = electronics.autorange_headroom * min(abs(electronics.adc_range[0]), abs(electronics.adc_range[1]))
    out = np.empty_like(current)
    for index, sample in np.ndenumerate(current):
        fitting = [g for g in sorted(electronics.tia_gains) if abs(sample) * g <= full_scale]
        gain = fitting[-1] if fitting else min(electronics.tia_gains)
        out[index] = electronics.digitize(np.array(sample), gain)[0]
    return out


def test_autorange_picks_the_highest_gain_that_fits_and_digitizes_as_digitize_does() -> None:
    electronics = Electronics()
    rng = np.random.default_rng(0)
    current = rng.normal(0, 1, (40, 15)) * 10.0 ** rng.uniform(-10, 0, (40, 15))
    full_scale = electronics.autorange_headroom * 2.5
    edges = [full_scale / g for g in electronics.tia_gains]  # samples exactly at and beside each boundary
    current[0, : len(edges)] = edges
    current[1, : len(edges)] = np.nextafter(edges, np.inf)
    current[2, : len(edges)] = -np.nextafter(edges, 0)
    current[3, :3] = [0.0, 1e3, -1e-15]  # no signal, far over every range, tiny
    np.testing.assert_array_equal(electronics.measure_autoranged(current), reference(electronics, current))


def reference_index(electronics: Electronics, current: np.ndarray) -> np.ndarray:
    """Per sample, the index in the ascending gains of the highest gain with ``|I| g <= full scale``
    (0 when none fits), by the definition: one product per sample and gain."""
    full_scale = electronics.autorange_headroom * min(abs(electronics.adc_range[0]), abs(electronics.adc_range[1]))
    gains = sorted(electronics.tia_gains)
    index = np.zeros(current.shape, dtype=np.int16)
    for where, sample in np.ndenumerate(current):
        fitting = [k for k, g in enumerate(gains) if np.float64(abs(sample)) * np.float64(g) <= full_scale]
        index[where] = fitting[-1] if fitting else 0
    return index


def boundary_samples(electronics: Electronics) -> np.ndarray:
    """Magnitudes at, just above and just below every gain's limit, both signs, and the odd ones."""
    full_scale = electronics.autorange_headroom * min(abs(electronics.adc_range[0]), abs(electronics.adc_range[1]))
    edges = np.array([full_scale / g for g in electronics.tia_gains])
    around = [np.nextafter(np.nextafter(edges, np.inf), np.inf), np.nextafter(edges, np.inf), edges,
              np.nextafter(edges, 0), np.nextafter(np.nextafter(edges, 0), 0)]  # fmt: skip
    odd = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e3, 1e-300, 5e-324]
    return np.concatenate([*around, *(-a for a in around), odd])


@pytest.mark.filterwarnings("ignore:invalid value encountered")  # inf and NaN samples, on purpose
def test_the_codes_and_gains_are_those_of_the_definition_at_every_boundary() -> None:
    rng = np.random.default_rng(1)
    # 539609.93... and 33104.44...: gains whose full scale / g is one float below the largest |I| that fits
    odd_gains = (3e3, 1.7e2, 539609.9381920524, 33104.44467528176)
    for electronics in (Electronics(), Electronics(tia_gains=odd_gains), Electronics(adc_range=(-1.3, 2.9))):
        samples = boundary_samples(electronics)
        current = np.concatenate([samples, rng.normal(0, 1, 2000) * 10.0 ** rng.uniform(-10, 0, 2000)]).reshape(-1, 2)
        codes, index = electronics.measure_autoranged_codes(current)
        expected_index = reference_index(electronics, current)
        assert index.dtype == np.int16
        np.testing.assert_array_equal(index, expected_index)
        gains = np.sort(np.asarray(electronics.tia_gains, dtype=np.float64))
        finite = np.isfinite(current)
        _, expected_codes, _ = electronics.digitize(current[finite], gains[expected_index[finite]])
        np.testing.assert_array_equal(codes[finite], expected_codes)
        assert np.isnan(codes[np.isnan(current)]).all()


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_gains_that_are_not_positive_take_the_definitions_path() -> None:
    electronics = Electronics(tia_gains=(0.0, 1e3, 1e5))
    current = boundary_samples(Electronics(tia_gains=(1e3, 1e5))).reshape(-1, 1)
    _, index = electronics.measure_autoranged_codes(current)
    np.testing.assert_array_equal(index, reference_index(electronics, current))


def numpy_codes(electronics: Electronics, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``measure_autoranged_codes`` as numpy computed it before the compiled pass (session 11, part V)."""
    gains = np.sort(np.asarray(electronics.tia_gains, dtype=np.float64))
    index = electronics._autorange_index(current, gains)
    volts = np.take(gains, index)
    np.multiply(current, volts, out=volts)
    np.clip(volts, -electronics.tia_rail, electronics.tia_rail, out=volts)
    np.divide(volts, electronics.adc_lsb, out=volts)
    np.round(volts, out=volts)
    np.clip(volts, -(2 ** (electronics.adc_bits - 1)), 2 ** (electronics.adc_bits - 1) - 1, out=volts)
    return volts, index


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_the_compiled_codes_are_the_numpy_steps_bit_for_bit() -> None:
    """Ties at half an LSB (rint rounds them to even), the TIA rail and the ADC's end codes, both
    zeros, NaN and inf, on three electronics. Fails (checked) with ties rounded away from zero, with
    the rail's clip dropped, with ``<`` for ``<=`` at the gains' limits, or with the ADC's lowest code
    one higher."""
    rng = np.random.default_rng(7)
    odd_gains = (3e3, 1.7e2, 539609.9381920524, 33104.44467528176)
    configs = (Electronics(), Electronics(tia_gains=odd_gains), Electronics(adc_range=(-1.3, 2.9), tia_rail=1.0))
    for electronics in configs:
        gains = np.sort(np.asarray(electronics.tia_gains, dtype=np.float64))
        lsb = electronics.adc_lsb
        ties = (np.arange(-40, 40) + 0.5) * lsb / gains[0]  # exact half-LSB volts at the lowest gain
        rails = np.array([1.0, -1.0, 1.01, -1.01]) * electronics.tia_rail / gains[0]
        current = np.concatenate([
            boundary_samples(electronics), ties, rails, rng.normal(0, 1, 5001) * 10.0 ** rng.uniform(-10, 0, 5001),
        ])  # fmt: skip
        for shaped in (current, current[: current.size // 4 * 4].reshape(-1, 4)):
            expected_codes, expected_index = numpy_codes(electronics, shaped)
            codes, index = electronics.measure_autoranged_codes(shaped)
            assert codes.dtype == np.float64 and index.dtype == np.int16
            assert codes.tobytes() == expected_codes.tobytes()
            assert index.tobytes() == expected_index.tobytes()
        # a strided view takes numpy's steps (the product's own), with the compiled pass's result
        codes, index = electronics.measure_autoranged_codes(current[::2])
        compact_codes, compact_index = electronics.measure_autoranged_codes(np.ascontiguousarray(current[::2]))
        assert codes.tobytes() == compact_codes.tobytes() and index.tobytes() == compact_index.tobytes()
