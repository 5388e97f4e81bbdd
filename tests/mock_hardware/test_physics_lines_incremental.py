"""The block-sweep line solver against exact solves, after many programming events."""

from __future__ import annotations

import numpy as np
import pytest

from mock_hardware.array_model import CrossbarArray, PulseKind
from mock_hardware.device_params import preset
from mock_hardware.physics import line_resistance
from mock_hardware.physics.line_resistance import TransferSolver, effective_conductance
from tests.mock_hardware.test_physics_lines import QUIET, dense_column_currents


@pytest.mark.parametrize(
    ("rows", "cols", "r_segment"), [(48, 24, 0.35), (20, 40, 1.0), (1, 6, 2.0), (7, 1, 2.0), (6, 48, 0.35)]
)
def test_solves_after_programming_events_stay_within_1e_6_of_lu(rows: int, cols: int, r_segment: float) -> None:
    rng = np.random.default_rng(rows * cols)
    g = rng.uniform(100e-6, 900e-6, (rows, cols))
    solver = TransferSolver(rows, cols, r_segment)
    worst = 0.0
    for event in range(30):
        # A training-like programming event: a random tenth of the cells move by a few uS, now
        # and then a big RESET of a few cells.
        moved = rng.random(g.shape) < (0.1 if event % 7 else 0.02)
        step = rng.normal(0, 8e-6, g.shape) if event % 7 else -g * 0.8
        g = np.where(moved, np.clip(g + step, 20e-6, 900e-6), g)
        exact = effective_conductance(g, r_segment, end_segments=1)
        worst = max(worst, float(np.max(np.abs(solver.transfer(g) / exact - 1))))
    assert worst < 1e-6
    assert solver.factorizations == 0  # every event was solved by the sweep, none by the sparse LU
    # The wires matter on these arrays: the check above does not pass by returning G itself.
    assert np.max(np.abs(exact / g - 1)) > 1e-4


def test_row_lines_too_lossy_for_the_semiseparable_form_fall_back_to_the_sparse_lu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 10 kohm segments against 1 mS cells on a 420-column row: the row line's inverse decays by
    # about 10x per cell, below the smallest double at the far end.
    g = np.random.default_rng(3).uniform(900e-6, 1e-3, (2, 420))
    exact = effective_conductance(g, 1e4, 1)
    # Nested dissection (what an array this wide gets) has no semiseparable form to underflow.
    dissected = TransferSolver(2, 420, 1e4)
    assert dissected.method == "dissection"
    np.testing.assert_allclose(dissected.transfer(g), exact, rtol=1e-12)
    assert dissected.factorizations == 0
    monkeypatch.setattr(line_resistance, "DISSECTION_FROM", np.inf)
    solver = TransferSolver(2, 420, 1e4)
    np.testing.assert_allclose(solver.transfer(g), exact, rtol=1e-12)
    assert solver.factorizations == 1


def test_wires_far_below_the_cells_fall_back_to_the_sparse_lu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(line_resistance, "_MAX_WIRE_TO_CELL", 1.0)
    g = np.random.default_rng(2).uniform(500e-6, 1e-3, (30, 30))
    solver = TransferSolver(30, 30, 200.0)
    np.testing.assert_allclose(solver.transfer(g), effective_conductance(g, 200.0, 1), rtol=1e-12)
    assert solver.factorizations == 1


def test_the_array_tracks_many_programming_events_exactly() -> None:
    # Through the array model, with the per-cell shortcut switched off by a tiny tolerance: every
    # VMM after a programming event is a fresh sweep, checked against a dense nodal solve.
    rows, cols, r_segment = 16, 12, 0.35
    params = preset("ideal", rows=rows, cols=cols, line_resistance=r_segment, line_refactor_tolerance=1e-12, **QUIET)
    array = CrossbarArray(params, seed=3)
    rng = np.random.default_rng(4)
    shape = (rows, cols)
    array.apply_pulses(PulseKind.SET, 0, 0, np.full(shape, 2.5), rng.uniform(0.6, 2.5, shape),
                       np.full(shape, 1e-6), np.ones(shape, bool))  # fmt: skip
    v = rng.uniform(-0.2, 0.2, (1, rows))
    for _ in range(12):
        mask = rng.random(shape) < 0.15
        array.apply_pulses(PulseKind.RESET, 0, 0, np.full(shape, 1.8), np.full(shape, 5.0), np.full(shape, 1e-6), mask)
        array.apply_pulses(PulseKind.SET, 0, 0, np.full(shape, 2.5), rng.uniform(0.6, 2.5, shape),
                           np.full(shape, 1e-6), mask)  # fmt: skip
        reference = dense_column_currents(array.conductance, r_segment, v[0], np.ones(rows, bool), np.ones(cols, bool))
        scale = np.abs(reference).max()
        np.testing.assert_allclose(array.vmm(v, 0, 0, cols)[0], reference, rtol=1e-6, atol=1e-9 * scale)


def test_a_vmm_on_some_columns_solves_only_those_and_stays_exact() -> None:
    rows, cols, r_segment = 12, 10, 0.5
    params = preset("ideal", rows=rows, cols=cols, line_resistance=r_segment, line_refactor_tolerance=1e-12, **QUIET)
    array = CrossbarArray(params, seed=6)
    shape = (rows, cols)
    rng = np.random.default_rng(7)
    array.apply_pulses(PulseKind.SET, 0, 0, np.full(shape, 2.5), rng.uniform(0.6, 2.5, shape),
                       np.full(shape, 1e-6), np.ones(shape, bool))  # fmt: skip
    v = rng.uniform(0, 0.2, (1, rows))
    reference = dense_column_currents(array.conductance, r_segment, v[0], np.ones(rows, bool), np.ones(cols, bool))
    np.testing.assert_allclose(array.vmm(v, 0, 2, 3)[0], reference[2:5], rtol=1e-6)
    solver = array._transfer_solver
    assert solver is not None
    solved = np.isfinite(array._whole_array_transfer()).all(axis=0)
    assert list(np.flatnonzero(solved)) == [2, 3, 4]  # the other columns were not paid for
    np.testing.assert_allclose(array.vmm(v, 0, 6, 4)[0], reference[6:10], rtol=1e-6)  # more columns: solved then
    np.testing.assert_allclose(array.vmm(v, 0, 2, 3)[0], reference[2:5], rtol=1e-6)
