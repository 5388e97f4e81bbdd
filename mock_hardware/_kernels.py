"""Compiled per-element passes of the firmware's ``VMM:CODE?`` decoding (numba).

A CNN's VMM batch arrives as a bitmap of its non-zero inputs and their DAC codes (conv2: 768,000
inputs, about 310,000 codes). Numpy unpacked the bitmap a byte an input, took 6 MB of int64
positions from it, scaled the codes, zeroed the batch's input space and scattered the levels into
it; :func:`levels_from_bitmap` writes every input's level, zeros included, in one pass from the
bitmap and the codes as they arrived. The level is ``float32(code) * float32(step)`` in float32, as
numpy computed it; the tests hold it to the numpy form it replaced.

Compiled once per machine and cached next to this file (``cache=True``); imported by the first
``VMM:CODE?`` in the ``NZ`` form (:meth:`mock_hardware.firmware.Firmware._vmm_codes`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt

_F = TypeVar("_F", bound=Callable[..., Any])


def _compiled(function: _F) -> _F:
    """``function`` compiled to machine code on its first call, the result cached on disk."""
    return cast(_F, numba.njit(cache=True, nogil=True, error_model="numpy")(function))


def _tables() -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]:
    """For every byte of a bitmap: each bit's rank among the bits set (1 for the lowest set bit; 0
    where the bit is clear), and how many bits are set."""
    byte = np.arange(256)[:, None]
    bit = (byte >> np.arange(8)) & 1
    rank = np.where(bit == 1, np.cumsum(bit, axis=1), 0).astype(np.int32)
    return rank, bit.sum(axis=1).astype(np.int32)


_RANK, _ONES = _tables()


@_compiled
def count_bits(bitmap: npt.NDArray[np.uint8], size: int) -> tuple[int, bool]:
    """The bits set among the first ``size`` of a bitmap (least significant bit first), and whether
    any bit past them is set."""
    total = 0
    for b in range(bitmap.size):
        total += _ONES[bitmap[b]]
    past = False
    for position in range(size, 8 * bitmap.size):
        if (bitmap[position >> 3] >> (position & 7)) & 1:
            past = True
            total -= 1
    return total, past


@_compiled
def levels_from_bitmap(
    bitmap: npt.NDArray[np.uint8], codes: npt.NDArray[np.uint8], step: np.float32, out: npt.NDArray[np.float32]
) -> tuple[int, int]:
    """Every input's level into ``out`` (``out.size`` inputs): ``float32(code) * step`` where the bitmap
    has a bit set, the next little-endian int16 code of ``codes`` in turn, and +0.0 elsewhere. The caller
    has checked that ``codes`` holds exactly a code per bit set (:func:`count_bits`). Returns the
    smallest and largest code (0 and 0 when there are none)."""
    sent = codes.size // 2
    levels = np.empty(sent + 1, dtype=np.float32)  # the levels sent, after a 0.0 for the inputs not sent
    levels[0] = 0.0
    lo = np.int64(32767)
    hi = np.int64(-32768)
    for t in range(sent):
        code = np.int64(codes[2 * t]) | (np.int64(codes[2 * t + 1]) << 8)
        code -= (code >> 15) << 16  # the int16's sign
        lo = min(lo, code)
        hi = max(hi, code)
        levels[t + 1] = np.float32(code) * step
    size = out.size
    whole = size // 8
    first = 0  # the levels before this byte's
    if bitmap.size < (size + 7) // 8:
        raise ValueError("the bitmap is shorter than the inputs")
    for b in range(whole):
        byte = bitmap[b]
        if first + _ONES[byte] > sent:  # (count_bits has ruled it out: no read past the codes, whatever)
            raise ValueError("the bitmap sets more bits than there are codes")
        for t in range(8):  # each input's level by its bit's rank in the byte, without a jump on the bit
            rank = _RANK[byte, t]
            out[8 * b + t] = levels[(first + rank) * (rank != 0)]
        first += _ONES[byte]
    if size > 8 * whole and first + _ONES[bitmap[whole] & ((1 << (size - 8 * whole)) - 1)] > sent:
        raise ValueError("the bitmap sets more bits than there are codes")
    for t in range(size - 8 * whole):
        rank = _RANK[bitmap[whole], t]
        out[8 * whole + t] = levels[(first + rank) * (rank != 0)]
    if lo > hi:
        return 0, 0
    return int(lo), int(hi)


@_compiled
def adc_block(
    codes: npt.NDArray[np.float64], gain_index: npt.NDArray[np.int16], wire_codes: npt.NDArray[np.int16],
    nibbles: npt.NDArray[np.uint8],
) -> None:  # fmt: skip
    """An ADC-code block's two parts, in one pass each: the codes (the ADC's, whole numbers within
    int16) cast into ``wire_codes``, and the gain indices two a byte into ``nibbles``, the first in the
    low nibble (an odd count's last byte: 0 in the high nibble). The bytes of
    :func:`drivers.compact.encode_adc_codes`."""
    count = codes.size
    for i in range(count):
        wire_codes[i] = np.int16(codes[i])
    for pair in range(count // 2):
        nibbles[pair] = ((np.int64(gain_index[2 * pair]) & 0xFF) | (np.int64(gain_index[2 * pair + 1]) << 4)) & 0xFF
    if count % 2:
        nibbles[count // 2] = np.int64(gain_index[count - 1]) & 0xFF
