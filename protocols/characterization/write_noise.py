"""Write noise: the cycle-to-cycle scatter of the level a SET lands on, read noise taken out.

Each cycle RESETs every cell of the region (one batch), reads the map, SETs every cell at one
gate voltage (one batch), and reads the map ``reads_after_set`` times (k). For a working cell (its
SET-RESET window at least ``min_window`` in the median cycle; by default derived from the cells'
own median windows, :func:`~protocols.characterization.common.auto_min_window`), the variance across cycles of the
mean of the k reads after the SET is ``write_noise^2 + read^2 / k``; the variance of the k reads
within a cycle is ``read^2``. So both come out of one run:

- ``write_noise`` (S): ``sqrt(mean over cells of (var_cycles(mean) - var_reads / k))``;
- ``read_noise`` (relative): ``sqrt(mean over cells of var_reads / G^2)``;
- ``g_reset_spread_relative``: the device-to-device spread of the RESET level (each cell's mean
  over cycles, the cycle-to-cycle scatter's share removed), relative to its mean.

Datasets: ``write_noise/g_reset`` and ``write_noise/g_set`` rows per cycle (the latter k
reads each), ``write_noise/working``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import Field

from drivers import Board, PulseKind
from protocols.calibration import spread_uncertainty, typical_cells
from protocols.characterization.common import (
    BoolArray,
    FloatArray,
    MinWindow,
    PulseWidth,
    RegionOptions,
    ResetAmplitude,
    ResetGate,
    Selection,
    SetAmplitude,
    SetGate,
    auto_min_window,
    check_pulse,
    check_read_voltage,
    pulse,
    select_region,
    start_group,
)
from protocols.characterization.figures import Figure, binomial, record_figures
from protocols.recording import Recorder

GROUP = "write_noise"


class WriteNoiseOptions(RegionOptions):
    """Options of ``write-noise``."""

    cycles: int = Field(12, ge=3, le=10000, description="RESET/SET cycles")
    set_amplitude: SetAmplitude = 2.5
    set_gate: SetGate = 1.2
    reset_amplitude: ResetAmplitude = 1.8
    reset_gate: ResetGate = 5.0
    width: PulseWidth = 1e-6
    min_window: MinWindow = None
    # Reads cost no endurance: more of them shrink the read noise's share of the cycle-to-cycle
    # variance, which swamps a small write noise (1 uS under 2 % read noise: 6 uS a read).
    reads_after_set: int = Field(2, ge=2, le=1000, description="map reads after each SET (averaged), k")


@dataclass(frozen=True)
class WriteNoise:
    g_set: FloatArray
    """(cycles, k, nrows, ncols) S: the k reads after each SET"""
    working: BoolArray
    figures: dict[str, Figure] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def noise_figures(
    g_reset: FloatArray, g_set: FloatArray, min_window: float | None
) -> tuple[BoolArray, dict[str, Figure]]:
    """Working cells and the write- and read-noise figures of ``g_set`` (cycles, k reads, ...);
    ``min_window`` None: the chip's own (``auto_min_window`` of the cells' median windows)."""
    window = np.median(g_set.mean(axis=1) - g_reset, axis=0)
    line = min_window if min_window is not None else auto_min_window(window, np.median(g_set.mean(axis=1), axis=0))
    working = window >= line
    # A shorted cell's read noise (2 % of 1 mS is 20 uS) can pass for a window; its RESET level,
    # ten times any working cell's, would swamp the spread of the floor.
    working = typical_cells(g_reset, working)
    cycles = g_set.shape[0]
    figures = {"fraction_working": binomial(int(working.sum()), working.size)}
    if working.sum() < 2:
        return working, figures
    level = g_set.mean(axis=1)[:, working]  # (cycles, n)
    reads = g_set.shape[1]
    read_var = g_set[:, :, working].var(axis=1, ddof=1).mean(axis=0)  # per cell, S^2
    cycle_var = level.var(axis=0, ddof=1)
    write_var = cycle_var - read_var / reads
    n = int(working.sum())
    write_noise = math.sqrt(max(float(write_var.mean()), 0.0))
    # The cells' own scatter of var_cycles - var_reads / k (both sample variances, so the read
    # noise's estimate counts too) over sqrt(n), through the square root: a write noise below
    # what the reads resolve comes out as 0 with a finite bound, not 0 +- 1e16 S.
    write_sigma = spread_uncertainty(write_noise, float(write_var.std(ddof=1)) / math.sqrt(n))
    relative = read_var / level.mean(axis=0) ** 2
    read_noise = math.sqrt(float(relative.mean()))
    read_sigma = read_noise / math.sqrt(2 * n * cycles * (reads - 1))
    figures["write_noise"] = Figure(write_noise, write_sigma, "S")
    figures["read_noise"] = Figure(read_noise, read_sigma)
    figures["g_set_mean"] = Figure(float(level.mean()), float(level.mean(axis=0).std() / math.sqrt(n)), "S")
    # The RESET floor's device-to-device spread: each cell's mean over cycles varies across cells
    # by the devices' own spread plus what is left of the write and read noise after averaging.
    floor = g_reset[:, working]
    floor_mean = floor.mean(axis=0)
    total = float(floor_mean.var(ddof=1))
    between = total - float(floor.var(axis=0, ddof=1).mean()) / cycles
    spread = math.sqrt(max(between, 0.0)) / float(floor_mean.mean())
    # The sample variance scatters by total sqrt(2 / (n - 1)), the cycle-to-cycle share included:
    # where that share is most of it (2 uS of write noise on a 6 uS floor) the spread is known far
    # less well than spread / sqrt(2n) says (10 % against 2.4 % on 900 cells).
    # The noise share's estimate scatters too (its cells' spread over sqrt(n)), as in
    # :func:`~protocols.calibration.population_fit`.
    noise_sigma = float((floor.var(axis=0, ddof=1) / cycles).std(ddof=1)) / math.sqrt(n)
    var_sigma = math.hypot(total * math.sqrt(2 / (n - 1)), noise_sigma) / float(floor_mean.mean()) ** 2
    spread_sigma = spread_uncertainty(spread, var_sigma)
    figures["g_reset_spread_relative"] = Figure(spread, spread_sigma)
    return working, figures


def check_write_noise(board: Board, opts: WriteNoiseOptions) -> Selection:
    """Every limit the run meets, checked before anything is sent; the cells it works on."""
    selection = select_region(board, opts)
    check_read_voltage(board, opts.v_read)
    check_pulse(board, selection, PulseKind.RESET, opts.reset_amplitude, opts.reset_gate, opts.width)
    check_pulse(board, selection, PulseKind.SET, opts.set_amplitude, opts.set_gate, opts.width)
    return selection


def measure_write_noise(board: Board, recorder: Recorder, **options: Any) -> WriteNoise:
    """RESET, read, SET, read k times, ``cycles`` times; write and read noise of the working cells."""
    opts = WriteNoiseOptions.model_validate(options)
    selection = check_write_noise(board, opts)
    region = selection.region
    resets, sets = [], []
    recorder.progress(0, total=opts.cycles, step="write noise")
    for cycle in range(opts.cycles):
        pulse(board, selection, PulseKind.RESET, opts.reset_amplitude, opts.reset_gate, opts.width)
        g_reset = board.read_map(opts.v_read, region)
        pulse(board, selection, PulseKind.SET, opts.set_amplitude, opts.set_gate, opts.width)
        g_set = np.stack([board.read_map(opts.v_read, region) for _ in range(opts.reads_after_set)])
        recorder.append(f"{GROUP}/g_reset", g_reset)
        recorder.append(f"{GROUP}/g_set", g_set)
        if cycle == 0:
            start_group(recorder, GROUP, "write-noise", opts, row0=region.row0, col0=region.col0)
        resets.append(g_reset)
        sets.append(g_set)
        recorder.progress(1, cycle=cycle + 1)
    g_sets = np.array(sets)
    working, figures = noise_figures(np.array(resets), g_sets, opts.min_window)
    recorder.write(f"{GROUP}/working", working)
    record_figures(recorder, GROUP, figures)
    notes = (f"{int(working.sum())} working cells of {working.size}",)
    return WriteNoise(g_sets, working, figures, notes)
