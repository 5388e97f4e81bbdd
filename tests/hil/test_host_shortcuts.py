"""The host path's shortcuts give the numbers of the straightforward forms they replace, bit for bit.

Each test holds a shortcut (cached flat indices for a tile's blocks, one epoch's permutation kept,
both column-gain sums in one reduction, the drive built from the inputs in one pass, the one-hot
read-back batch kept) against the form it replaced, written out here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from hil.array_backend import GAIN_SMOOTHING, ArrayBackend, _drive
from hil.mapping import Tile
from hil.training.loop import Schedule

FloatArray = npt.NDArray[np.float64]

LAYOUTS = {
    "paired": ([3, 5, 7, 9], [4, 6, 8, 10], [1, 2, 6]),
    "g-minus first": ([4, 6, 8, 10], [3, 5, 7, 9], [0, 5]),
    "row blocks, columns out of order": ([0, 1, 2, 3], [8, 9, 10, 11], [6, 2, 4]),
    "scattered": ([11, 0, 7, 2], [5, 9, 1, 4], [3, 0, 7, 1]),
}


def tile_of(layout: str) -> Tile:
    plus, minus, cols = LAYOUTS[layout]
    return Tile("dense", "b", slice(0, 4), slice(0, len(cols)), np.array(plus), np.array(minus), np.array(cols))


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_a_tiles_blocks_are_the_np_ix_ones_in_every_kind_of_map(layout: str) -> None:
    tile = tile_of(layout)
    rng = np.random.default_rng(0)
    maps: list[npt.NDArray[Any]] = [
        rng.normal(size=(12, 8)),  # a board's map
        np.asfortranarray(rng.normal(size=(12, 8))),  # column-major
        rng.normal(size=(12, 16))[:, ::2],  # a view with gaps
        rng.random((12, 8)) < 0.5,  # a defect mask
        rng.normal(size=(13, 9)),  # a map of another shape: its own indices
    ]
    for board_map in maps:
        plus, minus = tile.pair(board_map)
        assert plus.dtype == board_map.dtype
        assert np.array_equal(plus, board_map[np.ix_(tile.plus_rows, tile.cols)])
        assert np.array_equal(minus, board_map[np.ix_(tile.minus_rows, tile.cols)])
        plus[...] = not plus.flat[0] if plus.dtype == bool else 1e9  # copies: the map keeps its values
        assert not (board_map == 1e9).any() or board_map.dtype == bool


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_writing_a_tiles_blocks_is_the_np_ix_assignment(layout: str) -> None:
    tile = tile_of(layout)
    rng = np.random.default_rng(1)
    n_in, n_out = len(tile.plus_rows), len(tile.cols)
    values: list[tuple[Any, Any]] = [
        (rng.normal(size=(n_in, n_out)), rng.normal(size=(n_in, n_out))),
        (0.5, -0.25),  # scalars broadcast
        (rng.normal(size=n_out), rng.normal(size=(n_in, 1))),  # rows and columns broadcast
    ]
    for make in (lambda: rng.normal(size=(12, 8)), lambda: np.asfortranarray(rng.normal(size=(12, 8))),
                 lambda: rng.normal(size=(12, 16))[:, ::2]):  # fmt: skip
        for plus, minus in values:
            board_map = make()
            expected = board_map.copy()
            expected[np.ix_(tile.plus_rows, tile.cols)] = plus
            expected[np.ix_(tile.minus_rows, tile.cols)] = minus
            tile.put(board_map, plus, minus)
            assert board_map.tobytes() == np.ascontiguousarray(expected).tobytes()
    with pytest.raises(ValueError):  # a block of the wrong shape is refused, not repeated
        tile.put(np.zeros((12, 8)), np.zeros(n_in + 1), 0.0)


def test_a_map_the_tile_does_not_fit_is_refused() -> None:
    tile = tile_of("scattered")  # rows up to 11, columns up to 7
    for shape in ((12, 7), (11, 8)):  # one column short (a flat index would land on the next row), one row short
        with pytest.raises(IndexError, match="does not fit"):
            tile.pair(np.zeros(shape))
    with pytest.raises(ValueError, match="2 dimensions"):
        tile.pair(np.zeros(96))


def test_an_epochs_permutation_is_drawn_once_and_gives_every_batch_as_before() -> None:
    schedule = Schedule(1438, 50, seed=3)

    def drawn(update: int, seed: int = 3) -> tuple[int, npt.NDArray[np.int64]]:
        epoch, index = divmod(update, 1438 // 50)
        order = np.random.default_rng([seed, epoch]).permutation(1438)
        return epoch, order[index * 50 : (index + 1) * 50].astype(np.int64)

    for update in [0, 1, 27, 28, 29, 5, 60, 0, 28]:  # epochs forward, back and forward again
        epoch, batch = schedule.batch(update)
        assert (epoch, batch.tolist()) == (drawn(update)[0], drawn(update)[1].tolist())
    batch = schedule.batch(1)[1]
    batch[:] = -1  # the caller's copy: the kept permutation does not change
    assert schedule.batch(1)[1].tolist() == drawn(1)[1].tolist()
    schedule.seed = 4  # another seed: another permutation
    assert schedule.batch(1)[1].tolist() == drawn(1, seed=4)[1].tolist()


def column_gain_as_before(backend: ArrayBackend, key: tuple[str, int], expected: FloatArray,
                          measured: FloatArray) -> FloatArray:  # fmt: skip
    """The fit with each sum by itself (the form before the shortcut)."""
    energy = (expected**2).sum(axis=0)
    fitted = np.divide((measured * expected).sum(axis=0), energy, out=np.ones_like(energy), where=energy > 0)
    usable = (energy > 0) & (fitted > 0.2) & (fitted < 5.0)
    previous = backend.gains.get(key)
    if previous is None:
        return np.asarray(np.where(usable, fitted, 1.0))
    return np.asarray(np.where(usable, GAIN_SMOOTHING * previous + (1 - GAIN_SMOOTHING) * fitted, previous))


@pytest.mark.parametrize("shape", [(6400, 15), (6400, 4), (100, 10), (50, 54), (3, 1)])
def test_the_column_gains_two_sums_in_one_reduction_are_each_sum_alone(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(shape[1])
    # Values over twenty decades, so any other order of the additions shows in the last bits.
    expected = rng.normal(size=shape) * 10.0 ** rng.uniform(-10, 10, size=shape)
    expected[:, 0] = 0.0  # a column with no energy keeps its gain
    measured = expected * rng.normal(1.0, 0.3, size=shape)
    backend = ArrayBackend({}, None)  # type: ignore[arg-type]  # the fit needs no boards
    for _ in range(3):  # the first fit, then two smoothed ones
        before = column_gain_as_before(backend, ("dense", 0), expected, measured)
        found = backend._column_gain(("dense", 0), expected, measured)
        assert found.tobytes() == before.tobytes()
        measured = measured * rng.normal(1.0, 0.05, size=shape)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_the_drive_from_the_inputs_is_the_rounded_volts_gathered_and_signed(layout: str) -> None:
    tile = tile_of(layout)
    backend = ArrayBackend({}, None)  # type: ignore[arg-type]  # the drive needs no placement
    plan = backend._tile_drive(tile)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 4)) * 10.0 ** rng.uniform(-3, 3, size=(40, 4))
    x[0] = [0.0, -0.0, np.nan, -np.nan]  # signed zeros and NaNs keep their sign bits as before
    x[1] = [np.inf, -np.inf, 1e-300, -1e300]
    to_volts = 0.2 / rng.uniform(0.5, 2.0, size=(40, 1))
    with np.errstate(invalid="ignore", over="ignore"):  # 1e300 is inf in float32, as on the wire
        volts = (x * to_volts).astype(np.float32)  # the volts as a float64 product rounded once
        expected = volts.take(plan.source, axis=1) * plan.sign
        found = _drive(plan, x, to_volts)
        given = _drive(plan, volts)
    assert found.dtype == np.float32 and found.tobytes() == expected.tobytes()
    assert given.tobytes() == expected.tobytes()  # volts given: the same drive


def test_the_read_backs_one_hot_batch_is_made_once_per_size_and_level() -> None:
    backend = ArrayBackend({}, None)  # type: ignore[arg-type]
    first = backend._unit_inputs(5)
    assert first.tobytes() == (np.full(5, 0.2) * np.eye(5)).tobytes()
    assert backend._unit_inputs(5) is first and not first.flags.writeable
    backend.v_input = 0.1
    assert backend._unit_inputs(5).tobytes() == (np.full(5, 0.1) * np.eye(5)).tobytes()
    assert backend._unit_inputs(3).shape == (3, 3)


class LinearBoard:
    """An ideal board: each column's current is the drive times the conductances of its rows, and
    row 0 of every batch answers -0.0 (what an all-zero input's currents can round to)."""

    def __init__(self, g: FloatArray) -> None:
        self.g = g
        self.shape = g.shape

    def vmm(self, drive: Any, region: Any, columns: Any = None, rows: Any = None, narrow: bool = False) -> FloatArray:
        block = self.g[region.row0 + np.asarray(rows)][:, region.col0 + np.asarray(columns)]
        currents = np.asarray(drive, dtype=np.float64) @ block
        currents[0] = -0.0
        return currents

    def read_map(self, v_read: float = 0.2) -> FloatArray:
        return self.g.copy()


class ZeroedSumBackend(ArrayBackend):
    """Adds every tile's result to a zeroed sum (its currents come back column-major, which the
    one-tile shortcut leaves to the general path): the form before the shortcut."""

    def _send(self, tile: Tile, plan: Any, drive: Any) -> FloatArray:
        return np.asfortranarray(super()._send(tile, plan, drive))


def linear_backend(g: FloatArray, kind: type[ArrayBackend] = ArrayBackend, column_gain: bool = True) -> ArrayBackend:
    from hil.mapping import LayerPlacementSpec, PlacementSpec, TileSpec, resolve_placement

    spec = PlacementSpec(layers=[LayerPlacementSpec(layer="d", tiles=[TileSpec(board="b")])])
    placement = resolve_placement(spec, {"d": (4, 3)}, {"b": g.shape})
    backend = kind({"b": LinearBoard(g)}, placement, column_gain=column_gain)  # type: ignore[dict-item]
    backend.read_back()
    return backend


def test_a_layer_on_one_tile_gives_the_zeroed_sums_numbers() -> None:
    """One tile for all of a layer's outputs returns its own result (plus 0.0), not a zeroed sum's:
    the same numbers, -0.0 included."""
    rng = np.random.default_rng(5)
    g = rng.uniform(20e-6, 120e-6, (8, 3))
    x = rng.normal(size=(30, 4))
    x[0] = 0.0  # its currents come back as -0.0
    whole, summed = linear_backend(g), linear_backend(g, ZeroedSumBackend)
    for backend in (whole, summed):  # a defective pair: the host's replacement is in the sum too
        backend.stuck_low = {"b": np.zeros(g.shape, dtype=bool)}
        backend.stuck_low["b"][1, 0] = True
        backend.g_reference = {"b": 50e-6}
    for _ in range(2):  # the column gains' first fit and a smoothed one
        found, expected = whole.matmul("d", x), summed.matmul("d", x)
        assert found.flags.c_contiguous and expected.flags.c_contiguous  # row-major, whatever the board answers
        assert found.tobytes() == expected.tobytes()
        assert not np.signbit(found[0]).any()  # 0.0 + -0.0 is +0.0


def test_the_hosts_replacement_follows_every_change_of_the_wanted_weights() -> None:
    """The difference the host takes out of each VMM is kept between read-backs; a new reference,
    defect map or read-back is seen at once (as by a backend that kept nothing)."""
    rng = np.random.default_rng(6)
    g = rng.uniform(20e-6, 120e-6, (8, 3))
    x = rng.normal(size=(10, 4))
    backend = linear_backend(g, column_gain=False)
    low = np.zeros(g.shape, dtype=bool)
    low[1, 0] = True
    changes = [
        lambda b: setattr(b, "stuck_low", {"b": low}),
        lambda b: setattr(b, "g_reference", {"b": 80e-6}),
        lambda b: setattr(b, "stuck_low", {"b": np.roll(low, 2, axis=0)}),
        lambda b: setattr(b.boards["b"], "g", b.boards["b"].g * 1.1) or b.read_back(),
    ]
    for change in changes:
        change(backend)
        fresh = ArrayBackend(backend.boards, backend.placement, column_gain=False)
        fresh.conductance, fresh.stuck_low = backend.conductance, backend.stuck_low
        fresh.g_reference = backend.g_reference
        assert backend.matmul("d", x).tobytes() == fresh.matmul("d", x).tobytes()
