"""The arrays as a network's matmul backend: forward products are VMMs on the boards.

Inputs become row voltages scaled per vector so the largest magnitude is ``v_input`` (the
scale is digital and undone on the output, so it costs no precision beyond the ADC's); G+ rows
get +v and G- rows -v, so each column's current is ``sum_i v_i (G+ - G-)``. The backward pass
uses the conductances read back after the last update, never the intended ones.

Pairs with a device known to be defective (stuck low, stuck high, unformed) cannot hold a weight,
and a shorted device would swamp its column. The host knows them and their read-back
conductance, so it subtracts their contribution from each VMM output: such a weight is pruned
to zero, and the backward pass sees it as zero.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from drivers import Board, Region
from hil.mapping import Placement, Tile

FloatArray = npt.NDArray[np.float64]

G_UNIT = 100e-6  # S per unit weight (Li 2018, Wang 2019)
GAIN_SMOOTHING = 0.8  # weight of the running column gain against one batch's fit


class ArrayBackend:
    """Computes ``x @ W[layer]`` on the arrays a :class:`Placement` names."""

    def __init__(
        self,
        boards: Mapping[str, Board],
        placement: Placement,
        g_unit: float = G_UNIT,
        v_input: float = 0.2,
        column_gain: bool = True,
    ) -> None:
        self.boards = dict(boards)
        self.placement = placement
        self.g_unit = g_unit
        self.v_input = v_input
        self.conductance: dict[str, FloatArray] = {}
        self.defective: dict[str, npt.NDArray[np.bool_]] = {}
        self.column_gain = column_gain
        self.gains: dict[tuple[str, int], FloatArray] = {}
        self.vmm_calls = 0

    def read_back(self, v_read: float = 0.2) -> dict[str, FloatArray]:
        """Read every board's full conductance map (one round trip each)."""
        self.conductance = {name: self.boards[name].read_map(v_read=v_read) for name in self.placement.boards()}
        return self.conductance

    def matmul(self, layer: str, x: FloatArray) -> FloatArray:
        x = np.asarray(x, dtype=np.float64)
        tiles = self.placement.tiles[layer]
        scale = np.abs(x).max(axis=1, keepdims=True)
        scale[scale == 0] = 1.0
        volts = x * (self.v_input / scale)
        out = np.zeros((len(x), max(t.outputs.stop for t in tiles)))
        for index, tile in enumerate(tiles):
            x_tile = x[:, tile.inputs]
            measured = self._tile_currents(tile, volts[:, tile.inputs]) * (scale / (self.v_input * self.g_unit))
            w_read = self._read_weights(tile)
            if self.column_gain:
                measured /= self._column_gain((layer, index), x_tile @ w_read, measured)
            bad = self._bad_pairs(tile)
            if bad is not None:
                measured -= x_tile @ np.where(bad, w_read, 0.0)
            out[:, tile.outputs] += measured
        return out

    def _column_gain(self, key: tuple[str, int], expected: FloatArray, measured: FloatArray) -> FloatArray:
        """Per-column gain of the VMM against the read-back map (Hu 2018's linear column calibration).

        Wire resistance makes a column's summed current fall short of what its cells, read one at
        a time, predict: the line drop grows with the column's total current. A least-squares gain
        per column, fitted on every batch the forward pass sends (no extra round trip) and
        smoothed across batches, takes that out.
        """
        energy = (expected**2).sum(axis=0)
        fitted = np.divide((measured * expected).sum(axis=0), energy, out=np.ones_like(energy), where=energy > 0)
        usable = (energy > 0) & (fitted > 0.2) & (fitted < 5.0)
        previous = self.gains.get(key)
        if previous is None:
            gain = np.where(usable, fitted, 1.0)
        else:
            gain = np.where(usable, GAIN_SMOOTHING * previous + (1 - GAIN_SMOOTHING) * fitted, previous)
        self.gains[key] = gain
        return gain

    def _read_weights(self, tile: Tile) -> FloatArray:
        """``(G+ - G-) / g_unit`` of every pair of the tile, from the last read-back."""
        g = self.conductance[tile.board]
        w: FloatArray = (g[np.ix_(tile.plus_rows, tile.cols)] - g[np.ix_(tile.minus_rows, tile.cols)]) / self.g_unit
        return w

    def _bad_pairs(self, tile: Tile) -> npt.NDArray[np.bool_] | None:
        defective = self.defective.get(tile.board)
        if defective is None:
            return None
        bad = defective[np.ix_(tile.plus_rows, tile.cols)] | defective[np.ix_(tile.minus_rows, tile.cols)]
        return bad if bad.any() else None

    def _tile_currents(self, tile: Tile, volts: FloatArray) -> FloatArray:
        row0, nrows = tile.row_span
        col0, ncols = tile.col_span
        drive = np.zeros((len(volts), nrows))
        drive[:, tile.plus_rows - row0] = volts
        drive[:, tile.minus_rows - row0] = -volts
        self.vmm_calls += 1
        currents = self.boards[tile.board].vmm(drive, Region(row0, col0, nrows, ncols))
        return currents[:, tile.cols - col0]

    def weights(self, layer: str) -> FloatArray:
        """Effective weights ``(G+ - G-) / g_unit`` from the last read-back; pruned pairs are 0."""
        tiles = self.placement.tiles[layer]
        w = np.zeros((max(t.inputs.stop for t in tiles), max(t.outputs.stop for t in tiles)))
        for tile in tiles:
            block = self._read_weights(tile)
            bad = self._bad_pairs(tile)
            w[tile.inputs, tile.outputs] = block if bad is None else np.where(bad, 0.0, block)
        return w
