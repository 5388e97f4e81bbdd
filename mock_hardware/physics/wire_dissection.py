"""The wire network's ``G_eff`` by nested dissection: an exact solve whose cost grows like cells^1.5.

The block sweep of :class:`~mock_hardware.physics.line_resistance.TransferSolver` costs
``rows x cols^3`` (cells squared at a fixed aspect ratio). Here the array is cut into tiles, each
tile's network is reduced exactly to its edges (the Schur complement of its nodal matrix onto the
nodes it shares with its neighbours: a Kron reduction), and neighbouring tiles are merged pairwise,
eliminating the nodes they share, until what is left is the whole array reduced onto its
terminals: the row drivers and the column TIAs. That reduced matrix is the network's admittance
``Y`` between terminals, and ``G_eff[i, j] = -Y[driver i, TIA j]`` (all terminals held at their
voltages, the TIAs at 0 V). Nothing is approximated; the work is dense LAPACK on the separators,
``O((rows cols)^1.5)``.

Node layout (the same geometry as ``line_resistance``): ``u(i, j)`` on row line ``i`` at cell
column ``j``, with ``u(i, -1)`` the row's driver; ``w(i, j)`` on column line ``j`` at cell row
``i``, with ``w(rows, j)`` the column's TIA. A tile of cells ``[r0, r1) x [c0, c1)`` owns its
cells, the row segment to the left of each of its cells and the column segment below each, so
its edges are ``L = u(r0:r1, c0 - 1)``, ``R = u(r0:r1, c1 - 1)``, ``T = w(r0, c0:c1)`` and
``B = w(r1, c0:c1)``: neighbours share one line of nodes (``R`` of a tile is ``L`` of the next).

Two stages: small tiles are all alike, so they are merged in batches (while they share 1-4 nodes,
a compiled pass over the stack per level; then stacked inverses and numpy's stacked ``matmul``);
from tiles of ``tile x tile`` cells on, each merge is its own LAPACK calls (Cholesky, triangular
solve, rank-k update), and nodes that nothing else touches (the open ends of the lines at the top
and the right) and terminals nobody asked for are dropped as soon as they can be. The array is
padded to a multiple of the tile with cells of zero conductance above its first row and beyond its
last column (open wire stubs: they carry no current, so the answer is unchanged).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from scipy.linalg.blas import dsyrk, dtrsm
from scipy.linalg.lapack import dpotrf

from mock_hardware.physics.threads import one_blas_thread

FloatArray = npt.NDArray[np.float64]

# Tiles of this many cells a side end the batched stage (merges above it are one at a time). 32: 5-11 %
# less CPU than 64 on 64 x 64 to 256 x 128, 2 % on 512 x 256 (docs/benchmarks.md, ninth pass, part S).
DEFAULT_TILE = 32
# Separators up to this many nodes are eliminated by a compiled pass over the stack, tiles stored
# stack-last (_dissection_kernels.merge_stack_last); from 8 nodes on, by numpy's stacked inverse and
# matmul, stack-first (docs/benchmarks.md, tenth pass, part W).
_SMALL_SEPARATOR = 4
# Cells reduced together in the batched stage (a band of whole tile rows): about 1 MB of cell data,
# 16x that in reduced matrices.
_BAND_CELLS = 16384


def _edges(h: int, w: int) -> dict[str, slice]:
    """Where each edge of an ``h x w`` tile sits in its matrix (layout ``L, R, T, B``)."""
    return {"L": slice(0, h), "R": slice(h, 2 * h), "T": slice(2 * h, 2 * h + w), "B": slice(2 * h + w, 2 * h + 2 * w)}


def _merge_pairs(
    first: FloatArray, second: FloatArray, edges: dict[str, slice], shared: tuple[str, str],
    kept: list[tuple[int, str]],
) -> FloatArray:  # fmt: skip
    """Stacks of pairs of tiles merged: the edge ``shared[0]`` of the first and ``shared[1]`` of the
    second are the same nodes and are eliminated; ``kept`` lists the merged tile's edges in order
    (which tile, which edge). The two tiles touch only through the shared nodes, so the merged
    matrix is ``blockdiag - P S^-1 P^T`` with ``S`` the shared block and ``P`` the kept nodes'
    coupling to it; it is built from block copies (no scatter). ``first`` and ``second`` are
    ``(..., b, b)`` (strided views of one stack: read block by block, never copied whole)."""
    pair = (first, second)
    own = [edges[shared[0]], edges[shared[1]]]
    inner = pair[0][..., own[0], own[0]] + pair[1][..., own[1], own[1]]
    sizes = [edges[name].stop - edges[name].start for _, name in kept]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    size = int(starts[-1])
    merged = np.zeros((*first.shape[:-2], size, size))
    for a, (tile_a, name_a) in enumerate(kept):
        rows = slice(starts[a], starts[a + 1])
        for c, (tile_c, name_c) in enumerate(kept):
            if tile_a == tile_c:
                merged[..., rows, starts[c] : starts[c + 1]] = pair[tile_a][..., edges[name_a], edges[name_c]]
    coupling = np.concatenate([pair[t][..., edges[name], own[t]] for t, name in kept], axis=-2)  # (..., size, s)
    # S^-1 explicitly: numpy's stacked inverse of small matrices costs a third of its stacked
    # solve with the coupling as right-hand sides (one LAPACK call per tile either way), and the
    # inverse by halves less again from 16 nodes on (_stacked_inverse).
    merged -= np.matmul(np.matmul(coupling, _stacked_inverse(inner)), np.swapaxes(coupling, -1, -2))
    return merged


def _stacked_inverse(matrix: FloatArray) -> FloatArray:
    """Inverses of a ``(..., s, s)`` stack of symmetric positive-definite matrices. Above 8 nodes,
    by halves: ``A^-1`` and the inverse of the Schur complement ``D - B A^-1 B^T`` (positive
    definite too, so no pivoting is needed), the rest by stacked matmuls, which run at several
    times the rate of numpy's stacked ``inv`` (a LAPACK ``gesv`` per matrix): 32 nodes 1.8x, 16
    nodes 1.3x faster; at 8 and below ``inv`` itself (docs/benchmarks.md, ninth pass, part D2)."""
    size = matrix.shape[-1]
    if size <= 8:
        return np.linalg.inv(matrix).astype(np.float64, copy=False)
    h = size // 2
    a, b, d = matrix[..., :h, :h], matrix[..., h:, :h], matrix[..., h:, h:]
    a_inverse = _stacked_inverse(a)
    b_a = np.matmul(b, a_inverse)  # B A^-1
    schur_inverse = _stacked_inverse(d - np.matmul(b_a, np.swapaxes(b, -1, -2)))
    lower = np.matmul(schur_inverse, b_a)  # (D - B A^-1 B^T)^-1 B A^-1
    inverse = np.empty_like(matrix)
    inverse[..., h:, h:] = schur_inverse
    inverse[..., h:, :h] = -lower
    inverse[..., :h, h:] = -np.swapaxes(lower, -1, -2)
    inverse[..., :h, :h] = a_inverse + np.matmul(np.swapaxes(b_a, -1, -2), lower)
    return inverse


# A tile's preparation for the merged stage (see DissectionSolver._tile_plan).
_Plan = tuple[npt.NDArray[np.intp] | None, int, tuple[int, int, int, int], bool, bool]


class _Shape(NamedTuple):
    """What a reduced tile's matrix holds (the matrix itself is not needed to plan its merges):
    how many nodes each edge keeps, in the order ``L, R, T, B`` (open line ends are eliminated,
    unread terminals dropped), and whether its ``L`` edge is the array's drivers and its ``B``
    edge the array's TIAs (terminals: kept to the end). Only the matrix's lower triangle is kept
    up to date."""

    sizes: tuple[int, int, int, int]
    drivers: bool
    tias: bool

    def edge(self, name: str) -> slice:
        k = "LRTB".index(name)
        start = sum(self.sizes[:k])
        return slice(start, start + self.sizes[k])


# A block copied into a merge: destination rows and columns (for a coupling's block, its index in the
# coupling and None), which of the two tiles, its rows and columns there, and whether it is read
# transposed (from the lower triangle: see _block).
_Copy = tuple[Any, Any, int, slice, slice, bool]


class _Step(NamedTuple):
    """One merge of the merged stage, planned once for a set of columns (:func:`_plan_merge`): the
    indices of its two tiles in the stage's list of reduced tiles, where their shared nodes sit in
    each, and every block copy that builds the separator's coupling and the merged matrix."""

    first: int
    second: int
    own: tuple[slice, slice]
    coupling_shape: tuple[int, int]
    coupling_copies: tuple[_Copy, ...]
    size: int
    copies: tuple[_Copy, ...]
    zeros: tuple[tuple[slice, slice], ...]
    head: int
    tail: int
    transposed: bool


def _block(rows: slice, cols: slice) -> tuple[slice, slice, bool]:
    """Where ``matrix[rows, cols]`` of a reduced tile is read from its lower triangle: the block
    itself, or its mirror transposed (for ``rows`` equal to ``cols``, only the block's own lower
    triangle is meaningful)."""
    return (rows, cols, False) if rows.start >= cols.start else (cols, rows, True)


class DissectionSolver:
    """``G_eff`` of a whole array (rows driven at column 0, columns into TIAs) by nested dissection.

    The same answer as :class:`~mock_hardware.physics.line_resistance.TransferSolver` (to rounding),
    at ``O((rows cols)^1.5)`` work instead of ``rows x cols^3``.
    """

    def __init__(self, rows: int, cols: int, r_segment: float, end_segments: int = 1, tile: int = DEFAULT_TILE):
        if tile < 1 or tile & (tile - 1):
            raise ValueError(f"tile must be a power of two, got {tile}")
        self.rows, self.cols = rows, cols
        self.g_wire = 1.0 / r_segment
        self.g_end = 1.0 / (r_segment * end_segments)
        # Tiles no larger than the array needs, each side a power of two.
        self.tile_rows = min(tile, 1 << max(rows - 1, 0).bit_length())
        self.tile_cols = min(tile, 1 << max(cols - 1, 0).bit_length())
        self.padded_rows = -(-rows // self.tile_rows) * self.tile_rows
        self.padded_cols = -(-cols // self.tile_cols) * self.tile_cols
        # For the last columns asked: each tile's preparation, the merges, the whole array's shape.
        self._plans: tuple[bytes, dict[tuple[int, int], _Plan], tuple[_Step, ...], _Shape] | None = None

    # --- the solve -----------------------------------------------------------------------------

    def transfer(self, g_cells: FloatArray, columns: npt.NDArray[np.intp] | None = None) -> FloatArray:
        """``G_eff`` (rows x cols) for ohmic cells ``g_cells``; with ``columns``, only those columns
        are solved (the others are NaN)."""
        wanted = np.arange(self.cols) if columns is None else np.unique(np.asarray(columns, dtype=np.intp))
        g_eff = np.full((self.rows, self.cols), np.nan)
        if not wanted.size:
            return g_eff
        with one_blas_thread():
            tiles = self._batched_stage(np.asarray(g_cells, dtype=np.float64))
            matrix, whole = self._merged_stage(tiles, wanted)
        # What is left: the real rows' drivers (L, top to bottom) and the wanted TIAs (B).
        rows, cols, flip = _block(whole.edge("L"), whole.edge("B"))
        g_eff[:, wanted] = -(matrix[rows, cols].T if flip else matrix[rows, cols])
        return g_eff

    def _batched_stage(self, g: FloatArray) -> FloatArray:
        """Reduced matrices of every ``tile_rows x tile_cols`` tile, ``(tile rows, tile cols, b, b)``
        with ``b = 2 tile_rows + 2 tile_cols`` in the edge order ``L, R, T, B``."""
        rows_p, cols_p = self.padded_rows, self.padded_cols
        padded = np.zeros((rows_p, cols_p))
        padded[rows_p - self.rows :, : self.cols] = g  # zero-conductance cells above and to the right
        below = np.full((rows_p, cols_p), self.g_wire)
        below[-1, :] = self.g_end  # the last row's segment goes to the TIA
        # Tiles do not meet before the merged stage: reduce them a band of rows at a time, so that a
        # band's matrices stay in the caches through all the batched levels.
        band = max(self.tile_rows, _BAND_CELLS // cols_p // self.tile_rows * self.tile_rows)
        return np.concatenate(
            [self._reduce_band(padded[r0 : r0 + band], below[r0 : r0 + band]) for r0 in range(0, rows_p, band)]
        )

    def _reduce_band(self, padded: FloatArray, below: FloatArray) -> FloatArray:
        """:meth:`_batched_stage` for a band of whole tile rows (cells ``padded``, conductance
        ``below`` of the column segment under each cell)."""
        rows_p, cols_p = padded.shape
        gw = self.g_wire
        # One cell: L = u(i, j-1), R = u(i, j), T = w(i, j), B = w(i+1, j). While the tiles are
        # small the stack index comes last (each block operation then runs over contiguous memory).
        tiles = np.zeros((4, 4, rows_p, cols_p))
        tiles[0, 0] = gw
        tiles[0, 1] = tiles[1, 0] = -gw
        tiles[1, 1] = gw + padded
        tiles[1, 2] = tiles[2, 1] = -padded
        tiles[2, 2] = padded + below
        tiles[2, 3] = tiles[3, 2] = -below
        tiles[3, 3] = below
        stack_last, h, w = True, 1, 1
        while (h, w) != (self.tile_rows, self.tile_cols):
            across = w < self.tile_cols and (w <= h or h == self.tile_rows)
            if stack_last and (h if across else w) > _SMALL_SEPARATOR:
                tiles, stack_last = np.ascontiguousarray(tiles.transpose(2, 3, 0, 1)), False
            if stack_last:  # one compiled pass per level (_dissection_kernels)
                from mock_hardware.physics import _dissection_kernels  # numba: loaded by the first dissection

                nh, nw = (h, 2 * w) if across else (2 * h, w)
                grid = (tiles.shape[2], tiles.shape[3] // 2) if across else (tiles.shape[2] // 2, tiles.shape[3])
                merged = np.empty((2 * nh + 2 * nw, 2 * nh + 2 * nw, *grid))
                _dissection_kernels.merge_stack_last(tiles, h, w, across, merged)
                tiles, h, w = merged, nh, nw
                continue
            edges = _edges(h, w)
            if across:
                # The merged tile's edges, each from one of the pair: L, R, T (left's, right's), B (same).
                kept = [(0, "L"), (1, "R"), (0, "T"), (1, "T"), (0, "B"), (1, "B")]
                first, second = tiles[:, 0::2], tiles[:, 1::2]
                shared, w = ("R", "L"), 2 * w
            else:
                kept = [(0, "L"), (1, "L"), (0, "R"), (1, "R"), (0, "T"), (1, "B")]
                first, second = tiles[0::2], tiles[1::2]
                shared, h = ("B", "T"), 2 * h
            tiles = _merge_pairs(first, second, edges, shared, kept)
        return np.ascontiguousarray(tiles.transpose(2, 3, 0, 1)) if stack_last else tiles

    def _merged_stage(self, tiles: FloatArray, wanted: npt.NDArray[np.intp]) -> tuple[FloatArray, _Shape]:
        """Merge the tiles pairwise (cutting across the longer side first) down to the whole array,
        reduced onto the real rows' drivers and the wanted columns' TIAs: its matrix and shape."""
        n_r, n_c = tiles.shape[:2]
        key = wanted.tobytes()
        if self._plans is None or self._plans[0] != key:
            plans = {(tr, tc): self._tile_plan(tr, tc, wanted) for tr in range(n_r) for tc in range(n_c)}
            shapes = [_Shape(plan[2], plan[3], plan[4]) for plan in plans.values()]
            planned: list[_Step] = []
            top = self._plan_block(shapes, planned, {tile: k for k, tile in enumerate(plans)}, 0, n_r, 0, n_c)
            self._plans = key, plans, tuple(planned), shapes[top]
        _, plans, steps, whole = self._plans
        reduced: list[FloatArray | None] = []
        for (tr, tc), (order, eliminated, sizes, drivers, tias) in plans.items():
            # The batched stage's matrices are whole and symmetric (to rounding) and C-ordered:
            # the merges read their transposes, Fortran-ordered views, so that each block is
            # copied as it lies in memory (a transposed copy costs 6-12x more from 64 nodes on).
            matrix = tiles[tr, tc].T
            if order is not None:
                matrix = _schur_leading(
                    tiles[tr, tc][np.ix_(order, order)].T, eliminated,
                    sizes[0] if drivers else 0, sizes[3] if tias else 0,
                )  # fmt: skip
            reduced.append(matrix)
        for step in steps:
            first, second = reduced[step.first], reduced[step.second]
            assert first is not None and second is not None
            reduced[step.first] = reduced[step.second] = None  # each tile is merged once: free it
            reduced.append(_run_merge(step, first, second))
        matrix = reduced[-1]
        assert matrix is not None
        return matrix, whole

    def _tile_plan(self, tr: int, tc: int, wanted: npt.NDArray[np.intp]) -> _Plan:
        """What the merged stage does with tile ``(tr, tc)`` before its merges (the same for every
        solve of the same columns: kept from one solve to the next): the order that puts the
        nodes to eliminate first (None: none to eliminate or drop), how many, the nodes each edge
        keeps, and whether its ``L`` edge holds drivers and its ``B`` edge TIAs."""
        th, tw = self.tile_rows, self.tile_cols
        r0, c0 = tr * th, tc * tw
        pad = self.padded_rows - self.rows
        keep = {name: np.ones(size, dtype=bool) for name, size in zip("LRTB", (th, th, tw, tw), strict=True)}
        drop = {name: np.zeros(size, dtype=bool) for name, size in zip("LRTB", (th, th, tw, tw), strict=True)}
        if c0 == 0:  # the drivers of padding rows: held at 0 V, nobody reads them
            drop["L"] = r0 + np.arange(th) < pad
        if r0 + th == self.padded_rows:  # TIAs nobody reads (held at 0 V)
            wanted_tia = np.zeros(self.padded_cols, dtype=bool)
            wanted_tia[wanted] = True
            drop["B"] = ~wanted_tia[c0 : c0 + tw]
        if r0 == 0:  # the open top ends of the column lines: nothing else touches them
            keep["T"][:] = False
        if c0 + tw == self.padded_cols:  # the open right ends of the row lines
            keep["R"][:] = False
        eliminate = np.concatenate([~keep[name] & ~drop[name] for name in "LRTB"])
        kept = {name: keep[name] & ~drop[name] for name in "LRTB"}
        order = np.concatenate([np.flatnonzero(eliminate), np.flatnonzero(np.concatenate(list(kept.values())))])
        left, right, top, bottom = (int(kept[name].sum()) for name in "LRTB")
        sizes = left, right, top, bottom
        changed = order.size != 2 * (th + tw) or bool(np.any(eliminate))
        return (order if changed else None), int(eliminate.sum()), sizes, c0 == 0, r0 + th == self.padded_rows

    def _plan_block(
        self, shapes: list[_Shape], steps: list[_Step], index: dict[tuple[int, int], int],
        r0: int, r1: int, c0: int, c1: int,
    ) -> int:  # fmt: skip
        """Plan the merges of tiles ``[r0, r1) x [c0, c1)`` (appended to ``steps``, their results'
        shapes to ``shapes``); returns where the merged block's shape is in ``shapes``."""
        if r1 - r0 == 1 and c1 - c0 == 1:
            return index[(r0, c0)]
        # Cut across the longer side (in cells), so the separator is the shorter one.
        if (c1 - c0) * self.tile_cols >= (r1 - r0) * self.tile_rows and c1 - c0 > 1:
            middle = (c0 + c1) // 2
            first = self._plan_block(shapes, steps, index, r0, r1, c0, middle)
            second = self._plan_block(shapes, steps, index, r0, r1, middle, c1)
            shared, kept = ("R", "L"), [(0, "L"), (1, "R"), (0, "T"), (1, "T"), (0, "B"), (1, "B")]
        else:
            middle = (r0 + r1) // 2
            first = self._plan_block(shapes, steps, index, r0, middle, c0, c1)
            second = self._plan_block(shapes, steps, index, middle, r1, c0, c1)
            shared, kept = ("B", "T"), [(0, "L"), (1, "L"), (0, "R"), (1, "R"), (0, "T"), (1, "B")]
        step, shape = _plan_merge(first, second, shapes[first], shapes[second], shared, kept)
        steps.append(step)
        shapes.append(shape)
        return len(shapes) - 1


def _plan_merge(
    first: int, second: int, first_shape: _Shape, second_shape: _Shape, shared: tuple[str, str],
    kept: list[tuple[int, str]],
) -> tuple[_Step, _Shape]:  # fmt: skip
    """The merge of two reduced tiles (at ``first`` and ``second`` in the stage's list) planned:
    edge ``shared[0]`` of the first and ``shared[1]`` of the second are the same nodes (nothing else
    touches them) and are eliminated; ``kept`` lists the merged tile's edges in order (which tile,
    which edge; ``L`` first, ``B`` last), the same way the batched stage does. Only lower triangles
    are read and written. Returns the step and the merged tile's shape."""
    pair = (first_shape, second_shape)
    own = (first_shape.edge(shared[0]), second_shape.edge(shared[1]))
    sizes = [pair[t].sizes["LRTB".index(name)] for t, name in kept]
    starts = [0]
    for size_k in sizes:
        starts.append(starts[-1] + size_k)
    s, size = first_shape.sizes["LRTB".index(shared[0])], starts[-1]
    merged_sizes = [0, 0, 0, 0]
    for (_, name), size_k in zip(kept, sizes, strict=True):
        merged_sizes["LRTB".index(name)] += size_k
    drivers = all(pair[t].drivers for t, name in kept if name == "L")
    tias = all(pair[t].tias for t, name in kept if name == "B")
    head, tail = merged_sizes[0] if drivers else 0, merged_sizes[3] if tias else 0
    terminals = ("L" if drivers else "") + ("B" if tias else "")
    # The coupling of an edge to the shared nodes lies in memory as (edge, shared) when the edge
    # comes after them in its tile, as (shared, edge) when before: it is gathered as the one or the
    # other (``transposed``), whichever copies fewer nodes against their layout (across: the first
    # tile's L; down: the second tile's B).
    after = [pair[t].edge(name).start > own[t].start for t, name in kept]
    against = sum(size_k for size_k, a in zip(sizes, after, strict=True) if not a)
    transposed = 2 * against > size
    coupling_copies: list[_Copy] = []
    copies: list[_Copy] = []
    zeros: list[tuple[slice, slice]] = []
    for a, (tile_a, name_a) in enumerate(kept):
        rows = slice(starts[a], starts[a + 1])
        edge_a = pair[tile_a].edge(name_a)
        if transposed:
            coupling_copies.append(((slice(None), rows), None, tile_a, *_block(own[tile_a], edge_a)))
        else:
            coupling_copies.append((rows, None, tile_a, *_block(edge_a, own[tile_a])))
        for c, (tile_c, name_c) in enumerate(kept[: a + 1]):
            if name_a == name_c and name_a in terminals:
                continue  # drivers with drivers, TIAs with TIAs: never read (see _eliminate)
            cols = slice(starts[c], starts[c + 1])
            if tile_a == tile_c:
                copies.append((rows, cols, tile_a, *_block(edge_a, pair[tile_c].edge(name_c))))
            else:
                zeros.append((rows, cols))  # the two tiles touch only through the shared nodes
    step = _Step(first, second, own, (s, size) if transposed else (size, s), tuple(coupling_copies), size,
                 tuple(copies), tuple(zeros), head, tail, transposed)  # fmt: skip
    return step, _Shape((merged_sizes[0], merged_sizes[1], merged_sizes[2], merged_sizes[3]), drivers, tias)


def _run_merge(step: _Step, first: FloatArray, second: FloatArray) -> FloatArray:
    """The merged tile's matrix of a planned merge (:func:`_plan_merge`) of the two tiles' matrices
    (Fortran-ordered, lower triangles meaningful)."""
    pair = (first, second)
    s = step.coupling_shape[0] if step.transposed else step.coupling_shape[1]
    # Built in Fortran order, each block where LAPACK works on it in place (no copies into it).
    # The diagonal blocks' strict upper triangles hold whatever memory held (never read): no
    # arithmetic on them either (it could overflow).
    separator = np.empty((s, s), order="F")
    np.add(first[step.own[0], step.own[0]], second[step.own[1], step.own[1]], out=separator, where=_lower_mask(s))
    coupling = np.empty(step.coupling_shape, order="F")
    for target, _, tile, rows, cols, flip in step.coupling_copies:
        block = pair[tile][rows, cols]
        coupling[target] = block.T if flip else block
    matrix = np.empty((step.size, step.size), order="F")  # the strict upper triangle is never read
    for target_rows, target_cols, tile, rows, cols, flip in step.copies:
        block = pair[tile][rows, cols]
        matrix[target_rows, target_cols] = block.T if flip else block
    for target_rows, target_cols in step.zeros:
        matrix[target_rows, target_cols] = 0.0
    _eliminate(separator, coupling, matrix, step.head, step.tail, step.transposed)
    return matrix


@functools.cache
def _lower_mask(size: int) -> npt.NDArray[np.bool_]:
    """Where a ``size x size`` matrix's lower triangle is (diagonal included), Fortran-ordered as
    the merges' blocks are (a C-ordered mask makes the masked sum 4-6x slower)."""
    mask = np.asfortranarray(np.tri(size, dtype=bool))
    mask.flags.writeable = False
    return mask


def _schur_leading(matrix: FloatArray, eliminated: int, head: int = 0, tail: int = 0) -> FloatArray:
    """Schur complement of a symmetric matrix onto all but its first ``eliminated`` rows (see
    :func:`_eliminate`: read from and written to the lower triangle, terminals' blocks left out)."""
    if not eliminated:
        return matrix
    e = eliminated
    kept = np.asfortranarray(matrix[e:, e:])
    _eliminate(np.asfortranarray(matrix[:e, :e]), np.asfortranarray(matrix[e:, :e]), kept, head, tail)
    return kept


def _eliminate(
    separator: FloatArray, coupling: FloatArray, kept: FloatArray, head: int, tail: int, transposed: bool = False
) -> None:
    """``kept -= coupling separator^-1 coupling^T`` in place, on the lower triangle, for Fortran-
    ordered blocks of a symmetric matrix (``separator`` and ``coupling`` are overwritten;
    ``transposed``: ``coupling`` is given as its transpose, shared nodes by kept nodes). The
    blocks of the first ``head`` and of the last ``tail`` kept nodes with themselves are left out
    where that saves more than it costs: those are the array's drivers and its TIAs, terminals
    whose admittance among themselves nobody reads (``G_eff`` is the drivers' block with the
    TIAs); at 512 x 256 they are a fifth to four fifths of each merge's rank-k update."""
    factor, info = dpotrf(separator, lower=1, clean=1, overwrite_a=1)
    if info != 0:
        raise ArithmeticError(f"wire network separator not positive definite (dpotrf info {info})")
    size, nodes = kept.shape[0], separator.shape[0]
    middle_size = size - head - tail
    if (head or tail) and (head * head + tail * tail) * nodes < 25 * middle_size * (2 * middle_size + nodes):
        # One dsyrk on the whole block after all, the terminals' blocks among themselves zeroed
        # first (they may hold what memory held) and updated for nothing: fewer flops saved than
        # the middle block's copies into and out of scipy's dsyrk would cost (it takes contiguous
        # arrays only). The factor 25 (flops a copied element is worth) is an estimate from the
        # rates measured on 512 x 256 (a copy about 1 ns an element, dsyrk 25-35 GFLOPS), not tuned.
        kept[:head, :head] = 0.0
        kept[size - tail :, size - tail :] = 0.0
        head = tail = 0
    # Where the drivers are most of the kept nodes (the top merges: at 512 x 256 the last one keeps
    # 512 drivers and 64 TIAs), their rows of the update, C_rest S^-1 C_D^T, are found by solving
    # for the rest twice and one product with the drivers' coupling as it is: nodes^2 (head - rest)
    # fewer flops than solving for the drivers once (docs/benchmarks.md, tenth pass, part W).
    drivers_last = 2 * head > size
    first = head if drivers_last else 0  # the kept nodes solved for: z[k] is node first + k
    if transposed:  # L^-1 coupling^T, read as its transpose: each kept node a column
        z = dtrsm(1.0, factor, coupling[:, first:], side=0, lower=1, overwrite_b=1).T
    else:  # coupling L^-T, each kept node a row
        z = dtrsm(1.0, factor, coupling[first:], side=1, lower=1, trans_a=1, overwrite_b=1)
    last = size - tail
    if head and not drivers_last:
        kept[head:, :head] -= z[head:] @ z[:head].T
    if last > head:
        middle = slice(head - first, last - first)
        # dsyrk on z z^T, or on z^T's columns (trans: z^T^T z^T) where z is held transposed.
        zm, trans = (z[middle].T, 1) if transposed else (z[middle], 0)
        if head == 0 and last == kept.shape[0]:
            updated = dsyrk(-1.0, zm, beta=1.0, c=kept, lower=1, trans=trans, overwrite_c=1)
            if updated is not kept:  # not done in place (f2py copied): keep the answer all the same
                kept[...] = updated
        else:
            kept[head:last, head:last] = dsyrk(-1.0, zm, beta=1.0, c=kept[head:last, head:last], lower=1, trans=trans)
    if tail:
        kept[last:, head:last] -= z[last - first :] @ z[head - first : last - first].T
    if drivers_last:
        if transposed:  # S^-1 C_rest^T (nodes x rest), then C_rest S^-1 C_D^T
            solved = dtrsm(1.0, factor, z.T, side=0, lower=1, trans_a=1, overwrite_b=1)
            kept[head:, :head] -= solved.T @ coupling[:, :head]
        else:  # C_rest S^-1 (rest x nodes)
            solved = dtrsm(1.0, factor, z, side=1, lower=1, overwrite_b=1)
            kept[head:, :head] -= solved @ coupling[:head].T
