"""Random streams per source: reads never shift the noise of writes or of other reads."""

from __future__ import annotations

import numpy as np

from mock_hardware.array_model import CrossbarArray, PulseKind
from mock_hardware.device_params import preset

SHAPE = (16, 8)


def pulse_rounds(array: CrossbarArray, extra_reads: bool) -> list[np.ndarray]:
    """Programming rounds with a training-like VMM and map after each; optionally more reads between."""
    rng = np.random.default_rng(0)
    v = rng.uniform(-0.2, 0.2, (5, SHAPE[0]))
    other = np.random.default_rng(1)
    seen = []
    for _ in range(4):
        mask = rng.random(SHAPE) < 0.3
        array.apply_pulses(PulseKind.SET, 0, 0, np.full(SHAPE, 2.5), rng.uniform(0.7, 1.6, SHAPE),
                           np.full(SHAPE, 1e-6), mask)  # fmt: skip
        if extra_reads:  # an evaluation: other vectors, another region, a DC read
            array.vmm(other.uniform(0, 0.2, (50, 8)), 4, 0, 8)
            array.read_conductance(0, 0, 4, 4, 0.1)
            array.column_currents(np.full(SHAPE[0], 0.1), np.zeros(SHAPE[1]), np.ones(SHAPE[0], bool))
        seen.append(array.vmm(v, 0, 0, SHAPE[1]))
        seen.append(array.read_conductance(0, 0, *SHAPE, 0.2))
    seen.append(array.conductance)
    return seen


def test_reads_in_between_change_neither_the_writes_nor_the_other_reads() -> None:
    # Drift off: with drift on, the reads' time on the clock ages the cells (physics, not noise).
    params = preset("umass-ta-hfo2", rows=SHAPE[0], cols=SHAPE[1], drift_mean=0.0, drift_spread=0.0)
    plain = pulse_rounds(CrossbarArray(params, seed=5), extra_reads=False)
    with_reads = pulse_rounds(CrossbarArray(params, seed=5), extra_reads=True)
    for a, b in zip(plain, with_reads, strict=True):
        np.testing.assert_array_equal(a, b)


def test_repeated_reads_get_fresh_noise_and_a_new_seed_other_noise() -> None:
    params = preset("umass-ta-hfo2", rows=SHAPE[0], cols=SHAPE[1], line_resistance=0.0)
    array = CrossbarArray(params, seed=5)
    maps = [array.read_conductance(0, 0, *SHAPE, 0.2) for _ in range(200)]
    relative = np.std(maps, axis=0) / np.mean(maps, axis=0)
    # Independent 1 % noise on every read (drift moves the mean by far less over 200 reads)
    assert abs(float(np.median(relative)) - params.read_noise) < 0.15 * params.read_noise
    v = np.full((3, SHAPE[0]), 0.1)
    first, second = array.vmm(v, 0, 0, SHAPE[1]), array.vmm(v, 0, 0, SHAPE[1])
    assert not np.array_equal(first, second)
    other = CrossbarArray(params, seed=6)
    other_map = other.read_conductance(0, 0, *SHAPE, 0.2) / other.conductance
    this_map = CrossbarArray(params, seed=5).read_conductance(0, 0, *SHAPE, 0.2) / array.conductance
    assert not np.allclose(other_map, this_map)
