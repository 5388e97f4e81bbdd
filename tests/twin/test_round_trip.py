"""Round trip: random chips drawn across physical ranges, characterized through the Board API
(in process, 32 x 16), fitted, and compared with the parameters they were drawn with."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from drivers import open_board
from hil.twin.fit import fit_twin
from hil.twin.suite_runner import run_suite_in_memory

CHIPS = 20
# Small enough to be quick, large enough that a chip's cells sample its distributions well: the
# mean drift rate of n cells scatters by drift_spread / sqrt(n) around drift_mean.
ROWS, COLS = 64, 32
# Enough reads that the drift (under 1 uS over the run) stands out of the read noise.
SUITE = {"retention": {"t_last": 1e5, "reads_per_point": 16}}


def draw_chip(rng: np.random.Generator) -> dict[str, Any]:
    """One chip's parameters, each from its physical range (see docs/twin.md)."""
    g_min = rng.uniform(60e-6, 140e-6)
    drift_mean = -rng.uniform(0.05e-6, 0.2e-6)
    saturates = rng.random() < 0.5
    unformed = rng.random() < 0.5
    return {
        "rows": ROWS, "cols": COLS,
        "g_min": g_min,
        "set_slope": rng.uniform(50e-6, 150e-6),
        # Above the RESET floor at turn-on, so the transistor's threshold is what the curve shows.
        "set_intercept": g_min + rng.uniform(30e-6, 100e-6),
        "set_slope_spread": rng.uniform(0.08, 0.25),
        "set_intercept_spread": rng.uniform(0.04, 0.08),
        "set_intercept_spread_abs": rng.uniform(0.0, 15e-6),
        "v_gate_threshold": rng.uniform(0.3, 0.7),
        "v_gate_saturation": rng.uniform(1.4, 2.6) if saturates else 0.0,
        "write_noise": rng.uniform(1e-6, 8e-6),
        "read_noise": rng.uniform(0.005, 0.02),
        "stuck_low_fraction": rng.uniform(0.0, 0.15),
        "stuck_high_fraction": rng.uniform(0.0, 0.04),
        "unformed_fraction": rng.uniform(0.1, 0.2) if unformed else 0.0,
        "bad_rows": ",".join(str(r) for r in sorted(rng.choice(ROWS, rng.integers(0, 3), replace=False))),
        "bad_cols": ",".join(str(c) for c in sorted(rng.choice(COLS, rng.integers(0, 3), replace=False))),
        "line_resistance": rng.uniform(0.1, 1.0),
        "drift_mean": drift_mean,
        # The HfOx fit has its spread about equal to its mean (0.088 against 0.09 uS).
        "drift_spread": -drift_mean * rng.uniform(0.5, 1.2),
    }  # fmt: skip


def resource(params: dict[str, Any], seed: int) -> str:
    return f"emulator://?preset=umass-ta-hfo2&seed={seed}&" + "&".join(f"{k}={v}" for k, v in params.items())


# Fitted parameter -> its true value, as the chip's parameters define it.
CONTINUOUS = {
    "set_slope": lambda p: p["set_slope"],
    "set_intercept": lambda p: p["set_intercept"],
    "set_slope_spread": lambda p: p["set_slope_spread"],
    "set_intercept_spread_abs": lambda p: math.hypot(p["set_intercept"] * p["set_intercept_spread"],
                                                     p["set_intercept_spread_abs"]),
    "write_noise": lambda p: p["write_noise"],
    "read_noise": lambda p: p["read_noise"],
    "line_resistance": lambda p: p["line_resistance"],
    "drift_mean": lambda p: p["drift_mean"],
    "drift_spread": lambda p: p["drift_spread"],
    "g_min": lambda p: p["g_min"],
    "g_stuck_low": lambda p: 5e-6,
    "d2d_spread": lambda p: 0.05,
}  # fmt: skip
FRACTIONS = ("stuck_low_fraction", "stuck_high_fraction", "unformed_fraction")


@pytest.mark.parametrize("chip", range(CHIPS))
def test_a_random_chip_round_trips(chip: int) -> None:
    params = draw_chip(np.random.default_rng(1000 + chip))
    with open_board(resource(params, seed=chip)) as board:
        twin = fit_twin(run_suite_in_memory(board, SUITE))
    fitted = twin.parameters
    errors = []
    for name, truth in CONTINUOUS.items():
        expected = truth(params)
        if abs(fitted[name] - expected) > 0.10 * abs(expected):
            errors.append(f"{name}: fitted {fitted[name]:.4g}, true {expected:.4g}")
    enough_shorted = params["stuck_high_fraction"] * ROWS * COLS >= 10  # to average their level
    if enough_shorted and abs(fitted["g_stuck_high"] - 1e-3) > 0.10e-3:
        errors.append(f"g_stuck_high: fitted {fitted['g_stuck_high']:.4g}")
    for name in FRACTIONS:
        if abs(fitted[name] - params[name]) > 0.01:
            errors.append(f"{name}: fitted {fitted[name]:.4f}, true {params[name]:.4f}")
    # The gate window's ends are known to a step of the calibration's gate grid (0.1 V).
    turn_on, true_turn_on = fitted["v_gate_threshold"], params["v_gate_threshold"]
    if abs(turn_on - true_turn_on) > 0.05 + 1e-9:
        errors.append(f"v_gate_threshold: fitted {turn_on:.3f}, true {true_turn_on:.3f}")
    saturation, fitted_saturation = params["v_gate_saturation"], fitted["v_gate_saturation"]
    if (fitted_saturation == 0) != (saturation == 0) or abs(fitted_saturation - saturation) > 0.1 * saturation:
        errors.append(f"v_gate_saturation: fitted {fitted_saturation:.3f}, true {saturation:.3f}")
    for name in ("bad_rows", "bad_cols"):
        expected_lines = [int(x) for x in params[name].split(",") if x]
        if fitted[name] != expected_lines:
            errors.append(f"{name}: found {fitted[name]}, true {expected_lines}")
    if params["unformed_fraction"]:
        for name, expected in (("v_form_threshold", 3.0),):
            if abs(fitted[name] - expected) > 0.10 * expected:
                errors.append(f"{name}: fitted {fitted[name]:.4g}, true {expected:.4g}")
    assert not errors, f"chip {chip}: " + "; ".join(errors)
