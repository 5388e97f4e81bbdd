"""Device parameters, presets and reproducibility of the emulated array."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from mock_hardware.array_model import CrossbarArray, PulseKind
from mock_hardware.device_params import PRESETS, DeviceParameters, preset


def test_umass_preset_carries_the_published_figures() -> None:
    p = preset("umass-ta-hfo2")
    assert (p.rows, p.cols) == (128, 64)
    assert (p.set_slope, p.set_intercept) == (98e-6, 120e-6)
    assert (p.g_min, p.g_max) == (100e-6, 900e-6)
    assert p.write_noise == 4e-6 and p.read_noise == 0.01
    assert 0.10 <= p.set_slope_spread <= 0.20
    assert p.stuck_low_fraction + p.stuck_high_fraction == pytest.approx(0.11)
    assert p.stuck_low_fraction > p.stuck_high_fraction > 0
    assert p.line_resistance == 0.35


def test_tsinghua_and_ideal_presets() -> None:
    t = preset("tsinghua-taox-hfox")
    assert (t.rows, t.cols, t.g_min, t.g_max, t.width_reference) == (128, 16, 10e-6, 60e-6, 50e-9)
    ideal = preset("ideal")
    assert ideal.write_noise == ideal.read_noise == ideal.line_resistance == 0
    assert ideal.stuck_low_fraction == ideal.stuck_high_fraction == 0
    assert ideal.drift_mean == ideal.drift_spread == ideal.iv_nonlinearity == 0
    assert set(PRESETS) >= {"ideal", "umass-ta-hfo2", "tsinghua-taox-hfox"}


def test_overrides_arrive_as_strings_and_are_coerced() -> None:
    # The resource string hands every value over as text.
    p = preset("umass-ta-hfo2", write_noise="8e-6", rows="32", start_formed="false", clock="wall")
    assert (p.write_noise, p.rows, p.start_formed, p.clock) == (8e-6, 32, False, "wall")


@pytest.mark.parametrize(
    "overrides",
    [{"no_such_field": 1}, {"write_noise": "loud"}, {"clock": "sundial"}, {"g_min": 1e-3, "g_max": 1e-4},
     {"stuck_low_fraction": 0.8, "stuck_high_fraction": 0.3}, {"rows": 0}],
)  # fmt: skip
def test_bad_overrides_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        preset("umass-ta-hfo2", **overrides)


def test_unknown_preset_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="umass-ta-hfo2"):
        preset("nope")


def test_every_field_is_a_plain_scalar() -> None:
    # Resource strings can only carry scalars.
    for name, field in DeviceParameters.model_fields.items():
        value = getattr(DeviceParameters(), name)
        assert isinstance(value, bool | int | float | str), (name, field.annotation)


def _exercise(array: CrossbarArray) -> list[np.ndarray]:
    """A little of everything, returning every observable."""
    r, c = array.rows, array.cols
    out = [array.conductance, array.read_conductance(0, 0, r, c, 0.2)]
    array.apply_pulses(PulseKind.RESET, 0, 0, np.full((r, c), 1.7), np.full((r, c), 5.0), np.full((r, c), 1e-6),
                       np.ones((r, c), bool))  # fmt: skip
    array.apply_pulses(PulseKind.SET, 0, 0, np.full((r, c), 2.5), np.full((r, c), 1.2), np.full((r, c), 1e-6),
                       np.ones((r, c), bool))  # fmt: skip
    array.advance_time(3600.0)
    v = np.random.default_rng(5).uniform(-0.2, 0.2, (7, r))
    out += [array.conductance, array.vmm(v, 0, 0, c), array.column_currents(v[0], np.zeros(c), np.ones(r, bool))]
    return out


def test_same_seed_same_results_different_seed_different_results() -> None:
    params = preset("umass-ta-hfo2", rows=12, cols=8)
    first, again = _exercise(CrossbarArray(params, seed=3)), _exercise(CrossbarArray(params, seed=3))
    other = _exercise(CrossbarArray(params, seed=4))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(first, other, strict=True):
        assert not np.array_equal(a, b)


def test_reading_does_not_change_what_programming_does() -> None:
    # Reads and writes draw from separate streams: a technician who reads more often gets the
    # same devices and the same programming results.
    params = preset("umass-ta-hfo2", rows=8, cols=8, drift_mean=0.0, drift_spread=0.0)
    quiet, busy = CrossbarArray(params, seed=9), CrossbarArray(params, seed=9)
    for _ in range(5):
        busy.read_conductance(0, 0, 8, 8, 0.2)
    ones = np.ones((8, 8))
    for array in (quiet, busy):
        array.apply_pulses(PulseKind.SET, 0, 0, 2.5 * ones, 1.4 * ones, 1e-6 * ones, ones.astype(bool))
    np.testing.assert_array_equal(quiet.conductance, busy.conductance)
