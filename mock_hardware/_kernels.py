"""Compiled per-element passes of the firmware's compact encodings (numba).

A CNN's VMM batch arrives as a bitmap of its non-zero inputs and their DAC codes (conv2: 768,000
inputs, about 310,000 codes). Numpy unpacked the bitmap a byte an input, took 6 MB of int64
positions from it, scaled the codes, zeroed the batch's input space and scattered the levels into
it; :func:`levels_from_bitmap` scales the codes and writes every input's level, zeros included,
straight from the bitmap and the codes as they arrived, visiting the set bits a 64-bit word at a
time. The level is ``float32(code) * float32(step)`` in float32, as numpy computed it. :func:`adc_block`
packs an ADC-code reply. The tests hold each to the numpy form it replaced.

Compiled once per machine and cached next to this file (``cache=True``); imported by the first
``VMM:CODE?`` in the ``NZ`` form or reply in ADC codes (:class:`mock_hardware.firmware.Firmware`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from drivers._kernels import bitmap_word, compiled, trailing_zeros


@compiled
def count_bits(bitmap: npt.NDArray[np.uint8], size: int) -> tuple[int, bool]:
    """The bits set among the first ``size`` of a bitmap (least significant bit first), and whether
    any bit past them is set."""
    total = np.int64(0)
    for b in range(bitmap.size):
        byte = np.int64(bitmap[b])
        byte = byte - ((byte >> 1) & 0x55)
        byte = (byte & 0x33) + ((byte >> 2) & 0x33)
        total += (byte + (byte >> 4)) & 0x0F
    past = False
    for position in range(size, 8 * bitmap.size):
        if (bitmap[position >> 3] >> (position & 7)) & 1:
            past = True
            total -= 1
    return int(total), past


@compiled
def levels_from_bitmap(
    bitmap: npt.NDArray[np.uint8], codes: npt.NDArray[np.uint8], step: np.float32, out: npt.NDArray[np.float32]
) -> tuple[int, int]:
    """Every input's level into ``out`` (``out.size`` inputs): ``float32(code) * step`` where the bitmap
    has a bit set, the next little-endian int16 code of ``codes`` in turn, and +0.0 elsewhere (bits
    past ``out.size`` are not read: :func:`count_bits` has refused them). ``ValueError`` unless there
    is exactly a code per bit set, before any read past the codes. Returns the smallest and largest
    code (0 and 0 when there are none)."""
    size = out.size
    sent = codes.size // 2
    if bitmap.size < (size + 7) // 8:
        raise ValueError("the bitmap is shorter than the inputs")
    levels = np.empty(sent, dtype=np.float32)
    lo = np.int64(32767)
    hi = np.int64(-32768)
    for t in range(sent):  # the codes' levels, in a loop of its own (vectorized)
        code = np.int64(codes[2 * t]) | (np.int64(codes[2 * t + 1]) << 8)
        code -= (code >> 15) << 16  # the int16's sign
        lo = code if code < lo else lo
        hi = code if code > hi else hi
        levels[t] = np.float32(code) * step
    out[:] = 0.0
    # Then each set bit's level to its place, 64 inputs a word: a jump per word, not per input.
    k = 0
    for w in range(size // 64):
        word = bitmap_word(bitmap, w)
        while word:
            if k >= sent:
                raise ValueError("the bitmap sets more bits than there are codes")
            out[64 * w + trailing_zeros(word)] = levels[k]
            k += 1
            word &= word - np.uint64(1)
    for b in range(8 * (size // 64), (size + 7) // 8):
        byte = np.uint64(bitmap[b])
        if 8 * b + 8 > size:
            byte &= (np.uint64(1) << np.uint64(size - 8 * b)) - np.uint64(1)
        while byte:
            if k >= sent:
                raise ValueError("the bitmap sets more bits than there are codes")
            out[8 * b + trailing_zeros(byte)] = levels[k]
            k += 1
            byte &= byte - np.uint64(1)
    if k != sent:
        raise ValueError("the bitmap sets fewer bits than there are codes")
    if not sent:
        return 0, 0
    return int(lo), int(hi)


@compiled
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
