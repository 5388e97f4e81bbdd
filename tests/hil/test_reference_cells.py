"""Reference cells (hil/lifecycle/references.py): where they go and what their drift line measures."""

from __future__ import annotations

import numpy as np
import pytest

from hil.lifecycle.references import (
    IDENTITY,
    ReferenceError,
    choose_reference_cells,
    fit_line,
    layer_gains,
)
from hil.mapping import Placement, auto_place, resolve_placement

SHAPES = {"dense1": (4, 3), "dense2": (3, 2)}  # 8 + 6 rows of devices, 3 + 2 columns


def placement(rows: int = 12) -> Placement:
    boards = {"board0": (rows, 6)}
    return resolve_placement(auto_place(SHAPES, boards), SHAPES, boards)


def test_references_go_on_unused_working_devices_of_the_used_columns() -> None:
    placed = placement()
    used = placed.used_mask("board0")
    dead = np.zeros_like(used)
    dead[used.shape[0] - 1, :] = True  # the last row is defective
    levels = np.array([100e-6, 200e-6, 300e-6])
    rows, cols, targets = choose_reference_cells(placed, "board0", dead, 2, levels)
    assert not used[rows, cols].any() and not dead[rows, cols].any()
    assert set(cols.tolist()) == set(np.flatnonzero(used.any(axis=0)).tolist())  # every used column has some
    assert np.bincount(cols).max() <= 2
    assert targets.tolist()[:3] == levels.tolist()  # the levels in turn
    with pytest.raises(ReferenceError, match="board0: 0 unused working device"):
        choose_reference_cells(placed, "board0", ~used, 2, levels)


def test_when_the_networks_columns_are_full_spare_columns_hold_the_references() -> None:
    placed = placement(rows=8)  # dense1 fills its 8 rows; dense2 leaves 2 per column
    used = placed.used_mask("board0")
    dead = np.zeros_like(used)
    dead[:, :] = used.any(axis=0) & ~used  # and those are defective
    rows, cols, _ = choose_reference_cells(placed, "board0", dead, 2, np.array([1e-4, 2e-4, 3e-4]))
    assert len(rows) >= 3 and not np.asarray(used.any(axis=0))[cols].any()  # all in columns the network does not use
    assert not dead[rows, cols].any()


def test_the_line_measures_a_common_gain_and_shift_and_not_independent_drift() -> None:
    rng = np.random.default_rng(0)
    then = np.resize([100e-6, 200e-6, 300e-6, 400e-6], 80) + rng.normal(0, 3e-6, 80)
    common = fit_line(then, 0.7 * then - 5e-6 + rng.normal(0, 1e-6, 80))
    assert common.gain == pytest.approx(0.7, abs=0.01) and common.offset == pytest.approx(-5e-6, abs=1e-6)
    independent = fit_line(then, then + rng.normal(0, 10e-6, 80))  # each device its own way
    assert independent.gain == pytest.approx(1.0, abs=0.03)
    assert fit_line(then[:1], then[:1] * 0.5) == IDENTITY  # one reference: no line
    assert fit_line(then, then * 0.01) == IDENTITY  # a chip that lost its state: not a drift


def test_each_layer_gets_the_gain_of_the_array_or_column_holding_it() -> None:
    placed = placement()
    line = fit_line(np.array([1.0, 2.0]), np.array([0.5, 1.0]))
    gains = layer_gains(placed, {"board0": line})
    assert {k: v.tolist() for k, v in gains.items()} == {"dense1": pytest.approx([0.5] * 3),
                                                         "dense2": pytest.approx([0.5] * 2)}  # fmt: skip
    tile = placed.tiles["dense2"][0]
    column = {int(tile.cols[1]): fit_line(np.array([1.0, 2.0]), np.array([0.8, 1.6]))}
    mixed = layer_gains(placed, {"board0": line}, {"board0": column})
    assert mixed["dense2"].tolist() == pytest.approx([0.5, 0.8])
    assert mixed["dense1"].tolist() == pytest.approx([0.5] * 3)


def test_the_evaluation_plot_shows_the_reference_gain_only_where_references_measured_one() -> None:
    from matplotlib.figure import Figure

    from hil.lifecycle.plots import plot_evaluation
    from hil.run_layout import EVALUATION_POINTS

    table = np.array([[0, 0.9, 1, 1e-6, 0, 0, 0, 1.0, 80, 40], [3600, 0.9, 1, 2e-6, 0, 0, 0, 0.7, 0, 40]])
    for points, axes in ((table, 4), (table[:, :7], 3), (np.column_stack([table[:, :7], np.ones((2, 3))]), 3)):
        fig = Figure()
        plot_evaluation({EVALUATION_POINTS: points}, {}, fig)
        assert len(fig.axes) == axes
    assert fig.axes[1].get_ylabel() == "median drift, uS"
