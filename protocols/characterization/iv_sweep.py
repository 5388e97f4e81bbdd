"""Quasi-static bipolar I-V sweep of one cell (or a few, in turn).

Each cycle is the triangle 0 -> ``v_set_max`` -> ``-v_reset_max`` -> 0 in steps of ``v_step``.
The gate sets the compliance: ``v_gate`` while the voltage is positive (SET polarity) and
``v_gate_reset`` while it is negative (RESET wants the transistor fully on). With equal gates a
cycle is one ``SWEEP?`` round trip; otherwise two (the positive and the negative part).

Datasets: ``iv/voltage`` (npts,) V; ``iv/current`` (n, npts) A, one row per cell and cycle;
``iv/sweep`` (n, 3) the row, column and cycle of each current row.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
from pydantic import Field, model_validator

from drivers import Board, PulseKind
from protocols.characterization.common import (
    CellIndex,
    FloatArray,
    IntArray,
    ProcedureOptions,
    check_cells,
    start_group,
)
from protocols.recording import Recorder, Series

GROUP = "iv"
MAX_SWEEP_POINTS = 100_000
MAX_SAMPLES = 50_000_000  # float64: 400 MB


class IVSweepOptions(ProcedureOptions):
    """Options of ``iv-sweep``."""

    cells: list[tuple[CellIndex, CellIndex]] = Field(
        default=[(0, 0)], min_length=1, max_length=1024, description="cells (row, col), swept in turn"
    )
    v_set_max: float = Field(2.0, ge=0, description="highest (SET polarity) voltage, V")
    v_reset_max: float = Field(1.8, ge=0, description="magnitude of the lowest (RESET polarity) voltage, V")
    v_step: float = Field(0.05, ge=1e-4, description="voltage step, V")
    v_gate: float = Field(1.2, description="gate voltage at positive voltages: the SET compliance, V")
    v_gate_reset: float = Field(5.0, description="gate voltage at negative voltages, V")
    width: float = Field(1e-4, gt=0, description="duration of each voltage step, s")
    cycles: int = Field(3, ge=1, le=10_000, description="sweeps per cell")

    @model_validator(mode="after")
    def _bounded(self) -> Self:
        # The whole sweep is held in memory: its size is refused before any allocation.
        points = 2 * (self.v_set_max + self.v_reset_max) / self.v_step + 1
        if points > MAX_SWEEP_POINTS:
            raise ValueError(f"a sweep of {points:.3g} points (2 (v_set_max + v_reset_max) / v_step) is more than "
                             f"{MAX_SWEEP_POINTS:,}; take a larger v_step")  # fmt: skip
        samples = points * len(self.cells) * self.cycles
        if samples > MAX_SAMPLES:
            raise ValueError(f"{samples:.3g} samples (cells x cycles x points) are more than {MAX_SAMPLES:,}")
        return self


@dataclass(frozen=True)
class IVSweep:
    voltage: FloatArray
    """(npts,) V"""
    current: FloatArray
    """(ncells, cycles, npts) A"""
    cells: IntArray


def triangle(v_set_max: float, v_reset_max: float, v_step: float) -> FloatArray:
    """0 -> ``v_set_max`` -> ``-v_reset_max`` -> 0 in steps no longer than ``v_step``."""
    corners = [0.0, v_set_max, -v_reset_max, 0.0]
    points = [np.zeros(1)]
    for start, stop in itertools.pairwise(corners):
        steps = math.ceil(abs(stop - start) / v_step - 1e-9)
        if steps:
            points.append(np.linspace(start, stop, steps + 1)[1:])
    return np.concatenate(points)


def _runs(voltage: FloatArray) -> list[tuple[slice, bool]]:
    """Consecutive stretches of one polarity; a 0 V point joins the stretch before it."""
    sign = np.sign(voltage)
    last_nonzero = np.maximum.accumulate(np.where(sign != 0, np.arange(len(sign)), 0))
    negative = sign[last_nonzero] < 0
    edges = [0, *(np.flatnonzero(np.diff(negative)) + 1).tolist(), len(voltage)]
    return [(slice(a, b), bool(negative[a])) for a, b in itertools.pairwise(edges)]


def check_iv_sweep(board: Board, opts: IVSweepOptions) -> IntArray:
    """Every limit the run meets, checked before anything is sent; the cells' addresses. A dry run
    of the extreme pulses at every cell checks the cells, both polarities, the gates and the width."""
    cells = check_cells(board, opts.cells)
    for row, col in cells:
        origin = (int(row), int(col))
        board.check_pulses(PulseKind.SET, opts.v_set_max, opts.v_gate, opts.width, np.ones((1, 1)), origin)
        board.check_pulses(PulseKind.RESET, opts.v_reset_max, opts.v_gate_reset, opts.width, np.ones((1, 1)), origin)
    return cells


def measure_iv_sweep(board: Board, recorder: Recorder, **options: Any) -> IVSweep:
    """I-V cycles of each cell in turn, recording each cycle as it completes."""
    opts = IVSweepOptions.model_validate(options)
    cells = check_iv_sweep(board, opts)
    voltage = triangle(opts.v_set_max, opts.v_reset_max, opts.v_step)
    runs = [(slice(None), False)] if opts.v_gate == opts.v_gate_reset else _runs(voltage)
    recorder.write(f"{GROUP}/voltage", voltage, unit="V")
    start_group(recorder, GROUP, "iv-sweep", opts)
    currents = Series(recorder, f"{GROUP}/current", unit="A")
    sweeps = Series(recorder, f"{GROUP}/sweep", columns="row,col,cycle")
    total = len(cells) * opts.cycles
    result = np.full((len(cells), opts.cycles, len(voltage)), np.nan)
    for k, (row, col) in enumerate(cells.tolist()):
        for cycle in range(opts.cycles):
            current = np.concatenate([
                board.iv_sweep(row, col, voltage[part], opts.v_gate_reset if negative else opts.v_gate, opts.width)
                for part, negative in runs
            ])  # fmt: skip
            currents.append(current)
            sweeps.append(np.array([row, col, cycle], dtype=np.int64))
            result[k, cycle] = current
            recorder.progress(1, total, cell=f"{row},{col}", cycle=cycle + 1)
    return IVSweep(voltage, result, cells)
