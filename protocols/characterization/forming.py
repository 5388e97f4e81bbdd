"""Forming: count the unformed (virgin) cells of a region, then form them with a rising FORM ramp.

One map read finds the cells that read below ``g_unformed_max`` (a virgin cell is an insulator;
a stuck-low cell still conducts a little); only those get FORM pulses, by
:func:`protocols.forming.form_cells` (one FORM batch and one map read per ramp step). The
amplitude each cell formed at estimates its forming threshold (the ramp step's midpoint).

``fraction_unformed`` counts the cells the ramp formed: a cell that reads below
``g_unformed_max`` and does not form by ``v_stop`` is not a virgin cell the twin should start
virgin but a dead one (``fraction_not_formed``): a stuck-low cell of a small-window chip reads
1 uS, under the 2 uS line, as a virgin cell's 0.5 uS does, and only the FORM ramp tells them
apart. ``g_unformed_max`` stays absolute: a virgin cell's level is the pristine oxide's, not the
switching window's, so it does not scale with the chip.

Datasets: ``forming/g`` rows per step, ``forming/unformed_before``, ``forming/formed``,
``forming/v_form`` (V; NaN where a cell was not virgin or never formed), ``forming/pulses``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Self

from pydantic import Field, model_validator

from drivers import Board, PulseKind
from protocols.characterization.common import (
    BoolArray,
    PulseWidth,
    RegionOptions,
    Selection,
    check_pulse,
    check_read_voltage,
    select_region,
    start_group,
)
from protocols.characterization.figures import Figure, binomial, record_figures
from protocols.forming import FormingResult, form_cells
from protocols.recording import Recorder

GROUP = "forming"


class FormingOptions(RegionOptions):
    """Options of ``forming``."""

    v_start: float = Field(2.0, ge=0, description="first FORM amplitude, V")
    v_stop: float = Field(4.0, ge=0, description="last FORM amplitude, V")
    v_step: float = Field(0.1, gt=0, le=1.0, description="FORM amplitude step, V")
    v_gate: float = Field(1.0, description="gate voltage during FORM (limits the forming current), V")
    width: PulseWidth = 10e-6
    g_unformed_max: float = Field(2e-6, gt=0, description="a cell reading below this is unformed (virgin), S")

    @model_validator(mode="after")
    def _ramp(self) -> Self:
        if self.v_stop < self.v_start:
            raise ValueError(f"v_stop {self.v_stop:g} V is below v_start {self.v_start:g} V")
        return self


@dataclass(frozen=True)
class Forming:
    unformed_before: BoolArray
    result: FormingResult | None
    figures: dict[str, Figure] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def check_forming(board: Board, opts: FormingOptions) -> Selection:
    """Every limit the run meets, checked before anything is sent; the cells it works on."""
    selection = select_region(board, opts)
    check_read_voltage(board, opts.v_read)
    for amplitude in (opts.v_start, opts.v_stop):
        check_pulse(board, selection, PulseKind.FORM, amplitude, opts.v_gate, opts.width)
    return selection


def measure_forming(board: Board, recorder: Recorder, **options: Any) -> Forming:
    """Count the virgin cells of the region and form them."""
    opts = FormingOptions.model_validate(options)
    selection = check_forming(board, opts)
    region = selection.region
    recorder.progress(0, total=1, step="count")
    g = board.read_map(opts.v_read, region)
    unformed = g < opts.g_unformed_max
    recorder.write(f"{GROUP}/unformed_before", unformed)
    start_group(recorder, GROUP, "forming", opts, row0=region.row0, col0=region.col0)
    recorder.progress(1, step="read", unformed=int(unformed.sum()))
    figures = {"fraction_unformed": binomial(0, unformed.size)}
    result = None
    if unformed.any():
        result = form_cells(board, unformed, opts.v_start, opts.v_stop, opts.v_step, opts.v_gate, opts.width,
                            opts.g_unformed_max, region, opts.v_read, recorder)  # fmt: skip
        formed_now = int((result.formed & unformed).sum())
        figures["fraction_unformed"] = binomial(formed_now, unformed.size)
        figures["fraction_not_formed"] = binomial(int(unformed.sum()) - formed_now, unformed.size)
        figures["fraction_formed_now"] = binomial(formed_now, int(unformed.sum()))
        v_form = result.v_form[unformed & result.formed & (result.v_form > 0)] - opts.v_step / 2
        if v_form.size >= 2:
            # Each threshold is known to one ramp step: take the step's uniform variance out.
            mean, sd, n = float(v_form.mean()), float(v_form.std(ddof=1)), v_form.size
            spread = math.sqrt(max(sd**2 - opts.v_step**2 / 12, 0.0))
            figures["v_form_mean"] = Figure(mean, sd / math.sqrt(n), "V")
            figures["v_form_spread_relative"] = Figure(spread / mean, sd / math.sqrt(2 * (n - 1)) / mean)
    record_figures(recorder, GROUP, figures)
    formed_now = int((result.formed & unformed).sum()) if result is not None else 0
    notes = (f"{int(unformed.sum())} cells of {unformed.size} read below {1e6 * opts.g_unformed_max:.3g} uS; "
             f"{formed_now} formed now (unformed), {int(unformed.sum()) - formed_now} did not form by "
             f"{opts.v_stop:g} V (stuck low, or a forming threshold above it)",)  # fmt: skip
    return Forming(unformed, result, figures, notes)
