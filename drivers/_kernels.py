"""Compiled per-element passes of the host's compact encodings (numba).

A CNN's VMM batch is hundreds of thousands of inputs (conv2: 6,400 vectors x 120 rows). Numpy took
them in some ten passes over megabytes (the non-zero mask, the extraction of the non-zero inputs,
their extremes, the DAC rounding in float64 chunks, the bitmap's packing); here :func:`scan` makes
one for what the checks need, and :func:`encode_nonzero` (or :func:`encode_every`) writes the
bitmap and the codes. The arithmetic is :func:`drivers.compact.dac_levels`' in the same IEEE
operations in the same order (no fast-math, no contraction), so the codes are the same bits.
:func:`currents_as_read` reads an ADC-code reply. The tests hold each kernel to the numpy form it
replaced.

Compiled once per machine and cached next to this file (``cache=True``); imported by the first command
that sends or reads codes (``Board.vmm``, ``Scales.read``), so a process that sends none (``hil --help``)
never loads numba.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt
from llvmlite import ir  # type: ignore[import-untyped]
from numba.extending import intrinsic

_F = TypeVar("_F", bound=Callable[..., Any])


def compiled(function: _F) -> _F:
    """``function`` compiled to machine code on its first call, the result cached on disk (the house
    style of every kernel module: no fast-math, so the same IEEE operations as the numpy it replaces)."""
    return cast(_F, numba.njit(cache=True, nogil=True, error_model="numpy")(function))


@numba.njit(inline="always")
def bitmap_word(bitmap: npt.NDArray[np.uint8], w: int) -> np.uint64:
    """Bytes ``8 w .. 8 w + 7`` of a bitmap as one little-endian 64-bit word (inputs ``64 w ..``)."""
    word = np.uint64(0)
    for t in range(8):
        word |= np.uint64(bitmap[8 * w + t]) << np.uint64(8 * t)
    return word


@compiled
def scan(
    inputs: npt.NDArray[np.float32], row_counts: npt.NDArray[np.int64], active: npt.NDArray[np.bool_]
) -> tuple[int, float, float]:
    """One pass over a C-ordered ``(nvec, width)`` batch: its non-zero inputs' count (returned) and
    count per vector (into ``row_counts``), which columns hold any (set in ``active``, which comes in
    False), and their smallest and largest (NaN for both if any is NaN, as ``min`` and ``max``
    propagate it; ``inf`` and ``-inf`` when there are none). ``-0.0`` is zero, as ``!= 0`` has it."""
    nvec, width = inputs.shape
    # Each column's own extremes and flags, reduced at the end: element-wise minima across vectors
    # are SIMD instructions, a running minimum over the whole batch a chain of dependent ones (and
    # selects, not jumps: the zeros are spread at random through a batch).
    lows = np.full(width, np.inf, dtype=np.float32)
    highs = np.full(width, -np.inf, dtype=np.float32)
    nans = np.zeros(width, dtype=np.bool_)
    total = 0
    for i in range(nvec):
        count = 0
        for j in range(width):
            v = inputs[i, j]
            nz = v != 0
            count += nz
            active[j] |= nz
            nans[j] |= v != v
            lows[j] = min(lows[j], v if nz else np.float32(np.inf))
            highs[j] = max(highs[j], v if nz else np.float32(-np.inf))
        row_counts[i] = count
        total += count
    lo = np.inf
    hi = -np.inf
    for j in range(width):
        lo = min(lo, np.float64(lows[j]))
        hi = max(hi, np.float64(highs[j]))
        if nans[j]:
            lo = np.nan
            hi = np.nan
            break
    return total, lo, hi


@compiled
def encode_nonzero(
    inputs: npt.NDArray[np.float32], step: float, bitmap: npt.NDArray[np.uint8], codes: npt.NDArray[np.int16]
) -> int:
    """The ``NZ`` form of a C-ordered batch: the bitmap of its non-zero inputs (row-major, least
    significant bit first) into ``bitmap``, their DAC codes into ``codes``; returns how many codes.
    The caller has checked the extreme codes fit int16 and sized ``codes`` by :func:`scan`'s count
    (``ValueError`` before a code past its end is written)."""
    flat = inputs.ravel()
    size = flat.size
    if bitmap.size != (size + 7) // 8:
        raise ValueError("the bitmap has another size than the batch's")
    whole = size // 8
    for b in range(whole):  # a byte of 8 flags at a time: no bit position carried along (vectorized)
        acc = 0
        for t in range(8):
            acc |= int(flat[8 * b + t] != 0) << t
        bitmap[b] = acc
    if size % 8:
        acc = 0
        for t in range(size % 8):
            acc |= int(flat[8 * whole + t] != 0) << t
        bitmap[whole] = acc
    # The non-zero inputs in order, found from the bitmap 64 inputs at a time (a jump per word, not
    # per input: the zeros are spread at random through a batch), then coded in a loop of their own.
    kept = np.empty(codes.size, dtype=np.float32)
    k = 0
    for w in range(size // 64):
        word = bitmap_word(bitmap, w)
        while word:
            if k >= kept.size:
                raise ValueError("more non-zero inputs than there is room for codes")
            kept[k] = flat[64 * w + trailing_zeros(word)]
            k += 1
            word &= word - np.uint64(1)
    for b in range(8 * (size // 64), bitmap.size):
        byte = np.uint64(bitmap[b])
        while byte:
            if k >= kept.size:
                raise ValueError("more non-zero inputs than there is room for codes")
            kept[k] = flat[8 * b + trailing_zeros(byte)]
            k += 1
            byte &= byte - np.uint64(1)
    inverse = 1.0 / step
    for t in range(k):
        codes[t] = _code(np.float64(kept[t]), step, inverse)
    return k


@compiled
def encode_every(inputs: npt.NDArray[np.float32], step: float, codes: npt.NDArray[np.int16]) -> None:
    """The ``ALL`` form: every input's DAC code (0 for a zero, ``-0.0`` included) into ``codes``."""
    flat = inputs.ravel()
    if codes.size != flat.size:
        raise ValueError("the codes have another size than the batch's")
    inverse = 1.0 / step
    for f in range(flat.size):
        codes[f] = _code(np.float64(flat[f]), step, inverse)  # a zero's is 0


@numba.njit(inline="always")
def _code(v: float, step: float, inverse: float) -> int:
    """:func:`drivers.compact.dac_levels` of one voltage as an integer: the nearest code, one further
    where its level falls short, the sign put back on the float (``-0.0`` and ``0.0`` are code 0)."""
    magnitude = abs(v)
    nearest = np.rint(magnitude * inverse)
    if nearest * step < magnitude:
        nearest += 1.0
    return int(np.copysign(nearest, v))


@compiled
def currents_as_read(
    codes: npt.NDArray[np.int16], nibbles: npt.NDArray[np.uint8], adc_lsb: float, gains: npt.NDArray[np.float64],
    out: npt.NDArray[np.float64],
) -> int:  # fmt: skip
    """An ADC-code block's codes and gain indices (two a byte, the first in the low nibble) as currents
    held at float32 (``float32(code * adc_lsb / gains[index])``, widened back: what
    :meth:`drivers.compact.Scales.currents` and ``drivers.board._as_read`` make of them, the same IEEE
    operations) into ``out``. Returns -1, or the largest gain index past ``gains`` (``out`` is then
    not the currents)."""
    count = codes.size
    last = gains.size - 1
    largest = np.int64(0)
    # Each value's gain first (a byte of two indices at a time), then the arithmetic in a loop of
    # its own, which the compiler vectorizes (a division a value: the gains are not reciprocals).
    for pair in range(count // 2):
        byte = np.int64(nibbles[pair])
        low, high = byte & 0x0F, byte >> 4
        largest = low if low > largest else largest
        largest = high if high > largest else largest
        out[2 * pair] = gains[low if low < last else last]
        out[2 * pair + 1] = gains[high if high < last else last]
    if count % 2:
        low = np.int64(nibbles[count // 2]) & 0x0F
        largest = low if low > largest else largest
        out[count - 1] = gains[low if low < last else last]
    for i in range(count):
        out[i] = np.float64(np.float32(np.float64(codes[i]) * adc_lsb / out[i]))
    return int(largest) if largest > last else -1


@intrinsic
def _cttz(typingctx: Any, word: Any) -> Any:
    if not isinstance(word, numba.types.Integer):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 0))

    return word(word), codegen


trailing_zeros = cast(Callable[[np.uint64], int], _cttz)
"""The zero bits below the lowest bit set of an integer (its width for 0), in compiled code: LLVM's
``cttz``, one instruction on x86 and ARM, to visit a bitmap's set bits without a jump per bit."""
