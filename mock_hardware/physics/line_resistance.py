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
  voltages, ``I = V @ G_eff``. The row lines are eliminated exactly (one tridiagonal solve per
  line) and the column lines' system is solved by a stationary iteration preconditioned with the
  column lines' own tridiagonal systems, started from the last solution: a programming event costs
  a few sweeps over the array, not a factorization. :func:`effective_conductance` is the same
  ``G_eff`` from one sparse LU factorization (the exact reference, and the fallback).
- :func:`solve_dc`: arbitrary row and column voltages, any gate pattern and a nonlinear I-V, by
  Newton iteration on the sparse nodal equations (one solve per iteration).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.linalg.lapack import dpttrf, dpttrs

from mock_hardware.physics.iv import IVCurve

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


# Sources (columns of G_eff) solved together by the TransferSolver: bounds its scratch to
# (cells x this) doubles per array, about 64 MB on a 512 x 256 array.
_SOURCE_CHUNK = 64
# Conjugate gradients stop when every source's residual is this far below its right-hand side;
# G_eff is then within about 1e-9 relative of the exact nodal solve (tests hold it to 1e-6).
_CG_TOLERANCE = 1e-10
# More iterations than this means the row lines couple too strongly for the preconditioner to
# pay: the solver factorizes instead.
_MAX_ITERATIONS = 60


def _chain_factor(diagonal: FloatArray, off_diagonal: FloatArray) -> tuple[FloatArray, FloatArray]:
    """LDL^T factors of a symmetric positive-definite tridiagonal matrix (independent chains
    are one matrix with zeros where a chain ends)."""
    d, e, info = dpttrf(diagonal, off_diagonal[:-1])
    if info != 0:
        raise ArithmeticError(f"line network chain not positive definite (dpttrf info {info})")
    return d, e


class TransferSolver:
    """``G_eff`` of a whole array (rows driven at column 0, columns into TIAs), kept between calls.

    Nodal unknowns: ``u`` on the row lines, ``w`` on the column lines, coupled through each cell's
    conductance ``D``. With ``A_u``, ``A_w`` the row and column lines' own (tridiagonal) wire
    matrices, eliminating ``u`` exactly leaves the symmetric positive-definite system
    ``M w = (A_w + D - D (A_u + D)^-1 D) w = b``, solved by conjugate gradients preconditioned
    with ``A_w + D`` (exact for ideal row lines, so a few iterations suffice); each iteration is
    two tridiagonal solves over the array. By reciprocity a unit source at each column's TIA gives
    a column of ``G_eff``: ``G_eff[i, j] = g_wire g_end u_j(i, 0)``. Each call starts from the last
    call's solution, so a programming event that moves a fraction of the cells costs a couple of
    iterations, not a factorization.
    """

    def __init__(self, rows: int, cols: int, r_segment: float, end_segments: int = 1) -> None:
        self.rows, self.cols = rows, cols
        self.r_segment, self.end_segments = r_segment, end_segments
        self.g_wire = 1.0 / r_segment
        self.g_end = 1.0 / (r_segment * end_segments)
        self._warm: list[FloatArray] = []  # the last solution w, per chunk of sources
        self._warm_columns: npt.NDArray[np.intp] | None = None  # the sources it was for
        self.iterations = 0  # CG iterations of the last call (for tests and benchmarks)
        self.factorizations = 0  # fallbacks to a sparse LU solve, over the solver's life

    def _row_chains(self, g: FloatArray) -> tuple[FloatArray, FloatArray]:
        gw = self.g_wire
        diagonal = np.full(g.shape, 2 * gw)
        diagonal[:, -1] = gw  # the far end; column 0 keeps its link to the driver
        off = np.full(g.shape, -gw)
        off[:, -1] = 0.0
        return _chain_factor((diagonal + g).ravel(), off.ravel())


    def transfer(self, g_cells: FloatArray, columns: npt.NDArray[np.intp] | None = None) -> FloatArray:
        """``G_eff`` (rows x cols) for ohmic cells ``g_cells``; with ``columns``, only those columns
        are solved (a VMM on part of a large array pays for its own columns), the others are NaN."""
        g = np.ascontiguousarray(g_cells, dtype=np.float64)
        wanted = np.arange(self.cols) if columns is None else np.unique(np.asarray(columns, dtype=np.intp))
        g_t = np.ascontiguousarray(g.T)
        operator = _SchurOperator(g, g_t, self._row_chains(g), self.g_wire, self.g_end)
        g_eff = np.full((self.rows, self.cols), np.nan)
        # Warm starts are kept for the columns last solved; a new set of columns starts cold.
        if self._warm_columns is None or not np.array_equal(self._warm_columns, wanted):
            self._warm = [np.zeros((min(start + _SOURCE_CHUNK, wanted.size) - start, self.cols, self.rows))
                          for start in range(0, wanted.size, _SOURCE_CHUNK)]  # fmt: skip
            self._warm_columns = wanted
        self.iterations = 0
        for index, start in enumerate(range(0, wanted.size, _SOURCE_CHUNK)):
            sources = wanted[start : start + _SOURCE_CHUNK]
            w = self._warm[index]
            iterations = operator.solve(sources, w)
            if iterations is None:  # the row lines couple too strongly for the preconditioner
                self.factorizations += 1
                self._warm_columns = None
                exact = effective_conductance(g, self.r_segment, self.end_segments)
                g_eff[:, wanted] = exact[:, wanted]
                return g_eff
            self.iterations += iterations
            g_eff[:, sources] = (self.g_wire * self.g_end) * operator.row_driver_voltages(w).T
        return g_eff


class _SchurOperator:
    """``M = A_w + D - D (A_u + D)^-1 D`` and its preconditioner, on arrays ``(sources, cols, rows)``
    (each column line contiguous)."""

    def __init__(
        self,
        g: FloatArray,
        g_t: FloatArray,
        row_chains: tuple[FloatArray, FloatArray],
        g_wire: float,
        g_end: float,
    ) -> None:
        self.g, self.g_t = g, g_t
        self.row_chains = row_chains
        self.g_wire, self.g_end = g_wire, g_end
        self.rows, self.cols = g.shape
        diagonal = np.full(g_t.shape, 2 * g_wire)
        diagonal[:, 0] = g_wire
        diagonal[:, -1] = g_wire + g_end
        if self.rows == 1:
            diagonal[:, 0] = g_end
        self.column_diagonal = diagonal + g_t
        off = np.full(g_t.shape, -g_wire)
        off[:, -1] = 0.0
        self.column_chains = _chain_factor(self.column_diagonal.ravel(), off.ravel())

    def _row_solve(self, x: FloatArray) -> FloatArray:
        """``(A_u + D)^-1 D x`` for ``x`` (m, cols, rows); result (m, rows, cols)."""
        m = x.shape[0]
        by_rows = np.multiply(x.transpose(0, 2, 1), self.g)
        solved, _ = dpttrs(*self.row_chains, by_rows.reshape(m, -1).T, overwrite_b=1)
        return np.asarray(solved.T.reshape(m, self.rows, self.cols))

    def apply(self, x: FloatArray) -> FloatArray:
        gw = self.g_wire
        # (A_w + D) x along each column line (index 0 at the top row, the TIA below the last row)
        out = np.multiply(x, self.column_diagonal)
        shifted = np.multiply(x[:, :, 1:], gw)
        out[:, :, :-1] -= shifted
        np.multiply(x[:, :, :-1], gw, out=shifted)
        out[:, :, 1:] -= shifted
        out -= np.multiply(self._row_solve(x).transpose(0, 2, 1), self.g_t)
        return out

    def precondition(self, r: FloatArray) -> FloatArray:
        m = r.shape[0]
        solved, _ = dpttrs(*self.column_chains, r.reshape(m, -1).T)
        return np.asarray(solved.T.reshape(r.shape))

    def row_driver_voltages(self, w: FloatArray) -> FloatArray:
        """``u(i, 0)`` of every row for the column-line voltages ``w``: (m, rows)."""
        return np.ascontiguousarray(self._row_solve(w)[:, :, 0])

    def solve(self, sources: npt.NDArray[np.intp], w: FloatArray) -> int | None:
        """Solve in place from the guess ``w`` for unit sources at the TIA end of ``sources``;
        the number of iterations, or ``None`` if CG did not converge."""
        m = sources.size
        residual = -self.apply(w)
        residual[np.arange(m), sources, self.rows - 1] += 1.0
        limit = _CG_TOLERANCE**2  # |b| = 1 for a unit source
        z = self.precondition(residual)
        direction = z.copy()
        rz = np.einsum("ijk,ijk->i", residual, z)
        for iteration in range(_MAX_ITERATIONS + 1):
            if float(np.einsum("ijk,ijk->i", residual, residual).max()) <= limit:
                return iteration
            if iteration == _MAX_ITERATIONS:
                break
            q = self.apply(direction)
            alpha = rz / np.einsum("ijk,ijk->i", direction, q)
            w += alpha[:, None, None] * direction
            residual -= alpha[:, None, None] * q
            z = self.precondition(residual)
            rz_new = np.einsum("ijk,ijk->i", residual, z)
            direction *= (rz_new / rz)[:, None, None]
            direction += z
            rz = rz_new
        return None
