"""The exact wire solve (sweep or dissection, as ``TransferSolver`` picks) against the sparse LU on
conductance maps built to hurt it: cells at the floor beside 1 mS cells (a contrast of 1e6, where the
sweep's rounding grows like ``eps * g_wire / g_cell``), virgin arrays crossed by a stuck-high
column, a shorted row, six decades at random; on the demo's 128 x 64 and on wide and narrow arrays."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from mock_hardware.physics.line_resistance import TransferSolver, effective_conductance
from mock_hardware.physics.switching import G_FLOOR_ABSOLUTE

FloatArray = np.ndarray


def _floor_or_high(g: FloatArray, rng: np.random.Generator) -> FloatArray:
    return np.where(rng.random(g.shape) < 0.5, G_FLOOR_ABSOLUTE, 1e-3)


def _checkerboard(g: FloatArray, rng: np.random.Generator) -> FloatArray:
    i, j = np.indices(g.shape)
    return np.where((i + j) % 2, 1e-3, G_FLOOR_ABSOLUTE)


def _virgin_with_a_stuck_high_column(g: FloatArray, rng: np.random.Generator) -> FloatArray:
    g = rng.uniform(1e-9, 1e-7, g.shape)
    g[:, g.shape[1] // 2] = 1e-3
    return g


def _shorted_row_and_open_column(g: FloatArray, rng: np.random.Generator) -> FloatArray:
    g = rng.uniform(100e-6, 900e-6, g.shape)
    g[g.shape[0] // 2, :] = 1e-3
    if g.shape[1] > 1:  # on a single column that would be every cell
        g[:, 0] = G_FLOOR_ABSOLUTE
    return g


def _six_decades(g: FloatArray, rng: np.random.Generator) -> FloatArray:
    return np.asarray(10 ** rng.uniform(-9, -3, g.shape))


MAPS: dict[str, Callable[[FloatArray, np.random.Generator], FloatArray]] = {
    "floor or 1 mS at random": _floor_or_high,
    "checkerboard of floor and 1 mS": _checkerboard,
    "virgin cells, one stuck-high column": _virgin_with_a_stuck_high_column,
    "a shorted row and an open column": _shorted_row_and_open_column,
    "1 nS to 1 mS, log-uniform": _six_decades,
}


@pytest.mark.parametrize("name", MAPS)
@pytest.mark.parametrize(
    ("rows", "cols", "r_segment"), [(128, 64, 0.35), (128, 16, 5.0), (16, 128, 0.35), (64, 1, 0.35), (1, 64, 5.0)]
)
def test_the_exact_solve_stays_within_1e_6_of_the_lu_on_adversarial_maps(
    name: str, rows: int, cols: int, r_segment: float
) -> None:
    rng = np.random.default_rng(rows * 1000 + cols)
    g = MAPS[name](np.empty((rows, cols)), rng)
    solver = TransferSolver(rows, cols, r_segment)
    exact = effective_conductance(g, r_segment, end_segments=1)
    assert np.max(np.abs(solver.transfer(g) / exact - 1)) < 1e-6
    assert solver.factorizations == 0  # solved by the sweep or the dissection, not by the LU itself
    # The wires matter on these maps: the check does not pass by returning G itself.
    assert np.max(np.abs(exact / g - 1)) > 1e-4
