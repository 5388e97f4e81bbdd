"""The host's compiled passes (drivers/_kernels.py, numba) give what the numpy forms they replaced gave
(session 11): each test holds a kernel to a numpy reference written out here, bit for bit, on the
inputs where they could part (every 16-bit level's float32 and its neighbours, signed zeros, NaN,
sizes that are not whole bytes or blocks)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from drivers import _kernels, compact

STEPS = [10 / 65535, 12 / 65535, 1 / 4095, 2**-14, 3 * 2**-15, 75 * 2**-16, 91 * 2**-14]
"""the board's step among others; the last two are steps where ``ceil(|v| / step)`` parts from the
rounding at a level's own float32 (session 10's shortcut had to refuse them)"""


def _near_every_level(step: float, codes: int, ulps: int = 3) -> npt.NDArray[np.float32]:
    """The float32 nearest each level ``n * step`` (``|n| <= codes``) and ``ulps`` float32 either side,
    both signs, and the smallest magnitudes: every input where a rounding could go either way."""
    nearest = (np.arange(-codes, codes + 1) * step).astype(np.float32)
    around = [nearest]
    up, down = nearest.copy(), nearest.copy()
    for _ in range(ulps):
        up, down = np.nextafter(up, np.float32(np.inf)), np.nextafter(down, np.float32(-np.inf))
        around += [up, down]
    volts = np.concatenate([*around, np.array([0.0, -0.0, 1e-45, -1e-45, 1e-30, -1e-30], np.float32)])
    return volts[np.abs(volts.astype(np.float64)) <= codes * step]  # codes that fit int16 (the caller checks)


def _batch(rng: np.random.Generator, shape: tuple[int, int], density: float) -> npt.NDArray[np.float32]:
    batch = np.where(rng.random(shape) < density, rng.uniform(-0.3, 0.3, shape), 0.0).astype(np.float32)
    batch.ravel()[::7] *= -0.0  # signed zeros among the zeros (and some non-zero inputs negated)
    return batch


# --- scan: what the checks need --------------------------------------------------------------------


def _scan(batch: npt.NDArray[np.float32]) -> tuple[int, float, float, npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    rows = np.empty(len(batch), np.int64)
    active = np.zeros(batch.shape[1], bool)
    total, lo, hi = _kernels.scan(batch, rows, active)
    return total, lo, hi, rows, active


SHAPES = [(1, 1), (1, 9), (7, 13), (64, 8), (640, 120), (3, 2049)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("density", [0.0, 0.01, 0.4, 1.0])
def test_scan_counts_and_bounds_the_non_zero_inputs_as_numpy_does(shape: tuple[int, int], density: float) -> None:
    rng = np.random.default_rng(shape[0] * 31 + shape[1] + int(density * 100))
    batch = _batch(rng, shape, density)
    if shape[0] > 1:
        batch[:, -1] = 0.0
        batch[-1, -1] = 0.125  # a column only the last vector drives
    total, lo, hi, rows, active = _scan(batch)
    nonzero = batch != 0  # -0.0 is zero
    assert total == nonzero.sum()
    np.testing.assert_array_equal(rows, nonzero.sum(axis=1))
    np.testing.assert_array_equal(active, nonzero.any(axis=0))
    values = batch[nonzero]
    assert (lo, hi) == ((float(values.min()), float(values.max())) if values.size else (np.inf, -np.inf))


def test_scan_propagates_nan_and_infinities_as_min_and_max_do() -> None:
    batch = np.zeros((50, 20), np.float32)
    batch[3, 4], batch[40, 19] = -0.25, 0.5
    batch[10, 7] = np.inf
    assert _scan(batch)[1:3] == (-0.25, np.inf)
    batch[10, 7] = -np.inf
    assert _scan(batch)[1:3] == (-np.inf, 0.5)
    for where in [(0, 0), (25, 10), (49, 19)]:  # first, middle, last: a NaN anywhere makes both NaN
        nan = batch.copy()
        nan[where] = np.nan
        total, lo, hi, _, active = _scan(nan)
        assert np.isnan(lo) and np.isnan(hi)
        assert total == 4 and active[where[1]]  # NaN != 0: counted, as the numpy form counted it


# --- encode: the block's bitmap and codes ----------------------------------------------------------


def _reference_nonzero(batch: npt.NDArray[np.float32], step: float) -> tuple[bytes, npt.NDArray[np.int16]]:
    """The ``NZ`` form as numpy made it: the packed bitmap and the non-zero inputs' rounded codes."""
    flat = batch.ravel()
    nonzero = flat != 0
    return np.packbits(nonzero, bitorder="little").tobytes(), compact.dac_levels(flat[nonzero], step).astype(np.int16)


def _encode(batch: npt.NDArray[np.float32], step: float) -> tuple[bytes, npt.NDArray[np.int16]]:
    count = int((batch != 0).sum())
    bitmap = np.full((batch.size + 7) // 8, 0xA5, np.uint8)  # poisoned: every byte must be written
    codes = np.full(count, 12345, np.int16)
    assert _kernels.encode_nonzero(batch, step, bitmap, codes) == count
    return bitmap.tobytes(), codes


@pytest.mark.parametrize("step", STEPS)
def test_the_codes_of_every_16_bit_level_and_its_neighbours_are_the_roundings(step: float) -> None:
    """The nearest code, one further where its level falls short (``compact.dac_levels``, the numpy
    form): on every 16-bit level's float32 and three float32 either side, both signs, in the ``NZ``
    form (compacted) and the ``ALL`` form (every input, a zero's code 0)."""
    volts = _near_every_level(step, 32767)
    rng = np.random.default_rng(int(step * 1e9))
    volts = np.concatenate([volts, rng.uniform(-32767 * step, 32767 * step, 100_000).astype(np.float32)])
    batch = volts[: volts.size // 9 * 9].reshape(-1, 9)  # 9 inputs a vector: bytes straddle vectors
    bitmap, codes = _encode(batch, step)
    ref_bitmap, ref_codes = _reference_nonzero(batch, step)
    assert bitmap == ref_bitmap
    np.testing.assert_array_equal(codes, ref_codes)
    every = np.full(batch.size, 12345, np.int16)
    _kernels.encode_every(batch, step, every)
    np.testing.assert_array_equal(every, compact.dac_levels(batch.ravel(), step))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("density", [0.0, 0.02, 0.41, 1.0])
def test_the_nonzero_form_of_a_batch_is_its_packed_bitmap_and_compacted_codes(
    shape: tuple[int, int], density: float
) -> None:
    """Batches of sizes that are not whole bytes, or cross the kernel's compaction blocks, sparse and
    dense, with signed zeros (not sent), against ``np.packbits`` and the codes of ``x[x != 0]``."""
    step = 10 / 65535
    batch = _batch(np.random.default_rng(shape[1] + int(density * 1000)), shape, density)
    bitmap, codes = _encode(batch, step)
    ref_bitmap, ref_codes = _reference_nonzero(batch, step)
    assert bitmap == ref_bitmap
    np.testing.assert_array_equal(codes, ref_codes)


def test_the_kernels_refuse_a_batch_larger_than_the_room_given() -> None:
    batch = np.full((4, 10), 0.1, np.float32)
    with pytest.raises(ValueError, match="room for codes"):
        _kernels.encode_nonzero(batch, 1e-3, np.empty(5, np.uint8), np.empty(39, np.int16))
    with pytest.raises(ValueError, match="bitmap"):
        _kernels.encode_nonzero(batch, 1e-3, np.empty(4, np.uint8), np.empty(40, np.int16))
    with pytest.raises(ValueError, match="codes"):
        _kernels.encode_every(batch, 1e-3, np.empty(39, np.int16))


# --- the ADC reply read as currents ------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 2, 7, 96_001])
def test_an_adc_reply_reads_as_the_numpy_decode_held_at_float32(count: int) -> None:
    """``Scales.read`` (one compiled pass) against ``Scales.currents`` of ``decode_adc_codes``, rounded to
    float32 and back as ``drivers.board._as_read`` does: every code (the int16 extremes among them) at
    every gain index."""
    from drivers.commands import Line

    gains = (1e3, 3.3e3, 1e4, 4.7e4, 1e5, 1e6, 2.2e6, 1e7)
    scales = compact.Scales(16, {line: (-5.0, 5.0) for line in Line}, 14, (-1.25, 1.25), gains)
    rng = np.random.default_rng(count)
    codes = rng.integers(-32768, 32768, count)
    codes[: min(count, 2)] = [-32768, 32767][: min(count, 2)]
    index = rng.integers(0, len(gains), count)
    payload = compact.encode_adc_codes(codes, index)
    expected = scales.currents(*compact.decode_adc_codes(payload, count)).astype(np.float32).astype(np.float64)
    got = scales.read(payload, count)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got.view(np.uint64), expected.view(np.uint64))
    if count:
        index[count // 2] = len(gains) + 3  # past the gains: refused as the numpy decode refused it
        bad = compact.encode_adc_codes(codes, index)
        with pytest.raises(ValueError, match=f"gain index {len(gains) + 3} beyond the board's 8 gains"):
            scales.read(bad, count)
        with pytest.raises(ValueError, match=f"gain index {len(gains) + 3} beyond the board's 8 gains"):
            scales.currents(*compact.decode_adc_codes(bad, count))
    with pytest.raises(ValueError, match="holds"):
        scales.read(payload + b"\x00", count)
