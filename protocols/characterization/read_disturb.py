"""Read disturb: read the cells many times and check that the reads do not move their state.

Every read is one map read of the selection's region: each cell sees exactly one read pulse per
read, as in normal use. Reads are averaged in blocks of ``record_every`` (read noise shrinks by
the square root of the block size); the drift of a cell is its block mean minus its first block
mean. ``record_all`` also keeps every single read.

Datasets: ``read_disturb/cells`` (n, 2); ``read_disturb/reads`` (m,) reads done at the end of each
block; ``read_disturb/g_mean`` and ``read_disturb/g_std`` (m, n) S, per block;
``read_disturb/g`` (reads, n) S with ``record_all``; ``read_disturb/journal`` the blocks done (a
killed run resumes after the last one, :class:`~protocols.recording.Journal`; the reads of the
block in flight reached the cells but are not counted). The group gets ``max_drift`` (S, the
largest |drift| of any cell in any block), ``max_relative_drift`` (the same relative to the
cell's reference) and ``mean_drift`` (S, signed, over the cells in the last block).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field, StrictBool

from drivers import Board
from protocols.characterization.common import (
    MAX_STEPS,
    CellOptions,
    FloatArray,
    IntArray,
    Selection,
    check_read_voltage,
    read,
    select_cells,
    start_group,
    write_cells,
)
from protocols.recording import Journal, Recorder

GROUP = "read_disturb"


class ReadDisturbOptions(CellOptions):
    """Options of ``read-disturb``."""

    n_reads: int = Field(10_000, ge=1, le=MAX_STEPS, description="reads of every cell")
    record_every: int = Field(
        100, ge=1, le=MAX_STEPS, description="reads per recorded block (mean and spread per cell)"
    )
    record_all: StrictBool = Field(False, description="also record every single read")


@dataclass(frozen=True)
class ReadDisturb:
    reads: IntArray
    g_mean: FloatArray
    """(blocks, ncells) S"""
    cells: IntArray
    max_drift: float
    """S"""


def check_read_disturb(board: Board, opts: ReadDisturbOptions) -> Selection:
    """Every limit the run meets, checked before anything is sent; the cells it works on."""
    selection = select_cells(board, opts)
    check_read_voltage(board, opts.v_read)
    return selection


def measure_read_disturb(board: Board, recorder: Recorder, **options: Any) -> ReadDisturb:
    """``n_reads`` map reads of the selection, recorded as block means; reports the worst drift."""
    opts = ReadDisturbOptions.model_validate(options)
    selection = check_read_disturb(board, opts)
    write_cells(recorder, GROUP, selection)
    start_group(recorder, GROUP, "read-disturb", opts)
    journal = Journal(recorder, GROUP)  # a step is a block of reads
    reads_series = journal.series("reads")
    mean_series = journal.series("g_mean", unit="S")
    std_series = journal.series("g_std", unit="S")
    all_series = journal.series("g", unit="S") if opts.record_all else None
    means: list[FloatArray] = []
    done: list[int] = []
    reference: FloatArray | None = None
    max_drift = max_relative = 0.0

    def account(count: int, mean: FloatArray) -> FloatArray:
        """Take a block's mean into the drift figures; its drift from the first block."""
        nonlocal reference, max_drift, max_relative
        means.append(mean)
        done.append(count)
        reference = mean if reference is None else reference
        drift = mean - reference
        max_drift = max(max_drift, float(np.abs(drift).max()))
        relative = np.divide(np.abs(drift), reference, out=np.zeros_like(drift), where=reference > 0)
        max_relative = max(max_relative, float(relative.max()))
        return drift

    for count, mean in zip(reads_series.earlier, mean_series.earlier, strict=True):
        account(int(count), mean)  # the blocks of a killed run, resumed
    start = done[-1] if done else 0
    if start:
        recorder.progress(start, opts.n_reads)
    total = np.zeros(selection.count)
    squares = np.zeros(selection.count)
    in_block = 0
    for count in range(start + 1, opts.n_reads + 1):
        g = read(board, selection, opts.v_read)
        if all_series is not None:
            all_series.append(g)
        total += g
        squares += g * g
        in_block += 1
        if in_block < opts.record_every and count < opts.n_reads:
            continue
        mean = total / in_block
        std = np.sqrt(np.maximum(squares / in_block - mean * mean, 0.0))
        reads_series.append(np.int64(count))
        mean_series.append(mean)
        std_series.append(std)
        drift = account(count, mean)
        recorder.set_attrs(
            GROUP, max_drift=max_drift, max_relative_drift=max_relative,
            mean_drift=float(drift.mean()), reads_done=count,
        )  # fmt: skip
        journal.step_done()
        recorder.progress(in_block, opts.n_reads, max_drift_uS=round(max_drift * 1e6, 3))
        total[:] = 0.0
        squares[:] = 0.0
        in_block = 0
    return ReadDisturb(np.array(done, dtype=np.int64), np.array(means), selection.cells, max_drift)
