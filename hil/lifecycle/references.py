"""Reference cells: spare devices written to known conductances beside a network, read at each
evaluation, and the drift they share with the network's devices taken out of its outputs.

A differential pair cancels a drift every device shares *additively*, but not one that *scales*
the devices (phase-change memory's ``G0 t^-nu``): both of a pair's devices shrink, and with them
the weight. Nor does a single-device pair (one device dead) cancel anything, as it is weighed
against a fixed digital reference conductance. Reference cells see both: a least-squares line
``G_now = gain * G_then + offset`` through the references of an array (or of one column) measures
the common part, and the evaluation then

- divides each layer's outputs by the gain of the array (or column) holding them (a pair's
  difference scales by the gain; the offset cancels in it), and
- moves the digital reference conductance of single-device pairs along the same line.

Each device's own random drift is not common, so no reference measures it: only a refresh (a
write) undoes that. The cost: writing the references once (pulses) and reading them at every point
(one read per reference cell; ``hil evaluate`` reads the whole map anyway, for the drift figure).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from hil.mapping import Placement

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

MIN_GAIN, MAX_GAIN = 0.2, 5.0
"""A fitted gain outside this is a broken reference (or a chip that lost its state): not applied."""
TARGET_QUANTILES = (0.1, 0.3, 0.5, 0.7, 0.9)
"""Reference levels: these quantiles of the conductances the network's devices hold."""


class ReferenceError(ValueError):
    """The references cannot be placed or fitted (one line: where and why)."""


@dataclass(frozen=True)
class ReferenceCells:
    """One array's reference cells: where they are, what they were written to, what they read then."""

    board: str
    rows: IntArray
    cols: IntArray
    targets: FloatArray
    """Conductance asked of each, S."""
    baseline: FloatArray
    """What each read right after writing, S (the line is fitted against this, not the target)."""

    def table(self) -> FloatArray:
        """``(cells, 4)``: row, column, target, baseline (the run file's layout)."""
        return np.column_stack([self.rows, self.cols, self.targets, self.baseline]).astype(np.float64)


def choose_reference_cells(
    placement: Placement, board: str, dead: BoolArray, per_column: int, levels: FloatArray
) -> tuple[IntArray, IntArray, FloatArray]:
    """Up to ``per_column`` unused, working devices in each column the network uses on ``board`` (rows
    spread over the column), or, where those columns hold fewer than one per level, in spare columns
    too; each given one of ``levels`` in turn. Rows, columns and targets."""
    if per_column < 1:
        raise ReferenceError(f"--reference-cells {per_column}: at least 1 per column")
    used = placement.used_mask(board)
    spare = ~used & ~dead
    columns = sorted({int(c) for tiles in placement.tiles.values() for t in tiles if t.board == board for c in t.cols})
    rows_out: list[int] = []
    cols_out: list[int] = []
    for col in columns:
        free = np.flatnonzero(spare[:, col])
        if len(free) == 0:
            continue
        picks = free[np.unique(np.linspace(0, len(free) - 1, min(per_column, len(free))).round().astype(int))]
        rows_out.extend(int(r) for r in picks)
        cols_out.extend([col] * len(picks))
    if len(rows_out) < len(levels):  # the network's columns are full: spare columns hold the references
        for col in (c for c in range(spare.shape[1]) if c not in set(columns)):
            free = np.flatnonzero(spare[:, col])[: max(per_column, len(levels))]
            rows_out.extend(int(r) for r in free)
            cols_out.extend([col] * len(free))
            if len(rows_out) >= len(levels):
                break
    if len(rows_out) < 2:
        raise ReferenceError(f"{board}: {len(rows_out)} unused working device(s) on the array; reference cells "
                             "need at least 2")  # fmt: skip
    targets = np.resize(np.asarray(levels, dtype=np.float64), len(rows_out))
    return np.array(rows_out, dtype=np.int64), np.array(cols_out, dtype=np.int64), targets


def reference_levels(final: FloatArray, used_working: BoolArray) -> FloatArray:
    """Levels spanning what the network's devices hold: quantiles of their final conductances, S."""
    held = final[used_working]
    if held.size == 0:
        raise ReferenceError("the network uses no working device: no level to give the references")
    return np.quantile(held, TARGET_QUANTILES)


@dataclass(frozen=True)
class DriftLine:
    """``G_now = gain * G_then + offset`` through a set of reference cells."""

    gain: float
    offset: float

    def apply(self, g_then: float) -> float:
        return self.gain * g_then + self.offset


IDENTITY = DriftLine(1.0, 0.0)


def fit_line(then: FloatArray, now: FloatArray) -> DriftLine:
    """The least-squares line through ``(then, now)``; no change when the references cannot tell a gain
    (fewer than 2, all at one level) or the gain is implausible."""
    if len(then) < 2 or float(np.ptp(then)) <= 0:
        return IDENTITY
    gain, offset = np.polyfit(then, now, 1)
    if not (MIN_GAIN < gain < MAX_GAIN) or not np.isfinite(offset):
        return IDENTITY
    return DriftLine(float(gain), float(offset))


def board_lines(references: Mapping[str, ReferenceCells], maps: Mapping[str, FloatArray]) -> dict[str, DriftLine]:
    """Each array's drift line, from its references as ``maps`` (conductance maps read now) hold them."""
    return {b: fit_line(r.baseline, maps[b][r.rows, r.cols]) for b, r in references.items()}


def column_lines(reference: ReferenceCells, now: FloatArray) -> dict[int, DriftLine]:
    """A drift line per column, from that column's references only (read now: ``now``)."""
    g_now = now[reference.rows, reference.cols]
    return {int(c): fit_line(reference.baseline[reference.cols == c], g_now[reference.cols == c])
            for c in np.unique(reference.cols)}  # fmt: skip


def layer_gains(
    placement: Placement, boards: Mapping[str, DriftLine], columns: Mapping[str, Mapping[int, DriftLine]] | None = None
) -> dict[str, FloatArray]:
    """Per layer, the gain of each output: its column's line where ``columns`` has one that measured a
    gain, else its array's; outputs that several tiles sum (a layer split by inputs) get their mean."""
    gains: dict[str, FloatArray] = {}
    for layer, tiles in placement.tiles.items():
        width = max(t.outputs.stop for t in tiles)
        total, count = np.zeros(width), np.zeros(width)
        for tile in tiles:
            board_gain = boards.get(tile.board, IDENTITY).gain
            per_column = (columns or {}).get(tile.board, {})
            tile_gains = [per_column.get(int(c), IDENTITY) for c in tile.cols]
            total[tile.outputs] += [line.gain if line != IDENTITY else board_gain for line in tile_gains]
            count[tile.outputs] += 1
        gains[layer] = np.divide(total, count, out=np.ones(width), where=count > 0)
    return gains
