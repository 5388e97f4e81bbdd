"""SET conductance vs gate voltage, as a characterization procedure.

The measurement and fit live in :func:`protocols.calibration.calibrate_gate`; this module gives
it the shape every procedure has (``run(board, recorder, **options)`` with a flat options model)
so ``hil characterize gate-calibration`` can run it. Datasets: ``calibration/v_gate`` (n,) V,
``calibration/g`` (n, rows, cols) S, then the ``calibration/k`` (S/V), ``c`` and ``residual`` (S)
maps and ``calibration/responsive``.
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np
from pydantic import Field, model_validator

from drivers import Board
from protocols.calibration import GateCalibration, calibrate_gate
from protocols.characterization.common import RegionOptions, check_read_voltage, select_region, start_group
from protocols.recording import Recorder

GROUP = "calibration"


class GateCalibrationOptions(RegionOptions):
    """Options of ``gate-calibration``."""

    v_gate_min: float = Field(0.7, description="lowest SET gate voltage, V")
    v_gate_max: float = Field(1.6, description="highest SET gate voltage, V")
    n_gates: int = Field(10, ge=2, le=1000, description="gate voltages, evenly spaced from v_gate_min to v_gate_max")
    amplitude: float = Field(2.5, ge=0, description="SET pulse amplitude, V")
    width: float = Field(1e-6, gt=0, description="SET and RESET pulse width, s")
    v_reset: float = Field(1.8, ge=0, description="RESET amplitude before each SET, V")
    v_gate_reset: float = Field(5.0, description="RESET gate voltage, V")

    @model_validator(mode="after")
    def _ascending(self) -> Self:
        if not self.v_gate_min < self.v_gate_max:
            raise ValueError(f"v_gate_min {self.v_gate_min:g} V must be below v_gate_max {self.v_gate_max:g} V")
        return self


def measure_gate_calibration(board: Board, recorder: Recorder, **options: Any) -> GateCalibration:
    """Fit ``G = k * v_gate + c`` for every cell of the region (see :func:`calibrate_gate`)."""
    opts = GateCalibrationOptions.model_validate(options)
    selection = select_region(board, opts)
    check_read_voltage(board, opts.v_read)
    calibration = calibrate_gate(
        board, np.linspace(opts.v_gate_min, opts.v_gate_max, opts.n_gates), amplitude=opts.amplitude,
        width=opts.width, v_reset=opts.v_reset, v_gate_reset=opts.v_gate_reset, region=selection.region,
        v_read=opts.v_read, recorder=recorder,
    )  # fmt: skip
    # Once the group exists (see start_group); every measurement is already recorded by then.
    start_group(recorder, GROUP, "gate-calibration", opts, responsive=int(calibration.responsive.sum()))
    return calibration
