"""The block sweep (``TransferSolver`` with nested dissection off) against the sparse LU at 1e-10.

The sweep keeps each Schur complement's inverse in the place of its block (Cholesky, then the
inverse from the factor), forms the next complement by an axpy and substitutes back by one
symmetric product a row. Exact to rounding: every case here is within 1e-10 relative of
``effective_conductance`` (about 1e-12 measured); the same cases on a sweep with the next
complement's coupling, the back substitution's triangle or a row's inverse made wrong fail.
"""

from __future__ import annotations

import numpy as np
import pytest

from mock_hardware.physics import line_resistance
from mock_hardware.physics.line_resistance import TransferSolver, effective_conductance

FloatArray = np.ndarray
RTOL = 1e-10


def _sweep_solver(monkeypatch: pytest.MonkeyPatch, rows: int, cols: int, r_segment: float) -> TransferSolver:
    monkeypatch.setattr(line_resistance, "DISSECTION_FROM", np.inf)
    solver = TransferSolver(rows, cols, r_segment)
    assert solver.method == "sweep"
    return solver


def _worst(g_eff: FloatArray, exact: FloatArray) -> float:
    return float(np.max(np.abs(g_eff / exact - 1)))


def _map(rows: int, cols: int, seed: int, dead_row: int | None = None, dead_col: int | None = None) -> FloatArray:
    g = np.random.default_rng(seed).uniform(100e-6, 900e-6, (rows, cols))
    if dead_row is not None:
        g[dead_row, :] = 0.0  # a row of cells that conduct nothing (open, or gated off for good)
    if dead_col is not None:
        g[:, dead_col] = 0.0
    return g


@pytest.mark.parametrize(
    ("rows", "cols", "r_segment", "dead_row", "dead_col"),
    [
        (128, 64, 0.35, None, None),  # the MLP's and CNN's array
        (128, 16, 0.35, None, None),
        (128, 64, 0.35, 0, 63),  # dead first row (the top of the sweep), dead last column
        (40, 24, 2.0, 39, 0),  # dead last row (the back substitution's start), dead first column
        (33, 17, 1.0, 16, 8),  # dead row and column in the middle, odd sizes
        (1, 64, 0.35, None, None),
        (1, 7, 5.0, None, 3),
        (64, 1, 0.35, None, None),
        (9, 1, 5.0, 4, None),
    ],
)
def test_the_sweep_matches_the_sparse_lu_to_rounding(
    monkeypatch: pytest.MonkeyPatch, rows: int, cols: int, r_segment: float, dead_row: int | None, dead_col: int | None
) -> None:
    g = _map(rows, cols, rows * 1000 + cols, dead_row, dead_col)
    solver = _sweep_solver(monkeypatch, rows, cols, r_segment)
    g_eff = solver.transfer(g)
    exact = effective_conductance(g, r_segment, end_segments=1)
    alive = g > 0  # a dead cell's G_eff is 0 both ways (0 / 0 below): held exactly
    assert np.all(g_eff[~alive] == 0.0) and np.all(exact[~alive] == 0.0)
    assert _worst(g_eff[alive], exact[alive]) < RTOL
    assert solver.factorizations == 0 and solver.dissections == 0
    # The wires matter on these arrays: the check does not pass by returning G itself.
    assert _worst(g[alive], exact[alive]) > 1e-6


@pytest.mark.parametrize("columns", [[0], [5, 6, 7], [63], list(range(0, 64, 3)), [63, 0, 0, 17]])
def test_the_columns_asked_for_match_the_lu_and_the_others_are_nan(
    monkeypatch: pytest.MonkeyPatch, columns: list[int]
) -> None:
    g = _map(128, 64, 5)
    solver = _sweep_solver(monkeypatch, 128, 64, 0.35)
    g_eff = solver.transfer(g, np.array(columns))
    wanted = np.unique(columns)
    exact = effective_conductance(g, 0.35, end_segments=1)
    assert _worst(g_eff[:, wanted], exact[:, wanted]) < RTOL
    others = np.setdiff1d(np.arange(64), wanted)
    assert np.all(np.isnan(g_eff[:, others]))


def test_repeated_solves_are_independent_of_the_last(monkeypatch: pytest.MonkeyPatch) -> None:
    # The sweep works in place on its blocks: nothing of one solve may leak into the next.
    solver = _sweep_solver(monkeypatch, 48, 24, 0.35)
    first, second = _map(48, 24, 1), _map(48, 24, 2)
    alone = TransferSolver(48, 24, 0.35).transfer(second)
    solver.transfer(first)
    np.testing.assert_array_equal(solver.transfer(second), alone)


def test_the_preset_arrays_shapes_are_solved_by_the_fastest_exact_method() -> None:
    # Measured (docs/benchmarks.md, ninth pass, part S): the sweep on 128 x 16 and 128 x 32, nested
    # dissection on 128 x 64 (the MLP's and CNN's arrays) and on anything wider.
    assert TransferSolver(128, 16, 0.35).method == "sweep"
    assert TransferSolver(128, 32, 0.35).method == "sweep"
    assert TransferSolver(128, 64, 0.35).method == "dissection"
    assert TransferSolver(256, 128, 0.35).method == "dissection"


def test_the_sweep_stays_exact_if_lapack_or_blas_return_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    # The sweep relies on scipy working in place on its Fortran-ordered blocks; should a wrapper
    # ever hand back a copy instead, the copy is written back, not lost.
    g = _map(40, 24, 9, dead_row=3)
    expected = TransferSolver(40, 24, 2.0).transfer(g)
    potri, axpy = line_resistance.dpotri, line_resistance.daxpy

    def copied_potri(*args: object, **kwargs: object) -> tuple[FloatArray, int]:
        inverse, info = potri(*args, **kwargs)
        return np.array(inverse, order="F"), info

    monkeypatch.setattr(line_resistance, "dpotri", copied_potri)
    monkeypatch.setattr(line_resistance, "daxpy", lambda x, y, a: np.array(axpy(x, np.array(y), a=a)))
    np.testing.assert_array_equal(_sweep_solver(monkeypatch, 40, 24, 2.0).transfer(g), expected)
