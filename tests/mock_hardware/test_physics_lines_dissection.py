"""Nested dissection of the wire network against a dense nodal solve and against the block sweep."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest

from mock_hardware.array_model import PulseKind
from mock_hardware.physics import line_resistance, wire_dissection
from mock_hardware.physics.line_resistance import TransferSolver, effective_conductance
from mock_hardware.physics.wire_dissection import DissectionSolver
from tests.mock_hardware.test_physics_lines import dense_column_currents, programmed


@functools.lru_cache(maxsize=8)
def dense_transfer(rows: int, cols: int, r_segment: float) -> np.ndarray:
    """``G_eff`` of :func:`awkward_conductances` from the independent dense nodal solve: the column
    currents for each row driven alone at 1 V (every other row at 0 V, every column into its TIA)."""
    g = awkward_conductances(rows, cols, seed=rows + cols)
    driven = np.eye(rows)
    return np.array(
        [dense_column_currents(g, r_segment, driven[i], np.ones(rows, bool), np.ones(cols, bool)) for i in range(rows)]
    )


def awkward_conductances(rows: int, cols: int, seed: int) -> np.ndarray:
    """Cells over the window, with a dead row, a dead column and a dead cell where the array has
    room for them (zero conductance: only sneak paths reach a dead cell's row and column)."""
    g = np.random.default_rng(seed).uniform(100e-6, 900e-6, (rows, cols))
    if rows > 3 and cols > 3:
        g[rows // 2, :] = 0.0
        g[:, cols // 3] = 0.0
        g[1, cols - 2] = 0.0
    return g


SHAPES = [(9, 7, 0.35), (12, 10, 2.0), (5, 13, 5.0), (1, 6, 2.0), (7, 1, 2.0)]


@pytest.mark.parametrize(("rows", "cols", "r_segment"), SHAPES)
@pytest.mark.parametrize("tile", [1, 2, 4, 8])
def test_dissection_matches_a_dense_nodal_solve(rows: int, cols: int, r_segment: float, tile: int) -> None:
    g = awkward_conductances(rows, cols, seed=rows + cols)
    reference = dense_transfer(rows, cols, r_segment)
    g_eff = DissectionSolver(rows, cols, r_segment, tile=tile).transfer(g)
    np.testing.assert_allclose(g_eff, reference, rtol=1e-9, atol=1e-12 * np.abs(reference).max())
    if rows > 3 and cols > 3:
        # A dead cell still passes current between its driver and its TIA through its neighbours:
        # the comparison covers the sneak paths, not only the direct ones.
        assert g_eff[1, cols - 2] > 1e-6 * np.abs(reference).max()
        assert np.max(np.abs(g_eff - g)) > 1e-4 * g.max()  # and the wires matter


@pytest.mark.parametrize("tile", [4, 16, 32])
def test_dissection_matches_the_block_sweep_on_the_columns_asked_for(tile: int) -> None:
    g = np.random.default_rng(7).uniform(100e-6, 900e-6, (48, 24))
    columns = np.array([0, 5, 6, 23])
    swept = TransferSolver(48, 24, 0.35)
    assert swept.method == "sweep"
    expected = swept.transfer(g, columns)
    g_eff = DissectionSolver(48, 24, 0.35, tile=tile).transfer(g, columns)
    np.testing.assert_allclose(g_eff[:, columns], expected[:, columns], rtol=1e-10)
    others = np.setdiff1d(np.arange(24), columns)
    assert np.isnan(g_eff[:, others]).all() and np.isnan(expected[:, others]).all()


def test_one_solver_answers_each_set_of_columns_for_itself() -> None:
    # The merged stage keeps each tile's preparation (which TIAs it drops) from one solve to the
    # next: asked for other columns, it must not reuse the last set's.
    g = awkward_conductances(48, 24, seed=9)
    exact = effective_conductance(g, 0.35, 1)
    solver = DissectionSolver(48, 24, 0.35, tile=8)
    for columns in ([0, 5, 6, 23], None, [1, 2], [0, 5, 6, 23], [17]):
        g_eff = solver.transfer(g, None if columns is None else np.array(columns))
        asked = np.arange(24) if columns is None else np.array(columns)
        np.testing.assert_allclose(g_eff[:, asked], exact[:, asked], rtol=1e-9, atol=1e-20)
        assert np.isnan(np.delete(g_eff, asked, axis=1)).all()


@pytest.mark.parametrize("small_separator", [0, 64])
def test_stacked_and_per_tile_eliminations_agree(monkeypatch: pytest.MonkeyPatch, small_separator: int) -> None:
    # 0: every batched merge through LAPACK, tiles stored stack-first; 64: every one by the
    # compiled pass over the stack, stack-last (separators up to 8 nodes here). The default mixes both.
    g = awkward_conductances(20, 12, seed=5)
    expected = DissectionSolver(20, 12, 0.35, tile=16).transfer(g)
    monkeypatch.setattr(wire_dissection, "_SMALL_SEPARATOR", small_separator)
    np.testing.assert_allclose(DissectionSolver(20, 12, 0.35, tile=16).transfer(g), expected, rtol=1e-12)
    np.testing.assert_allclose(expected, effective_conductance(g, 0.35, 1), rtol=1e-9, atol=1e-20)


def test_a_longer_lead_to_the_tias_is_one_series_resistor() -> None:
    # end_segments: the TIAs sit that many segments below the last row (the sweep's and the LU's
    # parameter too).
    g = np.random.default_rng(4).uniform(100e-6, 900e-6, (6, 40))
    np.testing.assert_allclose(
        DissectionSolver(6, 40, 0.35, end_segments=3, tile=8).transfer(g), effective_conductance(g, 0.35, 3), rtol=1e-9
    )


def test_a_tile_must_be_a_power_of_two() -> None:
    with pytest.raises(ValueError, match="power of two"):
        DissectionSolver(8, 8, 0.35, tile=6)


def test_wide_arrays_dissect_and_narrow_ones_keep_the_sweep() -> None:
    # Where each is cheaper (docs/benchmarks.md, ninth pass, part S): from 64 columns on at the
    # presets' 128 rows, and on every wider array; the 128 x 16 preset and short rows keep the sweep.
    assert TransferSolver(512, 256, 0.35).method == "dissection"
    assert TransferSolver(256, 128, 0.35).method == "dissection"
    assert TransferSolver(128, 64, 0.35).method == "dissection"
    assert TransferSolver(128, 16, 0.35).method == "sweep"
    assert TransferSolver(4, 64, 0.35).method == "sweep"
    g = np.random.default_rng(2).uniform(100e-6, 900e-6, (16, 128))
    solver = TransferSolver(16, 128, 0.35)
    np.testing.assert_allclose(solver.transfer(g), effective_conductance(g, 0.35, 1), rtol=1e-9)
    assert solver.dissections == 1 and solver.factorizations == 0


def test_an_array_on_the_dissection_path_computes_vmms_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every solve of this small array by dissection; VMMs on a region, with a single driven row, on
    # a few columns, after programming: each against the dense solve of the whole array.
    monkeypatch.setattr(line_resistance, "DISSECTION_FROM", 0.0)
    calls: list[int] = []
    original = DissectionSolver.transfer

    def counted(self: DissectionSolver, *args: Any, **kwargs: Any) -> np.ndarray:
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DissectionSolver, "transfer", counted)
    r_segment = 2.0
    array = programmed(10, 8, line_resistance=r_segment, seed=3)
    everywhere = np.ones(10, bool), np.ones(8, bool)
    for event in range(2):
        g = array.conductance
        row0, col0, ncols = 3, 2, 5
        v = np.random.default_rng(event).uniform(0.0, 0.2, (2, 4))
        whole = array.vmm(v, row0, col0, ncols)
        single = array.vmm(v[:, :1], row0, col0, ncols, rows=np.array([2]), columns=np.array([1, 4]))
        for k in range(2):
            v_rows = np.zeros(10)
            v_rows[row0 : row0 + 4] = v[k]
            reference = dense_column_currents(g, r_segment, v_rows, *everywhere)[col0 : col0 + ncols]
            np.testing.assert_allclose(whole[k], reference, rtol=1e-9)
            v_rows = np.zeros(10)
            v_rows[row0 + 2] = v[k, 0]  # one row driven; the rest of the region at 0 V
            reference = dense_column_currents(g, r_segment, v_rows, *everywhere)[col0 + np.array([1, 4])]
            np.testing.assert_allclose(single[k], reference, rtol=1e-9)
        # A programming event moves every cell of a block far beyond the refactor tolerance.
        shape = (10, 8)
        array.apply_pulses(PulseKind.RESET, 0, 0, np.full(shape, 1.75), np.full(shape, 5.0), np.full(shape, 1e-6),
                           np.random.default_rng(event).random(shape) < 0.5)  # fmt: skip
    assert len(calls) >= 2  # solved by dissection, once per programming state at least


@pytest.mark.parametrize("tile", [None, 64])
def test_a_full_size_array_at_the_default_tile_matches_the_sparse_lu(tile: int | None) -> None:
    # 256 x 128 at the default tile of 32 and at 64: every level of the batched stage (stacked
    # elimination of separators up to 4 nodes, stacked inverses from 8 on) and a merged stage whose merges keep
    # drivers and TIAs together (the terminals' mutual blocks left out), with a dead row and a dead
    # column; 64 columns asked for, as an in-situ MLP measures them.
    g = awkward_conductances(256, 128, seed=11)
    columns = np.linspace(0, 127, 64).astype(np.intp)
    exact = effective_conductance(g, 0.35, 1)[:, columns]
    solver = DissectionSolver(256, 128, 0.35) if tile is None else DissectionSolver(256, 128, 0.35, tile=tile)
    g_eff = solver.transfer(g, columns)[:, columns]
    np.testing.assert_allclose(g_eff, exact, rtol=1e-9, atol=1e-12 * np.abs(exact).max())


class _PoisonedNumpy:
    """numpy as the dissection sees it, but ``np.empty`` filled with ``fill``: what uninitialised
    memory may hold."""

    def __init__(self, fill: float) -> None:
        self.fill = fill

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)

    def empty(self, shape: Any, dtype: Any = float, order: str = "C") -> np.ndarray:
        return np.full(shape, self.fill, dtype=dtype, order=order)


@pytest.mark.parametrize("fill", [np.nan, 1e308])
def test_the_unread_upper_triangles_never_reach_the_answer_nor_any_arithmetic(
    monkeypatch: pytest.MonkeyPatch, fill: float
) -> None:
    # The merged stage leaves strict upper triangles as allocated. NaN there would show in G_eff if
    # any of it were read; 1e308 would overflow (an error here) if any of it were added.
    g = awkward_conductances(20, 12, seed=5)
    monkeypatch.setattr(wire_dissection, "np", _PoisonedNumpy(fill))
    with np.errstate(all="raise"):
        g_eff = DissectionSolver(20, 12, 0.35, tile=2).transfer(g)
    np.testing.assert_allclose(g_eff, effective_conductance(g, 0.35, 1), rtol=1e-9, atol=1e-20)


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize(("head", "tail"), [(0, 0), (5, 0), (0, 4), (5, 4), (14, 0), (16, 0), (14, 4), (17, 3)])
def test_an_elimination_updates_every_block_it_is_read_for(transposed: bool, head: int, tail: int) -> None:
    # kept -= C S^-1 C^T on 20 kept nodes (the first `head` drivers, the last `tail` TIAs) against
    # numpy's dense product, the coupling in either layout; with most kept nodes drivers (14 and
    # 17 of 20) the drivers' rows are found by solving for the rest instead. The drivers' and the
    # TIAs' blocks among themselves are never read, so not compared.
    rng = np.random.default_rng(head * 10 + tail)
    size, nodes = 20, 7
    separator = rng.uniform(-1.0, 1.0, (nodes, nodes))
    separator = separator @ separator.T + nodes * np.eye(nodes)
    coupling = rng.uniform(-1.0, 1.0, (size, nodes))
    kept = rng.uniform(-1.0, 1.0, (size, size))
    kept = kept + kept.T
    expected = kept - coupling @ np.linalg.solve(separator, coupling.T)
    given = np.asfortranarray(coupling.T if transposed else coupling)
    result = np.asfortranarray(kept)
    wire_dissection._eliminate(np.asfortranarray(separator), given, result, head, tail, transposed)
    lower = np.tri(size, dtype=bool)
    lower[:head, :head] = False
    lower[size - tail :, size - tail :] = False
    assert lower[head:, :head].all()  # the drivers' rows with every other node are compared
    np.testing.assert_allclose(result[lower], expected[lower], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("h", "w", "across"), [(1, 1, True), (1, 2, False), (2, 2, True), (2, 4, False), (4, 4, True), (4, 8, False)]
)
def test_the_compiled_small_merges_match_numpys_stacked_ones(h: int, w: int, across: bool) -> None:
    # Every level the batched stage runs compiled (and one beyond), on a 4 x 6 grid of random
    # symmetric positive-definite tiles whose nodes are all strongly coupled (the wire network's are
    # not: a slip there can hide under the dissection's 1e-9 against the LU), against the numpy merge
    # of the stack-first stage, element by element.
    from mock_hardware.physics import _dissection_kernels

    b = 2 * h + 2 * w
    rng = np.random.default_rng(h * 10 + w)
    coupling = rng.uniform(-1.0, 1.0, (4, 6, b, b))
    stack_first = coupling @ np.swapaxes(coupling, -1, -2) + b * np.eye(b)
    stack_last = np.ascontiguousarray(stack_first.transpose(2, 3, 0, 1))
    edges = wire_dissection._edges(h, w)
    if across:
        kept = [(0, "L"), (1, "R"), (0, "T"), (1, "T"), (0, "B"), (1, "B")]
        expected = wire_dissection._merge_pairs(stack_first[:, 0::2], stack_first[:, 1::2], edges, ("R", "L"), kept)
        nh, nw, grid = h, 2 * w, (4, 3)
    else:
        kept = [(0, "L"), (1, "L"), (0, "R"), (1, "R"), (0, "T"), (1, "B")]
        expected = wire_dissection._merge_pairs(stack_first[0::2], stack_first[1::2], edges, ("B", "T"), kept)
        nh, nw, grid = 2 * h, w, (2, 6)
    merged = np.full((2 * nh + 2 * nw, 2 * nh + 2 * nw, *grid), np.nan)
    _dissection_kernels.merge_stack_last(stack_last, h, w, across, merged)
    result = merged.transpose(2, 3, 0, 1)
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-12 * np.abs(expected).max())
    assert np.array_equal(result, np.swapaxes(result, -1, -2))  # exactly symmetric
    with pytest.raises(ValueError, match="result's shape"):
        _dissection_kernels.merge_stack_last(stack_last, h, w, across, merged[:-1])
