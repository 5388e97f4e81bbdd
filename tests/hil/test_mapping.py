"""Weight placement: auto_place, explicit placements and their errors, tiling across a board."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from drivers import Board, open_board
from hil import mapping
from hil.array_backend import ArrayBackend
from hil.mapping import (
    BadLines,
    Layout,
    Placement,
    PlacementError,
    PlacementSpec,
    auto_place,
    remap_for_weights,
    resolve_placement,
)
from hil.nn import ARCHITECTURES, get_architecture
from hil.storage import RunFile
from hil.training.config import TrainConfig
from hil.training.run import Hardware, program_weights, run_training
from hil.updates import GateCodedConfig, GateCodedUpdate
from tests.conftest import EmulatorFactory

BOARD_128x64 = {"board0": (128, 64)}
SHAPES = {"a": (4, 3), "b": (1, 1)}  # the layers of the explicit-placement cases
IDEAL_32x16 = "emulator://?preset=ideal&seed=1&rows=32&cols=16"
FloatArray = npt.NDArray[np.float64]


def coverage(placement: Placement, layer: str, shape: tuple[int, int]) -> npt.NDArray[np.int64]:
    """How many times each weight of ``layer`` is placed."""
    count = np.zeros(shape, dtype=np.int64)
    for tile in placement.tiles[layer]:
        count[tile.inputs, tile.outputs] += 1
    return count


def device_use(placement: Placement, board: str) -> npt.NDArray[np.int64]:
    """How many (layer, tile, input, output, sign) slots claim each device of ``board``."""
    use = np.zeros(placement.board_shapes[board], dtype=np.int64)
    for tiles in placement.tiles.values():
        for tile in tiles:
            if tile.board != board:
                continue
            for rows in (tile.plus_rows, tile.minus_rows):
                np.add.at(use, (rows[:, None], tile.cols[None, :]), 1)
    return use


def spec(layers: list[dict[str, Any]], bad_lines: dict[str, Any] | None = None) -> PlacementSpec:
    return PlacementSpec.model_validate({"layers": layers, "bad_lines": bad_lines or {}})


@pytest.fixture
def board() -> Iterator[Board]:
    with open_board(IDEAL_32x16) as opened:
        yield opened


def program(backend: ArrayBackend, weights: dict[str, FloatArray], tolerance: float = 2e-6) -> None:
    """Write ``weights`` by write-verify (the run's own initial programming) and read everything back."""
    hardware = Hardware(backend, GateCodedUpdate(GateCodedConfig()), {})
    program_weights(TrainConfig(), hardware, weights, tolerance)


def relative_error(measured: FloatArray, expected: FloatArray) -> float:
    return float(np.abs(measured - expected).max() / np.abs(expected).max())


# ---------------------------------------------------------------------------- auto_place


@pytest.mark.parametrize("model", sorted(ARCHITECTURES))
def test_auto_place_fits_each_architecture_on_one_board(model: str) -> None:
    shapes = get_architecture(model).weight_shapes()
    placement = resolve_placement(auto_place(shapes, BOARD_128x64), shapes, BOARD_128x64)

    assert placement.boards() == ["board0"]
    for layer, shape in shapes.items():
        assert (coverage(placement, layer, shape) == 1).all(), layer
    use = device_use(placement, "board0")
    assert use.max() == 1  # no device holds two weights, nor both halves of one pair
    assert use.sum() == placement.device_count == 2 * sum(r * c for r, c in shapes.values())
    assert (placement.used_mask("board0") == (use == 1)).all()


def test_a_layer_with_more_inputs_than_half_the_rows_is_split_into_tiles() -> None:
    shapes = get_architecture("yao-hybrid").weight_shapes()
    assert shapes["dense1"] == (192, 10)  # 384 devices high: three 64-input tiles on 128 rows
    placement = resolve_placement(auto_place(shapes, BOARD_128x64), shapes, BOARD_128x64)

    tiles = placement.tiles["dense1"]
    assert [(t.inputs.start, t.inputs.stop) for t in tiles] == [(0, 64), (64, 128), (128, 192)]
    assert all((t.outputs.start, t.outputs.stop) == (0, 10) for t in tiles)
    assert len({int(t.cols[0]) for t in tiles}) == 3  # side by side, in different columns


def test_auto_place_skips_bad_lines() -> None:
    shapes = {"dense1": (20, 6), "dense2": (6, 3)}
    bad = {"board0": BadLines(rows=[0, 5, 31], cols=[1, 7])}
    placement = resolve_placement(auto_place(shapes, {"board0": (64, 16)}, bad), shapes, {"board0": (64, 16)})

    used = placement.used_mask("board0")
    assert not used[[0, 5, 31], :].any()
    assert not used[:, [1, 7]].any()
    assert device_use(placement, "board0").max() == 1


def test_a_network_too_big_for_the_boards_is_refused_naming_the_layer() -> None:
    shapes = get_architecture("mlp").weight_shapes()  # 54 + 10 columns
    with pytest.raises(PlacementError, match=r"layer 'dense2' \(54 x 10 weights\) does not fit"):
        auto_place(shapes, {"board0": (128, 60)})


def test_auto_place_spreads_layers_over_several_boards() -> None:
    shapes = get_architecture("mlp").weight_shapes()
    boards = {"a": (128, 60), "b": (32, 40)}
    placement = resolve_placement(auto_place(shapes, boards), shapes, boards)

    assert {t.board for t in placement.tiles["dense1"]} == {"a"}  # 64 inputs: only board a has the rows
    (on_a,) = [t for t in placement.tiles["dense2"] if t.board == "a"]  # the 6 columns a has left
    assert (on_a.outputs.start, on_a.outputs.stop) == (0, 6)
    on_b = [t for t in placement.tiles["dense2"] if t.board == "b"]  # the other 4 outputs
    assert [(t.inputs.start, t.inputs.stop) for t in on_b] == [(0, 16), (16, 32), (32, 48), (48, 54)]
    for layer, shape in shapes.items():
        assert (coverage(placement, layer, shape) == 1).all()
    assert device_use(placement, "a").max() == 1 and device_use(placement, "b").max() == 1


# ---------------------------------------------------------------------------- explicit placements


def test_explicit_tiles_land_at_their_corners() -> None:
    tiles = [{"row0": 4, "col0": 3, "inputs": [0, 2]}, {"row0": 10, "col0": 3, "inputs": [2, 3]}]
    placement = resolve_placement(spec([{"layer": "a", "tiles": tiles}]), {"a": (3, 2)}, {"board0": (16, 8)})
    first, second = placement.tiles["a"]
    assert first.plus_rows.tolist() == [4, 6] and first.minus_rows.tolist() == [5, 7]
    assert first.cols.tolist() == [3, 4]
    assert second.plus_rows.tolist() == [10] and second.minus_rows.tolist() == [11]


def test_row_blocks_put_every_plus_row_before_the_minus_rows() -> None:
    placement = resolve_placement(
        spec([{"layer": "a", "layout": "row-blocks", "tiles": [{"row0": 2}]}]), {"a": (4, 2)}, {"board0": (16, 8)}
    )
    (tile,) = placement.tiles["a"]
    assert tile.plus_rows.tolist() == [2, 3, 4, 5]
    assert tile.minus_rows.tolist() == [6, 7, 8, 9]


def test_a_tile_on_bad_lines_skips_them() -> None:
    placement = resolve_placement(
        spec([{"layer": "a", "tiles": [{"row0": 0, "col0": 0}]}], {"board0": {"rows": [1, 4], "cols": [0, 2]}}),
        {"a": (3, 3)}, {"board0": (16, 8)},
    )  # fmt: skip
    (tile,) = placement.tiles["a"]
    assert tile.plus_rows.tolist() == [0, 3, 6] and tile.minus_rows.tolist() == [2, 5, 7]
    assert tile.cols.tolist() == [1, 3, 4]
    used = placement.used_mask("board0")
    assert not used[[1, 4], :].any() and not used[:, [0, 2]].any()


def test_explicit_rows_and_columns_are_used_as_listed() -> None:
    tile_spec = {"rows": [9, 3, 12, 14], "cols": [7, 1]}
    placement = resolve_placement(spec([{"layer": "a", "tiles": [tile_spec]}]), {"a": (2, 2)}, {"board0": (16, 8)})
    (tile,) = placement.tiles["a"]
    assert tile.plus_rows.tolist() == [9, 12] and tile.minus_rows.tolist() == [3, 14]
    assert tile.cols.tolist() == [7, 1]


def test_defect_aware_placement_avoids_defective_devices() -> None:
    shapes = {"dense1": (8, 4), "dense2": (4, 2)}
    boards = {"board0": (32, 16)}
    defective = np.zeros((32, 16), dtype=bool)
    defective[:, [0, 2, 5]] = True  # three columns full of dead devices
    defective[[4, 17], :] = True  # two rows full of them
    placement = resolve_placement(auto_place(shapes, boards, defective={"board0": defective}), shapes, boards)

    assert [layer.layer for layer in placement.spec.layers] == ["dense1", "dense2"]
    for layer, shape in shapes.items():
        assert (coverage(placement, layer, shape) == 1).all()
    use = device_use(placement, "board0")
    assert use.max() == 1
    assert not (use.astype(bool) & defective).any()


def test_defect_aware_placement_refuses_a_network_that_does_not_fit() -> None:
    with pytest.raises(PlacementError, match=r"layer 'dense1' \(8 x 20 weights\) does not fit"):
        auto_place({"dense1": (8, 20)}, {"board0": (32, 16)}, defective={})


@pytest.mark.parametrize(
    ("layers", "bad_lines", "message"),
    [
        pytest.param(
            [{"layer": "a", "tiles": [{"inputs": [0, 2]}, {"row0": 3, "inputs": [2, 4]}]}],
            None,
            r"layer 'a' tile 1 overlaps layer 'a' tile 0 at board 'board0' cell \(3, 0\)",
            id="overlap",
        ),
        pytest.param(
            [{"layer": "a", "tiles": [{}]}, {"layer": "b", "tiles": [{"col0": 2}]}],
            None,
            r"layer 'b' tile 0 overlaps layer 'a' tile 0",
            id="overlap-between-layers",
        ),
        pytest.param(
            [{"layer": "a", "tiles": [{"row0": 10}]}],
            None,
            r"layer 'a' tile 0: needs 8 good rows from (row )?10\b.*which has 6",
            id="rows-out-of-bounds",
        ),
        pytest.param(
            [{"layer": "a", "tiles": [{"col0": 6}]}],
            None,
            r"layer 'a' tile 0: needs 3 good columns from (column )?6\b.*which has 2",
            id="cols-out-of-bounds",
        ),
        pytest.param(
            [{"layer": "a", "tiles": [{}]}],
            {"board0": {"rows": list(range(7, 16))}},
            r"layer 'a' tile 0: needs 8 good rows from (row )?0\b.*which has 7",
            id="bad-rows",
        ),
        pytest.param(
            [{"layer": "a", "tiles": [{"col0": 4}]}],
            {"board0": {"cols": [5, 6]}},
            r"layer 'a' tile 0: needs 3 good columns from (column )?4\b.*which has 2",
            id="bad-cols",
        ),
        pytest.param(
            [{"layer": "a", "tiles": [{"rows": [0, 1, 2, 3, 4, 5, 6, 9], "cols": [0, 1, 2]}]}],
            {"board0": {"rows": [9]}},
            r"layer 'a' tile 0: rows \[9\] are bad",
            id="explicit-row-on-bad-line",
        ),
        pytest.param(
            [{"layer": "a", "tiles": [{"cols": [0, 1, 8]}]}],
            None,
            r"layer 'a' tile 0: columns \[8\] are outside the board",
            id="explicit-col-outside",
        ),
        pytest.param(
            [{"layer": "a", "tiles": [{"rows": [0, 1, 2]}]}],
            None,
            r"layer 'a' tile 0: needs 8 distinct rows, the placement lists 3",
            id="explicit-rows-too-few",
        ),
        pytest.param(
            [{"layer": "a", "tiles": [{"inputs": [0, 5]}]}],
            None,
            r"layer 'a' tile 0: inputs \[0, 5\) is not inside \[0, 4\)",
            id="inputs-out-of-range",
        ),
        pytest.param(
            [{"layer": "a", "tiles": [{"outputs": [2, 2]}]}],
            None,
            r"layer 'a' tile 0: outputs \[2, 2\) is not inside \[0, 3\)",
            id="empty-outputs",
        ),
        pytest.param(
            [{"layer": "a", "tiles": [{}, {"board": "board7"}]}],
            None,
            r"layer 'a' tile 1: board 'board7' is not one of \['board0'\]",
            id="unknown-board",
        ),
        pytest.param(
            [{"layer": "a", "tiles": [{"inputs": [0, 2]}]}],
            None,
            r"layer 'a': weight \[2, 0\] is placed 0 times",
            id="gap",
        ),
        pytest.param(
            [{"layer": "a", "tiles": [{}, {"col0": 3}]}],
            None,
            r"layer 'a': weight \[0, 0\] is placed 2 times",
            id="double-coverage",
        ),
    ],
)
def test_bad_explicit_placements_are_errors_naming_layer_and_tile(
    layers: list[dict[str, Any]], bad_lines: dict[str, Any] | None, message: str
) -> None:
    shapes = {layer["layer"]: SHAPES[layer["layer"]] for layer in layers}
    with pytest.raises(PlacementError, match=message):
        resolve_placement(spec(layers, bad_lines), shapes, {"board0": (16, 8)})


def test_double_coverage_names_the_tiles() -> None:
    layers = [{"layer": "a", "tiles": [{"inputs": [0, 3]}, {"col0": 3, "inputs": [2, 4]}]}]
    with pytest.raises(PlacementError, match=r"tile 1"):
        resolve_placement(spec(layers), {"a": (4, 3)}, {"board0": (16, 8)})


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ([{"layer": "a", "tiles": [{}]}], r"missing layers \['b'\]"),
        ([{"layer": "a", "tiles": [{}]}, {"layer": "b", "tiles": [{"col0": 4}]}, {"layer": "c", "tiles": [{}]}],
         r"placement lists layers \['c'\]"),
    ],
)  # fmt: skip
def test_unknown_and_missing_layers_are_named(layers: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(PlacementError, match=message):
        resolve_placement(spec(layers), {"a": (2, 2), "b": (2, 2)}, {"board0": (16, 8)})


def test_bad_lines_of_an_unknown_board_are_refused() -> None:
    with pytest.raises(PlacementError, match=r"bad_lines names board 'board9'"):
        resolve_placement(spec([{"layer": "a", "tiles": [{}]}], {"board9": {"rows": [0]}}), {"a": (2, 2)},
                          {"board0": (16, 8)})  # fmt: skip


def test_a_network_that_does_not_fit_fails_before_any_pulse(emulator_process: EmulatorFactory, tmp_path: Path) -> None:
    """The whole run is refused at placement: the board's conductances are exactly as before."""
    emulator = emulator_process(preset="ideal", extra=("--rows", "32", "--cols", "8"))
    with open_board(emulator.resource) as probe:
        before = probe.read_map()
    network = {"input_shape": [8, 8], "n_classes": 10, "layers": [{"type": "flatten"}, {"type": "dense", "out": 10}]}
    config = TrainConfig(network=network, dataset="digits", boards={"board0": emulator.resource}, updates=2)
    path = tmp_path / "refused.h5"
    with pytest.raises(PlacementError, match=r"layer 'dense1' \(64 x 10 weights\) does not fit"):  # noqa: SIM117
        with RunFile(path, procedure="train", config=config.model_dump(mode="json"), show_progress=False) as run:
            run_training(config, run)
    with open_board(emulator.resource) as probe:
        after = probe.read_map()
    assert np.array_equal(before, after)


# ---------------------------------------------------------------------------- tiled products on a board


def test_split_tiles_sum_to_the_whole_product(board: Board) -> None:
    """40 inputs on a 32-row board: tiles of 16, 16 and 8 inputs whose partial sums add up."""
    shapes = {"a": (40, 4)}
    placement = resolve_placement(auto_place(shapes, {"board0": board.shape}), shapes, {"board0": board.shape})
    assert [t.inputs.stop - t.inputs.start for t in placement.tiles["a"]] == [16, 16, 8]
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (30, 40))
    for column_gain in (False, True):
        backend = ArrayBackend({"board0": board}, placement, column_gain=column_gain)
        program(backend, {"a": rng.uniform(-1, 1, shapes["a"])})
        w = backend.weights("a")
        assert np.abs(w).max() > 0.5  # really programmed, not the fresh all-zero array
        assert relative_error(backend.matmul("a", x), x @ w) < 5e-3


def test_both_layouts_compute_the_same_product() -> None:
    shapes = {"a": (12, 5)}
    rng = np.random.default_rng(4)
    weights = {"a": rng.uniform(-1, 1, shapes["a"])}
    x = rng.uniform(-1, 1, (25, 12))
    products, read_weights = {}, {}
    layouts: tuple[Layout, ...] = ("paired-rows", "row-blocks")
    for layout in layouts:
        with open_board(IDEAL_32x16) as fresh:
            shape = {"board0": fresh.shape}
            placement = resolve_placement(auto_place(shapes, shape, layout=layout), shapes, shape)
            backend = ArrayBackend({"board0": fresh}, placement)
            program(backend, weights)
            read_weights[layout] = backend.weights("a")
            products[layout] = backend.matmul("a", x)
            assert relative_error(products[layout], x @ read_weights[layout]) < 5e-3
    assert np.abs(read_weights["paired-rows"] - weights["a"]).max() < 0.1  # 2 devices within 2 uS: 0.04
    assert np.abs(read_weights["row-blocks"] - weights["a"]).max() < 0.1
    # The two products differ only by what the two programmings left between the weights.
    bound = np.abs(x) @ np.abs(read_weights["row-blocks"] - read_weights["paired-rows"])
    slack = 5e-3 * np.abs(products["paired-rows"]).max()
    assert (np.abs(products["row-blocks"] - products["paired-rows"]) <= bound + slack).all()


@pytest.mark.parametrize("layout", ["paired-rows", "row-blocks"])
def test_remapping_moves_the_large_weights_off_defective_pairs_on_the_same_devices(layout: Layout) -> None:
    shapes = {"a": (10, 6), "b": (4, 3)}
    boards = {"board0": (32, 16)}
    rng = np.random.default_rng(5)
    broken = rng.random((32, 16)) < 0.12
    weights = {
        layer: rng.normal(size=shape) * rng.uniform(0.1, 2.0, size=(shape[0], 1)) for layer, shape in shapes.items()
    }
    placement = resolve_placement(auto_place(shapes, boards, layout=layout), shapes, boards)

    def on_broken(p: Placement) -> float:
        total = 0.0
        for tiles in p.tiles.values():
            for tile in tiles:
                (bp, bm) = tile.pair(broken)
                total += float((weights[tile.layer][tile.inputs, tile.outputs] ** 2 * (bp | bm)).sum())
        return total

    remapped = resolve_placement(remap_for_weights(placement, weights, {"board0": broken}), shapes, boards)
    assert on_broken(remapped) < 0.5 * on_broken(placement)
    for layer in shapes:  # the same devices, only reassigned
        assert np.array_equal(remapped.used_mask("board0"), placement.used_mask("board0"))
        for old, new in zip(placement.tiles[layer], remapped.tiles[layer], strict=True):
            assert (old.inputs, old.outputs) == (new.inputs, new.outputs)
            assert sorted(new.plus_rows.tolist() + new.minus_rows.tolist()) == sorted(
                old.plus_rows.tolist() + old.minus_rows.tolist()
            )
    unchanged = resolve_placement(remap_for_weights(placement, weights, {}), shapes, boards)  # no defects: no move
    for layer in shapes:
        for old, new in zip(placement.tiles[layer], unchanged.tiles[layer], strict=True):
            assert np.array_equal(old.plus_rows, new.plus_rows) and np.array_equal(old.minus_rows, new.minus_rows)
            assert np.array_equal(old.cols, new.cols)


def test_defect_aware_placement_puts_a_tiles_columns_side_by_side_where_the_defects_allow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A VMM's rectangle spans a tile's columns: adjacent columns keep it as narrow as the outputs (when
    asked for: off by default)."""
    monkeypatch.setattr(mapping, "CONTIGUOUS_DEFECT_ALLOWANCE", 0.0)
    defective = np.zeros((32, 16), dtype=bool)
    defective[0, [1, 3]] = True  # columns 0, 2, 4 are as clean as 6, 7, 8 and come first
    defective[[0, 1], 5] = True
    boards = {"board0": (32, 16)}
    placement = resolve_placement(auto_place({"a": (4, 3)}, boards, defective={"board0": defective}), {"a": (4, 3)},
                                  boards)  # fmt: skip
    (tile,) = placement.tiles["a"]
    assert tile.cols.tolist() == [6, 7, 8]
    # Every window of adjacent columns far more defective than the best columns: scattered ones.
    striped = np.zeros((32, 16), dtype=bool)
    striped[:, 1::2] = True
    placement = resolve_placement(auto_place({"a": (4, 3)}, {"board0": (32, 16)}, defective={"board0": striped}),
                                  {"a": (4, 3)}, {"board0": (32, 16)})  # fmt: skip
    (tile,) = placement.tiles["a"]
    assert tile.cols.tolist() == [0, 2, 4] and not striped[np.ix_(tile.plus_rows, tile.cols)].any()
