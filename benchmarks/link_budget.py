"""What an operation must move over the link at the hardware's resolution, against what it moves.

:class:`LowerBound` watches every command a board sends (``Link.exchange``) and adds up the bits the
command's information needs at the board's resolution, whatever its encoding:

- a map: per cell one ADC code and which of the TIA gains it was taken at (``adc_bits + log2(gains)``);
- a VMM: per input one row DAC code (``dac_bits``), per output as for a map;
- a pulse batch: which ``k`` of the region's ``n`` cells it pulses (``log2(n choose k)``), and per
  pulsed cell ``dac_bits`` for each voltage that is not the same for every pulsed cell (32 bits for a
  width that varies); a value shared by all is a few bytes, counted as nothing.

Command words, region numbers and framing are overhead, not information: the bound is the floor no
encoding of these commands can go below.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from drivers import Board
from drivers.link import Link


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

    def add(self, header: str, args: tuple[Any, ...], block: Any) -> None:
        if header in ("MAP?", "MAP:CODE?"):
            self.bits += int(args[2]) * int(args[3]) * self.adc_value_bits
        elif header in ("VMM?", "VMM:CODE?"):
            nrows, ncols, nvec = int(args[2]), int(args[3]), int(args[4])
            self.bits += nvec * (nrows * self.dac_bits + ncols * self.adc_value_bits)
        elif header == "PULS:BATC":
            planes = np.asarray(block)
            mask = planes[3] != 0
            varying = [bool((p[mask] != p[mask][0]).any()) for p in planes[:3]]
            self._batch(mask.size, int(mask.sum()), varying)
        elif header == "PULS:SPAR":
            cells, count = int(args[3]) * int(args[4]), int(args[6])
            self._batch(cells, count, [isinstance(a, str) for a in args[7:10]])

    def _batch(self, cells: int, count: int, varying: list[bool]) -> None:
        choose = (math.lgamma(cells + 1) - math.lgamma(count + 1) - math.lgamma(cells - count + 1)) / math.log(2)
        per_cell = sum(self.dac_bits for v in varying[:2] if v) + (32 if varying[2] else 0)
        self.bits += choose + count * per_cell


@contextmanager
def bounding(bound: LowerBound) -> Iterator[LowerBound]:
    """Add every command any board sends meanwhile to ``bound``."""
    original = Link.exchange

    def exchange(self: Link, header: str, args: Any = (), block: Any = None, **kwargs: Any) -> Any:
        bound.add(header, tuple(args), block)
        return original(self, header, args, block, **kwargs)

    Link.exchange = exchange  # type: ignore[method-assign]
    try:
        yield bound
    finally:
        Link.exchange = original  # type: ignore[method-assign]
