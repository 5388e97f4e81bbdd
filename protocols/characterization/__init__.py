"""Characterization procedures: each is ``measure_<x>(board, recorder, **options)``.

One module per procedure; each defines its options model (``<X>Options``: every field has a
default and a description) and writes its data through a :class:`~protocols.recording.Recorder`
as it measures. Options are checked against the board's limits before any pulse.
"""

from __future__ import annotations

from protocols.characterization.endurance import Endurance, EnduranceOptions, measure_endurance
from protocols.characterization.iv_sweep import IVSweep, IVSweepOptions, measure_iv_sweep
from protocols.characterization.pulse_response import PulseResponse, PulseResponseOptions, measure_pulse_response
from protocols.characterization.read_disturb import ReadDisturb, ReadDisturbOptions, measure_read_disturb
from protocols.characterization.retention import Retention, RetentionOptions, fit_log_drift, measure_retention
from protocols.characterization.yield_map import CLASS_NAMES, CellClass, YieldMap, YieldMapOptions, measure_yield_map

__all__ = [
    "CLASS_NAMES", "CellClass", "Endurance", "EnduranceOptions", "IVSweep", "IVSweepOptions", "PulseResponse",
    "PulseResponseOptions", "ReadDisturb", "ReadDisturbOptions", "Retention", "RetentionOptions", "YieldMap",
    "YieldMapOptions", "fit_log_drift", "measure_endurance", "measure_iv_sweep", "measure_pulse_response",
    "measure_read_disturb", "measure_retention", "measure_yield_map",
]  # fmt: skip
