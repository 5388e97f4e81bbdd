"""Endurance: SET/RESET cycling of many cells at once until each one's window closes.

Every cycle is one SET batch and one RESET batch over the cells still cycling. On cycle 1, every
``read_every``-th cycle and the last one, the ON state is read after the SET and the OFF state
after the RESET (one map read each). A cell whose window ``g_on - g_off`` is below
``window_min`` stops cycling (its failure cycle is that read's cycle); the run ends when no cell
is left or after ``max_cycles``. By default ``window_min`` is derived from the cells' own windows
at cycle 1 (:func:`~protocols.characterization.common.auto_min_window`; recorded as the group's
``window_min_used``), so a chip of 10-60 uS is judged as one of 100-900 uS is.

Datasets: ``endurance/cells`` (n, 2); ``endurance/cycle`` (m,) the cycle of each read;
``endurance/g_on``, ``endurance/g_off`` (m, n) S, NaN for cells that had already stopped;
``endurance/failed_cycle`` (n,) the cycle each cell stopped at, -1 if it never did (written at
the end, with ``n_failed`` and ``cycles_done`` on the group); ``endurance/journal`` the cycles
done (a killed run resumes after the last one, :class:`~protocols.recording.Journal`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field

from drivers import Board, PulseKind
from protocols.characterization.common import (
    MAX_STEPS,
    CellOptions,
    FloatArray,
    IntArray,
    MinWindow,
    PulseWidth,
    ResetAmplitude,
    ResetGate,
    Selection,
    SetAmplitude,
    SetGate,
    auto_min_window,
    check_pulse,
    check_read_voltage,
    pulse,
    read,
    select_cells,
    start_group,
    typical_min_window,
    write_cells,
)
from protocols.recording import Journal, Recorder

GROUP = "endurance"


class EnduranceOptions(CellOptions):
    """Options of ``endurance``."""

    max_cycles: int = Field(1000, ge=1, le=MAX_STEPS, description="SET/RESET cycles at most")
    read_every: int = Field(10, ge=1, le=MAX_STEPS, description="read the ON and OFF states every this many cycles")
    window_min: MinWindow = None
    set_amplitude: SetAmplitude = 2.5
    set_gate: SetGate = 1.6
    reset_amplitude: ResetAmplitude = 1.8
    reset_gate: ResetGate = 5.0
    width: PulseWidth = 1e-6


@dataclass(frozen=True)
class Endurance:
    cycle: IntArray
    g_on: FloatArray
    g_off: FloatArray
    failed_cycle: IntArray
    """per cell: the cycle its window closed, -1 if it did not"""
    cells: IntArray


def check_endurance(board: Board, opts: EnduranceOptions) -> Selection:
    """Every limit the run meets, checked before anything is sent; the cells it works on."""
    selection = select_cells(board, opts)
    check_read_voltage(board, opts.v_read)
    check_pulse(board, selection, PulseKind.SET, opts.set_amplitude, opts.set_gate, opts.width)
    check_pulse(board, selection, PulseKind.RESET, opts.reset_amplitude, opts.reset_gate, opts.width)
    return selection


def measure_endurance(board: Board, recorder: Recorder, **options: Any) -> Endurance:
    """Cycle every selected cell, reading the window periodically and stopping cells that fail."""
    opts = EnduranceOptions.model_validate(options)
    selection = check_endurance(board, opts)
    write_cells(recorder, GROUP, selection)
    start_group(recorder, GROUP, "endurance", opts)
    journal = Journal(recorder, GROUP)  # a step is a cycle
    cycles = journal.series("cycle")
    on_series = journal.series("g_on", unit="S")
    off_series = journal.series("g_off", unit="S")
    active = np.ones(selection.count, dtype=bool)
    failed = np.full(selection.count, -1, dtype=np.int64)
    reads: list[tuple[int, FloatArray, FloatArray]] = []

    typical: list[float] = []

    def judge(cycle: int, g_on: FloatArray, g_off: FloatArray) -> None:
        reads.append((cycle, g_on, g_off))
        line: FloatArray | float
        if opts.window_min is not None:
            line = opts.window_min
        else:
            if not typical:  # the fresh cells' windows (cycle 1) say what a window is on this chip
                typical.append(typical_min_window(g_on - g_off))
                recorder.set_attrs(GROUP, window_min_used=typical[0])
            line = auto_min_window(g_on - g_off, g_on, typical[0])
        with np.errstate(invalid="ignore"):  # the cells that stopped earlier read NaN
            closed = active & (g_on - g_off < line)
        failed[closed] = cycle
        active[closed] = False

    for row in zip(cycles.earlier, on_series.earlier, off_series.earlier, strict=True):
        judge(int(row[0]), row[1], row[2])  # the cycles of a killed run, resumed
    cycle = journal.done
    if cycle:
        recorder.progress(cycle, opts.max_cycles)
    while cycle < opts.max_cycles and active.any():
        cycle += 1
        read_now = cycle == 1 or cycle % opts.read_every == 0 or cycle == opts.max_cycles
        pulse(board, selection, PulseKind.SET, opts.set_amplitude, opts.set_gate, opts.width, active)
        g_on = read(board, selection, opts.v_read) if read_now else None
        pulse(board, selection, PulseKind.RESET, opts.reset_amplitude, opts.reset_gate, opts.width, active)
        if g_on is not None:
            g_off = read(board, selection, opts.v_read)
            # Cells that stopped earlier were not cycled: their reads are no measurement of the window.
            g_on[~active] = np.nan
            g_off[~active] = np.nan
            cycles.append(np.int64(cycle))
            on_series.append(g_on)
            off_series.append(g_off)
            judge(cycle, g_on, g_off)
        journal.step_done()
        recorder.progress(1, opts.max_cycles, cycle=cycle, cycling=int(active.sum()))
    recorder.write(f"{GROUP}/failed_cycle", failed, unit="cycles")
    recorder.set_attrs(GROUP, n_failed=int((failed >= 0).sum()), cycles_done=cycle)
    n = selection.count
    return Endurance(
        np.array([r[0] for r in reads], dtype=np.int64),
        np.array([r[1] for r in reads]).reshape(-1, n),
        np.array([r[2] for r in reads]).reshape(-1, n),
        failed,
        selection.cells,
    )
