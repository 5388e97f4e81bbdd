"""A VMM on the rows it drives and the columns it measures: the same physics as the whole region's."""

from __future__ import annotations

import numpy as np

from drivers import codec, compact
from mock_hardware.array_model import CrossbarArray
from mock_hardware.device_params import preset
from mock_hardware.physics.line_resistance import TransferSolver
from mock_hardware.physics.noise import fast_normal_into, fast_normal_rows_into
from tests.mock_hardware.test_firmware import ask, batch_planes, command, make_firmware, state
from tests.mock_hardware.test_physics_lines import QUIET

ROWS, COLS = 24, 12


def _array(**overrides: float) -> CrossbarArray:
    return CrossbarArray(preset("umass-ta-hfo2").model_copy(update={"rows": ROWS, "cols": COLS, **overrides}), seed=5)


def _inputs(nvec: int, rows: np.ndarray, seed: int = 0) -> np.ndarray:
    """Vectors over the region's 16 rows, non-zero only on ``rows``."""
    v = np.zeros((nvec, 16))
    v[:, rows] = np.random.default_rng(seed).uniform(-0.2, 0.2, (nvec, len(rows)))
    return v


def test_driven_rows_into_some_columns_are_the_whole_regions_vmm_of_those() -> None:
    """Noise off, wires and the nonlinear I-V curve on: exact against the whole region's product."""
    array = _array(**{**QUIET, "iv_nonlinearity": 1.5})
    rows, columns = np.array([1, 4, 5, 11, 15]), np.array([0, 3, 7])
    v = _inputs(20, rows)
    whole = array.vmm(v, 4, 2, 9)
    picked = array.vmm(v[:, rows], 4, 2, 9, rows=rows, columns=columns)
    assert picked.shape == (20, 3)
    np.testing.assert_allclose(picked, whole[:, columns], rtol=1e-12, atol=1e-18)
    assert np.abs(whole[:, columns]).min() > 0  # the inputs reach those columns


def test_with_read_noise_a_column_reads_the_same_whichever_others_are_measured_with_it() -> None:
    rows = np.array([0, 2, 3, 9])
    v = _inputs(200, rows)[:, rows]
    few = _array().vmm(v, 0, 0, 12, rows=rows, columns=np.array([3]))
    many = _array().vmm(v, 0, 0, 12, rows=rows, columns=np.array([1, 3, 10]))
    # the same noise draws; the float32 products may round differently by shape (1e-7 relative)
    np.testing.assert_allclose(few[:, 0], many[:, 1], rtol=1e-5)
    clean = _array(read_noise=0.0).vmm(v, 0, 0, 12, rows=rows, columns=np.array([3]))
    relative = (few - clean) / np.abs(clean).max()
    assert 1e-4 < relative.std() < 0.05  # noise is there, of the read-noise scale
    again = _array()
    first = again.vmm(v, 0, 0, 12, rows=rows, columns=np.array([3]))
    assert not np.array_equal(first, again.vmm(v, 0, 0, 12, rows=rows, columns=np.array([3])))  # fresh noise


def test_the_bound_on_columns_not_measured_holds_and_is_not_loose() -> None:
    array = _array()
    rows, others = np.arange(16), np.array([0, 5, 8])
    v = np.abs(_inputs(50, rows))  # one sign: the bound's sum of magnitudes is then nearly reached
    bound = array.vmm_bound(v, 0, 0, 12, rows, others)
    worst = max(np.abs(array.vmm(v, 0, 0, 12, rows=rows, columns=others)).max() for _ in range(20))
    assert worst <= bound < 3 * worst


def test_a_column_not_sent_back_still_trips_the_tia_protection() -> None:
    """128 rows at 0.5 V: column 1 at 0.9 mS per cell carries 58 mA (ICOL is 50 mA), column 0 after
    RESETs about 6.5 mA. Asking for column 0 alone is refused as asking for both is, and changes nothing."""
    fw = make_firmware(g_initial_mean="9e-4", rows="128", cols="2")
    mask = np.zeros((128, 2))
    mask[:, 0] = 1
    reset = command("PULS:BATC", "RES", 0, 0, 128, 2, block=batch_planes(1.8, 5.0, 1e-3, mask))
    for _ in range(10):
        assert ask(fw, reset).kind == "value"
    step = 10.0 / (2**16 - 1)
    codes = np.full(128, round(0.5 / step) - 1, dtype="<i2")  # just under 0.5 V
    for wanted in ([True, False], [True, True]):
        selection = compact.encode_vmm_selection(np.ones(128, bool), np.array(wanted))
        before = state(fw)
        reply = ask(fw, codec.encode_command("VMM:CODE?", (0, 0, 128, 2, 1, "ALL"), selection + codes.tobytes()))
        assert (reply.kind, reply.code) == ("error", -240) and "ICOL" in reply.text
        assert state(fw) == before
    # Column 0 alone over half the rows is well inside: measured and sent.
    selection = compact.encode_vmm_selection(np.arange(128) < 64, np.array([True, False]))
    reply = ask(fw, codec.encode_command("VMM:CODE?", (0, 0, 128, 2, 1, "ALL"), selection + codes[:64].tobytes()))
    assert reply.kind == "block"
    codes_back, _ = compact.decode_adc_codes(reply.payload, 1)
    assert codes_back.shape == (1,) and codes_back[0] > 0


def test_noise_of_the_measured_columns_is_bit_for_bit_the_whole_regions() -> None:
    """The VMM draws read noise only for the columns it measures, jumping the stream to each run of
    them: the same bits as drawing every column of the region (odd and even vector counts, so the
    columns start mid-word)."""
    for nvec, rows in ((7, [0, 1, 5, 6, 9]), (64, [0, 9, 18, 27]), (1, [3]), (5, [2, 3, 4])):
        picked = np.array(rows)
        every = np.empty((picked.max() + 1, nvec), np.float32)
        fast_normal_into(np.random.Generator(np.random.PCG64(3)), every)
        some = np.empty((len(picked), nvec), np.float32)
        fast_normal_rows_into(np.random.Generator(np.random.PCG64(3)), some, picked)
        np.testing.assert_array_equal(some, every[picked])
    rows = np.array([0, 2, 3, 9])
    v = _inputs(2000, rows)[:, rows]  # enough vectors that jumping to the two runs of columns pays
    assert CrossbarArray._draw_measured_only(np.array([1, 2, 10]), 12, 2000)
    whole = _array().vmm(v, 0, 0, 12, rows=rows)
    unordered = _array().vmm(v, 0, 0, 12, rows=rows, columns=np.array([10, 1, 2]))  # the full draw, then picked
    ordered = _array().vmm(v, 0, 0, 12, rows=rows, columns=np.array([1, 2, 10]))
    # the same draws; the float32 products may round differently by shape (1e-7 relative)
    np.testing.assert_allclose(ordered, whole[:, [1, 2, 10]], rtol=1e-5)
    np.testing.assert_allclose(unordered, whole[:, [10, 1, 2]], rtol=1e-5)


def test_the_line_networks_column_transfer_never_exceeds_the_columns_conductance() -> None:
    """The TIA-protection bound on the columns a VMM does not measure rests on ``0 <= G_eff`` and
    ``sum_r G_eff[r, c] <= sum_r G[r, c]`` (no line solve for those columns); a single ``G_eff``
    may exceed its cell's ``G`` (sneak paths through the rows at 0 V), here with wires 30x the
    preset's so the drops are large."""
    params = preset("umass-ta-hfo2").model_copy(update={"rows": 32, "cols": 16, "line_resistance": 10.0})
    g = CrossbarArray(params, seed=2).conductance
    g_eff = TransferSolver(32, 16, 10.0).transfer(g)
    assert np.all(g_eff >= 0) and np.all(g_eff.sum(axis=0) <= g.sum(axis=0))
    assert (g_eff / g).min() < 0.7 and (g_eff > g).any()  # the wires matter here, and sneak paths


def test_a_float32_drive_is_read_in_place_and_reads_as_its_float64_copy() -> None:
    """The firmware's float32 drive is used without a copy: the same currents (noise, I-V curve and
    wires on) as the same values given in float64, and the caller's array left as it was."""
    rows, columns = np.array([0, 2, 3, 9, 14]), np.array([1, 4, 8])
    drive = np.ascontiguousarray(_inputs(40, rows, seed=3)[:, rows], dtype=np.float32)
    assert drive.flags.c_contiguous
    kept = drive.copy()
    one, other = _array(iv_nonlinearity=1.5), _array(iv_nonlinearity=1.5)
    in_place = one.vmm(drive, 4, 2, 9, rows=rows, columns=columns)
    copied = other.vmm(drive.astype(np.float64), 4, 2, 9, rows=rows, columns=columns)
    assert in_place.tobytes() == copied.tobytes()
    assert drive.tobytes() == kept.tobytes()
    strided = np.asfortranarray(drive)  # not C-contiguous: copied first, the same numbers
    assert _array(iv_nonlinearity=1.5).vmm(strided, 4, 2, 9, rows=rows, columns=columns).tobytes() == in_place.tobytes()
