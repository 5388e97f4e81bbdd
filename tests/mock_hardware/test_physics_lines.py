"""Wire resistance: the emulator's line solvers against an independent dense nodal solve."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mock_hardware.array_model import CrossbarArray, PulseKind
from mock_hardware.device_params import preset
from mock_hardware.physics.iv import IVCurve

QUIET = {"read_noise": 0.0, "write_noise": 0.0, "drift_mean": 0.0, "drift_spread": 0.0, "iv_nonlinearity": 0.0}


def dense_column_currents(
    g: np.ndarray, r: float, v_rows: np.ndarray, gate_on: np.ndarray, tia: np.ndarray, iv: IVCurve | None = None
) -> np.ndarray:
    """Currents into the column TIAs of the full array, by dense nodal analysis.

    Written from the geometry alone (row drivers at column 0, TIAs below the last row, one segment
    of ``r`` between neighbours and at each end); columns with ``tia`` False float. Newton
    iteration with a dense Jacobian when ``iv`` is given.
    """
    rows, cols = g.shape
    n = rows * cols
    u = np.arange(n).reshape(rows, cols)  # row-line nodes
    w = n + u  # column-line nodes
    gw = 1.0 / r
    wires = np.zeros((2 * n, 2 * n))
    rhs = np.zeros(2 * n)

    def link(a: int, b: int, conductance: float) -> None:
        wires[a, a] += conductance
        wires[b, b] += conductance
        wires[a, b] -= conductance
        wires[b, a] -= conductance

    for i in range(rows):
        wires[u[i, 0], u[i, 0]] += gw
        rhs[u[i, 0]] += gw * v_rows[i]
        for j in range(cols - 1):
            link(u[i, j], u[i, j + 1], gw)
    for j in range(cols):
        for i in range(rows - 1):
            link(w[i, j], w[i + 1, j], gw)
        if tia[j]:
            wires[w[rows - 1, j], w[rows - 1, j]] += gw
    g_on = g * gate_on[:, None]

    def cell_matrix(conductance: np.ndarray) -> np.ndarray:
        m = np.zeros((2 * n, 2 * n))
        a, b, c = u.ravel(), w.ravel(), conductance.ravel()
        m[a, a] += c
        m[b, b] += c
        m[a, b] -= c
        m[b, a] -= c
        return m

    x = np.linalg.solve(wires + cell_matrix(g_on), rhs)
    if iv is not None and not iv.is_ohmic:
        for _ in range(50):
            v_cell = (x[u] - x[w]).ravel()
            current = g_on.ravel() * v_cell * iv.factor(v_cell)
            injection = np.zeros(2 * n)
            np.add.at(injection, u.ravel(), current)
            np.add.at(injection, w.ravel(), -current)
            jac = wires + cell_matrix((g_on.ravel() * iv.differential_factor(v_cell)).reshape(rows, cols))
            step = np.linalg.solve(jac, wires @ x + injection - rhs)
            x -= step
            if np.max(np.abs(step)) < 1e-15:
                break
    return np.where(tia, x[w[rows - 1]] * gw, 0.0)


def programmed(rows: int, cols: int, seed: int = 0, **overrides: Any) -> CrossbarArray:
    """A small array programmed to a random spread of conductances over the window."""
    array = CrossbarArray(preset("ideal", rows=rows, cols=cols, **{**QUIET, **overrides}), seed=seed)
    shape = (rows, cols)
    gates = np.random.default_rng(seed).uniform(0.5, 5.0, shape)
    array.apply_pulses(PulseKind.SET, 0, 0, np.full(shape, 2.5), gates, np.full(shape, 1e-6), np.ones(shape, bool))
    return array


@pytest.mark.parametrize("r_segment", [0.35, 5.0])
def test_vmm_matches_a_dense_solve(r_segment: float) -> None:
    array = programmed(9, 7, line_resistance=r_segment)
    g = array.conductance
    v = np.random.default_rng(1).uniform(-0.2, 0.2, (5, 9))
    currents = array.vmm(v, 0, 0, 7)
    for k in range(5):
        reference = dense_column_currents(g, r_segment, v[k], np.ones(9, bool), np.ones(7, bool))
        np.testing.assert_allclose(currents[k], reference, rtol=1e-6, atol=1e-6 * np.abs(reference).max())
    # The wires matter here: the check above is not passing by ignoring them.
    ideal = v @ g
    assert np.max(np.abs(currents - ideal)) > 1e-3 * np.max(np.abs(ideal))


def test_region_vmm_matches_a_dense_solve_of_the_whole_array() -> None:
    # Rows outside the region are held at 0 V with their gates on; every column sits at 0 V at its TIA.
    r_segment = 2.0
    array = programmed(10, 8, line_resistance=r_segment, seed=3)
    g = array.conductance
    row0, nrows, col0, ncols = 3, 4, 2, 5
    v = np.random.default_rng(2).uniform(0.0, 0.2, (3, nrows))
    currents = array.vmm(v, row0, col0, ncols)
    gate_on = np.ones(10, bool)
    for k in range(3):
        v_rows = np.zeros(10)
        v_rows[row0 : row0 + nrows] = v[k]
        reference = dense_column_currents(g, r_segment, v_rows, gate_on, np.ones(8, bool))[col0 : col0 + ncols]
        np.testing.assert_allclose(currents[k], reference, rtol=1e-6)


def test_vmm_with_more_rows_than_columns_and_the_reverse() -> None:
    for rows, cols in ((12, 3), (3, 12)):
        array = programmed(rows, cols, line_resistance=1.0, seed=rows)
        v = np.random.default_rng(0).uniform(0, 0.2, rows)
        reference = dense_column_currents(array.conductance, 1.0, v, np.ones(rows, bool), np.ones(cols, bool))
        np.testing.assert_allclose(array.vmm(v[None, :], 0, 0, cols)[0], reference, rtol=1e-6)


def test_single_cell_reads_match_a_dense_solve() -> None:
    r_segment = 3.0
    array = programmed(6, 5, line_resistance=r_segment, seed=4)
    g = array.conductance
    measured = array.read_conductance(0, 0, 6, 5, 0.2)
    for i, j in [(0, 0), (5, 4), (2, 3), (5, 0)]:
        gate_on = np.zeros(6, bool)
        gate_on[i] = True
        tia = np.zeros(5, bool)
        tia[j] = True
        v_rows = np.zeros(6)
        v_rows[i] = 0.2
        reference = dense_column_currents(g, r_segment, v_rows, gate_on, tia)[j] / 0.2
        assert measured[i, j] == pytest.approx(reference, rel=1e-9)
        assert measured[i, j] < g[i, j]  # the series wire always reads lower


def test_nonlinear_single_cell_reads_match_a_dense_newton_solve() -> None:
    r_segment = 3.0
    array = programmed(4, 4, line_resistance=r_segment, iv_nonlinearity=1.5, seed=5)
    g = array.conductance
    iv = IVCurve(1.5, 0.2)
    measured = array.read_conductance(0, 0, 4, 4, 0.5)
    gate_on, tia, v_rows = np.eye(4, dtype=bool)[1], np.eye(4, dtype=bool)[2], np.array([0, 0.5, 0, 0])
    reference = dense_column_currents(g, r_segment, v_rows, gate_on, tia, iv)[2] / 0.5
    assert measured[1, 2] == pytest.approx(reference, rel=1e-9)


def test_dc_column_currents_with_nonlinear_cells_match_a_dense_newton_solve() -> None:
    r_segment = 2.0
    array = programmed(6, 5, line_resistance=r_segment, iv_nonlinearity=1.5, seed=6)
    g = array.conductance
    iv = IVCurve(1.5, 0.2)
    v_rows = np.array([0.8, -0.3, 0.5, 0.0, 0.6, 0.4])
    gate_on = np.array([True, True, False, True, True, True])
    currents = array.column_currents(v_rows, np.zeros(5), gate_on)
    reference = dense_column_currents(g, r_segment, v_rows, gate_on, np.ones(5, bool), iv)
    np.testing.assert_allclose(currents, reference, rtol=1e-6)


def test_vmm_with_nonlinear_cells_and_wires_is_close_to_the_exact_solve() -> None:
    # The VMM applies the I-V curve to the inputs and the wires through G_eff: a linearization
    # whose error is second order (the curve's curvature times the wire drop), small against
    # the wires' own effect and against read noise.
    r_segment = 0.35
    array = programmed(16, 8, line_resistance=r_segment, iv_nonlinearity=1.5, seed=7)
    iv = IVCurve(1.5, 0.2)
    g = array.conductance
    v = np.random.default_rng(3).uniform(0.0, 0.5, 16)
    reference = dense_column_currents(g, r_segment, v, np.ones(16, bool), np.ones(8, bool), iv)
    no_wires = (v * iv.factor(v)) @ g
    error = np.abs(array.vmm(v[None, :], 0, 0, 8)[0] - reference)
    assert np.all(error < 0.1 * np.abs(no_wires - reference))
    assert np.all(error < 2e-3 * np.abs(reference))


def test_currents_fall_below_the_ideal_product_with_all_inputs_positive() -> None:
    array = programmed(32, 16, line_resistance=0.35)
    v = np.full((1, 32), 0.2)
    ideal = v @ array.conductance
    actual = array.vmm(v, 0, 0, 16)
    deficit = 1 - actual / ideal
    assert np.all(deficit > 0)
    # Columns farther from the row drivers lose more: the row lines drop voltage along their length.
    assert deficit[0, -1] > deficit[0, 0]


def test_programming_invalidates_the_line_solution() -> None:
    r_segment = 1.0
    array = programmed(6, 6, line_resistance=r_segment)
    v = np.full((1, 6), 0.2)
    array.vmm(v, 0, 0, 6)
    shape = (6, 6)
    array.apply_pulses(PulseKind.RESET, 0, 0, np.full(shape, 1.8), np.full(shape, 5.0), np.full(shape, 1e-6),
                       np.eye(6, dtype=bool))  # fmt: skip
    reference = dense_column_currents(array.conductance, r_segment, v[0], np.ones(6, bool), np.ones(6, bool))
    np.testing.assert_allclose(array.vmm(v, 0, 0, 6)[0], reference, rtol=1e-6)


def test_drift_between_programming_events_is_tracked() -> None:
    r_segment = 1.0
    array = programmed(8, 8, line_resistance=r_segment, drift_mean=-0.09e-6, drift_spread=0.088e-6)
    v = np.random.default_rng(4).uniform(0, 0.2, (1, 8))
    array.vmm(v, 0, 0, 8)
    for elapsed in (10.0, 1e5):  # drift of about 0.2 and 1 uS: per-cell updates of the old solution
        array.advance_time(elapsed)
        reference = dense_column_currents(array.conductance, r_segment, v[0], np.ones(8, bool), np.ones(8, bool))
        np.testing.assert_allclose(array.vmm(v, 0, 0, 8)[0], reference, rtol=1e-4)


def test_small_changes_are_tracked_per_cell_and_large_ones_refactorize() -> None:
    r_segment = 1.0
    array = programmed(8, 8, line_resistance=r_segment, line_refactor_tolerance=1e-3)
    v = np.random.default_rng(5).uniform(0, 0.2, (1, 8))
    array.vmm(v, 0, 0, 8)
    shape = (8, 8)
    row, col = np.unravel_index(np.argmax(array.conductance), shape)
    mask = np.zeros(shape, bool)
    mask[row, col] = True
    # A 10 ns RESET at 1.2 V nudges the cell by a few percent: the estimated error stays under
    # the tolerance, so the old solution is updated per cell, within what the tolerance promises;
    # then a full RESET moves it a long way: a fresh factorization, exact.
    for amplitude, width, rtol in ((1.2, 1e-8, 1e-3), (1.8, 1e-6, 1e-6)):
        before = array.conductance[row, col]
        array.apply_pulses(PulseKind.RESET, 0, 0, np.full(shape, amplitude), np.full(shape, 5.0),
                           np.full(shape, width), mask)  # fmt: skip
        assert array.conductance[row, col] < before
        reference = dense_column_currents(array.conductance, r_segment, v[0], np.ones(8, bool), np.ones(8, bool))
        np.testing.assert_allclose(array.vmm(v, 0, 0, 8)[0], reference, rtol=rtol)


def test_the_refactor_tolerance_bounds_the_error_of_per_cell_updates() -> None:
    # A training-like update: many cells move a few uS. With a loose tolerance the array keeps
    # its old factorization; the error must stay within what the tolerance promises.
    r_segment = 0.35
    array = programmed(32, 16, line_resistance=r_segment, line_refactor_tolerance=0.05)
    v = np.random.default_rng(6).uniform(0, 0.2, (1, 32))
    array.vmm(v, 0, 0, 16)
    shape = (32, 16)
    mask = np.random.default_rng(7).random(shape) < 0.3
    array.apply_pulses(PulseKind.RESET, 0, 0, np.full(shape, 1.2), np.full(shape, 5.0), np.full(shape, 1e-8), mask)
    g = array.conductance
    reference = dense_column_currents(g, r_segment, v[0], np.ones(32, bool), np.ones(16, bool))
    error = np.abs(array.vmm(v, 0, 0, 16)[0] / reference - 1)
    assert np.max(error) < 0.05
