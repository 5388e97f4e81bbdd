"""The codec's and the firmware's shortcuts decide as the general paths they stand in for (session 10):
a whole frame parsed straight from its bytes, VMM selections kept between commands (host and
firmware), the extreme DAC codes in Python floats, the ADC reply's parts, and the pulse values
checked where they were sent. Each test compares the shortcut with the path it replaces."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import Region, compact, open_board
from drivers.codec import CommandParser, encode_command, encode_frame
from drivers.commands import Line
from mock_hardware.array_model import PulseKind
from mock_hardware.firmware import CommandFailure, Firmware

# --- a whole frame parsed from its bytes ---------------------------------------------------------


def _general(data: bytes) -> tuple[list[object], bool]:
    """What the parser makes of ``data`` taking it byte by byte (its general path, never the shortcut)."""
    parser = CommandParser()
    items: list[object] = []
    for i in range(len(data)):
        items += parser.feed(data[i : i + 1])
    return items, parser.has_partial


def _whole(data: bytes) -> tuple[list[object], bool]:
    parser = CommandParser()
    return list(parser.feed(data)), parser.has_partial


def _framed(body: bytes, seq: int = 7, crc: int | None = None) -> bytes:
    frame = encode_frame(seq, body)
    if crc is None:
        return frame
    header, _, rest = frame.partition(b"\n")
    return header[: header.rfind(b",") + 1] + b"%08x\n" % crc + rest


BODIES = [
    encode_command("SYST:PCNT?"),
    encode_command("READ?", (1, 2, 0.2)),
    encode_command("VMM:CODE?", (0, 0, 2, 3, 1, "NZ"), b"\x03\x07" + b"\x01\x00\x02\x00"),
    encode_command("VMM?", (0, 0, 1, 1, 1), np.array([0.1], np.float32)),
    b"VMM? 0,0,1,1,1,#14\x00\x00\x00\x00\r\n",  # a block ended by \r\n
    b"VMM? 0,0,1,1,1,#14\x00\x00\x00\x00\r\r\n",  # \r not followed by the line end
    b"VMM? 0,0,1,1,1,#14\x00\x00\x00\x00\nSYST:PCNT?\n",  # bytes after the command
    b"VMM? 0,0,1,1,1,#14\x00\x00\x00\x00",  # no line end
    b"VMM? 0,0,1,1,1,#0\n",  # malformed block header
    b"VMM? 0,0,1,1,1,#2x4\x00\x00\x00\x00\n",  # length not digits
    b"VMM? 0,0,1,1,1,#15\x00\x00\x00\x00\n",  # shorter than declared
    b"SYST:PCNT?\nSYST:PCNT?\n",  # two commands
    b"SYST:PCNT?",  # no line end
    b"\n",  # an empty command
    b"READ? 1,,2\n",  # an empty parameter
    b"READ? \xff\n",  # not ASCII
    b"!1,11,00000000\nSYST:PCNT?\n",  # a frame in a frame
    b"X" * 5000 + b"\n",  # an overlong line
    b"X" * 5000 + b" #14\x00\x00\x00\x00\n",  # an overlong line before a block
    b"MAP? 0,0,1,1,0.2,COND\r\n",
]


@pytest.mark.parametrize("body", BODIES)
def test_a_whole_frame_parses_as_it_does_byte_by_byte(body: bytes) -> None:
    for data in (_framed(body), _framed(body, crc=zlib.crc32(body) ^ 1), _framed(body)[:-1], _framed(body) + b"\n"):
        whole, general = _whole(data), _general(data)
        assert whole == general
        for a, b in zip(whole[0], general[0], strict=True):  # the body too (not compared by ==)
            assert bytes(getattr(a, "body", b"")) == bytes(getattr(b, "body", b""))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60), st.integers(0, 10**6))
def test_any_bytes_in_a_frame_parse_as_they_do_byte_by_byte(body: bytes, seq: int) -> None:
    data = _framed(body, seq)
    assert _whole(data) == _general(data)


# --- VMM selections kept between commands -------------------------------------------------------


def test_a_vmm_selection_kept_by_the_host_follows_the_callers_values_not_its_array() -> None:
    """The host keeps checked row and column selections by value: a caller that changes its array in
    place between two batches gets the new rows and columns, as a board that keeps nothing does (a
    chip with device spread, so that other rows and columns read otherwise)."""
    resource = "emulator://?preset=umass-ta-hfo2&rows=16&cols=8&seed=3"
    rng = np.random.default_rng(0)
    batches = [rng.uniform(-0.2, 0.2, (5, 3)).astype(np.float32) for _ in range(3)]
    asked = [([0, 2, 5], [1, 4]), ([1, 3, 7], [0, 5]), ([0, 2, 5], [1, 4])]
    region = Region(0, 0, 8, 6)
    with open_board(resource) as kept, open_board(resource) as fresh:
        rows, columns = np.array(asked[0][0]), np.array(asked[0][1])
        got = []
        for batch, (these_rows, these_columns) in zip(batches, asked, strict=True):
            rows[:], columns[:] = these_rows, these_columns  # the same arrays, new values
            got.append(kept.vmm(batch, region, columns=columns, rows=rows, narrow=True))
        for batch, (these_rows, these_columns), result in zip(batches, asked, got, strict=True):
            fresh._vmm_rows_kept.clear()
            fresh._vmm_columns_kept.clear()
            want = fresh.vmm(batch, region, columns=np.array(these_columns), rows=np.array(these_rows), narrow=True)
            np.testing.assert_array_equal(result, want)
        assert not kept._vmm_rows_kept[(8, np.array([0, 2, 5], np.intp).tobytes())].flags.writeable


def test_the_firmware_decodes_each_vmm_selection_as_it_did_before_keeping_them() -> None:
    """The firmware's kept selections are those the bitmaps name, for every region shape (the same
    bitmap bytes name other rows in another region), and the store stays bounded."""
    from mock_hardware.firmware import VMM_SELECTIONS_KEPT, VmmSelection

    firmware = Firmware.__new__(Firmware)
    firmware._vmm_selections = {}
    rng = np.random.default_rng(1)
    for _ in range(3 * VMM_SELECTIONS_KEPT):
        nrows, ncols = int(rng.integers(1, 20)), int(rng.integers(1, 20))
        rows, cols = rng.random(nrows) < 0.5, rng.random(ncols) < 0.5
        rows[rng.integers(nrows)] = cols[rng.integers(ncols)] = True
        head = compact.encode_vmm_selection(rows, cols)
        got = firmware._vmm_selection(head, nrows, ncols)
        again = firmware._vmm_selection(head, nrows, ncols)
        assert isinstance(got, VmmSelection) and again is got
        np.testing.assert_array_equal(got.driven, rows)
        np.testing.assert_array_equal(got.wanted, cols)
        np.testing.assert_array_equal(got.rows, np.flatnonzero(rows))
        np.testing.assert_array_equal(got.measured, np.flatnonzero(cols))
        np.testing.assert_array_equal(got.others, np.flatnonzero(~cols))
        assert got.every_row == rows.all()
        assert len(firmware._vmm_selections) <= VMM_SELECTIONS_KEPT
    # The same two bytes name 3 rows and 5 columns, or 5 rows and 3 columns: two selections.
    three_by_five = firmware._vmm_selection(b"\x05\x03", 3, 5)
    five_by_three = firmware._vmm_selection(b"\x05\x03", 5, 3)
    assert (len(three_by_five.driven), len(three_by_five.others)) == (3, 3)
    assert (len(five_by_three.driven), len(five_by_three.others)) == (5, 1)
    with pytest.raises(CommandFailure, match="column bitmap selects none"):
        firmware._vmm_selection(compact.encode_vmm_selection(np.ones(3, bool), np.zeros(3, bool)), 3, 3)


def test_the_firmware_reuses_its_input_space_without_old_inputs_leaking(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of one size in turn, denser and sparser (the compact form), through the kept input space:
    the array is handed exactly each batch's DAC levels, zeros where its codes are 0, never a value
    of an earlier batch; and nothing the array was handed changes when the next batch comes."""
    resource = "emulator://?preset=umass-ta-hfo2&rows=16&cols=8&seed=3"
    rng = np.random.default_rng(5)
    dense = np.where(rng.random((40, 8)) < 0.8, rng.uniform(-0.2, 0.2, (40, 8)), 0).astype(np.float32)
    sparse = np.where(rng.random((40, 8)) < 0.3, dense[::-1], 0).astype(np.float32)
    with open_board(resource) as board:
        firmware = board.link.transport._endpoint.firmware
        handed: list[tuple[np.ndarray, np.ndarray]] = []
        real_vmm = type(firmware.array).vmm

        def vmm(array: object, v_driven: np.ndarray, *args: object, **kwargs: object) -> np.ndarray:
            handed.append((v_driven, v_driven.copy()))
            return real_vmm(array, v_driven, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(type(firmware.array), "vmm", vmm)
        step = np.float32(board.scales.dac_step(Line.ROW))
        for batch in (dense, sparse, dense, sparse, sparse[::-1].copy()):
            board.vmm(batch, Region(0, 0, 8, 4))
            expected = compact.dac_levels(batch, float(step)) * step
            np.testing.assert_array_equal(handed[-1][1], expected.astype(np.float32))
        latest = handed[-1][0]
        for i, (array, copy) in enumerate(handed[:-1]):
            if not np.shares_memory(array, latest):  # a space reused since holds the latest batch by now
                np.testing.assert_array_equal(array, copy, err_msg=f"batch {i}")
        assert sum(np.shares_memory(a, latest) for a, _ in handed) >= 2  # the space was reused


# --- the extreme DAC codes in Python floats ------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(st.floats(-0.5, 0.5, width=32), st.sampled_from([10 / 65535, 1 / 4095, 6 / 255, 0.5 / 2**20]))
def test_one_dac_level_is_the_arrays(volts: float, step: float) -> None:
    assert compact.dac_level(volts, step) == compact.dac_levels(np.array([volts], np.float32), step)[0]


def test_dac_levels_on_ties_and_signs() -> None:
    step = 10 / 65535
    halves = (np.arange(-3000, 3000) + 0.5) * step  # nearest code a tie, either side of each level
    volts = np.concatenate([halves, np.arange(-3000, 3000) * step, [0.0, -0.0, 1e-30, -1e-30]]).astype(np.float32)
    levels = compact.dac_levels(volts, step)
    scalar = np.array([compact.dac_level(float(v), step) for v in volts])
    np.testing.assert_array_equal(scalar, levels)
    np.testing.assert_array_equal(np.signbit(scalar), np.signbit(levels))


# --- the ADC reply's layout -----------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 2, 7, 8, 1001])
def test_the_adc_reply_parts_are_the_layout(count: int) -> None:
    rng = np.random.default_rng(count)
    codes = rng.integers(-8192, 8192, count).astype(np.float64)
    index = rng.integers(0, 16, count)
    low_first = [int(a) | (int(b) << 4) for a, b in zip(index[0::2], [*index[1::2], 0], strict=False)]
    expected = codes.astype("<i2").tobytes() + bytes(low_first)
    assert compact.encode_adc_codes(codes, index) == expected
    got_codes, got_index = compact.decode_adc_codes(expected, count)
    np.testing.assert_array_equal(got_codes, codes)
    np.testing.assert_array_equal(got_index, index)


# --- pulse values checked where they were sent ----------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([PulseKind.SET, PulseKind.RESET]),
    st.lists(st.floats(-1.0, 6.0), min_size=1, max_size=6),
    st.lists(st.floats(-1.0, 7.0) | st.sampled_from([0.0, 5.5, 4.0, -4.0]), min_size=1, max_size=6),
    st.lists(st.floats(0.0, 2e-3) | st.sampled_from([1e-8, 1e-3, float("nan")]), min_size=1, max_size=6),
    st.booleans(),
)
def test_the_pulse_values_sent_pass_exactly_when_their_planes_do(
    kind: PulseKind, amplitude: list[float], v_gate: list[float], width: list[float], as_float64: bool
) -> None:
    """The firmware checks a sparse batch's values where they were sent and checks the planes (naming
    the cell) only when one fails: both must decide alike, in float32 (block) and float64 (DAC) alike."""
    firmware = Firmware.__new__(Firmware)
    from mock_hardware.firmware import FirmwareSpec

    firmware.spec = FirmwareSpec()
    dtype = np.float64 if as_float64 else np.float32
    sent = [np.array(values, dtype=dtype) for values in (amplitude, v_gate, width)]
    n = max(len(v) for v in sent)
    mask = np.zeros((2, n), bool)
    mask[1, :] = True
    planes = []
    for values in sent:
        plane = np.full((2, n), 99.0, dtype=dtype)  # cells not pulsed hold anything
        plane[1] = np.resize(values, n)
        planes.append(plane)
    pulsed = [plane[1] for plane in planes]
    try:
        firmware._check_pulse(
            kind, np.where(mask, planes[0], 0).astype(dtype),
            np.where(mask, planes[1], firmware.spec.limits.VGATE[0]).astype(dtype),
            np.where(mask, planes[2], firmware.spec.limits.WIDTH[0]).astype(dtype), (0, 0),
        )  # fmt: skip
        planes_pass = True
    except CommandFailure:
        planes_pass = False
    assert firmware._pulse_values_inside(kind, *pulsed) == planes_pass


def test_adc_codes_become_currents_and_a_gain_index_past_the_gains_is_refused() -> None:
    gains = (1e3, 1e4, 1e5)
    scales = compact.Scales(16, {}, 14, (-1.0, 1.0), gains)
    codes = np.array([1, -2, 8191], np.int16)
    expected = codes.astype(np.float64) * scales.adc_lsb / np.array(gains)
    np.testing.assert_array_equal(scales.currents(codes, np.array([0, 1, 2], np.uint8)), expected)
    with pytest.raises(ValueError, match="gain index 3 beyond the board's 3 gains"):
        scales.currents(codes, np.array([0, 3, 1], np.uint8))


@pytest.mark.parametrize("seq", [0, 1, 10**18 - 1])
def test_a_frame_made_from_parts_is_the_frame_of_the_joined_command(seq: int) -> None:
    from drivers.codec import command_parts, encode_frame_of

    for parts in (command_parts("SYST:PCNT?"), command_parts("VMM:CODE?", (0, 0, 2, 3, 1, "NZ"), b"\x03\x07\x01\x00")):
        assert encode_frame_of(seq, parts) == encode_frame(seq, b"".join(parts))
        assert b"".join(parts) == encode_command(*(("SYST:PCNT?",) if len(parts) == 1 else
                                                   ("VMM:CODE?", (0, 0, 2, 3, 1, "NZ"), b"\x03\x07\x01\x00")))


def test_a_frame_in_a_mutable_buffer_is_copied_not_viewed() -> None:
    """The shortcut hands on views of the bytes received: only of immutable bytes. A bytearray goes the
    general way (copied), so the caller changing it later changes no command."""
    buffer = bytearray(_framed(encode_command("VMM?", (0, 0, 1, 1, 1), np.array([0.1], np.float32))))
    (framed,) = CommandParser().feed(buffer)  # type: ignore[arg-type]
    block = bytes(framed.item.block)
    buffer[:] = b"x" * len(buffer)
    assert bytes(framed.item.block) == block
