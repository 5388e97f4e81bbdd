"""The twin's round trip: a random chip drawn across physical ranges, characterized through the
Board API (in process), fitted, and compared with the parameters it was drawn with.

One owner for the draw and the comparison: ``tests/twin/test_round_trip.py`` (20 fixed chips)
and ``benchmarks/twin_round_trip.py`` (held-out draws, larger arrays, the ends of the ranges)
both use these.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from drivers import open_board
from hil.twin.fit import fit_twin
from hil.twin.suite_runner import run_suite_in_memory

# The test's array: small enough to be quick, large enough that a chip's cells sample its
# distributions well (the mean drift rate of n cells scatters by drift_spread / sqrt(n)).
ROWS, COLS = 64, 32
# The suite as `hil characterize all` runs it: a held-out check may run its defaults, so the
# round trip holds the defaults to the tolerances (no override of its own).
Suite = Mapping[str, Mapping[str, Any]]
RELATIVE_TOLERANCE = 0.10
FRACTION_TOLERANCE = 0.01  # a defect fraction: 1 point
GATE_STEP = 0.1  # V, the gate calibration's grid: the window's ends are known to half of it
G_STUCK_HIGH = 1e-3  # S, the preset's shorted level (not drawn)
SHORTED_TO_AVERAGE = 10  # shorted cells needed to average their level


def draw_chip(rng: np.random.Generator, rows: int = ROWS, cols: int = COLS, ends: bool = False) -> dict[str, Any]:
    """One chip's parameters, each from its physical range (see docs/twin.md).

    ``ends``: each continuous parameter at one end of its range (which one drawn), the hardest
    chips the ranges allow. The draws take the generator's numbers in the same order either way.
    """

    def uniform(low: float, high: float) -> float:
        if ends:
            return high if rng.random() < 0.5 else low
        return float(rng.uniform(low, high))

    g_min = uniform(60e-6, 140e-6)
    drift_mean = -uniform(0.05e-6, 0.2e-6)
    saturates = rng.random() < 0.5
    unformed = rng.random() < 0.5
    return {
        "rows": rows, "cols": cols,
        "g_min": g_min,
        "set_slope": uniform(50e-6, 150e-6),
        # Above the RESET floor at turn-on, so the transistor's threshold is what the curve shows.
        "set_intercept": g_min + uniform(30e-6, 100e-6),
        "set_slope_spread": uniform(0.08, 0.25),
        "set_intercept_spread": uniform(0.04, 0.08),
        "set_intercept_spread_abs": uniform(0.0, 15e-6),
        "v_gate_threshold": uniform(0.3, 0.7),
        "v_gate_saturation": uniform(1.4, 2.6) if saturates else 0.0,
        "write_noise": uniform(1e-6, 8e-6),
        "read_noise": uniform(0.005, 0.02),
        "stuck_low_fraction": uniform(0.0, 0.15),
        "stuck_high_fraction": uniform(0.0, 0.04),
        "unformed_fraction": uniform(0.1, 0.2) if unformed else 0.0,
        "bad_rows": ",".join(str(r) for r in sorted(rng.choice(rows, rng.integers(0, 3), replace=False))),
        "bad_cols": ",".join(str(c) for c in sorted(rng.choice(cols, rng.integers(0, 3), replace=False))),
        "line_resistance": uniform(0.1, 1.0),
        "drift_mean": drift_mean,
        # The HfOx fit has its spread about equal to its mean (0.088 against 0.09 uS).
        "drift_spread": -drift_mean * uniform(0.5, 1.2),
    }  # fmt: skip


def resource(params: dict[str, Any], seed: int) -> str:
    """The emulated chip of these parameters (``seed``: its cells and noise)."""
    return f"emulator://?preset=umass-ta-hfo2&seed={seed}&" + "&".join(f"{k}={v}" for k, v in params.items())


# Fitted parameter -> its true value, as the chip's parameters define it.
CONTINUOUS: dict[str, Callable[[dict[str, Any]], float]] = {
    "set_slope": lambda p: p["set_slope"],
    "set_intercept": lambda p: p["set_intercept"],
    "set_slope_spread": lambda p: p["set_slope_spread"],
    # The fit measures c's spread as one absolute figure: the relative and absolute parts combined.
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
V_FORM_THRESHOLD = 3.0  # V, the preset's (not drawn)


@dataclass
class Comparison:
    """A fitted chip against its truth: each compared figure's error and the failures."""

    relative_errors: dict[str, float] = field(default_factory=dict)
    """continuous parameters: (fitted - true) / |true|"""
    absolute_errors: dict[str, float] = field(default_factory=dict)
    """defect fractions (fitted - true) and the gate window's ends (V)"""
    failures: list[str] = field(default_factory=list)
    z_scores: dict[str, float] = field(default_factory=dict)
    """continuous parameters: (fitted - true) / the fit's own uncertainty (as the TOML records it)"""


def compare(params: dict[str, Any], fitted: dict[str, Any], uncertainty: dict[str, float] | None = None) -> Comparison:
    """The round trip's tolerances: every continuous parameter within 10 %, defect fractions
    within 1 point, bad lines exact, the turn-on within half a gate step, saturation within 10 %.
    ``uncertainty``: each fitted figure's standard error, to say how far off a failure is by the
    fit's own account."""
    result = Comparison()
    fail = result.failures.append
    for name, truth in CONTINUOUS.items():
        expected = truth(params)
        result.relative_errors[name] = (fitted[name] - expected) / abs(expected)
        sigma = (uncertainty or {}).get(name, math.nan)
        if sigma > 0:
            result.z_scores[name] = (fitted[name] - expected) / sigma
        if abs(fitted[name] - expected) > RELATIVE_TOLERANCE * abs(expected):
            z = f" ({result.z_scores[name]:+.1f} of its uncertainty)" if name in result.z_scores else ""
            fail(f"{name}: fitted {fitted[name]:.4g}, true {expected:.4g}{z}")
    enough_shorted = params["stuck_high_fraction"] * params["rows"] * params["cols"] >= SHORTED_TO_AVERAGE
    if enough_shorted:
        result.relative_errors["g_stuck_high"] = (fitted["g_stuck_high"] - G_STUCK_HIGH) / G_STUCK_HIGH
        if abs(fitted["g_stuck_high"] - G_STUCK_HIGH) > RELATIVE_TOLERANCE * G_STUCK_HIGH:
            fail(f"g_stuck_high: fitted {fitted['g_stuck_high']:.4g}, true {G_STUCK_HIGH:.4g}")
    for name in FRACTIONS:
        result.absolute_errors[name] = fitted[name] - params[name]
        if abs(fitted[name] - params[name]) > FRACTION_TOLERANCE:
            fail(f"{name}: fitted {fitted[name]:.4f}, true {params[name]:.4f}")
    turn_on, true_turn_on = fitted["v_gate_threshold"], params["v_gate_threshold"]
    result.absolute_errors["v_gate_threshold"] = turn_on - true_turn_on
    if abs(turn_on - true_turn_on) > GATE_STEP / 2 + 1e-9:
        fail(f"v_gate_threshold: fitted {turn_on:.3f}, true {true_turn_on:.3f}")
    saturation, fitted_saturation = params["v_gate_saturation"], fitted["v_gate_saturation"]
    if saturation:
        result.relative_errors["v_gate_saturation"] = (fitted_saturation - saturation) / saturation
    if (fitted_saturation == 0) != (saturation == 0) or abs(fitted_saturation - saturation) > 0.1 * saturation:
        fail(f"v_gate_saturation: fitted {fitted_saturation:.3f}, true {saturation:.3f}")
    for name in ("bad_rows", "bad_cols"):
        expected_lines = [int(x) for x in params[name].split(",") if x]
        if fitted[name] != expected_lines:
            fail(f"{name}: found {fitted[name]}, true {expected_lines}")
    if params["unformed_fraction"]:
        result.relative_errors["v_form_threshold"] = (fitted["v_form_threshold"] - V_FORM_THRESHOLD) / V_FORM_THRESHOLD
        if abs(fitted["v_form_threshold"] - V_FORM_THRESHOLD) > RELATIVE_TOLERANCE * V_FORM_THRESHOLD:
            fail(f"v_form_threshold: fitted {fitted['v_form_threshold']:.4g}, true {V_FORM_THRESHOLD:.4g}")
    return result


def round_trip(params: dict[str, Any], seed: int, suite: Suite | None = None) -> Comparison:
    """Characterize the chip of ``params`` (emulator seed ``seed``) with the twin suite (its
    defaults, or these options over them: step -> field -> value), fit, compare."""
    with open_board(resource(params, seed)) as board:
        twin = fit_twin(run_suite_in_memory(board, suite))
    return compare(params, twin.parameters, {name: source.uncertainty for name, source in twin.sources.items()})
