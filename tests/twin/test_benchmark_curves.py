"""benchmarks/twin.py's curve view: a board's paired error at each evaluation point of the stored curves."""

from __future__ import annotations

from typing import Any

import pytest

from tests.twin.twin_benchmark import twin_benchmark

# The chip's seeds learn very differently, so a board run paired with another seed's chip run, or
# an evaluation with another update's, gives a difference far from the true +1 point.
CHIP = {0: [[10, 0.50], [20, 0.60], [30, 0.70]],
        1: [[10, 0.20], [20, 0.25], [30, 0.30]],
        2: [[10, 0.80], [20, 0.85], [30, 0.90]],
        3: [[10, 0.35], [20, 0.45], [30, 0.40]]}  # fmt: skip


def board_runs() -> dict[tuple[str, str, int], dict[str, Any]]:
    runs: dict[tuple[str, str, int], dict[str, Any]] = {}
    for seed, curve in CHIP.items():
        runs[("narrow-window", "chip", seed)] = {"curve": curve}
        runs[("narrow-window", "twin", seed)] = {"curve": [[u, a + 0.01] for u, a in curve]}
    del runs[("narrow-window", "chip", 1)]  # a chip run that did not complete: seed 1 pairs with nothing
    # Seed 2's twin run was evaluated at other updates: only update 10 is shared with its chip run.
    runs[("narrow-window", "twin", 2)] = {"curve": [[5, 0.1], [10, 0.81], [25, 0.99]]}
    return runs


def test_the_curve_view_pairs_runs_by_seed_and_update() -> None:
    bench = twin_benchmark()
    runs = board_runs()
    results = bench.summarize(runs, ["narrow-window"], ["chip", "twin"], 4, {}, 1)
    curve = results["narrow-window"]["curve_errors"]["twin"]
    assert [p["update"] for p in curve["points"]] == [10, 20, 30]
    assert [p["pairs"] for p in curve["points"]] == [3, 2, 2]  # seeds 0, 2, 3 at update 10; 0 and 3 after
    for point in curve["points"]:
        assert point["mean_difference_points"] == pytest.approx(1.0)
        assert point["standard_error_points"] == pytest.approx(0.0, abs=1e-9)
    assert curve["mean_abs_difference_points"] == pytest.approx(1.0)


def test_the_worst_point_is_the_largest_mean_error_with_its_standard_error() -> None:
    bench = twin_benchmark()
    chip = [[[10, 0.5], [20, 0.6]], [[10, 0.3], [20, 0.4]]]
    board = [[[10, 0.52], [20, 0.55]], [[10, 0.34], [20, 0.37]]]  # +2, +4 at 10; -5, -3 at 20
    curve = bench.curve_errors(board, chip)
    assert curve["worst"]["update"] == 20
    assert curve["worst"]["mean_difference_points"] == pytest.approx(-4.0)
    assert curve["worst"]["standard_error_points"] == pytest.approx(1.0)
    assert curve["mean_abs_difference_points"] == pytest.approx(3.5)
    assert bench.curve_errors([None, None], chip)["worst"] is None
