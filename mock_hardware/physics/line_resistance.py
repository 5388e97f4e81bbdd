"""Wire (line) resistance: the resistive network of row and column lines around the cells.

Geometry (the same everywhere in the emulator): each row line is driven from its column-0 end and
each column line ends in its TIA below the last row. Every line has one segment of resistance
``r_segment`` between neighbouring cells and one between the end cell and its driver or TIA, so
cell ``(i, j)`` of an ``R``-row array sits ``j + 1`` segments from its row driver and ``R - i``
segments from its column's TIA.

Three solvers, from cheapest to most general:

- :func:`series_read`: one cell read alone (only its row's gate on, other columns floating) sees a
  single series path, so the read is a scalar equation per cell, solved elementwise.
- :class:`TransferSolver`: with ohmic cells the column currents of a VMM are linear in the row
  voltages, ``I = V @ G_eff``. The row lines are eliminated exactly (each a tridiagonal chain,
  whose inverse is semiseparable) and the column-line system left, block tridiagonal by rows, is
  solved by a block Cholesky sweep: exact, ``rows x cols^3`` work in dense LAPACK calls, nothing
  kept between calls. Where nested dissection is estimated cheaper (from 64 columns on, at the
  presets' row counts: :func:`sweep_over_dissection`) it solves by that instead
  (:mod:`mock_hardware.physics.wire_dissection`, about linear in cells at these sizes).
  :func:`effective_conductance` is the same ``G_eff`` from one sparse LU factorization (the
  reference in tests, and the fallback for extreme parameters).
- :func:`solve_dc`: arbitrary row and column voltages, any gate pattern and a nonlinear I-V, by
  Newton iteration on the sparse nodal equations (one solve per iteration).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.linalg.blas import daxpy, dsymm
from scipy.linalg.lapack import dpotrf, dpotri, dpttrf, dpttrs

from mock_hardware.physics.iv import IVCurve
from mock_hardware.physics.threads import one_blas_thread
from mock_hardware.physics.wire_dissection import DEFAULT_TILE, DissectionSolver

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# Right-hand sides solved per call when building G_eff: bounds the dense work array to
# (nodes x this) doubles, about 64 MB on a 1024 x 512 array.
_RHS_CHUNK = 8


def series_segments(rows: npt.NDArray[np.int64], cols: npt.NDArray[np.int64], total_rows: int) -> FloatArray:
    """Number of wire segments between a cell's row driver and its column TIA."""
    return np.asarray((cols + 1) + (total_rows - rows), dtype=np.float64)


def series_read(g: FloatArray, r_series: FloatArray, v_read: float, iv: IVCurve) -> FloatArray:
    """Current through each cell read alone at ``v_read`` behind its series wire resistance ``r_series``.

    Solves ``g * v * iv.factor(v) = (v_read - v) / r_series`` for the cell voltage ``v`` by
    Newton iteration (closed form when the cell is ohmic).
    """
    if iv.is_ohmic:
        return np.asarray(v_read * g / (1.0 + g * r_series))
    # Start from the ohmic answer; the I-V is monotonic and mildly curved, so Newton converges
    # in a handful of steps from there.
    v = v_read / (1.0 + g * r_series * iv.factor(np.full_like(g, v_read)))
    for _ in range(30):
        factor = iv.factor(v)
        residual = g * v * factor - (v_read - v) / r_series
        slope = g * iv.differential_factor(v) + 1.0 / r_series
        step = residual / slope
        v = v - step
        if np.max(np.abs(step)) <= 1e-15 * abs(v_read):
            break
    return np.asarray(g * v * iv.factor(v))


class _Grid:
    """Node numbering and wire stamps of an ``n x C`` block of cells (row lines and column lines)."""

    def __init__(self, nrows: int, ncols: int, r_segment: float, end_segments: int) -> None:
        self.nrows, self.ncols = nrows, ncols
        self.g_wire = 1.0 / r_segment
        # The TIA is `end_segments` segments below the block's last row (rows below the block
        # have their gates off, so that stretch of column line is a plain series resistor).
        self.g_end = 1.0 / (r_segment * end_segments)
        cell = np.arange(nrows * ncols).reshape(nrows, ncols)
        # Interleave the row-line node u and column-line node w of each cell: neighbours in
        # the grid stay close in the numbering, which keeps the factorization's fill small.
        self.u = 2 * cell
        self.w = 2 * cell + 1
        self.size = 2 * nrows * ncols
        rows_i: list[npt.NDArray[np.int64]] = []
        cols_i: list[npt.NDArray[np.int64]] = []
        vals: list[FloatArray] = []

        def stamp(a: npt.NDArray[np.int64], b: npt.NDArray[np.int64], g: FloatArray | float) -> None:
            a, b = a.ravel(), b.ravel()
            gv = np.broadcast_to(np.asarray(g, dtype=np.float64), a.shape).ravel()
            rows_i.extend([a, b, a, b])
            cols_i.extend([a, b, b, a])
            vals.extend([gv, gv, -gv, -gv])

        stamp(self.u[:, :-1], self.u[:, 1:], self.g_wire)
        stamp(self.w[:-1, :], self.w[1:, :], self.g_wire)
        ground = np.concatenate([self.u[:, 0], self.w[-1, :]])
        ground_g = np.concatenate([np.full(nrows, self.g_wire), np.full(ncols, self.g_end)])
        rows_i.append(ground)
        cols_i.append(ground)
        vals.append(ground_g)
        self.wire_matrix = sp.csc_matrix(
            (np.concatenate(vals), (np.concatenate(rows_i), np.concatenate(cols_i))), shape=(self.size, self.size)
        )

    def cell_matrix(self, g_cells: FloatArray) -> sp.csc_matrix:
        """Stamps of the cells' (small-signal or chord) conductances."""
        a, b = self.u.ravel(), self.w.ravel()
        g = g_cells.ravel()
        return sp.csc_matrix(
            (np.concatenate([g, g, -g, -g]), (np.concatenate([a, b, a, b]), np.concatenate([a, b, b, a]))),
            shape=(self.size, self.size),
        )

    def drive(self, v_rows: FloatArray, v_cols: FloatArray) -> FloatArray:
        """Right-hand side of the nodal equations for driver and TIA voltages."""
        rhs = np.zeros(self.size)
        rhs[self.u[:, 0]] = self.g_wire * v_rows
        rhs[self.w[-1, :]] = self.g_end * v_cols
        return rhs


def _factorize(matrix: sp.csc_matrix) -> Callable[[FloatArray], FloatArray]:
    # The nodal matrix is symmetric positive definite: a symmetric ordering and no pivoting
    # keep the LU sparse.
    lu = spla.splu(matrix, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
    solve: Callable[[FloatArray], FloatArray] = lu.solve
    return solve


def effective_conductance(g_cells: FloatArray, r_segment: float, end_segments: int) -> FloatArray:
    """``G_eff`` with ``I = V @ G_eff`` for ohmic cells ``g_cells`` (all gates of the block on).

    Rows are driven, columns end at virtual ground. By reciprocity ``G_eff[i, j]`` is
    proportional to ``K^-1[u(i, 0), w(last, j)]`` of the symmetric nodal matrix ``K``, so
    ``min(rows, cols)`` solves with one factorization give all of it.
    """
    nrows, ncols = g_cells.shape
    grid = _Grid(nrows, ncols, r_segment, end_segments)
    solve = _factorize((grid.wire_matrix + grid.cell_matrix(g_cells)).tocsc())
    scale = grid.g_wire * grid.g_end
    g_eff = np.empty((nrows, ncols))
    by_columns = ncols <= nrows
    sources = grid.w[-1, :] if by_columns else grid.u[:, 0]
    probes = grid.u[:, 0] if by_columns else grid.w[-1, :]
    for start in range(0, sources.size, _RHS_CHUNK):
        chunk = sources[start : start + _RHS_CHUNK]
        rhs = np.zeros((grid.size, chunk.size))
        rhs[chunk, np.arange(chunk.size)] = 1.0
        response = solve(rhs)[probes, :] * scale
        if by_columns:
            g_eff[:, start : start + chunk.size] = response
        else:
            g_eff[start : start + chunk.size, :] = response.T
    return g_eff


def solve_dc(
    g_cells: FloatArray,
    gate_on: BoolArray,
    v_rows: FloatArray,
    v_cols: FloatArray,
    r_segment: float,
    iv: IVCurve,
) -> tuple[FloatArray, FloatArray]:
    """Column currents into the TIAs and each cell's current for DC line voltages.

    Returns ``(column_currents (C,), cell_currents (R, C))``. Newton iteration on the nodal
    equations; a single linear solve when the cells are ohmic.
    """
    nrows, ncols = g_cells.shape
    grid = _Grid(nrows, ncols, r_segment, 1)
    g_on = g_cells * gate_on[:, None]
    rhs = grid.drive(v_rows, v_cols)
    # First guess: ohmic cells at their chord conductance for the undisturbed line voltages.
    drop0 = v_rows[:, None] - v_cols[None, :]
    x = spla.spsolve((grid.wire_matrix + grid.cell_matrix(g_on * iv.factor(drop0))).tocsc(), rhs)
    if not iv.is_ohmic:
        scale = max(float(np.max(np.abs(v_rows))), float(np.max(np.abs(v_cols))), 1e-12)
        for _ in range(30):
            v_cell = x[grid.u] - x[grid.w]
            cell_current = g_on * v_cell * iv.factor(v_cell)
            injection = np.zeros(grid.size)
            injection[grid.u.ravel()] += cell_current.ravel()
            injection[grid.w.ravel()] -= cell_current.ravel()
            residual = grid.wire_matrix @ x + injection - rhs
            jacobian = grid.wire_matrix + grid.cell_matrix(g_on * iv.differential_factor(v_cell))
            step = spla.spsolve(jacobian.tocsc(), residual)
            x = x - step
            if np.max(np.abs(step)) <= 1e-13 * scale:
                break
    v_cell = x[grid.u] - x[grid.w]
    cell_currents = g_on * v_cell * iv.factor(v_cell)
    column_currents = (x[grid.w[-1, :]] - v_cols) * grid.g_end
    return np.asarray(column_currents), np.asarray(cell_currents)


# The sweep subtracts wire conductances (1 / r_segment) from each other, so its rounding grows
# like eps * g_wire / g_cell (still 1e-12 relative at a ratio of 1e11, checked against the LU);
# beyond this ratio (wires a millionth of an ohm) the solver uses the sparse LU instead.
_MAX_WIRE_TO_CELL = 1e12
# CPU per solve on one BLAS thread, fitted to benchmarks/wire_solve.py on 1 x 64 to 512 x 256
# (docs/benchmarks.md, ninth pass, part S): the sweep about 0.1 ms + rows x (7 us + 1.8e-3 us x
# cols^2.5) (a row's Cholesky, inverse, axpy and back product; small LAPACK calls, whose cost grows
# slower than their flops), nested dissection about 0.7 ms + 0.74 us per cell of its padded array
# (its batched stage, linear in cells, dominates up to 512 x 256). Both grow linearly with rows, so
# at the presets' 128 rows the choice is by columns: the sweep up to 56, dissection from 64.
_SWEEP_FIXED_SECONDS, _SWEEP_ROW_SECONDS, _SWEEP_COLUMNS_SECONDS = 1e-4, 7e-6, 1.8e-9
_DISSECTION_FIXED_SECONDS, _DISSECTION_CELL_SECONDS = 7e-4, 0.74e-6
# The solver dissects when the sweep's estimate is at least this many times the dissection's.
DISSECTION_FROM = 1.0


def sweep_over_dissection(rows: int, cols: int, tile: int = DEFAULT_TILE) -> float:
    """The sweep's estimated CPU time on a ``rows x cols`` array over nested dissection's."""
    padded = DissectionSolver(rows, cols, 1.0, tile=tile)
    sweep = _SWEEP_FIXED_SECONDS + rows * (_SWEEP_ROW_SECONDS + _SWEEP_COLUMNS_SECONDS * float(cols) ** 2.5)
    cells = float(padded.padded_rows * padded.padded_cols)
    return float(sweep / (_DISSECTION_FIXED_SECONDS + _DISSECTION_CELL_SECONDS * cells))


def _chain_factor(diagonal: FloatArray, off_diagonal: FloatArray) -> tuple[FloatArray, FloatArray]:
    """LDL^T factors of a symmetric positive-definite tridiagonal matrix (independent chains
    are one matrix with zeros where a chain ends)."""
    d, e, info = dpttrf(diagonal, off_diagonal[:-1])
    if info != 0:
        raise ArithmeticError(f"line network chain not positive definite (dpttrf info {info})")
    return d, e


class TransferSolver:
    """``G_eff`` of a whole array (rows driven at column 0, columns into TIAs), solved exactly.

    Nodal unknowns: ``u`` on the row lines, ``w`` on the column lines, coupled through each cell's
    conductance ``D``. Eliminating each row line exactly (a tridiagonal chain) leaves a system on
    the column-line nodes that is block tridiagonal by rows: diagonal blocks
    ``B_i = a_w(i) + D_i - D_i (A_u,i + D_i)^-1 D_i`` (dense, cols x cols), off-diagonal blocks
    ``-g_wire I`` (the column-line segments between rows). A block Cholesky sweep from the top row
    down (``S_i = B_i - g_wire^2 S_(i-1)^-1``) and a back substitution from the TIAs up give, by
    reciprocity, ``G_eff[i, j] = g_wire g_end u_j(i, 0)`` for a unit source at column ``j``'s TIA.
    Cost ``rows x cols^3`` in dense 64 x 64 (say) LAPACK calls, no iteration: exact to rounding
    (about 1e-12 relative), whatever changed since the last call.
    """

    def __init__(self, rows: int, cols: int, r_segment: float, end_segments: int = 1) -> None:
        self.rows, self.cols = rows, cols
        self.r_segment, self.end_segments = r_segment, end_segments
        self.g_wire = 1.0 / r_segment
        self.g_end = 1.0 / (r_segment * end_segments)
        self.factorizations = 0  # fallbacks to the sparse LU (extreme wire-to-cell ratios), over its life
        self.dissections = 0  # solves by nested dissection (large arrays), over its life
        self._dissection = (
            DissectionSolver(rows, cols, r_segment, end_segments)
            if sweep_over_dissection(rows, cols) >= DISSECTION_FROM
            else None
        )

    @property
    def method(self) -> str:
        """``"dissection"`` on arrays where it is estimated cheaper (:func:`sweep_over_dissection`), else
        ``"sweep"`` (the sparse LU stays the fallback for extreme parameters either way)."""
        return "sweep" if self._dissection is None else "dissection"

    def transfer(self, g_cells: FloatArray, columns: npt.NDArray[np.intp] | None = None) -> FloatArray:
        """``G_eff`` (rows x cols) for ohmic cells ``g_cells``; with ``columns``, only those columns
        are solved back (the sweep itself is over the whole array), the others are NaN."""
        g = np.ascontiguousarray(g_cells, dtype=np.float64)
        wanted = np.arange(self.cols) if columns is None else np.unique(np.asarray(columns, dtype=np.intp))
        g_eff = np.full((self.rows, self.cols), np.nan)
        if self.g_wire > _MAX_WIRE_TO_CELL * max(float(g.mean()), 1e-300):
            self.factorizations += 1
            g_eff[:, wanted] = effective_conductance(g, self.r_segment, self.end_segments)[:, wanted]
            return g_eff
        if self._dissection is not None:
            self.dissections += 1
            g_eff[:, wanted] = self._dissection.transfer(g, wanted)[:, wanted]
            return g_eff
        row_blocks = self._row_blocks(g)
        if row_blocks is None:  # row lines so lossy that their inverse underflows: solve by LU
            self.factorizations += 1
            g_eff[:, wanted] = effective_conductance(g, self.r_segment, self.end_segments)[:, wanted]
            return g_eff
        with one_blas_thread():  # hundreds of small (cols x cols) calls: a second thread only adds hand-offs
            g_eff[:, wanted] = self._sweep(*row_blocks, wanted)
        return g_eff

    def _row_blocks(self, g: FloatArray) -> tuple[FloatArray, FloatArray] | None:
        """The diagonal blocks ``B_i`` (rows, cols, cols; only each block's upper triangle, in
        C order, is filled and read) and the probes ``h_i`` (rows, cols) with ``u(i, 0) = h_i . w_i``;
        ``None`` if the semiseparable form underflows (far more wire than any preset, long rows)."""
        rows, cols, gw = self.rows, self.cols, self.g_wire
        diagonal = np.full((rows, cols), 2 * gw)
        diagonal[:, -1] = gw  # the far end; column 0 keeps its link to the driver
        off = np.full((rows, cols), -gw)
        off[:, -1] = 0.0  # chains end with their row
        chains = _chain_factor((diagonal + g).ravel(), off.ravel())
        # The inverse of a tridiagonal matrix is semiseparable: T^-1[k, l] = y_k x_l / y_0 for
        # k <= l, with x = T^-1 e_0 and y = T^-1 e_last, two solves per row line instead of cols.
        ends = np.zeros((rows, cols, 2))
        ends[:, 0, 0] = 1.0
        ends[:, -1, 1] = 1.0
        solved, info = dpttrs(*chains, ends.reshape(-1, 2), overwrite_b=1)
        if info != 0:
            raise ArithmeticError(f"line network row solve failed (dpttrs info {info})")
        first = solved[:, 0].reshape(rows, cols)
        last = solved[:, 1].reshape(rows, cols)
        probes = g * first  # row 0 of (A_u,i + D_i)^-1 D_i
        if not np.all(last[:, 0] > 1e-250 * last[:, -1]):
            return None
        left = -g * last / last[:, :1]
        # -(D_i T_i^-1 D_i)[k, l] for k <= l; the lower triangle is never read.
        blocks = np.multiply(left[:, :, None], probes[:, None, :])
        column_diagonal = np.full(rows, 2 * gw)
        column_diagonal[0] = gw  # the top of each column line is open
        column_diagonal[-1] = gw + self.g_end  # the bottom links to the TIA
        if rows == 1:
            column_diagonal[0] = self.g_end
        diagonal_index = np.arange(cols)
        blocks[:, diagonal_index, diagonal_index] += column_diagonal[:, None] + g
        return blocks, probes

    def _sweep(self, blocks: FloatArray, probes: FloatArray, wanted: npt.NDArray[np.intp]) -> FloatArray:
        """Forward: each Schur complement's inverse ``S_i^-1`` in the place of ``B_i`` (Cholesky, then
        the inverse from the factor), and ``S_(i+1) = B_(i+1) - g_wire^2 S_i^-1`` by an axpy;
        back: ``w_i = g_wire S_i^-1 w_(i+1)``, one symmetric product a row. ``blocks`` is consumed."""
        rows, cols = self.rows, self.cols
        coupling = -(self.g_wire**2)
        # blocks[i] in C order is S_i in Fortran order: LAPACK and the axpy work on it in place
        # (no copies, no memory beyond the blocks). Only the Fortran lower triangle is read; the
        # other holds leftovers that the axpy grows row by row (up to inf on long arrays of low-ohm
        # wire): never read, and BLAS raises nothing for them.
        flat = blocks.view()
        flat.shape = (rows, cols * cols)  # raises rather than copy: the axpy must write into the blocks
        for i in range(rows):
            block = blocks[i].T
            factor, info = dpotrf(block, lower=1, clean=0, overwrite_a=1)
            if info != 0:
                raise ArithmeticError(f"line network not positive definite (dpotrf info {info})")
            inverse, info = dpotri(factor, lower=1, overwrite_c=1)
            if info != 0:
                raise ArithmeticError(f"line network factor singular (dpotri info {info})")
            # scipy hands back the very array it was given when it works in place; should it ever
            # copy instead, the copy is written back (an identity test costs nothing per row).
            if inverse is not block:
                block[...] = inverse
            if i + 1 < rows:
                following = flat[i + 1]
                updated = daxpy(flat[i], following, a=coupling)  # S_(i+1) = B_(i+1) - g_wire^2 S_i^-1
                if updated is not following:
                    following[...] = updated
        result = np.empty((rows, wanted.size))
        w = np.zeros((cols, wanted.size), order="F")
        w[wanted, np.arange(wanted.size)] = 1.0  # a unit source at each wanted column's TIA
        for i in reversed(range(rows)):
            # Back substitution: S_i w_i = g_wire w_(i+1) (the source only in the last block); this
            # carries G_eff's factor g_wire along (one per step, one more than the recursion needs).
            w = dsymm(self.g_wire, blocks[i].T, w, lower=1)
            np.matmul(probes[i], w, out=result[i])
        result *= self.g_end  # G_eff = g_wire g_end u(i, 0), g_wire already in w
        return result
