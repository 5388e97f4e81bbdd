"""The autoranged measurement against a per-sample reference written from its definition."""

from __future__ import annotations

import numpy as np

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
