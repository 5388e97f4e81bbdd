"""The arrays as a network's matmul backend: forward products are VMMs on the boards.

Inputs become row voltages scaled per vector so the largest magnitude is ``v_input`` (the
scale is digital and undone on the output, so it costs no precision beyond the ADC's); G+ rows
get +v and G- rows -v, so each column's current is ``sum_i v_i (G+ - G-)``. The backward pass
uses the conductances read back after the last update, never the intended ones.

The host knows which devices are defective and what they read, and corrects each VMM output
for them digitally (no extra round trip):

- a pair with a shorted (stuck-high) device, or with both devices dead, cannot hold a weight: its
  contribution is subtracted, the weight is pruned to 0 and the backward pass sees 0;
- a pair with one dead low device (stuck low or unformed) keeps its working device as a
  single-device weight against a digital reference: the dead device's current is replaced on the
  host by that of a device at ``g_reference``, so ``w = ±(G_working - g_reference) / g_unit``.
  The update rules then give the working device the pair's whole change.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from drivers import Board, Region
from hil.mapping import Placement, Tile

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

G_UNIT = 100e-6  # S per unit weight (Li 2018, Wang 2019)
GAIN_SMOOTHING = 0.8  # weight of the running column gain against one batch's fit
_FEW_COLUMNS = 16  # up to this many inputs a row's largest magnitude is found a column at a time


@dataclass(frozen=True)
class PairRoles:
    """Per pair of a tile (inputs x outputs): dead, or only one device working."""

    dead: BoolArray
    plus_only: BoolArray
    minus_only: BoolArray

    def any(self) -> bool:
        return bool(self.dead.any() or self.plus_only.any() or self.minus_only.any())


@dataclass(frozen=True)
class TileDrive:
    """How a tile's VMM is driven (fixed by the placement): its rectangle, which input drives each
    row the tile uses and with which sign (+1 on a G+ row, -1 on a G- row; the rectangle's other
    rows are held at 0 V), and its columns within the rectangle."""

    region: Region
    source: npt.NDArray[np.intp]
    sign: npt.NDArray[np.float32]
    columns: npt.NDArray[np.intp]
    rows: npt.NDArray[np.intp]
    """the rows of the rectangle the tile drives (ascending); ``source`` and ``sign`` are theirs"""
    order: npt.NDArray[np.intp] | None
    """where each of ``columns`` is among them sorted (the board's narrow reply is ascending);
    ``None`` when they are ascending already"""
    paired: int = 0
    """+1 when the driven rows are input 0's G+ and G- rows, then input 1's, and so on (``source``
    is each input twice, ``sign`` +1, -1 for each); -1 when the same with G- first; 0 otherwise"""


def _row_abs_max(x: FloatArray) -> FloatArray:
    """``max |x|`` of every row, ``(n, 1)``. numpy's reduction along short rows costs a call per row;
    on a few columns a pass per column is faster (conv1's 6,400 x 9 patches: a fifth of the time),
    on more one ``reduceat`` over the flat magnitudes (conv2's 6,400 x 60: 0.6x). The maximum is
    exact, so every way gives the same numbers (NaN included)."""
    rows, columns = x.shape
    if not rows or not columns:
        return np.asarray(np.abs(x).max(axis=1, keepdims=True))
    if columns <= _FEW_COLUMNS:
        largest = np.abs(x[:, 0])
        for column in range(1, columns):
            np.maximum(largest, np.abs(x[:, column]), out=largest)
        return largest[:, None]
    magnitude = np.abs(x).reshape(-1)
    return np.asarray(np.maximum.reduceat(magnitude, np.arange(0, magnitude.size, columns)))[:, None]


def _drive(plan: TileDrive, inputs: npt.NDArray[np.floating], to_volts: FloatArray | None = None
           ) -> npt.NDArray[np.float32]:  # fmt: skip
    """The float32 drive of a tile's driven rows (the wire format's precision: the Board would
    convert a float64 drive anyway): row r takes input ``source[r]`` (times ``to_volts``, one
    factor per batch row, when given) times ``sign[r]``.

    With ``to_volts``, the row voltages in float32 come straight from the float64 product: the same
    numbers as rounding a float64 copy, one pass and no float64 temporary. Only the rows the tile
    drives: the rectangle's other rows (3 in 4 of the demo CNN's first layer) are at 0 V, and the
    board is told so instead of sent a batch of zeros to scan.
    """
    rows, width = inputs.shape
    if plan.paired:
        # Each input's pair of rows side by side: the volts written straight into the G+ rows'
        # places (strided), the G- rows' from them times -1: the numbers the gather and sign
        # give, without the volts' own array and a pass over it.
        pairs = np.empty((rows, width, 2), dtype=np.float32)
        plus, minus = (0, 1) if plan.paired > 0 else (1, 0)
        if to_volts is None:
            pairs[:, :, plus] = inputs
        else:
            np.multiply(inputs, to_volts, out=pairs[:, :, plus], casting="same_kind")
        np.multiply(pairs[:, :, plus], np.float32(-1.0), out=pairs[:, :, minus])
        return pairs.reshape(rows, -1)
    if to_volts is None:
        volts = np.asarray(inputs, dtype=np.float32)
    else:
        volts = np.multiply(inputs, to_volts, out=np.empty(inputs.shape, dtype=np.float32), casting="same_kind")
    # take(), not [:, source]: indexing the second axis with an array gives a Fortran-ordered
    # copy, which every pass of the VMM path over the batch (row by row) then strides across.
    drive = volts.take(plan.source, axis=1)
    drive *= plan.sign
    return drive


class ArrayBackend:
    """Computes ``x @ W[layer]`` on the arrays a :class:`Placement` names."""

    def __init__(
        self,
        boards: Mapping[str, Board],
        placement: Placement,
        g_unit: float = G_UNIT,
        v_input: float = 0.2,
        column_gain: bool = True,
        vmm_readback: bool = False,
        layer_g_unit: Mapping[str, float] | None = None,
    ) -> None:
        self.boards = dict(boards)
        self.placement = placement
        self.g_unit = g_unit
        self.layer_g_unit = dict(layer_g_unit or {})  # layers whose weights use another g_unit, S
        self.v_input = v_input
        self.conductance: dict[str, FloatArray] = {}
        self.stuck_low: dict[str, BoolArray] = {}  # dead low devices (stuck low, unformed), per board
        self.stuck_high: dict[str, BoolArray] = {}  # shorted devices, per board
        self.g_reference: dict[str, float] = {}  # what a dead low device's partner is weighed against
        self.column_gain = column_gain
        self.gains: dict[tuple[str, int], FloatArray] = {}
        self.vmm_readback = vmm_readback
        # Per tile (by identity), after a VMM read-back: the weights the VMM computes, and per column
        # how much of a pair's conductance difference reaches its TIA (effective / read map).
        self._effective: dict[int, tuple[FloatArray, FloatArray]] = {}
        self.vmm_calls = 0
        # Per tile (by identity), what depends only on the last read-back or on the defect maps.
        self._weights_cache: dict[int, tuple[FloatArray, FloatArray]] = {}
        self._roles_cache: dict[int, tuple[BoolArray | None, BoolArray | None, PairRoles | None]] = {}
        self._drive_cache: dict[int, TileDrive] = {}
        self._unit_inputs_cache: dict[tuple[int, float], FloatArray] = {}
        # Per tile: what its wanted weights were computed from (map, read-back, roles, weights as the
        # VMM computes them, reference) and the weights.
        self._wanted_cache: dict[int, tuple[object, object, object, object, float, FloatArray]] = {}
        self._replaced_cache: dict[int, tuple[FloatArray, FloatArray, FloatArray]] = {}

    @contextmanager
    def evaluation(self) -> Iterator[None]:
        """Column gains fitted inside are used inside and forgotten after: an evaluation's batches
        do not change the gains the training's forward passes see."""
        kept = dict(self.gains)
        try:
            yield
        finally:
            self.gains = kept

    def read_back(self, v_read: float = 0.2) -> dict[str, FloatArray]:
        """Read every board's full conductance map (one round trip each); with ``vmm_readback``, also
        every tile's effective weights (one more round trip per tile, :meth:`read_effective`)."""
        self.conductance = {name: self.boards[name].read_map(v_read=v_read) for name in self.placement.boards()}
        self._effective = {}
        if self.vmm_readback:
            self.read_effective()
        return self.conductance

    def read_effective(self) -> None:
        """Each tile's weights as its VMM computes them: one batch of one-hot inputs per tile.

        A cell read alone sees almost no wire drop; in a VMM every cell's current passes through
        the row and column lines its neighbours load, so what reaches the TIA is a fraction of
        ``G``, smaller far from the drivers and the TIA. The lines are linear, so the currents of
        unit inputs (+v on one pair's G+ row, -v on its G- row, the others at 0 V) are exactly each
        pair's contribution to any VMM; they replace the map's weights in the forward correction
        and the backward pass, and a per-column attenuation (effective over read-map weights,
        fitted by least squares) scales the conductance change an update asks for.
        """
        for tiles in self.placement.tiles.values():
            for tile in tiles:
                currents = self._tile_currents(tile, self._unit_inputs(len(tile.plus_rows)))
                effective = currents / (self.v_input * self.unit(tile))
                mapped = self._read_weights(tile)
                roles = self.pair_roles(tile)
                working = mapped if roles is None else np.where(roles.dead, 0.0, mapped)
                energy = (working**2).sum(axis=0)
                ratio = np.divide((effective * working).sum(axis=0), energy, out=np.ones_like(energy),
                                  where=energy > 0)  # fmt: skip
                self._effective[id(tile)] = (effective, np.clip(ratio, 0.2, 1.5))

    def _unit_inputs(self, n: int) -> FloatArray:
        """``n`` one-hot inputs at ``v_input`` (a read-back's batch), made once per size and level."""
        key = (n, self.v_input)
        inputs = self._unit_inputs_cache.get(key)
        if inputs is None:
            inputs = self._unit_inputs_cache[key] = np.full(n, self.v_input) * np.eye(n)
            inputs.flags.writeable = False  # shared by every read-back
        return inputs

    def matmul(self, layer: str, x: FloatArray) -> FloatArray:
        x = np.asarray(x, dtype=np.float64)
        tiles = self.placement.tiles[layer]
        scale = _row_abs_max(x)
        scale[scale == 0] = 1.0
        to_volts = self.v_input / scale
        width = max(t.outputs.stop for t in tiles)
        whole = len(tiles) == 1 and tiles[0].outputs == slice(0, width)
        out = None if whole else np.zeros((len(x), width))
        for index, tile in enumerate(tiles):
            x_tile = x[:, tile.inputs]
            plan = self._tile_drive(tile)
            drive = _drive(plan, x_tile, to_volts)
            # The host's products with the inputs before the VMM, while they are in cache (the round
            # trip through the board passes megabytes through it): the same numbers, computed earlier.
            w_read = self._tile_weights(tile)
            expected = x_tile @ w_read if self.column_gain else None
            roles = self.pair_roles(tile)
            replaced = None if roles is None else x_tile @ self._replaced_weights(tile, w_read, roles)
            measured = self._send(tile, plan, drive) * (scale / (self.v_input * self.unit(tile)))
            if expected is not None:
                measured /= self._column_gain((layer, index), expected, measured)
            if replaced is not None:
                measured -= replaced
            if out is None:
                if measured.flags.c_contiguous:
                    # One tile for all the outputs: its result is the sum, without a zeroed sum to add
                    # it to. Adding 0.0 in place keeps the sum's numbers (-0.0 becomes +0.0, as 0.0 + -0.0).
                    measured += 0.0
                    return measured
                out = np.zeros((len(x), width))
            out[:, tile.outputs] += measured
        assert out is not None  # there is a tile
        return out

    def _column_gain(self, key: tuple[str, int], expected: FloatArray, measured: FloatArray) -> FloatArray:
        """Per-column gain of the VMM against the read-back map (Hu 2018's linear column calibration).

        Wire resistance makes a column's summed current fall short of what its cells, read one at
        a time, predict: the line drop grows with the column's total current. A least-squares gain
        per column, fitted on every batch the forward pass sends (no extra round trip) and
        smoothed across batches, takes that out.
        """
        # Both sums over the batch in one reduction: numpy adds the rows of a reduction along axis 0
        # one after another (a call per row, the cost on a few columns), so the products side by side
        # halve the calls; each column's sum is the same sequence of additions as alone.
        rows, columns = expected.shape
        products = np.empty((rows, 2 * columns))
        np.multiply(expected, expected, out=products[:, :columns])
        np.multiply(measured, expected, out=products[:, columns:])
        sums = products.sum(axis=0)
        energy, cross = sums[:columns], sums[columns:]
        fitted = np.divide(cross, energy, out=np.ones_like(energy), where=energy > 0)
        usable = (energy > 0) & (fitted > 0.2) & (fitted < 5.0)
        previous = self.gains.get(key)
        if previous is None:
            gain = np.where(usable, fitted, 1.0)
        else:
            gain = np.where(usable, GAIN_SMOOTHING * previous + (1 - GAIN_SMOOTHING) * fitted, previous)
        self.gains[key] = gain
        return gain

    def unit(self, tile: Tile) -> float:
        """Conductance difference per unit weight of the tile's layer, S."""
        return self.layer_g_unit.get(tile.layer, self.g_unit)

    def _tile_weights(self, tile: Tile) -> FloatArray:
        """The tile's weights as the forward pass computes them: effective (VMM read-back) or the map's."""
        effective = self._effective.get(id(tile))
        return effective[0] if effective is not None else self._read_weights(tile)

    def attenuation(self, tile: Tile) -> FloatArray:
        """Per column of the tile, effective over read-map weight (1 without a VMM read-back)."""
        effective = self._effective.get(id(tile))
        return effective[1] if effective is not None else np.ones(len(tile.cols))

    def _read_weights(self, tile: Tile) -> FloatArray:
        """``(G+ - G-) / g_unit`` of every pair of the tile, from the last read-back (computed once
        per read-back: the forward and backward passes of an update all ask for it)."""
        board_map = self.conductance[tile.board]
        cached = self._weights_cache.get(id(tile))
        if cached is not None and cached[0] is board_map:
            return cached[1]
        g_plus, g_minus = tile.pair(board_map)
        w: FloatArray = (g_plus - g_minus) / self.unit(tile)
        self._weights_cache[id(tile)] = (board_map, w)
        return w

    def pair_roles(self, tile: Tile) -> PairRoles | None:
        """Which pairs of the tile are dead, or single-device; ``None`` when every pair works."""
        low, high = self.stuck_low.get(tile.board), self.stuck_high.get(tile.board)
        cached = self._roles_cache.get(id(tile))
        if cached is not None and cached[0] is low and cached[1] is high:
            return cached[2]
        roles = self._pair_roles(tile, low, high)
        self._roles_cache[id(tile)] = (low, high, roles)
        return roles

    def _pair_roles(self, tile: Tile, low: BoolArray | None, high: BoolArray | None) -> PairRoles | None:
        if low is None and high is None:
            return None
        shape = self.placement.board_shapes[tile.board]
        low = low if low is not None else np.zeros(shape, dtype=bool)
        high = high if high is not None else np.zeros(shape, dtype=bool)
        (low_plus, low_minus), (high_plus, high_minus) = tile.pair(low), tile.pair(high)
        dead = high_plus | high_minus | (low_plus & low_minus)
        roles = PairRoles(dead=dead, plus_only=low_minus & ~dead, minus_only=low_plus & ~dead)
        return roles if roles.any() else None

    def _wanted_weights(self, tile: Tile, w_read: FloatArray, roles: PairRoles) -> FloatArray:
        """The weights the host makes of the tile's pairs (``w_read``: as its VMM computes them),
        computed once per read-back: every forward and backward pass until the next asks for them."""
        board_map = self.conductance[tile.board]
        effective = self._effective.get(id(tile))
        reference = self.g_reference.get(tile.board, 0.0)
        cached = self._wanted_cache.get(id(tile))
        if cached is not None:
            kept_map, kept_effective, kept_roles, kept_w_read, kept_reference, wanted = cached
            if (kept_map is board_map and kept_effective is effective and kept_roles is roles
                    and kept_w_read is w_read and kept_reference == reference):  # fmt: skip
                return wanted
        wanted = self._compute_wanted_weights(tile, w_read, roles)
        self._wanted_cache[id(tile)] = (board_map, effective, roles, w_read, reference, wanted)
        return wanted

    def _replaced_weights(self, tile: Tile, w_read: FloatArray, roles: PairRoles) -> FloatArray:
        """``w_read`` less the wanted weights (what the host takes out of each VMM), once per set of
        wanted weights instead of in every forward pass."""
        wanted = self._wanted_weights(tile, w_read, roles)
        cached = self._replaced_cache.get(id(tile))
        if cached is not None and cached[0] is wanted and cached[1] is w_read:
            return cached[2]
        replaced = w_read - wanted
        self._replaced_cache[id(tile)] = (wanted, w_read, replaced)
        return replaced

    def _compute_wanted_weights(self, tile: Tile, w_read: FloatArray, roles: PairRoles) -> FloatArray:
        g_plus, g_minus = tile.pair(self.conductance[tile.board])
        reference = self.g_reference.get(tile.board, 0.0)
        plus_alone = (g_plus - reference) / self.unit(tile)
        minus_alone = (reference - g_minus) / self.unit(tile)
        w_map = self._read_weights(tile)
        wanted = np.where(roles.plus_only, plus_alone, np.where(roles.minus_only, minus_alone, w_map))
        # What the host replaces, in the VMM's terms: the map's difference, attenuated as the column is.
        wanted = w_read - (w_map - wanted) * self.attenuation(tile)
        return np.where(roles.dead, 0.0, wanted)

    def device_changes(self, tile: Tile, dw: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Conductance changes of the G+ and G- devices (S) that change the tile's weights by ``dw``:
        half each, or all of it on the working device of a single-device pair."""
        dg = dw * self.unit(tile) / self.attenuation(tile)
        roles = self.pair_roles(tile)
        if roles is None:
            return dg / 2, -dg / 2
        plus = np.where(roles.plus_only, dg, np.where(roles.minus_only, 0.0, dg / 2))
        minus = np.where(roles.minus_only, -dg, np.where(roles.plus_only, 0.0, -dg / 2))
        return np.where(roles.dead, 0.0, plus), np.where(roles.dead, 0.0, minus)

    def _tile_currents(self, tile: Tile, volts: npt.NDArray[np.floating]) -> FloatArray:
        """The tile's column currents for row voltages ``volts`` (a batch of its inputs' volts)."""
        plan = self._tile_drive(tile)
        return self._send(tile, plan, _drive(plan, volts))

    def _send(self, tile: Tile, plan: TileDrive, drive: npt.NDArray[np.float32]) -> FloatArray:
        """One VMM round trip: the tile's driven rows at ``drive``, its columns' currents back."""
        self.vmm_calls += 1
        # Only the tile's columns come back (ascending): no NaN columns to build, fill and pick from.
        currents = self.boards[tile.board].vmm(drive, plan.region, columns=plan.columns, rows=plan.rows, narrow=True)
        return currents if plan.order is None else currents[:, plan.order]

    def _tile_drive(self, tile: Tile) -> TileDrive:
        """The tile's :class:`TileDrive`, computed once per tile."""
        cached = self._drive_cache.get(id(tile))
        if cached is None:
            row0, nrows = tile.row_span
            col0, ncols = tile.col_span
            source = np.zeros(nrows, dtype=np.intp)
            sign = np.zeros(nrows, dtype=np.float32)
            inputs = np.arange(len(tile.plus_rows))
            source[tile.plus_rows - row0], sign[tile.plus_rows - row0] = inputs, 1.0
            source[tile.minus_rows - row0], sign[tile.minus_rows - row0] = inputs, -1.0
            region = Region(row0, col0, nrows, ncols)
            rows = np.flatnonzero(sign)
            columns = tile.cols - col0
            ascending, where = np.unique(columns, return_inverse=True)
            order = None if len(ascending) == len(columns) and (where == np.arange(len(columns))).all() else where
            source, sign = source[rows], sign[rows]
            paired = 0
            if len(rows) == 2 * len(inputs) and np.array_equal(source, np.repeat(inputs, 2)):
                first = sign[0::2]
                if (first == sign[0]).all() and (sign[1::2] == -sign[0]).all():
                    paired = int(sign[0])
            cached = self._drive_cache[id(tile)] = TileDrive(region, source, sign, columns, rows, order, paired)
        return cached

    def weights(self, layer: str) -> FloatArray:
        """Effective weights ``(G+ - G-) / g_unit`` from the last read-back, as the host corrects them."""
        tiles = self.placement.tiles[layer]
        w = np.zeros((max(t.inputs.stop for t in tiles), max(t.outputs.stop for t in tiles)))
        for tile in tiles:
            block = self._tile_weights(tile)
            roles = self.pair_roles(tile)
            w[tile.inputs, tile.outputs] = block if roles is None else self._wanted_weights(tile, block, roles)
        return w
