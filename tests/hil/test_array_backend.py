"""The arrays as the network's matmul backend: VMM products, round trips, pruning, column gain."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from drivers import Board, PulseKind, codec, open_board
from hil.array_backend import ArrayBackend, _row_abs_max
from hil.mapping import Tile, auto_place, resolve_placement
from hil.nn import ExactBackend, Network, get_architecture
from hil.training.config import TrainConfig
from hil.training.run import Hardware, program_weights
from hil.updates import GateCodedConfig, GateCodedUpdate

FloatArray = npt.NDArray[np.float64]
IDEAL_32x16 = "emulator://?preset=ideal&seed=1&rows=32&cols=16&line_resistance=0&read_noise=0"
SHAPES = {"a": (40, 4), "b": (6, 3)}  # "a" needs three tiles on 32 rows


@pytest.fixture
def board() -> Iterator[Board]:
    with open_board(IDEAL_32x16) as opened:
        yield opened


def backend_for(board: Board, shapes: dict[str, tuple[int, int]], **options: Any) -> ArrayBackend:
    boards = {"board0": board.shape}
    return ArrayBackend({"board0": board}, resolve_placement(auto_place(shapes, boards), shapes, boards), **options)


def program(backend: ArrayBackend, weights: dict[str, FloatArray], tolerance: float = 2e-6) -> None:
    """Write ``weights`` by write-verify (the run's own initial programming) and read everything back."""
    program_weights(TrainConfig(), Hardware(backend, GateCodedUpdate(GateCodedConfig()), {}), weights, tolerance)


def random_weights(shapes: dict[str, tuple[int, int]], seed: int = 0) -> dict[str, FloatArray]:
    rng = np.random.default_rng(seed)
    return {layer: rng.uniform(-1, 1, shape) for layer, shape in shapes.items()}


def close_to(measured: FloatArray, expected: FloatArray, relative: float = 5e-3) -> bool:
    """Equal within ``relative`` of the largest expected magnitude (ADC and DAC precision)."""
    return bool(np.abs(measured - expected).max() <= relative * np.abs(expected).max())


@pytest.fixture
def programmed(board: Board) -> ArrayBackend:
    backend = backend_for(board, SHAPES)
    program(backend, random_weights(SHAPES))
    return backend


def count_round_trips(board: Board, monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every command the host sends to ``board`` from now on (one per round trip)."""
    sent: list[bytes] = []
    transport = board._transport
    write = transport.write

    def counting(data: bytes) -> None:
        sent.append(codec.unframe(data))
        write(data)

    monkeypatch.setattr(transport, "write", counting)
    return sent


def test_matmul_is_the_product_with_the_read_back_weights(programmed: ArrayBackend) -> None:
    intended = random_weights(SHAPES)
    rng = np.random.default_rng(1)
    for layer, (fan_in, _) in SHAPES.items():
        w = programmed.weights(layer)
        assert np.abs(w - intended[layer]).max() < 0.05  # write-verify put 2 devices within 2 uS each
        for x in (rng.uniform(-1, 1, (20, fan_in)), rng.uniform(0, 1, (20, fan_in))):
            assert close_to(programmed.matmul(layer, x), x @ w), layer


def test_matmul_handles_zero_and_tiny_inputs(programmed: ArrayBackend) -> None:
    w = programmed.weights("b")
    x = np.zeros((3, 6))
    x[1, 2] = 1e-3  # each vector is scaled to full voltage: a tiny input loses no precision
    x[2] = np.linspace(-1, 1, 6)
    out = programmed.matmul("b", x)
    assert np.array_equal(out[0], np.zeros(3))
    assert close_to(out[1], x[1] @ w)
    assert close_to(out[2], x[2] @ w)


def test_weights_come_from_the_read_back_conductances(board: Board, programmed: ArrayBackend) -> None:
    before = programmed.weights("b")
    (tile,) = programmed.placement.tiles["b"]
    row, col = int(tile.plus_rows[1]), int(tile.cols[2])
    assert np.array_equal(programmed.weights("b"), before)  # nothing read: nothing changes
    board.apply_pulses(PulseKind.SET, 2.5, 2.5, 1e-6, mask=_single(board.shape, row, col))
    assert np.array_equal(programmed.weights("b"), before)  # the host only knows what it read
    programmed.read_back()
    after = programmed.weights("b")
    changed = np.argwhere(after != before)
    assert changed.tolist() == [[1, 2]]
    g = programmed.conductance["board0"]
    assert after[1, 2] == pytest.approx((g[row, col] - g[tile.minus_rows[1], col]) / programmed.g_unit)
    assert after[1, 2] > before[1, 2] + 0.5  # a SET at the top gate raised G+ well above its old level


def _single(shape: tuple[int, int], row: int, col: int) -> npt.NDArray[np.bool_]:
    mask = np.zeros(shape, dtype=bool)
    mask[row, col] = True
    return mask


def test_one_vmm_round_trip_per_tile_per_batch(
    board: Board, programmed: ArrayBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = count_round_trips(board, monkeypatch)
    x = np.random.default_rng(2).uniform(-1, 1, (100, 40))
    programmed.matmul("a", x)
    assert len(programmed.placement.tiles["a"]) == 3
    assert len(sent) == 3
    assert all(data.startswith((b"VMM?", b"VMM:CODE?")) for data in sent)  # float32 or compact form
    assert programmed.vmm_calls == 3


def test_a_cnn_batch_is_one_round_trip_per_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Conv kernels unrolled into columns: all 64 positions of 20 images go in one VMM batch."""
    network = Network(get_architecture("cnn"))
    with open_board("emulator://?preset=ideal&seed=1") as board:
        backend = backend_for(board, network.spec.weight_shapes())
        weights = network.init_weights(np.random.default_rng(0))
        program(backend, weights, tolerance=4e-6)
        sent = count_round_trips(board, monkeypatch)
        x = np.random.default_rng(1).uniform(0, 1, (20, 8, 8))
        logits = network.forward(x, backend, train=False)
        commands = list(sent)  # (closing the board sends more)
    assert len(commands) == 3  # conv1, conv2, dense1: one tile each
    assert all(data.startswith((b"VMM?", b"VMM:CODE?")) for data in commands)  # float32 or compact form
    # 20 images x 64 positions of 9 kernel pairs, 15 kernels, wherever the placement put them
    assert re.match(rb"VMM(:CODE)?\? 0,\d+,18,15,1280,", commands[0])
    expected = network.forward(x, ExactBackend({layer: backend.weights(layer) for layer in weights}), train=False)
    assert close_to(logits, expected, relative=2e-2)


def test_pruned_pairs_read_zero_and_their_current_is_cancelled(board: Board, programmed: ArrayBackend) -> None:
    (tile,) = programmed.placement.tiles["b"]
    # A "shorted" G+ device: driven to the top of the window, it would dominate its pair's weight.
    row, col = int(tile.plus_rows[0]), int(tile.cols[1])
    board.apply_pulses(PulseKind.SET, 2.5, 2.5, 1e-6, mask=_single(board.shape, row, col))
    programmed.read_back()
    unpruned = programmed.weights("b")
    assert programmed.conductance["board0"][row, col] > 350e-6
    shorted = _single(board.shape, row, col)
    programmed.stuck_high["board0"] = shorted

    pruned = programmed.weights("b")
    assert pruned[0, 1] == 0.0
    others = np.ones(pruned.shape, dtype=bool)
    others[0, 1] = False
    assert np.array_equal(pruned[others], unpruned[others])
    x = np.random.default_rng(3).uniform(0, 1, (30, 6))
    out = programmed.matmul("b", x)
    assert close_to(out, x @ pruned)
    assert not close_to(out, x @ unpruned, relative=5e-2)  # the shorted device's current is gone


def test_a_pair_with_one_dead_device_weighs_its_partner_against_the_reference(
    board: Board, programmed: ArrayBackend
) -> None:
    (tile,) = programmed.placement.tiles["b"]
    stuck_low = np.zeros(board.shape, dtype=bool)
    stuck_low[tile.minus_rows[2], tile.cols[0]] = True  # G- dead: G+ alone against the reference
    stuck_low[tile.plus_rows[3], tile.cols[2]] = True  # G+ dead: G- alone
    stuck_low[tile.plus_rows[4], tile.cols[1]] = True  # both dead: no weight
    stuck_low[tile.minus_rows[4], tile.cols[1]] = True
    programmed.stuck_low["board0"] = stuck_low
    programmed.g_reference["board0"] = g_ref = 250e-6
    g = programmed.conductance["board0"]

    w = programmed.weights("b")
    assert w[2, 0] == pytest.approx((g[tile.plus_rows[2], tile.cols[0]] - g_ref) / programmed.g_unit)
    assert w[3, 2] == pytest.approx((g_ref - g[tile.minus_rows[3], tile.cols[2]]) / programmed.g_unit)
    assert w[4, 1] == 0.0
    x = np.random.default_rng(4).uniform(-1, 1, (30, 6))
    assert close_to(programmed.matmul("b", x), x @ w)


def test_column_gain_undoes_a_uniform_scale_error(
    board: Board, programmed: ArrayBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A column sum that falls 15 % short (wire drop, a TIA gain error) is fitted away per column."""
    vmm = board.vmm
    monkeypatch.setattr(board, "vmm", lambda *args, **kwargs: 0.85 * vmm(*args, **kwargs))
    rng = np.random.default_rng(5)
    w = programmed.weights("a")
    x = rng.uniform(-1, 1, (50, 40))
    assert close_to(programmed.matmul("a", x), x @ w, relative=1e-2)
    assert all(np.allclose(gain, 0.85, atol=5e-3) for gain in programmed.gains.values())

    uncorrected = ArrayBackend(programmed.boards, programmed.placement, column_gain=False)
    uncorrected.conductance = programmed.conductance
    assert close_to(uncorrected.matmul("a", x), 0.85 * (x @ w), relative=1e-2)
    x_next = rng.uniform(-1, 1, (50, 40))
    assert close_to(programmed.matmul("a", x_next), x_next @ w, relative=1e-2)


def test_column_gain_is_fitted_per_column(
    board: Board, programmed: ArrayBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    vmm = board.vmm
    per_column = np.linspace(0.7, 1.1, board.shape[1])

    def uneven(
        v_rows: FloatArray, region: Any = None, columns: Any = None, rows: Any = None, narrow: bool = False
    ) -> FloatArray:
        out = vmm(v_rows, region, columns, rows) * per_column[region.col0 : region.col0 + region.ncols]
        return out[:, np.unique(columns)] if narrow else out

    monkeypatch.setattr(board, "vmm", uneven)
    w = programmed.weights("a")
    x = np.random.default_rng(6).uniform(-1, 1, (50, 40))
    assert close_to(programmed.matmul("a", x), x @ w, relative=1e-2)
    for index, tile in enumerate(programmed.placement.tiles["a"]):
        assert np.allclose(programmed.gains[("a", index)], per_column[tile.cols], atol=5e-3)


def test_a_layer_wider_than_a_board_is_tiled_across_boards() -> None:
    """The 64-54-10 MLP on four 128 x 16 arrays (the Tsinghua size): outputs cut across boards."""
    shapes = get_architecture("mlp").weight_shapes()
    resources = [f"emulator://?preset=ideal&seed={k}&rows=128&cols=16&line_resistance=0&read_noise=0" for k in range(4)]
    with contextlib.ExitStack() as stack:
        boards = {f"array{k}": stack.enter_context(open_board(r)) for k, r in enumerate(resources)}
        board_shapes = {name: b.shape for name, b in boards.items()}
        placement = resolve_placement(auto_place(shapes, board_shapes), shapes, board_shapes)
        assert {t.board for t in placement.tiles["dense1"]} == {"array0", "array1", "array2", "array3"}
        backend = ArrayBackend(boards, placement)
        weights = random_weights(shapes, seed=3)
        program(backend, weights)
        x = np.random.default_rng(4).uniform(0, 1, (20, 64))
        for layer in shapes:
            inputs = x if layer == "dense1" else x[:, :54]
            assert close_to(backend.matmul(layer, inputs), inputs @ backend.weights(layer))
            assert np.abs(backend.weights(layer) - weights[layer]).max() < 0.1


def test_weights_follow_every_read_back_and_defect_map(programmed: ArrayBackend) -> None:
    # The backend keeps per-tile weights and pair roles between read-backs; a new read-back or a
    # new defect map must be seen at once.
    layer = next(iter(programmed.placement.tiles))
    before = programmed.weights(layer).copy()
    tile = programmed.placement.tiles[layer][0]
    board = programmed.boards[tile.board]
    mask = np.zeros(board.shape, dtype=bool)
    mask[tile.plus_rows[0], tile.cols[0]] = True
    board.apply_pulses(PulseKind.RESET, 1.8, 5.0, 1e-6, mask=mask)
    programmed.read_back()
    after = programmed.weights(layer)
    assert after[0, 0] < before[0, 0] - 1.0  # the RESET device's weight fell by more than a unit
    expected = (tile.pair(programmed.conductance[tile.board])[0] - tile.pair(programmed.conductance[tile.board])[1])
    np.testing.assert_array_equal(after[tile.inputs, tile.outputs], expected / programmed.g_unit)
    dead = np.zeros(board.shape, dtype=bool)
    dead[tile.plus_rows[1], tile.cols[1]] = True
    programmed.stuck_high[tile.board] = dead
    assert programmed.weights(layer)[1, 1] == 0.0  # a shorted pair is pruned as soon as it is known


def test_a_layer_with_its_own_g_unit_holds_its_weights_in_that_many_siemens(board: Board) -> None:
    shapes = {"a": (6, 3), "b": (4, 2)}
    backend = backend_for(board, shapes, layer_g_unit={"a": 200e-6})
    weights = {"a": np.full((6, 3), 0.25), "b": np.full((4, 2), 0.25)}
    program(backend, weights)
    for layer in shapes:
        (tile,) = backend.placement.tiles[layer]
        g_plus, g_minus = tile.pair(backend.conductance["board0"])
        unit = 200e-6 if layer == "a" else 100e-6
        assert np.allclose(g_plus - g_minus, 0.25 * unit, atol=5e-6)  # the conductances differ by w * unit
        assert np.allclose(backend.weights(layer), 0.25, atol=0.05)  # and read back as the same weights
        x = np.random.default_rng(0).uniform(0, 1, (5, shapes[layer][0]))
        assert close_to(backend.matmul(layer, x), x @ backend.weights(layer), relative=0.02)


@pytest.mark.parametrize("shape", [(50, 1), (6400, 9), (300, 16), (300, 17), (64, 60), (3, 128), (0, 9), (5, 0)])
def test_a_rows_largest_magnitude_is_numpys_on_every_width(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(shape[1])
    x = rng.normal(size=shape) * 10.0 ** rng.uniform(-5, 5, size=shape)
    if x.size:
        x[0, -1] = np.nan  # NaN wins, as in numpy's max
        x[-1, :] = -0.0
    if not x.shape[1]:
        with pytest.raises(ValueError):
            _row_abs_max(x)
        return
    found = _row_abs_max(x)
    expected = np.abs(x).max(axis=1, keepdims=True)
    assert found.shape == expected.shape and found.tobytes() == expected.tobytes()


class DriveRecorder:
    """A board that keeps the drives it is sent and answers zeros."""

    def __init__(self) -> None:
        self.drives: list[npt.NDArray[np.float32]] = []

    def vmm(self, drive: Any, region: Any, columns: Any = None, rows: Any = None, narrow: bool = False) -> FloatArray:
        self.drives.append(np.array(drive))
        return np.zeros((len(drive), len(columns)))


@pytest.mark.parametrize(
    ("plus_rows", "minus_rows", "paired"),
    [
        ([3, 5, 7, 9], [4, 6, 8, 10], 1),  # G+ then G- for each input, inputs in order
        ([4, 6, 8, 10], [3, 5, 7, 9], -1),  # G- first
        ([3, 6, 7, 10], [4, 5, 8, 9], 0),  # the order changes between pairs
        ([5, 3, 7, 9], [6, 4, 8, 10], 0),  # inputs out of row order
        ([3, 4, 5, 6], [9, 10, 11, 12], 0),  # the G- rows in a block of their own
        ([3, 6, 9, 12], [4, 7, 10, 13], 1),  # undriven rows between the pairs
    ],
)
def test_the_drive_of_paired_rows_is_the_gathered_and_signed_one(plus_rows: list[int], minus_rows: list[int],
                                                                 paired: int) -> None:  # fmt: skip
    tile = Tile("dense", "b", slice(0, 4), slice(0, 2), np.array(plus_rows), np.array(minus_rows), np.array([1, 2]))
    board = DriveRecorder()
    backend = ArrayBackend({"b": board}, None)  # type: ignore[arg-type]  # the drive needs no placement
    volts = np.random.default_rng(0).uniform(-0.2, 0.2, (50, 4)).astype(np.float32)
    volts[0] = [0.0, -0.0, np.inf, -np.inf]
    backend._tile_currents(tile, volts)
    plan = backend._tile_drive(tile)
    assert plan.paired == paired
    expected = volts.take(plan.source, axis=1) * plan.sign  # every row driven: its input, signed
    assert board.drives[0].tobytes() == expected.tobytes()
    row0 = min(plus_rows + minus_rows)
    assert (expected[:, np.searchsorted(plan.rows, np.array(plus_rows) - row0)] == volts).all()
    assert (expected[1:, np.searchsorted(plan.rows, np.array(minus_rows) - row0)] == -volts[1:]).all()


def test_single_device_weights_follow_the_reference_and_every_read_back(board: Board, programmed: ArrayBackend) -> None:
    """The host's corrected weights are kept between read-backs: a new reference, read-back or VMM
    read-back is seen at once."""
    (tile,) = programmed.placement.tiles["b"]
    stuck_low = np.zeros(board.shape, dtype=bool)
    stuck_low[tile.minus_rows[2], tile.cols[0]] = True  # G- dead: G+ alone against the reference
    programmed.stuck_low["board0"] = stuck_low
    programmed.g_reference["board0"] = 250e-6
    g = programmed.conductance["board0"]
    before = programmed.weights("b")[2, 0]
    assert before == pytest.approx((g[tile.plus_rows[2], tile.cols[0]] - 250e-6) / programmed.g_unit)
    programmed.g_reference["board0"] = 150e-6
    assert programmed.weights("b")[2, 0] == pytest.approx(before + 100e-6 / programmed.g_unit)
    mask = np.zeros(board.shape, dtype=bool)
    mask[tile.plus_rows[2], tile.cols[0]] = True
    board.apply_pulses(PulseKind.RESET, 1.8, 5.0, 1e-6, mask=mask)
    programmed.read_back()
    g_plus = programmed.conductance["board0"][tile.plus_rows[2], tile.cols[0]]
    assert programmed.weights("b")[2, 0] == pytest.approx((g_plus - 150e-6) / programmed.g_unit)
    programmed.vmm_readback = True
    programmed.read_back()  # the effective weights and their attenuation now shape the correction
    fresh = ArrayBackend(programmed.boards, programmed.placement, vmm_readback=True)
    fresh.conductance, fresh._effective = programmed.conductance, programmed._effective
    fresh.stuck_low, fresh.g_reference = programmed.stuck_low, programmed.g_reference
    np.testing.assert_array_equal(programmed.weights("b"), fresh.weights("b"))
