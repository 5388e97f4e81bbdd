"""The compact encodings of protocol 1.3: one definition of their block layouts, for host and firmware.

docs/wire-protocol.md ("Compact encodings") is the contract. Three commands carry integers where
the hardware is integer, and only the cells a batch pulses:

- ``MAP:CODE?`` and ``VMM:CODE?`` reply with ADC codes: ``n`` little-endian int16 codes, then ``n``
  4-bit indices into the board's TIA gains (ascending, as ``TIA:GAIN?`` lists them), two a byte, the
  first in the low nibble (``ceil(n/2)`` bytes; 2.5 bytes a value). A value's
  current is ``code * adc_lsb / gain[index]`` with ``adc_lsb = (ADC:RANG max - min) / 2**ADC:RES``.
- ``VMM:CODE?`` names the rows it drives and the columns it wants (two bitmaps over the region; the
  other rows are held at 0 V, the other columns are not sent) and takes the driven rows' voltages as
  little-endian int16 DAC codes of the row DAC: ``volts = code * dac_step`` with
  ``dac_step = (DAC:RANG max - min) / (2**DAC:RES - 1)``; every code (``ALL``), or (``NZ``) a bitmap
  of the non-zero ones over the ``nvec x driven rows`` inputs, then those codes only.
- ``PULS:SPAR`` names the pulsed cells (their indices, or a bitmap) and carries each pulse
  parameter either once, as a number in the command, or per cell: float32, or uint16 DAC codes.

The host (:mod:`drivers.board`) picks, per command, the smallest form the board offers.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from drivers.commands import Line

ADC_CODE_DTYPE = np.dtype("<i2")
MAX_GAINS = 16  # a gain index is 4 bits
VMM_CODE_DTYPE = np.dtype("<i2")  # row DAC codes of VMM inputs (signed: inputs are either sign)
PULSE_CODE_DTYPE = np.dtype("<u2")  # DAC codes of pulse amplitudes and gates (magnitudes, >= 0)
F32 = np.dtype("<f4")
BYTES_PER_ADC_VALUE = ADC_CODE_DTYPE.itemsize + 0.5  # an int16 code and a 4-bit gain index


def adc_block_bytes(count: int) -> int:
    """Bytes of an ADC-code block of ``count`` values."""
    return count * ADC_CODE_DTYPE.itemsize + (count + 1) // 2


COMPACT_SINCE = (1, 3)
"""the protocol version that has the compact commands"""


class Selection(StrEnum):
    """How ``PULS:SPAR`` names the cells it pulses."""

    INDEX = "IDX"  # ascending row-major indices within the region (uint16, or uint32 past 65,536 cells)
    BITS = "BITS"  # one bit per cell of the region, row-major, least significant bit first


class ValueForm(StrEnum):
    """How a per-cell pulse parameter travels in ``PULS:SPAR`` (a number in its place: shared by all)."""

    FLOAT = "F32"  # float32 per pulsed cell
    DAC = "DAC"  # uint16 DAC code per pulsed cell, of the DAC that drives it


def index_dtype(cells: int) -> np.dtype[np.unsignedinteger]:
    """The index type of an ``IDX`` selection in a region of ``cells`` cells."""
    return np.dtype("<u2") if cells <= 1 << 16 else np.dtype("<u4")


def selection_bytes(form: Selection, cells: int, count: int) -> int:
    """Bytes the selection of ``count`` of ``cells`` cells takes."""
    return count * index_dtype(cells).itemsize if form is Selection.INDEX else math.ceil(cells / 8)


def encode_selection(mask: npt.NDArray[np.bool_], form: Selection) -> bytes:
    flat = mask.ravel()
    if form is Selection.INDEX:
        return np.flatnonzero(flat).astype(index_dtype(flat.size)).tobytes()
    return np.packbits(flat, bitorder="little").tobytes()


def decode_selection(
    payload: bytes | memoryview, form: Selection, shape: tuple[int, int], count: int
) -> npt.NDArray[np.bool_]:
    """The mask a selection names; ``ValueError`` saying what is wrong with it."""
    cells = shape[0] * shape[1]
    if form is Selection.INDEX:
        indices = np.frombuffer(payload, dtype=index_dtype(cells)).astype(np.int64)
        if len(indices) and (indices[-1] >= cells or (np.diff(indices) <= 0).any()):
            raise ValueError(f"cell indices must be strictly ascending and below {cells} (the region's cells)")
        mask = np.zeros(cells, dtype=bool)
        mask[indices] = True
        return mask.reshape(shape)
    bits = np.unpackbits(np.frombuffer(payload, dtype=np.uint8), bitorder="little")
    if bits[cells:].any():
        raise ValueError("bits set past the region's last cell")
    if int(bits[:cells].sum()) != count:
        raise ValueError(f"the bitmap selects {int(bits[:cells].sum())} cells, not the {count} the command says")
    return bits[:cells].astype(bool).reshape(shape)


@dataclass(frozen=True)
class Scales:
    """The board's converter scales, as it reports them (DAC:RES?, DAC:RANG?, ADC:RES?, ADC:RANG?, TIA:GAIN?)."""

    dac_bits: int
    dac_ranges: dict[Line, tuple[float, float]]
    adc_bits: int
    adc_range: tuple[float, float]
    gains: tuple[float, ...]

    def dac_step(self, line: Line) -> float:
        """V per DAC code of a kind of line."""
        low, high = self.dac_ranges[line]
        return float((high - low) / (2**self.dac_bits - 1))

    @property
    def adc_lsb(self) -> float:
        """V per ADC code at the TIA's output."""
        return float((self.adc_range[1] - self.adc_range[0]) / 2**self.adc_bits)

    @functools.cached_property
    def _gain_array(self) -> npt.NDArray[np.float64]:
        return np.asarray(self.gains, dtype=np.float64)

    def read(self, payload: bytes, count: int) -> npt.NDArray[np.float64]:
        """An ADC-code block of ``count`` values as the currents (A) it stands for, held at float32 as
        the plain forms send them (``drivers.board._as_read``): :meth:`currents` of
        :func:`decode_adc_codes`, rounded to float32, in one compiled pass. ``ValueError`` for a block
        of another length or a gain index past the gains."""
        from drivers import _kernels  # numba: loaded by the first reply in codes

        codes, nibbles = _adc_block_parts(payload, count)
        currents = np.empty(count)
        bad = _kernels.currents_as_read(codes, nibbles, self.adc_lsb, self._gain_array, currents)
        if bad >= 0:
            raise ValueError(f"gain index {bad} beyond the board's {len(self.gains)} gains")
        return currents

    def currents(self, codes: npt.NDArray[np.integer], gain_index: npt.NDArray[np.integer]) -> npt.NDArray[np.float64]:
        """The currents (A) that ADC codes taken at the given TIA gains stand for."""
        try:
            # take refuses an index past the gains (no pass of its own); by intp indices: take's own
            # conversion of uint8 ones is about 8x slower than the cast (96,000 values: 551 -> 70 us)
            gains = self._gain_array.take(gain_index.astype(np.intp, copy=False))
        except IndexError:
            raise ValueError(f"gain index {int(gain_index.max())} beyond the board's {len(self.gains)} gains") from None
        currents: npt.NDArray[np.float64] = np.multiply(codes, self.adc_lsb, dtype=np.float64)
        currents /= gains
        return currents


def dac_codes(volts: npt.NDArray[np.floating], step: float) -> npt.NDArray[np.int64]:
    """The DAC codes for ``volts``, rounded away from 0 V to the next code (within one step): a level is
    never weaker than the one asked, so a pulse asked at a threshold (a gate at the transistor's) still
    reaches it. The caller checks the levels the codes stand for against the limits before sending them."""
    codes: npt.NDArray[np.int64] = dac_levels(volts, step).astype(np.int64)
    return codes


DAC_CHUNK = 16_384
"""inputs the DAC rounding takes at a time: its float64 temporaries (128 kB each) stay in the CPU's
cache instead of streaming megabytes through memory per pass (a 6,400 x 128 VMM batch: about 2x faster)"""


def dac_level(volts: float, step: float) -> float:
    """:func:`dac_levels` of one voltage, in Python floats: the same IEEE operations in the same order
    (``round`` rounds half to even as ``np.rint`` does), without a dozen numpy calls for one number."""
    magnitude = abs(volts)
    nearest = float(round(magnitude * (1.0 / step)))
    if nearest * step < magnitude:
        nearest += 1.0  # a step further where the nearest code falls short
    return math.copysign(nearest, volts)


def dac_levels(volts: npt.NDArray[np.floating], step: float) -> npt.NDArray[np.float64]:
    """:func:`dac_codes` as whole numbers in float64, for a caller that checks their range before casting
    them to the wire's integer type."""
    volts = np.asarray(volts)
    return _levels_as(volts, step, np.dtype(np.float64)).reshape(volts.shape)


def _levels_as(volts: npt.NDArray[np.floating], step: float, dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    """The DAC levels of ``volts``, flat, in ``dtype``: computed in float64 a chunk at a time in a reused
    scratch space, each chunk cast once into the result."""
    flat = volts.ravel()
    out = np.empty(flat.size, dtype=dtype)
    size = min(flat.size, DAC_CHUNK)
    scratch = np.empty((4, size))
    short_scratch = np.empty(size, dtype=bool)
    inverse = 1.0 / step
    for start in range(0, flat.size, DAC_CHUNK):
        part = flat[start : start + DAC_CHUNK]
        n = part.size
        volts64, magnitude, nearest, level = scratch[:, :n]
        short = short_scratch[:n]
        np.copyto(volts64, part)  # cast once: abs and copysign on float64 are faster than with a cast inside
        np.abs(volts64, out=magnitude)
        # In exact arithmetic this is ceil(|v| / step); the comparison below is what makes it exact in floats.
        np.multiply(magnitude, inverse, out=nearest)
        np.rint(nearest, out=nearest)
        np.multiply(nearest, step, out=level)
        np.less(level, magnitude, out=short)
        nearest += short  # a step further where the nearest code falls short
        # The sign on the float (a masked integer negation is several times slower); a -0.0 stays code 0.
        np.copysign(nearest, volts64, out=nearest)
        out[start : start + n] = nearest
    return out


def within(levels: npt.NDArray[np.floating], low: float, high: float) -> bool:
    """Whether every level lies inside ``[low, high]``."""
    return not levels.size or (low <= float(levels.min()) and float(levels.max()) <= high)


def fits(codes: npt.NDArray[np.integer], dtype: np.dtype[np.integer]) -> bool:
    """Whether every code is representable in ``dtype``."""
    info = np.iinfo(dtype)
    return not codes.size or (int(codes.min()) >= info.min and int(codes.max()) <= info.max)


def encode_adc_codes(codes: npt.NDArray[np.floating | np.integer], gain_index: npt.NDArray[np.integer]) -> bytes:
    """An ADC-code block payload: every code, then the gain indices two a byte (low nibble first)."""
    flat = np.asarray(gain_index, dtype=np.uint8).ravel()
    nibbles = flat[0::2].copy()  # an odd count's last byte: its index, and 0 in the high nibble
    high = flat[1::2]
    nibbles[: len(high)] |= high << 4
    return np.asarray(codes).astype(ADC_CODE_DTYPE).tobytes() + nibbles.tobytes()


def decode_adc_codes(payload: bytes, count: int) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.uint8]]:
    """(codes, gain indices) of an ADC-code block payload of ``count`` values."""
    codes, packed = _adc_block_parts(payload, count)
    index = np.empty(2 * packed.size, dtype=np.uint8)
    index[0::2], index[1::2] = packed & 0x0F, packed >> 4
    return codes, index[:count]


def _adc_block_parts(payload: bytes, count: int) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.uint8]]:
    """An ADC-code block payload's codes and its bytes of gain indices (two a byte), length checked."""
    if len(payload) != adc_block_bytes(count):
        raise ValueError(f"an ADC-code block of {count} values holds {adc_block_bytes(count)} bytes, "
                         f"not {len(payload)}")  # fmt: skip
    split = count * ADC_CODE_DTYPE.itemsize
    return np.frombuffer(payload, ADC_CODE_DTYPE, count=count), np.frombuffer(payload, np.uint8, offset=split)


class Inputs(StrEnum):
    """How ``VMM:CODE?`` carries its input codes."""

    ALL = "ALL"  # every driven row's code of every vector
    NONZERO = "NZ"  # a bitmap of the non-zero codes, then those codes


def inputs_form(count: int, nonzero: int) -> tuple[Inputs, int]:
    """The smaller form for ``count`` input codes of which ``nonzero`` are not 0, and its bytes (the
    bitmap and the non-zero codes; every code when that is no larger)."""
    every = count * VMM_CODE_DTYPE.itemsize
    sparse = math.ceil(count / 8) + nonzero * VMM_CODE_DTYPE.itemsize
    return (Inputs.ALL, every) if sparse >= every else (Inputs.NONZERO, sparse)


def encode_inputs(codes: npt.NDArray[np.integer]) -> tuple[Inputs, bytes]:
    """Input codes ``(nvec, driven rows)`` in the smaller of the two forms (:func:`inputs_form`)."""
    flat = np.asarray(codes).ravel()
    nonzero = flat != 0
    form, _ = inputs_form(flat.size, int(nonzero.sum()))
    if form is Inputs.ALL:
        return form, flat.astype(VMM_CODE_DTYPE).tobytes()
    return form, np.packbits(nonzero, bitorder="little").tobytes() + flat[nonzero].astype(VMM_CODE_DTYPE).tobytes()


def decode_inputs(payload: bytes | memoryview, form: Inputs, count: int) -> npt.NDArray[np.int16]:
    """``count`` input codes from a payload in ``form``; ``ValueError`` if its length does not fit."""
    if form is Inputs.ALL:
        return every_input_code(payload, count)
    flags = np.unpackbits(nonzero_bitmap(payload, count), bitorder="little").view(bool)
    sent = flags[:count]
    codes = np.zeros(count, dtype=np.int16)
    codes[sent] = nonzero_codes(payload, count, int(sent.sum()), bool(flags[count:].any()))
    return codes


def every_input_code(payload: bytes | memoryview, count: int) -> npt.NDArray[np.int16]:
    """The ``ALL`` form's ``count`` codes; ``ValueError`` if the length does not fit."""
    if len(payload) != count * VMM_CODE_DTYPE.itemsize:
        raise ValueError(f"{count} int16 codes need {count * VMM_CODE_DTYPE.itemsize} bytes, not {len(payload)}")
    return np.frombuffer(payload, VMM_CODE_DTYPE)


def nonzero_bitmap(payload: bytes | memoryview, count: int) -> npt.NDArray[np.uint8]:
    """The ``NZ`` form's bitmap of ``count`` inputs (its bytes, unchecked); ``ValueError`` if the payload
    is shorter."""
    head = math.ceil(count / 8)
    if len(payload) < head:
        raise ValueError(f"the non-zero bitmap of {count} inputs needs {head} bytes, not {len(payload)}")
    return np.frombuffer(payload, np.uint8, count=head)


def nonzero_codes(payload: bytes | memoryview, count: int, sent: int, past: bool) -> npt.NDArray[np.int16]:
    """The ``NZ`` form's codes after its bitmap of ``count`` inputs, which sets ``sent`` bits (and
    ``past``: any past the last input); ``ValueError`` if the bitmap or the length does not fit."""
    head = math.ceil(count / 8)
    if past:
        raise ValueError("the non-zero bitmap sets bits past the last input")
    need = head + sent * VMM_CODE_DTYPE.itemsize
    if len(payload) != need:
        raise ValueError(f"a bitmap of {sent} non-zero inputs and their codes need {need} bytes, "
                         f"not {len(payload)}")  # fmt: skip
    return np.frombuffer(payload, VMM_CODE_DTYPE, offset=head)


def encode_vmm_selection(rows: npt.NDArray[np.bool_], cols: npt.NDArray[np.bool_]) -> bytes:
    """``VMM:CODE?``'s block head: the driven rows' bitmap, then the wanted columns' (least significant bit first)."""
    return np.packbits(rows, bitorder="little").tobytes() + np.packbits(cols, bitorder="little").tobytes()


def decode_bitmap(payload: bytes | memoryview, size: int, what: str) -> npt.NDArray[np.bool_]:
    """``size`` flags from a bitmap; ``ValueError`` for bits past the end or none set."""
    bits = np.unpackbits(np.frombuffer(payload, dtype=np.uint8), bitorder="little")
    if bits[size:].any():
        raise ValueError(f"{what} bitmap sets bits past its {size} entries")
    if not bits[:size].any():
        raise ValueError(f"{what} bitmap selects none")
    return bits[:size].astype(bool)
