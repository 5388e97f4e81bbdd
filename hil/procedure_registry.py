"""Every characterization procedure, registered for ``hil characterize NAME`` and ``hil show``.

Importing this module fills :data:`hil.procedures.REGISTRY`.
"""

from __future__ import annotations

from dataclasses import replace

from hil import plots, plots_twin
from hil.figure_report import reporting
from hil.procedures import REGISTRY, ProcedureSpec, register
from protocols import characterization as ch
from protocols.characterization.forming import FormingOptions, measure_forming
from protocols.characterization.gate_calibration import GateCalibrationOptions, measure_gate_calibration
from protocols.characterization.wire_resistance import WireResistanceOptions, measure_wire_resistance
from protocols.characterization.write_noise import WriteNoiseOptions, measure_write_noise

SPECS = (
    ProcedureSpec(
        "yield-map", "conductance map and yield map (normal, stuck low, stuck high, unformed)",
        ch.measure_yield_map, ch.YieldMapOptions, plots.plot_yield_map,
    ),
    ProcedureSpec(
        "iv-sweep", "quasi-static bipolar I-V sweep of one or a few cells, gate-set compliance",
        ch.measure_iv_sweep, ch.IVSweepOptions, plots.plot_iv_sweep,
    ),
    ProcedureSpec(
        "gate-calibration", "SET conductance vs gate voltage: per-cell fit of G = k * v_gate + c",
        measure_gate_calibration, GateCalibrationOptions, plots.plot_gate_calibration,
    ),
    ProcedureSpec(
        "pulse-response", "conductance after each of N identical SET pulses, then N RESET pulses",
        ch.measure_pulse_response, ch.PulseResponseOptions, plots.plot_pulse_response,
    ),
    ProcedureSpec(
        "endurance", "SET/RESET cycling with periodic reads until each cell's window closes",
        ch.measure_endurance, ch.EnduranceOptions, plots.plot_endurance,
    ),
    ProcedureSpec(
        "retention", "conductance read at log-spaced times after programming; drift per ln(t)",
        ch.measure_retention, ch.RetentionOptions, plots.plot_retention,
    ),
    ProcedureSpec(
        "read-disturb", "many reads of the same cells; the largest drift they cause",
        ch.measure_read_disturb, ch.ReadDisturbOptions, plots.plot_read_disturb,
    ),
    ProcedureSpec(
        "forming", "count the unformed (virgin) cells and form them with a rising FORM ramp",
        measure_forming, FormingOptions, plots_twin.plot_forming,
    ),
    ProcedureSpec(
        "write-noise", "cycle-to-cycle scatter of the SET level, read noise taken out",
        measure_write_noise, WriteNoiseOptions, plots_twin.plot_write_noise,
    ),
    ProcedureSpec(
        "wire-resistance", "all-rows VMM against single-cell reads: resistance per line segment",
        measure_wire_resistance, WireResistanceOptions, plots_twin.plot_wire_resistance,
    ),
)  # fmt: skip

for _spec in SPECS:
    # Every procedure prints what it found (its result's figures and notes) when it returns.
    register(replace(_spec, run=reporting(_spec.run)))

__all__ = ["REGISTRY", "SPECS"]
