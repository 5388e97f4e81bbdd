"""Each characterization procedure's check, by its registered name: every limit a run of it meets,
checked on the open board without sending anything (raises :class:`~drivers.InvalidRequest`).

One table for ``hil characterize NAME`` (checked before the run file is made) and the twin suite
(every step checked before its first pulse). Each procedure's measure function calls the same check.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drivers import Board
from protocols.characterization.endurance import check_endurance
from protocols.characterization.forming import check_forming
from protocols.characterization.gate_calibration import check_gate_calibration
from protocols.characterization.iv_sweep import check_iv_sweep
from protocols.characterization.pulse_response import check_pulse_response
from protocols.characterization.read_disturb import check_read_disturb
from protocols.characterization.retention import check_retention
from protocols.characterization.wire_resistance import check_wire_resistance
from protocols.characterization.write_noise import check_write_noise
from protocols.characterization.yield_map import check_yield_map

CHECKS: dict[str, Callable[[Board, Any], object]] = {
    "yield-map": check_yield_map,
    "iv-sweep": check_iv_sweep,
    "gate-calibration": check_gate_calibration,
    "pulse-response": check_pulse_response,
    "endurance": check_endurance,
    "retention": check_retention,
    "read-disturb": check_read_disturb,
    "forming": check_forming,
    "write-noise": check_write_noise,
    "wire-resistance": check_wire_resistance,
}
