"""The arrays as a network's matmul backend: forward products are VMMs on the boards.

Inputs become row voltages scaled per vector so the largest magnitude is ``v_input`` (the
scale is digital and undone on the output, so it costs no precision beyond the ADC's); G+ rows
get +v and G- rows -v, so each column's current is ``sum_i v_i (G+ - G-)``. The backward pass
uses the conductances read back after the last update, never the intended ones.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from drivers import Board, Region
from hil.mapping import Placement, Tile

FloatArray = npt.NDArray[np.float64]

G_UNIT = 100e-6  # S per unit weight (Li 2018, Wang 2019)


class ArrayBackend:
    """Computes ``x @ W[layer]`` on the arrays a :class:`Placement` names."""

    def __init__(
        self, boards: Mapping[str, Board], placement: Placement, g_unit: float = G_UNIT, v_input: float = 0.2
    ) -> None:
        self.boards = dict(boards)
        self.placement = placement
        self.g_unit = g_unit
        self.v_input = v_input
        self.conductance: dict[str, FloatArray] = {}
        self.vmm_calls = 0

    def read_back(self, v_read: float = 0.2) -> dict[str, FloatArray]:
        """Read every board's full conductance map (one round trip each)."""
        self.conductance = {name: self.boards[name].read_map(v_read=v_read) for name in self.placement.boards()}
        return self.conductance

    def matmul(self, layer: str, x: FloatArray) -> FloatArray:
        x = np.asarray(x, dtype=np.float64)
        tiles = self.placement.tiles[layer]
        fan_out = max(t.outputs.stop for t in tiles)
        scale = np.abs(x).max(axis=1, keepdims=True)
        scale[scale == 0] = 1.0
        volts = x * (self.v_input / scale)
        out = np.zeros((len(x), fan_out))
        for tile in tiles:
            out[:, tile.outputs] += self._tile_currents(tile, volts[:, tile.inputs])
        result: FloatArray = out * (scale / (self.v_input * self.g_unit))
        return result

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
        """Effective weights ``(G+ - G-) / g_unit`` from the last read-back."""
        tiles = self.placement.tiles[layer]
        fan_in = max(t.inputs.stop for t in tiles)
        fan_out = max(t.outputs.stop for t in tiles)
        w = np.zeros((fan_in, fan_out))
        for tile in tiles:
            g = self.conductance[tile.board]
            g_plus = g[np.ix_(tile.plus_rows, tile.cols)]
            g_minus = g[np.ix_(tile.minus_rows, tile.cols)]
            w[tile.inputs, tile.outputs] = (g_plus - g_minus) / self.g_unit
        return w

    def device_pairs(self, layer: str) -> list[tuple[Tile, FloatArray, FloatArray]]:
        """Each tile with its G+ and G- conductance blocks (inputs x outputs) from the last read-back."""
        pairs = []
        for tile in self.placement.tiles[layer]:
            g = self.conductance[tile.board]
            pairs.append((tile, g[np.ix_(tile.plus_rows, tile.cols)], g[np.ix_(tile.minus_rows, tile.cols)]))
        return pairs
