"""SET conductance vs gate voltage, as a characterization procedure.

The measurement and fit live in :func:`protocols.calibration.calibrate_gate`; this module gives
it the shape every procedure has (``run(board, recorder, **options)`` with a flat options model)
so ``hil characterize gate-calibration`` can run it. Datasets: ``calibration/v_gate`` (n,) V,
``calibration/g`` (n, rows, cols) S, then the ``calibration/k`` (S/V), ``c`` and ``residual`` (S)
maps and ``calibration/responsive``.

The gate range is wide by default (0.2 to 3.0 V in 0.1 V steps) so it spans the transistor's
turn-on and, on chips that have one, the saturation plateau: the linear window between them is
found on the median curve (:func:`protocols.calibration.find_gate_window`), the per-cell lines are
fitted there only, and the population's k and c are reported with their device-to-device spread
(fit noise removed) as figures.

Where the plateau is each cell's own ceiling rather than the transistor's (the TaOx/HfOx preset's
60 uS, reached between 1.8 and 2.4 V as k and the ceiling vary from cell to cell), the median
curve bends softly and its window takes in gates where some cells have already stopped rising:
their lines, fitted through those points, come out flatter (k 3.5 % low, c 13 % high and the
spread of c 3.5 times too large on that preset). So the window's top is lowered
(:func:`unclipped_window`) until fewer than ``CLIPPED_SHARE`` (0.5 %) of the responsive cells are
clipped at their own ceiling there: within three sigmas of it (the mean of their reads at the
two highest gates) and four sigmas short of their own line (fitted on the lower half of the
window; near the ceiling alone is where a shallow line sits by noise). Likewise at the bottom,
where the line crosses each cell's own RESET floor (the same preset's line meets its 10 uS floor
between 0.6 and 0.8 V): the window's first gate is raised while that share of cells is clipped
at their floor, or while the gate's mean shortfall toward the floor stands out from the next
gates' (``FLOOR_JUMP``: cells held up by less than the per-cell test sees).
``v_turn_on`` and ``v_saturation`` stay the median curve's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Self

import numpy as np
from pydantic import Field, model_validator
from scipy.stats import chi2

from drivers import Board, PulseKind
from protocols.calibration import (
    GateCalibration,
    GateWindow,
    calibrate_gate,
    fit_lines,
    gate_window_of,
    population_fit,
)
from protocols.characterization.common import (
    BoolArray,
    FloatArray,
    PulseWidth,
    RegionOptions,
    ResetAmplitude,
    ResetGate,
    Selection,
    SetAmplitude,
    check_pulse,
    check_read_voltage,
    select_region,
    start_group,
)
from protocols.characterization.figures import Figure, binomial, record_figures
from protocols.recording import Recorder

GROUP = "calibration"


class GateCalibrationOptions(RegionOptions):
    """Options of ``gate-calibration``."""

    v_gate_min: float = Field(0.2, description="lowest SET gate voltage, V")
    v_gate_max: float = Field(3.0, description="highest SET gate voltage, V")
    n_gates: int = Field(29, ge=2, le=1000, description="gate voltages, evenly spaced from v_gate_min to v_gate_max")
    amplitude: SetAmplitude = 2.5
    width: PulseWidth = 1e-6
    v_reset: ResetAmplitude = 1.8
    v_gate_reset: ResetGate = 5.0
    repeats: int = Field(1, ge=1, le=100, description="RESET/SET/read cycles per gate voltage, averaged")

    @model_validator(mode="after")
    def _ascending(self) -> Self:
        if not self.v_gate_min < self.v_gate_max:
            raise ValueError(f"v_gate_min {self.v_gate_min:g} V must be below v_gate_max {self.v_gate_max:g} V")
        return self


@dataclass(frozen=True)
class GateCalibrationResult:
    calibration: GateCalibration
    figures: dict[str, Figure] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


# A gate stays in the fitted window while fewer than this share of the responsive cells are
# clipped there (one cell in 200; a noise-only false alarm needs a 3-sigma read on both tests). On
# the TaOx/HfOx preset 2 % left the cells the floor clips at 0.7 V in, and the spread of c 30 to
# 45 % high; 0.5 % gives -7 and +14 % on two chips (seeds 2, 3), what its fit noise allows.
CLIPPED_SHARE = 0.005
BOUND_GATES = 2  # the highest (lowest) gates, whose reads give each cell's ceiling (floor)
SIGMAS = 3.0  # how near the bound a clipped cell reads
# How far short of its own line it reads: four sigmas, as a gate is tested on every cell (128 x 16
# at 3 sigmas: 0.3 to 0.7 % false alarms per gate on a noisy shallow line, and a window cut from
# 0.4-1.4 V to 0.8-1.2 V).
SHORT_SIGMAS = 4.0
# The window's first gate is floor-clipped too when its cells' mean shortfall (in sigmas, toward
# the floor) exceeds the next three gates' median by this: on the TaOx/HfOx preset 0.18 to 0.19
# at 0.7 V (the spread of c +20 % with that gate, +4 % without, 8 cycles); on nine chips of either
# family -0.02 to +0.01 (the mean of 1,000 cells' shortfalls scatters by about 0.03).
FLOOR_JUMP = 0.1


def _clipped_share(
    v: FloatArray, g: FloatArray, first: int, last: int, bound_gates: slice, sign: float
) -> tuple[FloatArray, FloatArray] | None:
    """Per gate, the share of cells (``g``: (gates, cells)) clipped at their own bound: ``sign``
    +1 a ceiling (the mean of their reads at ``bound_gates``), -1 a floor. A cell is clipped at a
    gate where it reads within ``SIGMAS`` of its bound *and* ``SIGMAS`` short of its own line
    (fitted on the window's middle half): near the bound alone is what a shallow line is by noise."""
    bound = g[bound_gates]
    if bound.shape[0] < 2:
        return None
    level = bound.mean(axis=0)
    # The scatter of one read about its cell's bound, from the two reads' difference (robust: a
    # cell still moving at those gates does not set it).
    sigma_bound = float(np.median(np.abs(bound[1] - bound[0]))) / (0.6745 * np.sqrt(2))
    # The line from the half of the window away from this bound (its outer quarter left out too):
    # the cells that clip early have not yet clipped there.
    quarter, middle = (last - first) // 4, (first + last) // 2
    inner = slice(first + quarter, middle + 1) if sign > 0 else slice(middle, last - quarter + 1)
    n = inner.stop - inner.start
    if n < 3:
        return None
    k, c, residual = (a[:, 0] for a in fit_lines(v[inner], g[inner][:, :, None]))  # fit_lines takes maps
    # One read's sigma from the cells' residual variances (n - 2 degrees of freedom each): their
    # median over the chi-square median, which is unbiased for Gaussian noise and ignores the odd cell.
    sigma_read = float(np.sqrt(np.median(residual**2) * n / chi2.median(n - 2)))
    x = v[inner]
    leverage = 1 / n + (v - x.mean()) ** 2 / float(((x - x.mean()) ** 2).sum())
    sigma_line = sigma_read * np.sqrt(1 + leverage)[:, None]  # a read, less the line extrapolated to it
    line = k[None, :] * v[:, None] + c[None, :]
    near = sign * (g - level) >= -SIGMAS * sigma_bound
    shortfall = sign * (line - g) / sigma_line
    return np.asarray((near & (shortfall > SHORT_SIGMAS)).mean(axis=1)), np.asarray(shortfall.mean(axis=1))


def unclipped_window(v: FloatArray, g: FloatArray, responsive: BoolArray, window: GateWindow) -> tuple[int, int]:
    """The window's ``(first, last)`` gates, narrowed while ``CLIPPED_SHARE`` or more of the
    ``responsive`` cells are clipped at their own ceiling (at the top) or their own RESET floor
    (at the bottom) there (``g``: (gates, rows, cols)). An end is kept where the window runs to
    the range's end (no plateau to take the bound from), and the window keeps three gates at least."""
    n = g.shape[0]
    first, last = window.first, window.last
    if not responsive.any():
        return first, last
    cells = g[:, responsive]
    if last <= n - 1 - BOUND_GATES:
        at_ceiling = _clipped_share(v, cells, first, last, slice(n - BOUND_GATES, n), +1.0)
        while at_ceiling is not None and last - first >= 3 and at_ceiling[0][last] >= CLIPPED_SHARE:
            last -= 1
    if first >= BOUND_GATES:
        at_floor = _clipped_share(v, cells, first, last, slice(0, BOUND_GATES), -1.0)

        def clipped(gate: int) -> bool:
            assert at_floor is not None
            share, shortfall = at_floor
            # Cells the floor holds up by less than the per-cell test sees still raise the gate's
            # mean above its neighbours' (the wires bend a window's top, never its bottom, this way).
            jump = shortfall[gate] - float(np.median(shortfall[gate + 1 : gate + 4]))
            return bool(share[gate] >= CLIPPED_SHARE or jump > FLOOR_JUMP)

        while at_floor is not None and last - first >= 3 and clipped(first):
            first += 1
    return first, last


def gate_figures(calibration: GateCalibration) -> tuple[dict[str, Figure], tuple[str, ...]]:
    """Population k, c (spreads without fit noise), the window, turn-on and saturation."""
    responsive = calibration.responsive
    figures = {"fraction_responsive": binomial(int(responsive.sum()), int(calibration.mask.sum()))}
    found = gate_window_of(calibration)
    if found is None:
        return figures, ("no cell responded to the gate",)
    first, last = unclipped_window(calibration.v_gates, calibration.g_measured, responsive, found)
    window = replace(found, first=first, last=last)
    inside = slice(window.first, window.last + 1)
    v = calibration.v_gates
    step = float(np.diff(v).mean()) if v.size > 1 else math.nan
    fit = population_fit(v[inside], calibration.g_measured[inside], responsive)
    figures |= {
        "k": Figure(fit.k_mean, fit.k_mean_sigma, "S/V"),
        "k_spread_relative": Figure(fit.k_spread / fit.k_mean, fit.k_spread_sigma / fit.k_mean),
        "c": Figure(fit.c_mean, fit.c_mean_sigma, "S"),
        "c_spread": Figure(fit.c_spread, fit.c_spread_sigma, "S"),
        "v_window_low": Figure(float(v[window.first]), step / 2, "V"),
        "v_window_high": Figure(float(v[window.last]), step / 2, "V"),
        "v_turn_on": Figure(window.v_turn_on, step / 2, "V"),
        "v_saturation": Figure(window.v_saturation, step / 2, "V"),
    }
    narrowed = (window.first, window.last) != (found.first, found.last)
    lowered = f" (narrowed from {v[found.first]:g} to {v[found.last]:g} V: cells at their bounds)" if narrowed else ""
    notes = (
        f"linear window {v[window.first]:g} to {v[window.last]:g} V{lowered} ({window.last - window.first + 1} of "
        f"{v.size} gates); " + ("turn-on below the first gate" if math.isnan(window.v_turn_on) else
                      f"turn-on near {window.v_turn_on:.3g} V") + "; "
        + ("no saturation in range" if math.isnan(window.v_saturation) else
           f"saturation at {window.v_saturation:.3g} V"),
    )  # fmt: skip
    return figures, notes


def check_gate_calibration(board: Board, opts: GateCalibrationOptions) -> Selection:
    """Every limit the run meets, checked before anything is sent; the cells it works on. The gate
    voltages run evenly between the two checked here (:func:`calibrate_gate` checks each again)."""
    selection = select_region(board, opts)
    check_read_voltage(board, opts.v_read)
    check_pulse(board, selection, PulseKind.RESET, opts.v_reset, opts.v_gate_reset, opts.width)
    for v_gate in (opts.v_gate_min, opts.v_gate_max):
        check_pulse(board, selection, PulseKind.SET, opts.amplitude, v_gate, opts.width)
    return selection


def measure_gate_calibration(board: Board, recorder: Recorder, **options: Any) -> GateCalibrationResult:
    """Fit ``G = k * v_gate + c`` for every cell of the region (see :func:`calibrate_gate`)."""
    opts = GateCalibrationOptions.model_validate(options)
    selection = check_gate_calibration(board, opts)
    calibration = calibrate_gate(
        board, np.linspace(opts.v_gate_min, opts.v_gate_max, opts.n_gates), amplitude=opts.amplitude,
        width=opts.width, v_reset=opts.v_reset, v_gate_reset=opts.v_gate_reset, region=selection.region,
        v_read=opts.v_read, recorder=recorder, repeats=opts.repeats,
    )  # fmt: skip
    # Once the group exists (see start_group); every measurement is already recorded by then.
    start_group(recorder, GROUP, "gate-calibration", opts, responsive=int(calibration.responsive.sum()))
    figures, notes = gate_figures(calibration)
    record_figures(recorder, GROUP, figures)
    return GateCalibrationResult(calibration, figures, notes)
