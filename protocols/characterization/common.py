"""What the characterization procedures share: option bases, cell selection, checks.

A procedure works on a *selection*: a rectangular region of the array and a mask of the cells it
measures inside it. A map read of the region is one round trip; the masked cells are taken from
it in row-major order, which is the order of every per-cell series (``<group>/cells``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import numpy as np
import numpy.typing as npt
from pydantic import ConfigDict, Field

from drivers import Board, LimitError, PulseKind, Region
from drivers.config_model import ConfigModel
from protocols.recording import Attr, Recorder

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


MAX_INDEX = 65535
"""Largest row or column index (or region size) an option may name; the board's size is checked too."""
MAX_CELLS = 65536
"""Most cells a ``cells`` list may name."""
MAX_STEPS = 10_000_000
"""Most steps (cycles, pulses, reads) a procedure may be asked for."""
CellIndex = Annotated[int, Field(ge=0, le=MAX_INDEX)]

# Option fields several procedures share: one definition each (bounds and description), each
# procedure giving its own default, e.g. ``set_gate: SetGate = 1.2``.
SetAmplitude = Annotated[float, Field(ge=0, description="SET pulse amplitude, V")]
SetGate = Annotated[float, Field(description="SET gate voltage (sets the compliance level), V")]
ResetAmplitude = Annotated[float, Field(ge=0, description="RESET pulse amplitude, V")]
ResetGate = Annotated[float, Field(description="RESET gate voltage (transistor fully on), V")]
PulseWidth = Annotated[float, Field(gt=0, description="pulse width, s")]
ReadsPerPoint = Annotated[
    int, Field(ge=1, le=10_000, description="map reads averaged per point (the read noise shrinks by its square root)")
]
MinWindow = Annotated[
    Annotated[float, Field(gt=0)] | None,
    Field(description="smallest SET-RESET window of a working cell, S; null (default): auto, from the chip's "
          "own windows (a quarter of a typical one: protocols.characterization.common.auto_min_window)"),
]  # fmt: skip

# The automatic window threshold (auto_min_window). A quarter of a typical window: the Ta/HfO2
# array's typical yield-map window of 130 to 400 uS gives 32 to 100 uS (50 uS fixed before),
# the TaOx/HfOx array's 20 to 35 uS gives 5 to 9 uS. The typical window is the 75th percentile,
# which is a working cell's as long as at most half the cells are defects (their window is 0).
WINDOW_SHARE = 0.25
WINDOW_QUANTILE = 0.75
# ... and, cell by cell, at least this share of the cell's own SET level: on a chip with no
# working cell the 75th percentile is read noise, and a quarter of it would let half the stuck
# cells pass. 10 % of a level is 3.5 read-noise sigmas at 2 % for a window of two reads (a
# shorted cell at 1 mS: 100 uS against 28 uS; and those the yield map's median-SET rule catches
# anyway). It must stay under a working cell's window over its SET level: 37 % on a TaOx/HfOx
# chip with a 20 uS floor and a 38 uS top, where 15 % called 4 % of the working cells stuck low.
LEVEL_SHARE = 0.1


def typical_min_window(window: npt.ArrayLike) -> float:
    """The chip-wide part of :func:`auto_min_window`: ``WINDOW_SHARE`` of the 75th percentile of
    the cells' windows, S (0 when there is none)."""
    w = np.asarray(window, dtype=np.float64).ravel()
    w = w[np.isfinite(w)]
    return max(WINDOW_SHARE * float(np.quantile(w, WINDOW_QUANTILE)), 0.0) if w.size else 0.0


def auto_min_window(window: npt.ArrayLike, level: npt.ArrayLike, typical: float | None = None) -> FloatArray:
    """Each cell's smallest window of a working cell, S, from what the procedure measured on the
    chip: ``max(WINDOW_SHARE * q75(window), LEVEL_SHARE * level)`` (``window``: each cell's SET
    level less its RESET level; ``level``: each cell's SET level, the same shape; ``typical``:
    the chip-wide part if already known, :func:`typical_min_window`).

    Scale-free: the chip says what a window is, so a chip of 10-60 uS is judged as a chip of
    100-900 uS is (a fixed 50 uS calls every cell of the former defective).
    """
    chip_wide = typical_min_window(window) if typical is None else typical
    return np.asarray(np.maximum(chip_wide, LEVEL_SHARE * np.abs(np.asarray(level, dtype=np.float64))))


class ProcedureOptions(ConfigModel):
    """Base of every procedure's options: unknown fields are errors."""

    # Finite numbers only (a NaN would pass every comparison with a limit).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class RegionOptions(ProcedureOptions):
    """A rectangular region of the array (default: all of it), read at ``v_read``."""

    v_read: float = Field(0.2, description="read voltage, V")
    row0: int = Field(0, ge=0, le=MAX_INDEX, description="first row of the region")
    col0: int = Field(0, ge=0, le=MAX_INDEX, description="first column of the region")
    nrows: int = Field(0, ge=0, le=MAX_INDEX + 1, description="rows in the region; 0: through the last row")
    ncols: int = Field(0, ge=0, le=MAX_INDEX + 1, description="columns in the region; 0: through the last column")


class CellOptions(RegionOptions):
    """Some cells by address, or (when ``cells`` is empty) every cell of the region."""

    cells: list[tuple[CellIndex, CellIndex]] = Field(
        default=[], max_length=MAX_CELLS, description="cells (row, col) to measure; empty: every cell of the region"
    )


@dataclass(frozen=True)
class Selection:
    """The cells a procedure works on."""

    region: Region
    """the smallest region holding every selected cell: what one map read covers"""
    mask: BoolArray
    """``(nrows, ncols)`` of the region: which cells are selected"""
    cells: IntArray = field(repr=False)
    """``(n, 2)`` array addresses (row, col) of the selected cells, row-major"""

    @property
    def origin(self) -> tuple[int, int]:
        return (self.region.row0, self.region.col0)

    @property
    def count(self) -> int:
        return len(self.cells)

    def scatter(self, per_cell: npt.ArrayLike) -> BoolArray:
        """A region mask that is ``per_cell`` (one bool per selected cell) on the selected cells."""
        mask = np.zeros(self.region.shape, dtype=bool)
        mask[self.mask] = np.asarray(per_cell, dtype=bool)
        return mask


def select_region(board: Board, options: RegionOptions) -> Selection:
    """The region of ``options`` as a selection of all its cells; refused if it leaves the array."""
    rows, cols = board.shape
    for name, start, size in (("row0", options.row0, rows), ("col0", options.col0, cols)):
        if start >= size:
            raise LimitError(name, start, 0, size - 1)
    nrows = options.nrows or rows - options.row0
    ncols = options.ncols or cols - options.col0
    for name, count, room in (("nrows", nrows, rows - options.row0), ("ncols", ncols, cols - options.col0)):
        if count > room:
            raise LimitError(name, count, 1, room)
    region = Region(options.row0, options.col0, nrows, ncols)
    mask = np.ones(region.shape, dtype=bool)
    return Selection(region, mask, _addresses(region, mask))


def select_cells(board: Board, options: CellOptions) -> Selection:
    """The listed cells (inside their bounding box), or the whole region when none are listed."""
    if not options.cells:
        return select_region(board, options)
    cells = check_cells(board, options.cells)
    low, high = cells.min(axis=0), cells.max(axis=0)
    region = Region(int(low[0]), int(low[1]), *(int(n) for n in high - low + 1))
    mask = np.zeros(region.shape, dtype=bool)
    mask[cells[:, 0] - low[0], cells[:, 1] - low[1]] = True
    return Selection(region, mask, _addresses(region, mask))


def check_cells(board: Board, cells: list[tuple[int, int]]) -> IntArray:
    """``cells`` as an ``(n, 2)`` array; refused (naming the first bad one) if any is outside the array."""
    addresses = np.array(cells, dtype=np.int64).reshape(-1, 2)
    limits = np.array(board.shape)
    bad = (addresses < 0) | (addresses >= limits)
    if bad.any():
        i, axis = (int(k) for k in np.argwhere(bad)[0])
        raise LimitError(f"cells[{i}] {('row', 'col')[axis]}", int(addresses[i, axis]), 0, int(limits[axis]) - 1)
    return addresses


def _addresses(region: Region, mask: BoolArray) -> IntArray:
    return np.argwhere(mask).astype(np.int64) + np.array([region.row0, region.col0], dtype=np.int64)


def check_read_voltage(board: Board, v_read: float) -> None:
    """Refuse a read voltage the board would refuse, before anything else is sent."""
    board.check_read_voltage(v_read)


def check_pulse(
    board: Board, selection: Selection, kind: PulseKind, amplitude: float, v_gate: float, width: float
) -> None:
    """Dry run of one batch of ``kind`` over the selection (raises on any limit; sends nothing)."""
    board.check_pulses(kind, amplitude, v_gate, width, mask=selection.mask, origin=selection.origin)


def pulse(
    board: Board, selection: Selection, kind: PulseKind, amplitude: float, v_gate: float, width: float,
    active: npt.ArrayLike | None = None,
) -> int:  # fmt: skip
    """One batch of identical pulses on the selected cells (or the ``active`` ones among them).

    The batch covers only the rectangle around the cells it pulses: the same one round trip,
    but a smaller block on a slow link once most cells have stopped.
    """
    mask = selection.mask if active is None else selection.scatter(active)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not rows.size:
        return 0
    box = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    origin = (selection.region.row0 + int(rows[0]), selection.region.col0 + int(cols[0]))
    return board.apply_pulses(kind, amplitude, v_gate, width, mask=box, origin=origin)


def read(board: Board, selection: Selection, v_read: float) -> FloatArray:
    """Conductances of the selected cells, S, in row-major order: one map read of the region."""
    return board.read_map(v_read, selection.region)[selection.mask]


def start_group(recorder: Recorder, group: str, procedure: str, options: ProcedureOptions, **attrs: Attr) -> None:
    """Describe the run's group: which procedure, with which options (as JSON).

    Call it once a dataset inside the group exists: a file-backed recorder may only know where
    to put a group's attributes once the group is there.
    """
    recorder.set_attrs(group, procedure=procedure, options=options.model_dump_json(), **attrs)


def write_cells(recorder: Recorder, group: str, selection: Selection) -> None:
    recorder.write(f"{group}/cells", selection.cells, columns="row,col")
