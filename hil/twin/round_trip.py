"""The twin's round trip: a random chip drawn across physical ranges, characterized through the
Board API (in process), fitted, and compared with the parameters it was drawn with.

One owner for the draw and the comparison: ``tests/twin/test_round_trip.py`` (20 fixed chips)
and ``benchmarks/twin_round_trip.py`` (held-out draws, larger arrays, the ends of the ranges)
both use these.

Two families of chips (:data:`FAMILIES`), each emulated on its own base preset and fitted with it:
``umass`` (the Ta/HfO2 array's scale: RESET floor 60-140 uS, windows of hundreds of uS) and
``tsinghua`` (the TaOx/HfOx platform's: floor 5-20 uS, windows of 10-40 uS, 128 x 16 or 64 x 16).
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
GATE_TOP = 3.0  # V, the gate calibration's highest gate
SHORTED_TO_AVERAGE = 10  # shorted cells needed to average their level


def _uniform(rng: np.random.Generator, ends: bool) -> Callable[[float, float], float]:
    def uniform(low: float, high: float) -> float:
        if ends:
            return high if rng.random() < 0.5 else low
        return float(rng.uniform(low, high))

    return uniform


def _lines(rng: np.random.Generator, count: int) -> str:
    return ",".join(str(r) for r in sorted(rng.choice(count, rng.integers(0, 3), replace=False)))


def _defects_wires_drift(
    rng: np.random.Generator, uniform: Callable[[float, float], float], rows: int, cols: int, unformed: bool,
    drift_mean: float,
) -> dict[str, Any]:
    """The parameters every family draws from the same ranges, in the same order (after its own)."""
    return {
        "read_noise": uniform(0.005, 0.02),
        "stuck_low_fraction": uniform(0.0, 0.15),
        "stuck_high_fraction": uniform(0.0, 0.04),
        "unformed_fraction": uniform(0.1, 0.2) if unformed else 0.0,
        "bad_rows": _lines(rng, rows),
        "bad_cols": _lines(rng, cols),
        "line_resistance": uniform(0.1, 1.0),
        "drift_mean": drift_mean,
        # The HfOx fit has its spread about equal to its mean (0.088 against 0.09 uS).
        "drift_spread": -drift_mean * uniform(0.5, 1.2),
    }  # fmt: skip


def draw_chip(
    rng: np.random.Generator, rows: int = ROWS, cols: int = COLS, ends: bool = False, family: str = "umass"
) -> dict[str, Any]:
    """One chip's parameters, each from its family's physical range (see docs/twin.md).

    ``ends``: each continuous parameter at one end of its range (which one drawn), the hardest
    chips the ranges allow. The draws take the generator's numbers in the same order either way.
    """
    return FAMILIES[family].draw(rng, rows, cols, ends)


def _draw_umass(rng: np.random.Generator, rows: int, cols: int, ends: bool) -> dict[str, Any]:
    """The Ta/HfO2 array's scale (the umass-ta-hfo2 preset's neighbourhood)."""
    uniform = _uniform(rng, ends)
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
        **_defects_wires_drift(rng, uniform, rows, cols, unformed, drift_mean),
    }  # fmt: skip


# The tsinghua-taox-hfox preset's ceiling, not drawn (no procedure measures it): the line is drawn
# to stay below it over the gate range, so that the gate (not each cell's own ceiling) ends it.
TSINGHUA_TOP = (30e-6, 42e-6)  # S: the compliance level at the range's top gate (or saturation)


def _draw_tsinghua(rng: np.random.Generator, rows: int, cols: int, ends: bool) -> dict[str, Any]:
    """The TaOx/HfOx platform's scale (the tsinghua-taox-hfox preset's neighbourhood): a RESET
    floor of 5-20 uS, a compliance line rising 10-35 uS above it, write noise 0.5-2 uS, drift a
    fifth to a half of the Ta/HfO2 array's (the levels are a tenth)."""
    uniform = _uniform(rng, ends)
    g_min = uniform(5e-6, 20e-6)
    drift_mean = -uniform(0.02e-6, 0.08e-6)
    saturates = rng.random() < 0.5
    unformed = rng.random() < 0.5
    v_threshold = uniform(0.3, 0.7)
    v_saturation = uniform(1.4, 2.6) if saturates else 0.0
    # Above the RESET floor at turn-on, so the transistor's threshold is what the curve shows.
    intercept = g_min + uniform(3e-6, 8e-6)
    top = max(uniform(*TSINGHUA_TOP), intercept + 10e-6)
    slope = (top - intercept) / (v_saturation or GATE_TOP)
    return {
        "rows": rows, "cols": cols,
        "g_min": g_min,
        "set_slope": slope,
        "set_intercept": intercept,
        "set_slope_spread": uniform(0.05, 0.15),
        "set_intercept_spread": uniform(0.02, 0.06),
        "set_intercept_spread_abs": uniform(0.0, 1.5e-6),
        "v_gate_threshold": v_threshold,
        "v_gate_saturation": v_saturation,
        "write_noise": uniform(0.5e-6, 2e-6),
        **_defects_wires_drift(rng, uniform, rows, cols, unformed, drift_mean),
    }  # fmt: skip


@dataclass(frozen=True)
class Family:
    """A kind of chip: its draw, the preset it is emulated on (and the twin fitted with), and
    that preset's values of what the draw leaves alone but the fit measures."""

    preset: str
    draw: Callable[[np.random.Generator, int, int, bool], dict[str, Any]]
    g_stuck_low: float
    """S, the preset's stuck-low level"""
    g_stuck_high: float
    """S, the preset's shorted level"""
    width_gain: float
    """the compliance line at the suite's 1 us pulses over the preset's own, ``(1 us / width_reference)
    ** set_width_exponent``: what the gate calibration measures of ``set_slope`` and ``set_intercept``"""
    rows: int = ROWS
    cols: int = COLS


FAMILIES: dict[str, Family] = {
    "umass": Family("umass-ta-hfo2", _draw_umass, g_stuck_low=5e-6, g_stuck_high=1e-3, width_gain=1.0),
    # width_reference 50 ns, set_width_exponent 0.02: 20 ** 0.02.
    "tsinghua": Family("tsinghua-taox-hfox", _draw_tsinghua, g_stuck_low=1e-6, g_stuck_high=100e-6,
                       width_gain=20**0.02, rows=64, cols=16),
}  # fmt: skip


def resource(params: dict[str, Any], seed: int, family: str = "umass") -> str:
    """The emulated chip of these parameters (``seed``: its cells and noise)."""
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"emulator://?preset={FAMILIES[family].preset}&seed={seed}&{query}"


# Fitted parameter -> its true value, as the chip's parameters (and its family) define it.
CONTINUOUS: dict[str, Callable[[dict[str, Any], Family], float]] = {
    "set_slope": lambda p, f: p["set_slope"] * f.width_gain,
    "set_intercept": lambda p, f: p["set_intercept"] * f.width_gain,
    "set_slope_spread": lambda p, f: p["set_slope_spread"],
    # The fit measures c's spread as one absolute figure: the relative and absolute parts combined.
    "set_intercept_spread_abs": lambda p, f: f.width_gain * math.hypot(p["set_intercept"] * p["set_intercept_spread"],
                                                                       p["set_intercept_spread_abs"]),
    "write_noise": lambda p, f: p["write_noise"],
    "read_noise": lambda p, f: p["read_noise"],
    "line_resistance": lambda p, f: p["line_resistance"],
    "drift_mean": lambda p, f: p["drift_mean"],
    "drift_spread": lambda p, f: p["drift_spread"],
    "g_min": lambda p, f: p["g_min"],
    "g_stuck_low": lambda p, f: f.g_stuck_low,
    "d2d_spread": lambda p, f: 0.05,
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


def compare(
    params: dict[str, Any], fitted: dict[str, Any], uncertainty: dict[str, float] | None = None,
    family: str = "umass",
) -> Comparison:  # fmt: skip
    """The round trip's tolerances: every continuous parameter within 10 %, defect fractions
    within 1 point, bad lines exact, the turn-on within half a gate step, saturation within 10 %.
    ``uncertainty``: each fitted figure's standard error, to say how far off a failure is by the
    fit's own account."""
    result = Comparison()
    fail = result.failures.append
    missing = [name for name in (*CONTINUOUS, *FRACTIONS, "v_gate_threshold", "v_gate_saturation", "bad_rows",
                                 "bad_cols") if name not in fitted]  # fmt: skip
    if missing:
        fail(f"not fitted: {', '.join(missing)}")
        fitted = {name: math.nan for name in missing} | dict(fitted)
    kind = FAMILIES[family]
    g_stuck_high = kind.g_stuck_high
    for name, truth in CONTINUOUS.items():
        expected = truth(params, kind)
        result.relative_errors[name] = (fitted[name] - expected) / abs(expected)
        sigma = (uncertainty or {}).get(name, math.nan)
        if sigma > 0:
            result.z_scores[name] = (fitted[name] - expected) / sigma
        if abs(fitted[name] - expected) > RELATIVE_TOLERANCE * abs(expected):
            z = f" ({result.z_scores[name]:+.1f} of its uncertainty)" if name in result.z_scores else ""
            fail(f"{name}: fitted {fitted[name]:.4g}, true {expected:.4g}{z}")
    enough_shorted = params["stuck_high_fraction"] * params["rows"] * params["cols"] >= SHORTED_TO_AVERAGE
    if enough_shorted:
        shorted = float(fitted.get("g_stuck_high", math.nan))
        result.relative_errors["g_stuck_high"] = (shorted - g_stuck_high) / g_stuck_high
        if not abs(shorted - g_stuck_high) <= RELATIVE_TOLERANCE * g_stuck_high:
            fail(f"g_stuck_high: fitted {shorted:.4g}, true {g_stuck_high:.4g}")
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
        v_form = float(fitted.get("v_form_threshold", math.nan))
        result.relative_errors["v_form_threshold"] = (v_form - V_FORM_THRESHOLD) / V_FORM_THRESHOLD
        if not abs(v_form - V_FORM_THRESHOLD) <= RELATIVE_TOLERANCE * V_FORM_THRESHOLD:
            fail(f"v_form_threshold: fitted {v_form:.4g}, true {V_FORM_THRESHOLD:.4g}")
    return result


def round_trip(params: dict[str, Any], seed: int, suite: Suite | None = None, family: str = "umass") -> Comparison:
    """Characterize the chip of ``params`` (emulator seed ``seed``, on its family's preset) with
    the twin suite (its defaults, or these options over them: step -> field -> value), fit with
    the family's preset as the base, compare."""
    preset = FAMILIES[family].preset
    with open_board(resource(params, seed, family)) as board:
        twin = fit_twin(run_suite_in_memory(board, suite), preset=preset)
    uncertainty = {name: source.uncertainty for name, source in twin.sources.items()}
    return compare(params, twin.parameters, uncertainty, family)
