"""A pulse batch computes only its masked cells (``CrossbarArray.apply_pulses``), and gets bit for bit
what the whole region computed per cell gives: the same conductances, forming, drift restarts, random
streams and clock. The reference below is the whole-region formulation the emulator used before."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mock_hardware.array_model import CrossbarArray, PulseKind
from mock_hardware.device_params import preset
from mock_hardware.physics.switching import apply_reset, apply_set


def whole_region_pulses(array: CrossbarArray, kind: PulseKind, row0: int, col0: int, amplitude: np.ndarray,
                        v_gate: np.ndarray, width: np.ndarray, mask: np.ndarray) -> int:  # fmt: skip
    """Every cell of the region through the physics, the unmasked ones with a harmless pulse."""
    shape = mask.shape
    region = (slice(row0, row0 + shape[0]), slice(col0, col0 + shape[1]))
    p = array.params
    amplitude, v_gate, width = (
        np.where(mask, np.broadcast_to(np.asarray(a, dtype=np.float64), shape), idle)
        for a, idle in ((amplitude, 0.0), (v_gate, 0.0), (width, p.width_reference))
    )
    t_start = array._clock.now
    g_start = array._conductance_now()[region].copy()
    formed = array._formed[region]
    cells = array.cells.region(*region)
    noise = p.write_noise * array._write_rng.standard_normal(shape) if p.write_noise else np.zeros(shape)
    if kind is PulseKind.RESET:
        g_new, formed_new = apply_reset(g_start, formed, cells, amplitude, v_gate, width, noise, p), formed
    else:
        g_new, formed_new = apply_set(g_start, formed, cells, amplitude, v_gate, width, noise, p)
    pulsed = mask & ~cells.stuck
    changed = pulsed & (g_new != g_start)
    masked_widths = np.where(mask, width, 0.0)
    if changed.any():
        t_end = t_start + np.cumsum(masked_widths.ravel()).reshape(shape)
        array._formed[region] = np.where(pulsed, formed_new, formed)
        drift = array._drift
        for kept, new in ((drift.g_programmed, g_new), (drift.t_programmed, t_end)):
            kept[region][changed] = new[changed]
        if drift.enabled:  # drawn for the whole region
            drift.rate[region][changed] = drift._draw_rates(shape)[changed]
        array._version += 1
    array._clock.advance(float(masked_widths.sum()))
    return int(mask.sum())


def state(array: CrossbarArray) -> list[Any]:
    drift = array._drift
    return [array.conductance, array.formed, array.time, drift.g_programmed, drift.t_programmed, drift.rate,
            array._version, array._write_rng.bit_generator.state, drift._rng.bit_generator.state]  # fmt: skip


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"unformed_fraction": 0.2, "start_formed": True},
        {"start_formed": False},
        {"write_noise": 0.0, "drift_exponent": 0.05},
        {"drift_mean": 0.0, "drift_spread": 0.0},
    ],
)
def test_pulses_on_the_masked_cells_give_the_whole_regions_numbers(overrides: dict[str, Any]) -> None:
    params = preset("umass-ta-hfo2", rows=32, cols=24, line_resistance=0.0, **overrides)
    fast, reference = CrossbarArray(params, seed=3), CrossbarArray(params, seed=3)
    rng = np.random.default_rng(7)
    for step in range(12):
        kind = [PulseKind.SET, PulseKind.RESET, PulseKind.FORM][step % 3]
        row0, col0 = int(rng.integers(0, 8)), int(rng.integers(0, 6))
        shape = (int(rng.integers(1, 32 - row0 + 1)), int(rng.integers(1, 24 - col0 + 1)))
        mask = rng.random(shape) < [0.0, 0.05, 0.5, 1.0][step % 4]
        high = 3.5 if kind is PulseKind.FORM else 2.5
        amplitude = np.where(mask, rng.uniform(0.5, high, shape), np.nan)  # unmasked values: anything
        v_gate = rng.uniform(0.3, 2.0, shape)
        width = np.where(mask, rng.uniform(1e-7, 2e-6, shape), -1.0)
        fast.wait(0.5)
        reference.wait(0.5)
        args = (kind, row0, col0, amplitude, v_gate, width, mask)
        assert fast.apply_pulses(*args) == whole_region_pulses(reference, *args)
        for mine, theirs in zip(state(fast), state(reference), strict=True):
            if isinstance(mine, np.ndarray):
                assert mine.tobytes() == theirs.tobytes()
            else:
                assert mine == theirs
    assert fast._version > 0  # the runs changed cells


def test_a_scalar_pulse_value_broadcasts_over_the_masked_cells() -> None:
    params = preset("umass-ta-hfo2", rows=16, cols=16, line_resistance=0.0)
    fast, reference = CrossbarArray(params, seed=1), CrossbarArray(params, seed=1)
    mask = np.zeros((16, 16), bool)
    mask[3:9, 2:5] = True
    args = (PulseKind.SET, 0, 0, np.array(2.5), np.array(1.2), np.array(1e-6), mask)
    assert fast.apply_pulses(*args) == whole_region_pulses(reference, *args) == 18
    assert fast.conductance.tobytes() == reference.conductance.tobytes()
    assert fast.time == reference.time
