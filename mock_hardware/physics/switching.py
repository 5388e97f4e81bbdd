"""What one programming pulse does to a cell: FORM, SET with gate compliance, partial RESET.

One law covers the gate-coded scheme and the identical-pulse scheme. A pulse drives the
conductance toward a bound set by the pulse itself, and gets a fraction ``f`` of the way there:

- SET (and FORM on a formed cell): the bound is the compliance level the transistor allows,
  ``k * v_gate + c`` (each cell its own ``k``, ``c``), slightly higher for longer pulses, never
  above the cell's ceiling. ``G <- G + f * max(bound + noise - G, 0)``: SET never lowers G.
- RESET: the bound is a floor that falls with amplitude, ``g_min + (g_max - g_min) *
  exp(-(V - V_th) / reset_voltage_scale)``. ``G <- G - f * max(G - (floor + noise), 0)``: RESET
  never raises G, and a low amplitude stops at a high floor (partial RESET).
- ``f = 1 - exp(-width / tau)`` with ``tau = t0 * exp(-(V - V_th) / switching_voltage_scale)``:
  switching speeds up exponentially with overdrive (the voltage-time dilemma).

Long or strongly overdriven pulses have ``f = 1``: the cell lands on its bound plus write noise
(gate-coded programming, ``G_after = max(k v_gate + c + noise, G_before)``). Short pulses near
threshold have ``f << 1``: every identical pulse moves G a fixed fraction of its remaining
distance to the bound, so steps shrink as G approaches it (soft bounds) and SET and RESET steps
differ (asymmetry), as in soft-bounds device models. Below threshold, or with the gate below the
transistor threshold, nothing changes.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from mock_hardware.device_params import DeviceParameters
from mock_hardware.physics.cells import CellPopulation

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# Smallest conductance any event leaves a cell at, S (a cell is never an open circuit).
G_FLOOR_ABSOLUTE = 1e-9


def switching_fraction(width: FloatArray, overdrive: FloatArray, tau0: FloatArray, v_scale: float) -> FloatArray:
    """Fraction of the way to its bound that a pulse of ``width`` s and ``overdrive`` V above
    threshold drives a cell whose time constant at threshold is ``tau0``."""
    # Overdrive is bounded by the firmware's +-6 V, so exp(6 / v_scale) stays finite for any
    # sensible v_scale; the clip only guards absurd overrides.
    rate = np.exp(np.clip(overdrive / v_scale, -700.0, 700.0)) / tau0
    return np.asarray(-np.expm1(-width * rate))


def compliance_level(
    cells: CellPopulation, v_gate: FloatArray, width: FloatArray, params: DeviceParameters
) -> FloatArray:
    """The conductance a SET at this gate voltage and width settles at (before write noise).

    Above ``v_gate_saturation`` (when set) the transistor's current no longer grows with its gate:
    the compliance level stays at its value there.
    """
    if params.v_gate_saturation:
        v_gate = np.minimum(v_gate, params.v_gate_saturation)
    level = cells.set_slope * v_gate + cells.set_intercept
    if params.set_width_exponent:
        level = level * (width / params.width_reference) ** params.set_width_exponent
    return np.asarray(np.minimum(level, cells.g_max))


def apply_set(
    g: FloatArray,
    formed: BoolArray,
    cells: CellPopulation,
    amplitude: FloatArray,
    v_gate: FloatArray,
    width: FloatArray,
    noise: FloatArray,
    params: DeviceParameters,
) -> tuple[FloatArray, BoolArray]:
    """A SET (or FORM: the same polarity) pulse on every cell given; returns ``(g, formed)``.

    ``noise`` is the write noise already scaled to S. Stuck cells are the caller's business.
    """
    gate_on = v_gate >= params.v_gate_threshold
    target = compliance_level(cells, v_gate, width, params) + noise
    fraction = switching_fraction(
        width, amplitude - cells.v_set_threshold, cells.set_time, params.switching_voltage_scale
    )
    sets = formed & gate_on & (amplitude >= cells.v_set_threshold)
    g_set = g + fraction * np.maximum(target - g, 0.0)
    # Forming is abrupt: the first filament grows until the transistor's compliance stops it.
    forms = ~formed & gate_on & (amplitude >= cells.v_form_threshold)
    g_new = np.where(sets, g_set, g)
    g_new = np.where(forms, np.maximum(target, g), g_new)
    return np.asarray(np.maximum(g_new, G_FLOOR_ABSOLUTE)), np.asarray(formed | forms)


def reset_floor(cells: CellPopulation, amplitude: FloatArray, params: DeviceParameters) -> FloatArray:
    """The conductance a long RESET pulse of this amplitude settles at (before write noise)."""
    overdrive = np.maximum(amplitude - cells.v_reset_threshold, 0.0)
    return np.asarray(cells.g_min + (cells.g_max - cells.g_min) * np.exp(-overdrive / params.reset_voltage_scale))


def apply_reset(
    g: FloatArray,
    formed: BoolArray,
    cells: CellPopulation,
    amplitude: FloatArray,
    v_gate: FloatArray,
    width: FloatArray,
    noise: FloatArray,
    params: DeviceParameters,
) -> FloatArray:
    """A RESET pulse on every cell given; returns the new conductances."""
    resets = formed & (v_gate >= params.v_gate_threshold) & (amplitude >= cells.v_reset_threshold)
    floor = reset_floor(cells, amplitude, params) + noise
    fraction = switching_fraction(
        width, amplitude - cells.v_reset_threshold, cells.reset_time, params.switching_voltage_scale
    )
    g_reset = g - fraction * np.maximum(g - floor, 0.0)
    return np.asarray(np.maximum(np.where(resets, g_reset, g), G_FLOOR_ABSOLUTE))
