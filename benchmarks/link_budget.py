"""What an operation must move over the link at the hardware's resolution, against what it moves.

:class:`LowerBound` watches the Board operations that move arrays (``read_map``, ``vmm``,
``apply_pulses``) and adds up the bits their information needs at the board's resolution, whatever
the encoding:

- a map: per cell one ADC code and which of the TIA gains it was taken at (``adc_bits + log2(gains)``);
- a VMM: which of the ``n x rows`` inputs are not 0 V (``log2(n*rows choose k)``) and ``dac_bits``
  for each of those ``k``; per wanted output as for a map;
- a pulse batch: which ``k`` of the region's cells it pulses (``log2(cells choose k)``), and per
  pulsed cell ``dac_bits`` for each voltage that is not the same for every pulsed cell (32 bits for a
  width that varies); a value shared by all is a few bytes, counted as nothing.

Command words, region numbers and framing are overhead, not information: the bound is the floor no
encoding of these operations can go below.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from drivers import Board
from drivers.board import PulseBatch


def log2_choose(n: int, k: int) -> float:
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2)


@dataclass
class LowerBound:
    dac_bits: int
    adc_bits: int
    gains: int
    bits: float = 0.0

    @classmethod
    def of(cls, board: Board) -> LowerBound:
        return cls(int(board.query("DAC:RES?")), int(board.query("ADC:RES?")), len(board.tia_gains))

    @property
    def bytes(self) -> float:
        return self.bits / 8

    @property
    def adc_value_bits(self) -> float:
        return self.adc_bits + math.log2(self.gains)

    def map(self, cells: int) -> None:
        self.bits += cells * self.adc_value_bits

    def vmm(self, inputs: np.ndarray, outputs: int) -> None:
        nonzero = int(np.count_nonzero(inputs))
        self.bits += log2_choose(inputs.size, nonzero) + nonzero * self.dac_bits + outputs * self.adc_value_bits

    def batch(self, planes: np.ndarray) -> None:
        mask = planes[3] != 0
        count = int(mask.sum())
        if not count:
            return
        varying = [bool((p[mask] != p[mask][0]).any()) for p in planes[:3]]
        per_cell = sum(self.dac_bits for v in varying[:2] if v) + (32 if varying[2] else 0)
        self.bits += log2_choose(mask.size, count) + count * per_cell


@contextmanager
def bounding(bound: LowerBound) -> Iterator[LowerBound]:
    """Add every map, VMM and pulse batch any board does meanwhile to ``bound``."""
    read_map, vmm, apply_pulses = Board.read_map, Board.vmm, Board.apply_pulses

    def counted_map(self: Board, v_read: float = 0.2, region: Any = None, *args: Any, **kwargs: Any) -> Any:
        result = read_map(self, v_read, region, *args, **kwargs)
        bound.map(result.size)
        return result

    def counted_vmm(self: Board, v_rows: Any, region: Any = None, columns: Any = None) -> Any:
        result = vmm(self, v_rows, region, columns)
        wanted = result.shape[1] if columns is None else len(np.asarray(columns).ravel())
        bound.vmm(np.atleast_2d(np.asarray(v_rows, dtype=np.float32)), result.shape[0] * wanted)
        return result

    def counted_pulses(self: Board, kind: Any, *args: Any, **kwargs: Any) -> Any:
        batch = kind if isinstance(kind, PulseBatch) else self.check_pulses(kind, *args, **kwargs)
        bound.batch(batch.planes)
        return apply_pulses(self, batch)

    Board.read_map, Board.vmm, Board.apply_pulses = counted_map, counted_vmm, counted_pulses  # type: ignore[method-assign]
    try:
        yield bound
    finally:
        Board.read_map, Board.vmm, Board.apply_pulses = read_map, vmm, apply_pulses  # type: ignore[method-assign]
