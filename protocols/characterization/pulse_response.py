"""Pulse response: conductance after each of N identical SET pulses, then N identical RESET pulses.

Optionally RESET first (``prepare_amplitude``) so every cell starts from its high-resistance
state. Each step is one batch pulse over all selected cells plus one map read.

Datasets: ``pulse_response/cells`` (n, 2); ``pulse_response/g`` (1 + 2N, n) S, row 0 before the
first pulse; ``pulse_response/pulse`` (1 + 2N,) the pulse count of each row (1..N SET,
N+1..2N RESET); ``pulse_response/journal`` the rows done (a killed run resumes after the last
one, :class:`~protocols.recording.Journal`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field

from drivers import Board, PulseKind
from protocols.characterization.common import (
    CellOptions,
    FloatArray,
    IntArray,
    PulseWidth,
    ResetAmplitude,
    ResetGate,
    Selection,
    SetAmplitude,
    SetGate,
    check_pulse,
    check_read_voltage,
    pulse,
    read,
    select_cells,
    start_group,
    write_cells,
)
from protocols.recording import Journal, Recorder

GROUP = "pulse_response"


class PulseResponseOptions(CellOptions):
    """Options of ``pulse-response``."""

    n_pulses: int = Field(20, ge=1, le=100_000, description="number of SET pulses, and then of RESET pulses")
    # Defaults: short pulses just above threshold, so each identical pulse moves a cell part of
    # the way (the identical-pulse regime); strong pulses would switch fully at the first one.
    set_amplitude: SetAmplitude = 1.2
    set_gate: SetGate = 1.5
    reset_amplitude: ResetAmplitude = 1.35
    reset_gate: ResetGate = 5.0
    width: PulseWidth = 50e-9
    prepare_amplitude: float = Field(
        1.8, ge=0, description="amplitude of one RESET at reset_gate before the sequence, V; 0: none"
    )


@dataclass(frozen=True)
class PulseResponse:
    pulse: IntArray
    """(1 + 2N,) pulses applied before each read"""
    g: FloatArray
    """(1 + 2N, ncells) S"""
    cells: IntArray


def check_pulse_response(board: Board, opts: PulseResponseOptions) -> Selection:
    """Every limit the run meets, checked before anything is sent; the cells it works on."""
    selection = select_cells(board, opts)
    check_read_voltage(board, opts.v_read)
    check_pulse(board, selection, PulseKind.SET, opts.set_amplitude, opts.set_gate, opts.width)
    check_pulse(board, selection, PulseKind.RESET, opts.reset_amplitude, opts.reset_gate, opts.width)
    if opts.prepare_amplitude > 0:
        check_pulse(board, selection, PulseKind.RESET, opts.prepare_amplitude, opts.reset_gate, opts.width)
    return selection


def measure_pulse_response(board: Board, recorder: Recorder, **options: Any) -> PulseResponse:
    """Read, then N x (SET, read), then N x (RESET, read) over all selected cells at once."""
    opts = PulseResponseOptions.model_validate(options)
    selection = check_pulse_response(board, opts)
    prepare = opts.prepare_amplitude > 0
    write_cells(recorder, GROUP, selection)
    start_group(recorder, GROUP, "pulse-response", opts, n_set=opts.n_pulses, n_reset=opts.n_pulses)
    journal = Journal(recorder, GROUP)  # a step is a pulse and its read (the first: the read before any)
    g_series = journal.series("g", unit="S")
    pulse_series = journal.series("pulse")
    total = 1 + 2 * opts.n_pulses
    reads: list[FloatArray] = list(g_series.earlier)
    if journal.done:
        recorder.progress(journal.done, total)
    for count in range(journal.done, total):
        if count == 0:
            if prepare:
                pulse(board, selection, PulseKind.RESET, opts.prepare_amplitude, opts.reset_gate, opts.width)
        elif count <= opts.n_pulses:
            pulse(board, selection, PulseKind.SET, opts.set_amplitude, opts.set_gate, opts.width)
        else:
            pulse(board, selection, PulseKind.RESET, opts.reset_amplitude, opts.reset_gate, opts.width)
        g = read(board, selection, opts.v_read)
        g_series.append(g)
        pulse_series.append(np.int64(count))
        reads.append(g)
        journal.step_done()
        kind = "start" if count == 0 else "SET" if count <= opts.n_pulses else "RESET"
        recorder.progress(1, total, pulse=kind, g_mean_uS=round(float(g.mean()) * 1e6, 1))
    return PulseResponse(np.arange(total), np.array(reads), selection.cells)
