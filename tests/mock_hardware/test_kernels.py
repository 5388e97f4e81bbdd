"""The firmware's compiled passes (mock_hardware/_kernels.py, numba) give what the numpy forms they
replaced gave (session 11), bit for bit: each test holds a kernel to a numpy reference written out here."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from drivers import compact
from mock_hardware import _kernels

SIZES = [1, 7, 8, 9, 64, 1001, 768_003]


def _bitmap_and_codes(
    rng: np.random.Generator, size: int, density: float
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int16]]:
    codes = np.where(rng.random(size) < density, rng.integers(-32768, 32768, size), 0).astype(np.int16)
    sent = np.flatnonzero(codes)
    if sent.size >= 2:
        codes[sent[0]], codes[sent[-1]] = -32768, 32767  # the int16 extremes, first and last
    return np.packbits(codes != 0, bitorder="little"), codes


def _reference_levels(
    bitmap: npt.NDArray[np.uint8], codes: npt.NDArray[np.int16], step: np.float32, size: int
) -> npt.NDArray[np.float32]:
    """The numpy form: the bitmap's positions, the codes scaled in float32, scattered into zeros."""
    where = np.flatnonzero(np.unpackbits(bitmap, bitorder="little")[:size])
    levels = np.zeros(size, np.float32)
    levels[where] = np.multiply(codes, step, dtype=np.float32)
    return levels


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("density", [0.0, 0.03, 0.41, 1.0])
def test_the_levels_from_a_bitmap_and_its_codes_are_the_scattered_numpy_ones(size: int, density: float) -> None:
    """Every input written (the space comes in poisoned with NaN, as a reused space holds an earlier
    batch), +0.0 where no code was sent, ``float32(code) * step`` where one was; the extreme codes
    returned (0 and 0 with none sent)."""
    rng = np.random.default_rng(size + int(density * 100))
    bitmap, dense = _bitmap_and_codes(rng, size, density)
    sent = dense[dense != 0]
    step = np.float32(10 / 65535)
    out = np.full(size, np.nan, np.float32)
    ends = _kernels.levels_from_bitmap(bitmap, sent.view(np.uint8), step, out)
    expected = _reference_levels(bitmap, sent, step, size)
    np.testing.assert_array_equal(out.view(np.uint32), expected.view(np.uint32))  # bits: +0.0, not -0.0
    assert ends == ((int(sent.min()), int(sent.max())) if sent.size else (0, 0))


def test_the_levels_read_codes_that_start_at_an_odd_byte() -> None:
    """The codes follow the bitmap in the block, so they may start at any byte."""
    rng = np.random.default_rng(3)
    bitmap, dense = _bitmap_and_codes(rng, 101, 0.5)
    sent = dense[dense != 0]
    block = np.frombuffer(b"\x07" + sent.tobytes(), np.uint8)[1:]  # the codes at an odd address
    out = np.empty(101, np.float32)
    step = np.float32(1 / 4095)
    _kernels.levels_from_bitmap(bitmap, block, step, out)
    np.testing.assert_array_equal(out, _reference_levels(bitmap, sent, step, 101))


@pytest.mark.parametrize("size", [1, 8, 13, 1001])
def test_the_bits_counted_are_the_unpacked_ones_and_bits_past_the_end_are_seen(size: int) -> None:
    rng = np.random.default_rng(size)
    bitmap = rng.integers(0, 256, (size + 7) // 8).astype(np.uint8)
    bits = np.unpackbits(bitmap, bitorder="little")
    assert _kernels.count_bits(bitmap, size) == (int(bits[:size].sum()), bool(bits[size:].any()))
    bitmap[-1] &= (1 << (size % 8 or 8)) - 1  # none past the end
    assert _kernels.count_bits(bitmap, size) == (int(bits[:size].sum()), False)


def test_a_bitmap_with_more_bits_than_codes_is_refused_before_any_read_past_them() -> None:
    out = np.empty(20, np.float32)
    bitmap = np.packbits(np.ones(20, bool), bitorder="little")
    with pytest.raises(ValueError, match="more bits than there are codes"):
        _kernels.levels_from_bitmap(bitmap, np.zeros(2 * 19, np.uint8), np.float32(0.1), out)
    with pytest.raises(ValueError, match="fewer bits than there are codes"):
        _kernels.levels_from_bitmap(bitmap, np.zeros(2 * 21, np.uint8), np.float32(0.1), out)
    with pytest.raises(ValueError, match="shorter"):
        _kernels.levels_from_bitmap(bitmap[:2], np.zeros(40, np.uint8), np.float32(0.1), out)


@pytest.mark.parametrize("count", [0, 1, 2, 7, 8, 96_001])
def test_the_adc_block_is_the_codecs_layout(count: int) -> None:
    rng = np.random.default_rng(count)
    codes = rng.integers(-32768, 32768, count).astype(np.float64)
    codes[: min(count, 2)] = [-32768.0, 32767.0][: min(count, 2)]
    index = rng.integers(0, 16, count).astype(np.int16)
    payload = np.full(compact.adc_block_bytes(count), 0xA5, np.uint8)  # poisoned: every byte written
    wire_codes = payload[: 2 * count].view(np.int16)
    _kernels.adc_block(codes, index, wire_codes, payload[2 * count :])
    assert payload.tobytes() == compact.encode_adc_codes(codes, index)


def test_bits_past_the_inputs_are_not_read() -> None:
    """The firmware refuses such a bitmap (count_bits), but the kernel does not rely on it: a bit past
    the last input takes no code and writes nothing past the inputs."""
    bitmap = np.packbits(np.array([1, 0, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1], bool), bitorder="little")
    codes = np.array([5, -7, 9, 11], np.int16)  # the four bits among the first 6 inputs
    out = np.full(7, np.nan, np.float32)
    assert _kernels.levels_from_bitmap(bitmap, codes.view(np.uint8), np.float32(0.5), out[:6]) == (-7, 11)
    np.testing.assert_array_equal(out[:6], [2.5, 0, -3.5, 4.5, 0, 5.5])
    assert np.isnan(out[6])
