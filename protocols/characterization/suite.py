"""The set of procedures a chip's twin needs, in the order they run, and what they cost in pulses.

Order matters: forming first (it counts the virgin cells, then forms them, so later steps see
working cells); the yield map next (defect classes, bad lines, the RESET floor); then the gate
calibration, write noise and wire resistance; retention last (it leaves the cells programmed).
Each step names its procedure, its measure function, its options model and the defaults the
suite gives it (a twin needs a wide gate range and enough reads to average the read noise).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from drivers import Board
from protocols.characterization.checks import CHECKS
from protocols.characterization.forming import FormingOptions, measure_forming
from protocols.characterization.gate_calibration import GateCalibrationOptions, measure_gate_calibration
from protocols.characterization.retention import RetentionOptions, measure_retention, read_times
from protocols.characterization.wire_resistance import WireResistanceOptions, measure_wire_resistance
from protocols.characterization.write_noise import WriteNoiseOptions, measure_write_noise
from protocols.characterization.yield_map import YieldMapOptions, measure_yield_map


@dataclass(frozen=True)
class SuiteStep:
    procedure: str
    """the procedure's registered name (and the stem of its file)"""
    measure: Callable[..., object]
    options: type[BaseModel]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    """options the suite sets unless the caller does"""

    @property
    def check(self) -> Callable[[Board, Any], object]:
        """Every limit the step meets, checked on the open board without sending anything (raises)."""
        return CHECKS[self.procedure]


TWIN_SUITE: tuple[SuiteStep, ...] = (
    SuiteStep("forming", measure_forming, FormingOptions),
    SuiteStep("yield-map", measure_yield_map, YieldMapOptions),
    # Two cycles per gate: the write noise in each cell's fit would otherwise hide a small spread of c.
    SuiteStep("gate-calibration", measure_gate_calibration, GateCalibrationOptions, {"repeats": 2}),
    # Eight reads after each SET (reads cost no endurance): with two, a write noise of 1 uS under
    # 2 % read noise (6 uS a read) was known to 11 % on 64 x 32; with eight, to 3 %.
    SuiteStep("write-noise", measure_write_noise, WriteNoiseOptions, {"reads_after_set": 8}),
    SuiteStep("wire-resistance", measure_wire_resistance, WireResistanceOptions),
    # 64 reads a point: the per-cell drift fits' noise (read noise over 17 points to 1e4 s) is most
    # of the variance the drift spread is taken out of; with 8, 4 of 60 held-out 64 x 32 chips had
    # drift_mean or drift_spread off by over 10 % (uncertainty up to 79 % of the spread); with
    # 64, 120 of 120 within 10 % (docs/benchmarks.md, round trip). More reads rather than a later
    # t_last: 1e4 s is 2.8 hours on a chip, and reads add no pulses.
    SuiteStep(
        "retention", measure_retention, RetentionOptions,
        {"program": "set", "t_first": 1.0, "t_last": 1e4, "points_per_decade": 4, "reads_per_point": 64},
    ),
)  # fmt: skip


def step_options(step: SuiteStep, overrides: Mapping[str, Any] | None = None) -> BaseModel:
    """The step's validated options: the suite's defaults under the caller's ``overrides``."""
    return step.options.model_validate({**step.defaults, **(overrides or {})})


def planned_pulses(step: SuiteStep, options: BaseModel, shape: tuple[int, int]) -> int:
    """Pulses a step sends at most on a ``shape`` array (forming: if every cell were virgin)."""
    cells = shape[0] * shape[1]
    o: Any = options
    if step.procedure == "forming":
        steps = int((o.v_stop - o.v_start) / o.v_step + 1e-9) + 1
        return int(cells * steps)
    if step.procedure == "yield-map":
        return 2 * cells if bool(o.destructive) else 0
    if step.procedure == "gate-calibration":
        return int(2 * o.n_gates * o.repeats * cells)
    if step.procedure == "write-noise":
        return int(2 * o.cycles * cells)
    if step.procedure == "wire-resistance":
        return cells if bool(o.program) else 0
    if step.procedure == "retention":
        return {"none": 0, "reset": 1, "set": 2}[str(o.program)] * cells
    raise ValueError(f"no pulse budget for {step.procedure!r}")


def planned_reads(step: SuiteStep, options: BaseModel) -> int:
    """Map reads (and VMM batches) a step takes: what its time on a slow link depends on."""
    o: Any = options
    if step.procedure == "forming":
        return 1 + 2 * (int((o.v_stop - o.v_start) / o.v_step + 1e-9) + 1)
    if step.procedure == "yield-map":
        return 3 if bool(o.destructive) else 1
    if step.procedure == "gate-calibration":
        return int(o.n_gates * o.repeats)
    if step.procedure == "write-noise":
        return int((1 + o.reads_after_set) * o.cycles)
    if step.procedure == "wire-resistance":
        return int(o.reads) + 1
    if step.procedure == "retention":
        return len(read_times(o.t_first, o.t_last, o.points_per_decade)) * int(o.reads_per_point) + 1
    raise ValueError(f"no read count for {step.procedure!r}")
