"""Where each layer's weights live: differential conductance pairs placed on arrays.

A weight is a pair of devices, ``w = (G+ - G-) / g_unit``. A layer's weight matrix
``W (fan_in, fan_out)`` is cut into tiles; each tile holds a block of inputs x outputs on one
board, its G+ and G- devices on pairs of rows driven with +v and -v so one column sums the
difference (Wang 2019). Two layouts: ``paired-rows`` puts input i's G+ and G- on adjacent rows;
``row-blocks`` puts all G+ rows first, then all G- rows.

The placement is data (:class:`PlacementSpec`, from config or :func:`auto_place`); resolving
it against the boards' sizes and bad lines checks bounds, overlap and masked lines, and fails
with an error naming the layer and tile before any pulse is applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import ConfigDict, Field

from drivers.config_model import ConfigModel

IntArray = npt.NDArray[np.int64]
Layout = Literal["paired-rows", "row-blocks"]


class PlacementError(ValueError):
    """A placement that cannot be used; the message names the layer, tile and problem."""


class TileSpec(ConfigModel):
    """One block of a layer's weights on one board, starting at a corner.

    Its devices take the first good rows at or after ``row0`` and the first good columns at or
    after ``col0`` (bad lines are skipped, not used).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    board: str = "board0"
    row0: int = Field(0, ge=0)
    col0: int = Field(0, ge=0)
    rows: list[int] | None = Field(None, description="explicit rows of the devices (2 per input); replaces row0")
    cols: list[int] | None = Field(None, description="explicit columns (1 per output); replaces col0")
    inputs: tuple[int, int] | None = Field(None, description="[start, stop) of the layer's inputs; default all")
    outputs: tuple[int, int] | None = Field(None, description="[start, stop) of the layer's outputs; default all")


class LayerPlacementSpec(ConfigModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    layer: str
    layout: Layout = "paired-rows"
    tiles: list[TileSpec] = Field(min_length=1)


MAX_LINES = 65536
"""Largest line index (and count) any board has; the board's own size is checked in the run plan."""
LineIndex = Annotated[int, Field(ge=0, lt=MAX_LINES)]


class BadLines(ConfigModel):
    """Lines of a board that must not be used."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    rows: list[LineIndex] = Field(default_factory=list, max_length=MAX_LINES)
    cols: list[LineIndex] = Field(default_factory=list, max_length=MAX_LINES)


class PlacementSpec(ConfigModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    layers: list[LayerPlacementSpec]
    bad_lines: dict[str, BadLines] = Field(default_factory=dict, description="per board")


@dataclass(frozen=True)
class Tile:
    """A resolved tile: physical rows and columns of every device it uses."""

    layer: str
    board: str
    inputs: slice
    outputs: slice
    plus_rows: IntArray  # (n_inputs,) row of each input's G+ device
    minus_rows: IntArray  # (n_inputs,) row of each input's G- device
    cols: IntArray  # (n_outputs,) column of each output

    @property
    def row_span(self) -> tuple[int, int]:
        """First row and number of rows of the rectangle a VMM on this tile drives."""
        rows = np.concatenate([self.plus_rows, self.minus_rows])
        return int(rows.min()), int(rows.max() - rows.min() + 1)

    @property
    def col_span(self) -> tuple[int, int]:
        return int(self.cols.min()), int(self.cols.max() - self.cols.min() + 1)

    _flat: dict[tuple[int, ...], tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]] = field(
        default_factory=dict, init=False, repr=False, compare=False)
    """per map shape, the flat (row-major) index of every G+ and G- device (:meth:`flat_indices`)"""

    def flat_indices(self, shape: tuple[int, ...]) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
        """Where the tile's G+ and G- blocks (inputs x outputs) are in a row-major map of ``shape``,
        computed and checked once per shape: one ``take`` on them is a tenth of an ``np.ix_``
        gather's cost (an update reads and writes a dozen blocks of small maps, each then a few
        microseconds)."""
        cached = self._flat.get(shape)
        if cached is None:
            if len(shape) != 2:
                raise ValueError(f"tile of layer {self.layer!r}: a board map has 2 dimensions, this one {len(shape)}")
            rows, cols = shape
            if max(int(self.plus_rows.max()), int(self.minus_rows.max())) >= rows or int(self.cols.max()) >= cols:
                raise IndexError(f"tile of layer {self.layer!r} does not fit a {rows} x {cols} map")
            cached = self._flat[shape] = (
                (self.plus_rows[:, None] * cols + self.cols).astype(np.intp),
                (self.minus_rows[:, None] * cols + self.cols).astype(np.intp),
            )
        return cached

    def pair(self, board_map: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
        """The tile's G+ and G- blocks (inputs x outputs) of a board-sized map (copies)."""
        plus, minus = self.flat_indices(board_map.shape)
        return board_map.take(plus), board_map.take(minus)

    def put(self, board_map: npt.NDArray[Any], plus: npt.ArrayLike, minus: npt.ArrayLike) -> None:
        """Write the tile's G+ and G- blocks into a board-sized map (``plus`` and ``minus`` broadcast
        to the block's shape, as in an ``np.ix_`` assignment)."""
        flat = board_map.reshape(-1) if board_map.flags.c_contiguous else None
        if flat is None:  # a view with gaps: no flat view of it to write through
            board_map[np.ix_(self.plus_rows, self.cols)] = plus
            board_map[np.ix_(self.minus_rows, self.cols)] = minus
            return
        plus_at, minus_at = self.flat_indices(board_map.shape)
        flat[plus_at] = plus
        flat[minus_at] = minus

    def cell_mask(self, shape: tuple[int, int]) -> npt.NDArray[np.bool_]:
        """Every device of the tile, as a mask over its board."""
        mask = np.zeros(shape, dtype=bool)
        rows = np.concatenate([self.plus_rows, self.minus_rows])
        mask[np.ix_(rows, self.cols)] = True
        return mask


@dataclass(frozen=True)
class Placement:
    """Every layer's tiles, resolved and checked."""

    tiles: dict[str, list[Tile]]
    board_shapes: dict[str, tuple[int, int]]
    spec: PlacementSpec

    def boards(self) -> list[str]:
        return sorted({t.board for tiles in self.tiles.values() for t in tiles})

    def used_mask(self, board: str) -> npt.NDArray[np.bool_]:
        mask = np.zeros(self.board_shapes[board], dtype=bool)
        for tiles in self.tiles.values():
            for tile in tiles:
                if tile.board == board:
                    mask |= tile.cell_mask(mask.shape)
        return mask

    @property
    def device_count(self) -> int:
        return sum(2 * len(t.plus_rows) * len(t.cols) for tiles in self.tiles.values() for t in tiles)


def _good(size: int, bad: list[int]) -> IntArray:
    keep = np.ones(size, dtype=bool)
    keep[[b for b in bad if 0 <= b < size]] = False
    return np.flatnonzero(keep).astype(np.int64)


def _lines(explicit: list[int] | None, start: int, size: int, bad: list[int], needed: int, what: str,
           where: str) -> IntArray:  # fmt: skip
    """The physical lines a tile uses: the explicit ones, or the first good ones from ``start``."""
    if explicit is not None:
        lines = np.asarray(explicit, dtype=np.int64)
        if len(lines) != needed or len(set(explicit)) != len(explicit):
            raise PlacementError(f"{where}: needs {needed} distinct {what}, the placement lists {len(explicit)}")
        outside = [int(v) for v in lines if not 0 <= v < size]
        on_bad = sorted(set(explicit) & set(bad))
        if outside or on_bad:
            raise PlacementError(f"{where}: {what} {outside or on_bad} are {'outside the board' if outside else 'bad'}")
        return lines
    good = _good(size, bad)
    good = good[good >= start]
    if len(good) < needed:
        raise PlacementError(f"{where}: needs {needed} good {what} from {start} on, which has {len(good)}")
    return good[:needed]


def _span(value: tuple[int, int] | None, size: int, what: str, where: str) -> slice:
    start, stop = value if value is not None else (0, size)
    if not 0 <= start < stop <= size:
        raise PlacementError(f"{where}: {what} [{start}, {stop}) is not inside [0, {size})")
    return slice(start, stop)


def resolve_placement(
    spec: PlacementSpec,
    weight_shapes: Mapping[str, tuple[int, int]],
    board_shapes: Mapping[str, tuple[int, int]],
) -> Placement:
    """Physical devices of every tile, checked: bounds, bad lines, overlap, full coverage."""
    placed = {p.layer for p in spec.layers}
    missing, unknown = sorted(set(weight_shapes) - placed), sorted(placed - set(weight_shapes))
    if missing or unknown:
        raise PlacementError(f"placement lists layers {unknown or 'as expected'}; missing layers {missing or 'none'}")
    for board in spec.bad_lines:
        if board not in board_shapes:
            raise PlacementError(f"bad_lines names board {board!r}, which is not one of {sorted(board_shapes)}")
    occupied = {board: np.full(shape, "", dtype=object) for board, shape in board_shapes.items()}
    resolved: dict[str, list[Tile]] = {}
    for layer_spec in spec.layers:
        fan_in, fan_out = weight_shapes[layer_spec.layer]
        coverage = np.zeros((fan_in, fan_out), dtype=np.int64)
        tiles = []
        for index, tile_spec in enumerate(layer_spec.tiles):
            where = f"layer {layer_spec.layer!r} tile {index}"
            tile = _resolve_tile(layer_spec, tile_spec, fan_in, fan_out, board_shapes, spec.bad_lines, where)
            coverage[tile.inputs, tile.outputs] += 1
            _claim(occupied[tile.board], tile, where)
            tiles.append(tile)
        if (coverage != 1).any():
            i, o = (int(v) for v in np.argwhere(coverage != 1)[0])
            covering = [n for n, t in enumerate(tiles) if t.inputs.start <= i < t.inputs.stop
                        and t.outputs.start <= o < t.outputs.stop]  # fmt: skip
            which = "by " + " and ".join(f"tile {n}" for n in covering) if covering else "by no tile"
            raise PlacementError(
                f"layer {layer_spec.layer!r}: weight [{i}, {o}] is placed {int(coverage[i, o])} times ({which}); "
                "tiles must cover each weight once"
            )
        resolved[layer_spec.layer] = tiles
    return Placement(resolved, dict(board_shapes), spec)


def _resolve_tile(
    layer_spec: LayerPlacementSpec,
    tile_spec: TileSpec,
    fan_in: int,
    fan_out: int,
    board_shapes: Mapping[str, tuple[int, int]],
    bad_lines: Mapping[str, BadLines],
    where: str,
) -> Tile:
    if tile_spec.board not in board_shapes:
        raise PlacementError(f"{where}: board {tile_spec.board!r} is not one of {sorted(board_shapes)}")
    rows, cols = board_shapes[tile_spec.board]
    inputs = _span(tile_spec.inputs, fan_in, "inputs", where)
    outputs = _span(tile_spec.outputs, fan_out, "outputs", where)
    n_in, n_out = inputs.stop - inputs.start, outputs.stop - outputs.start
    bad = bad_lines.get(tile_spec.board, BadLines())
    good_rows = _lines(tile_spec.rows, tile_spec.row0, rows, bad.rows, 2 * n_in, "rows", where)
    good_cols = _lines(tile_spec.cols, tile_spec.col0, cols, bad.cols, n_out, "columns", where)
    used_rows = good_rows[: 2 * n_in]
    if layer_spec.layout == "paired-rows":
        plus, minus = used_rows[0::2], used_rows[1::2]
    else:
        plus, minus = used_rows[:n_in], used_rows[n_in:]
    return Tile(layer_spec.layer, tile_spec.board, inputs, outputs, plus, minus, good_cols[:n_out])


def _claim(owners: npt.NDArray[np.object_], tile: Tile, where: str) -> None:
    rows = np.concatenate([tile.plus_rows, tile.minus_rows])
    block = owners[np.ix_(rows, tile.cols)]
    taken = block != ""
    if taken.any():
        r, c = (int(v) for v in np.argwhere(taken)[0])
        raise PlacementError(
            f"{where} overlaps {block[r, c]} at board {tile.board!r} cell ({int(rows[r])}, {int(tile.cols[c])})"
        )
    owners[np.ix_(rows, tile.cols)] = where


def auto_place(
    weight_shapes: Mapping[str, tuple[int, int]],
    board_shapes: Mapping[str, tuple[int, int]],
    bad_lines: Mapping[str, BadLines] | None = None,
    layout: Layout = "paired-rows",
    defective: Mapping[str, npt.NDArray[np.bool_]] | None = None,
) -> PlacementSpec:
    """Pack layers into the boards' free columns, largest layer first.

    A layer whose inputs need more rows than a board has is cut into tiles of inputs, and one whose
    outputs need more free columns than a board has left into tiles of outputs, on this board or
    the next; the host adds the partial sums. Given a map of ``defective`` devices, each tile takes
    the free columns with the fewest defects, then the rows with the fewest defects in those
    columns, so a network that uses part of the array sits mostly on working devices. Without
    one, tiles take the first free lines.
    """
    bad_lines = dict(bad_lines or {})
    good_rows = {b: _good(shape[0], bad_lines.get(b, BadLines()).rows) for b, shape in board_shapes.items()}
    free_cols = {b: _good(shape[1], bad_lines.get(b, BadLines()).cols) for b, shape in board_shapes.items()}
    broken = {b: (defective or {}).get(b, np.zeros(shape, dtype=bool)) for b, shape in board_shapes.items()}
    placed: dict[str, LayerPlacementSpec] = {}
    for layer in sorted(weight_shapes, key=lambda name: -weight_shapes[name][0] * weight_shapes[name][1]):
        fan_in, fan_out = weight_shapes[layer]
        tiles = []
        out_start = 0
        while out_start < fan_out:
            # The first board with room for some outputs: all of the layer's inputs for them, cut
            # into as many tiles (each on its own columns) as the board's rows require.
            for board in board_shapes:
                max_inputs = len(good_rows[board]) // 2
                chunks = -(-fan_in // max_inputs) if max_inputs else 0
                n_out = min(fan_out - out_start, len(free_cols[board]) // chunks) if chunks else 0
                if n_out:
                    break
            else:
                free = {name: len(cols) for name, cols in free_cols.items()}
                raise PlacementError(
                    f"layer {layer!r} ({fan_in} x {fan_out} weights) does not fit: no board has room for its "
                    f"remaining {fan_out - out_start} outputs (free good columns: {free}); add a board or free lines"
                )
            for in_start in range(0, fan_in, max_inputs):
                inputs = (in_start, min(fan_in, in_start + max_inputs))
                n_rows = 2 * (inputs[1] - inputs[0])
                rows, cols = _choose_devices(broken[board], good_rows[board], free_cols[board], n_rows, n_out)
                free_cols[board] = np.setdiff1d(free_cols[board], cols)
                tiles.append(TileSpec(board=board, rows=rows.tolist(), cols=cols.tolist(), inputs=inputs,
                                      outputs=(out_start, out_start + n_out)))  # fmt: skip
            out_start += n_out
        placed[layer] = LayerPlacementSpec(layer=layer, layout=layout, tiles=tiles)
    return PlacementSpec(layers=[placed[layer] for layer in weight_shapes], bad_lines=bad_lines)


CONTIGUOUS_DEFECT_ALLOWANCE: float | None = None
"""Off (``None``: the columns with the fewest defects, as before), or how many more defective devices
(as a fraction of the tile's devices) a tile on adjacent columns may hold than one on the columns
with the fewest defects, and still be preferred. None: on the
demo's chip (11 % defective) 5 % bought the CNN rectangles of 15, 4 and 10 columns (57, 28, 61
scattered) for 155 defective devices among 2,030 instead of 120, and cost it a point of test
accuracy all along its curve; the VMM's cost no longer depends on the rectangle's width (only
the driven rows and the measured columns are computed). At 0 (adjacent only at no cost in
defects) the parallel mode's copies on a 64 x 32 chip came out 0.101 rms from their weights,
against under 0.1 scattered."""


def _choose_devices(
    broken: npt.NDArray[np.bool_], good_rows: IntArray, free_cols: IntArray, n_rows: int, n_out: int
) -> tuple[IntArray, IntArray]:
    """A tile's rows and columns: the free columns with the fewest defects (adjacent ones when they
    hold at most ``CONTIGUOUS_DEFECT_ALLOWANCE`` of the tile's devices more), then the rows with the
    fewest defects in those columns.

    Adjacent columns make the rectangle a VMM on the tile reads as narrow as its outputs (conv1 of
    the Wang 2019 CNN read 57 columns for 15 outputs on scattered columns).
    """

    def rows_for(cols: IntArray) -> tuple[IntArray, int]:
        row_scores = broken[np.ix_(good_rows, cols)].sum(axis=1)
        order = np.argsort(row_scores, kind="stable")[:n_rows]
        return np.sort(good_rows[order]), int(row_scores[order].sum())

    col_scores = broken[np.ix_(good_rows, free_cols)].sum(axis=0)
    scattered = np.sort(free_cols[np.argsort(col_scores, kind="stable")[:n_out]])
    best_rows, best_defects = rows_for(scattered)
    # Windows of n_out adjacent free columns, by their defect count.
    if CONTIGUOUS_DEFECT_ALLOWANCE is None:
        return best_rows, scattered
    starts = np.flatnonzero(free_cols[n_out - 1 :] - free_cols[: len(free_cols) - n_out + 1] == n_out - 1)
    if not starts.size:
        return best_rows, scattered
    window_scores = np.convolve(col_scores, np.ones(n_out, dtype=np.int64), mode="valid")[starts]
    start = int(starts[np.argmin(window_scores)])
    adjacent = free_cols[start : start + n_out]
    rows, defects = rows_for(adjacent)
    if defects <= best_defects + CONTIGUOUS_DEFECT_ALLOWANCE * n_rows * n_out:
        return rows, adjacent
    return best_rows, scattered


def remap_for_weights(
    placement: Placement,
    weights: Mapping[str, npt.NDArray[np.float64]],
    defective: Mapping[str, npt.NDArray[np.bool_]],
    passes: int = 2,
) -> PlacementSpec:
    """The same devices, with each tile's inputs and outputs reassigned so the largest weights avoid
    defective pairs (defect-aware remapping of weights known before they are written).

    Within a tile, which physical row pair holds which input, and which column which output, is
    free: the host routes inputs and outputs. A pair with a defective device holds a weight badly
    (a shorted or dead pair holds none), so the assignment minimizing the sum of squared weights on
    such pairs is found (an assignment problem, solved exactly for rows given the columns, then for
    columns given the rows, ``passes`` times). Only the order of the tile's lines changes.
    """
    from scipy.optimize import linear_sum_assignment

    layers = []
    for layer_spec in placement.spec.layers:
        tiles = []
        for tile in placement.tiles[layer_spec.layer]:
            w2 = np.asarray(weights[tile.layer], dtype=np.float64)[tile.inputs, tile.outputs] ** 2
            broken = defective.get(tile.board)
            plus, minus, cols = tile.plus_rows.copy(), tile.minus_rows.copy(), tile.cols.copy()
            if broken is not None:
                for _ in range(passes):
                    bad = (broken[np.ix_(plus, cols)] | broken[np.ix_(minus, cols)]).astype(np.float64)
                    _, rows_for = linear_sum_assignment(w2 @ bad.T)  # input i -> physical pair rows_for[i]
                    plus, minus = plus[rows_for], minus[rows_for]
                    bad = (broken[np.ix_(plus, cols)] | broken[np.ix_(minus, cols)]).astype(np.float64)
                    _, cols_for = linear_sum_assignment(w2.T @ bad)  # output o -> physical column cols_for[o]
                    cols = cols[cols_for]
            if layer_spec.layout == "paired-rows":
                rows = np.column_stack([plus, minus]).ravel()
            else:
                rows = np.concatenate([plus, minus])
            tiles.append(TileSpec(board=tile.board, rows=rows.tolist(), cols=cols.tolist(),
                                  inputs=(tile.inputs.start, tile.inputs.stop),
                                  outputs=(tile.outputs.start, tile.outputs.stop)))  # fmt: skip
        layers.append(LayerPlacementSpec(layer=layer_spec.layer, layout=layer_spec.layout, tiles=tiles))
    return PlacementSpec(layers=layers, bad_lines=placement.spec.bad_lines)
