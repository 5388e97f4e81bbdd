"""The emulator physics' compiled passes (mock_hardware/_physics_kernels.py, numba) give what the numpy
forms they replaced gave (session 11, part V), bit for bit: each test holds a kernel, through the
function that calls it, to the numpy reference written out here."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from mock_hardware import _physics_kernels
from mock_hardware.array_model import _fingerprint
from mock_hardware.device_params import DeviceParameters, preset
from mock_hardware.physics import noise
from mock_hardware.physics.iv import IVCurve
from mock_hardware.physics.retention import DriftState
from mock_hardware.physics.switching import G_FLOOR_ABSOLUTE

F32 = npt.NDArray[np.float32]


def _bits(a: npt.NDArray[np.generic]) -> bytes:
    """Bytes to compare: equal bits, NaN and the sign of zero included."""
    return bytes(str(a.dtype), "ascii") + bytes(str(a.shape), "ascii") + np.ascontiguousarray(a).tobytes()


def _reference_terms(curve: IVCurve, v: F32) -> tuple[F32, F32]:
    """The numpy form the VMM used: ``IVCurve.factor32_into`` as it was written, times the drive,
    then squared (the ohmic curve: the drive and its square)."""
    if curve.is_ohmic:
        return v.copy(), np.square(v)
    out, scratch = np.empty_like(v), np.empty_like(v)
    a = np.float32(curve.nonlinearity)
    norm = np.float32(1.0 / float(np.sinh(curve.nonlinearity * 0.2) / (curve.nonlinearity * 0.2)))
    assert norm == np.float32(curve._norm)  # the reference's norm is the curve's
    if max(float(v.max()), -float(v.min())) * float(a) <= 0.75:
        np.multiply(v, v, out=out)
        np.multiply(out, norm * a**4 / np.float32(120.0), out=scratch)
        scratch += norm * a * a / np.float32(6.0)
        scratch *= out
        np.add(scratch, norm, out=out)
    else:
        np.multiply(v, a, out=out)
        np.abs(out, out=out)
        np.add(out, np.float32(1e-30), out=out)
        np.sinh(out, out=scratch)
        with np.errstate(invalid="ignore"):
            np.divide(scratch, out, out=out)
        np.multiply(out, norm, out=out)
    terms = v * out
    return terms, np.square(terms)


def _drives(rng: np.random.Generator) -> list[F32]:
    """Series and sinh ranges, the series' edge on both sides, zeros of both signs, odd sizes, NaN, inf."""
    drives = []
    for shape in [(1, 1), (3, 7), (64, 17), (6400, 18), (601, 120)]:
        for scale in [1e-3, 0.05, 0.2, 0.6]:
            drives.append((rng.standard_normal(shape) * scale).astype(np.float32))
    edge = np.float32(0.5)  # 0.5 V * 1.5 /V = 0.75: the series' limit, exactly
    for top in [edge, np.nextafter(edge, np.float32(1)), np.nextafter(edge, np.float32(0))]:
        for sign in [1, -1]:
            d = (rng.uniform(-0.3, 0.3, (50, 9))).astype(np.float32)
            d[7, 3] = sign * top
            drives.append(d)
    zeros = np.zeros((5, 8), np.float32)
    zeros[::2] = -0.0
    drives.append(zeros)
    for special in [np.nan, np.inf]:
        d = (rng.standard_normal((40, 12)) * 0.05).astype(np.float32)
        d[3, 4] = special
        drives.append(d)
    return drives


@pytest.mark.parametrize("nonlinearity", [1.5, 0.7, 0.0])
def test_the_drives_terms_and_squares_are_the_numpy_factors_bit_for_bit(nonlinearity: float) -> None:
    """Fails (checked) with the factor's series evaluated in float64, with the series distributed
    (``x2 x2 c4 + c2 x2``), with the series used up to 0.9 instead of 0.75, or with the squares of the
    drive instead of the terms."""
    curve = IVCurve(nonlinearity, 0.2)
    for v in _drives(np.random.default_rng(17)):
        expected_terms, expected_squares = _reference_terms(curve, v)
        kept = v.copy()
        terms, squares, scratch = np.full_like(v, np.nan), np.full_like(v, np.nan), np.full_like(v, np.nan)
        with np.errstate(invalid="ignore"):  # inf / inf in the sinh form, as in the VMM
            curve.drive_terms32_into(v, terms, squares, scratch)
        assert _bits(terms) == _bits(expected_terms)
        assert _bits(squares) == _bits(expected_squares)
        assert _bits(v) == _bits(kept)  # the drive is read, not written
        # in place: the terms over the drive itself (the VMM's cast copy)
        inplace = v.copy()
        with np.errstate(invalid="ignore"):
            curve.drive_terms32_into(inplace, inplace, squares, scratch)
        assert _bits(inplace) == _bits(expected_terms)
        assert _bits(squares) == _bits(expected_squares)


def test_the_series_is_taken_where_it_holds_and_differs_from_the_sinh_form_there() -> None:
    """The drives above reach both forms: at 0.05 V the series and the sinh form give different last
    bits, so a kernel that took the wrong form would fail the test above."""
    curve = IVCurve(1.5, 0.2)
    v = (np.random.default_rng(3).standard_normal((200, 30)) * 0.05).astype(np.float32)
    series, _ = _reference_terms(curve, v)
    sinh_form = v * curve.factor(v.astype(np.float64)).astype(np.float32)
    assert _bits(series) != _bits(sinh_form)


@pytest.mark.parametrize("size", [0, 1, 2, 513, 96_000])
def test_the_word_sums_are_numpys_wrapping_sum_and_xor(size: int) -> None:
    """Fails (checked) with the xor as an or."""
    words = np.random.default_rng(size).integers(0, 2**64, size, dtype=np.uint64)
    words[: min(size, 4)] = np.uint64(2**64 - 1)  # the sum wraps at once
    total, mixed = _physics_kernels.word_sums(words)
    assert np.uint64(total) == np.add.reduce(words)
    assert np.uint64(mixed) == np.bitwise_xor.reduce(words)


def test_a_reads_fingerprint_is_the_numpy_one() -> None:
    """The fingerprint keys the read-noise stream: its bytes must not move."""
    data = (np.random.default_rng(5).standard_normal((6400, 18)) * 0.1).astype(np.float32)
    raw = data.view(np.uint8).ravel()
    words = raw.view(np.uint64)
    sums = np.array([np.add.reduce(words), np.bitwise_xor.reduce(words)], dtype=np.uint64)
    expected = bytes(str(data.shape), "ascii") + raw[:1024].tobytes() + raw[-1024:].tobytes() + sums.tobytes()
    assert _fingerprint(data) == expected


@pytest.mark.parametrize("layout", ["whole", "slice", "picked"])
def test_the_noisy_currents_are_the_numpy_steps_bit_for_bit(layout: str) -> None:
    """Fails (checked) with sigma applied before the draws, or with the draws read untransposed."""
    rng = np.random.default_rng(11)
    nvec, nout = 641, 5
    currents = rng.standard_normal((nvec, nout)).astype(np.float32) * np.float32(1e-5)
    spread2 = (rng.random((nvec, nout)) * 1e-10).astype(np.float32)
    spread2[0, 0] = 0.0
    region = rng.standard_normal((9, nvec)).astype(np.float32)
    normal = {"whole": region[:nout], "slice": region[2 : 2 + nout], "picked": region[[0, 2, 3, 7, 8]]}[layout]
    sigma = np.float32(0.021)
    spread = np.sqrt(spread2)
    spread *= normal.T
    spread *= sigma
    expected = (currents + spread).astype(np.float64)
    out = np.full((nvec, nout), np.nan)
    _physics_kernels.noisy_currents(currents, spread2, normal, sigma, out)
    assert _bits(out) == _bits(expected)


@pytest.mark.parametrize("shape", [(0,), (1,), (61, 100), (16, 6400)])
def test_the_normal_draws_are_the_tables_entries_at_the_streams_pieces(shape: tuple[int, ...]) -> None:
    """``fast_normal_into`` as it was (intp indices, numpy's take): fails (checked) with the table
    indexed off by one."""
    out = np.full(shape, np.nan, np.float32)
    noise.fast_normal_into(np.random.Generator(np.random.PCG64(9)), out)
    pieces = np.frombuffer(np.random.Generator(np.random.PCG64(9)).bytes(2 * out.size), dtype="<u2")
    expected = np.take(noise._TABLE, pieces.astype(np.intp)).reshape(shape)
    assert _bits(out) == _bits(expected)


def _reference_drift(drift: DriftState, t: float, params: DeviceParameters) -> npt.NDArray[np.float64]:
    """``DriftState.conductance_at`` as numpy computed it (session 11, part V)."""
    out = np.subtract(t, drift.t_programmed)
    np.maximum(out, 0.0, out=out)
    out *= 1.0 / params.drift_time_constant
    np.log1p(out, out=out)
    out *= drift.rate
    out += drift.g_programmed
    np.maximum(out, G_FLOOR_ABSOLUTE, out=out)
    return out


@pytest.mark.parametrize("t0", [1.0, 0.37, 1e3])
def test_the_drifted_conductances_are_the_numpy_steps_bit_for_bit(t0: float) -> None:
    """Cells programmed before, at and after ``t`` (dt < 0 clips to 0), rates of both signs, a cell
    driven under the floor, NaN in a time and a conductance. Fails (checked) with the sum before the
    product (``(g + log) * rate``), with the floor dropped, or with the time's clip dropped."""
    params = preset("umass-ta-hfo2", drift_time_constant=t0, drift_spread=2e-7)
    rng = np.random.default_rng(int(t0 * 100))
    shape = (64, 128)
    g = rng.uniform(1e-6, 1e-4, shape)
    drift = DriftState(g, rng.random(shape) < 0.9, params, np.random.default_rng(1))
    drift.t_programmed[:] = rng.uniform(0.0, 50.0, shape)
    drift.t_programmed[0, :4] = [30.0, np.nan, 0.0, 30.0]
    drift.g_programmed[1, :2] = [np.nan, 2e-9]
    drift.rate[1, 1] = -1e-6  # pulled under the floor
    for t in [0.0, 30.0, 49.99, 1e5]:
        expected = _reference_drift(drift, t, params)
        with np.errstate(invalid="ignore"):
            got = drift.conductance_at(t, out=np.full(shape, np.inf))
        assert _bits(got) == _bits(expected)
        assert _bits(drift.conductance_at(t)) == _bits(expected)
        cells = np.array([0, 1, 3, 128, 129, 5000])
        assert _bits(drift.conductance_of(t, cells)) == _bits(expected.reshape(-1)[cells])


def test_the_factor_of_one_voltage_is_the_curves_factor_remembered() -> None:
    """Fails with a remembered factor keyed by something coarser than the voltage's float."""
    curve = IVCurve(1.5, 0.2)
    volts = [0.2, 0.3, np.nextafter(0.3, 1.0), 0.0, -0.0, 0.3, 5.0, 1e-300]
    for v in volts * 2:
        assert curve.factor_of(v) == float(curve.factor(np.array([v]))[0])
    assert curve.factor_of(0.3) != curve.factor_of(float(np.nextafter(0.3, 1.0)))


def test_the_kernels_refuse_mismatched_sizes_before_writing() -> None:
    """Compiled code has no bounds checks: a size mismatch must raise, not write past an array."""
    f4 = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="piece per output"):
        _physics_kernels.table_lookup(noise._TABLE, np.zeros(5, np.uint16), f4)
    with pytest.raises(ValueError, match="drive's size"):
        _physics_kernels.series_drive_terms(np.zeros(5, np.float32), *(np.float32(1),) * 3, f4, f4)
    with pytest.raises(ValueError, match="shapes disagree"):
        _physics_kernels.noisy_currents(
            np.zeros((3, 2), np.float32), np.zeros((3, 2), np.float32), np.zeros((3, 2), np.float32),
            np.float32(1), np.zeros((3, 2)),
        )  # fmt: skip
    with pytest.raises(ValueError, match="a time per output"):
        _physics_kernels.drift_log_time(1.0, np.zeros(5), 1.0, np.zeros(4))
    with pytest.raises(ValueError, match="a rate and a conductance"):
        _physics_kernels.drift_apply(np.zeros(4), np.zeros(5), np.zeros(4), 1e-9)
    with pytest.raises(ValueError, match="a code and an index per sample"):
        _physics_kernels.autoranged_codes(
            np.zeros(4), np.ones(3), np.ones(2), 1.0, 1.0, -8.0, 7.0, np.zeros(5), np.zeros(4, np.int16)
        )
