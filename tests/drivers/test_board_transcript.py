"""Transcript tests of the Board driver: the exact bytes it sends and what it makes of the replies.

No emulator: a scripted transport plays the board (see ``fake_transport``). The second half
proves that every request the driver refuses sent nothing at all.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from drivers import (
    Board,
    BoardError,
    FirmwareError,
    InvalidRequest,
    LimitError,
    LinkError,
    PulseKind,
    Range,
    Region,
    SafetyLimits,
    codec,
)
from tests.drivers.fake_transport import (
    ANY_COMMAND,
    FIRMWARE_LIMITS,
    IDENTITY,
    TIA_GAINS,
    ScriptedTransport,
    block_reply,
    handshake,
)

WIDTH = 2.0**-10  # 0.0009765625 s: exact in float32, so the wire text is predictable


_OPENED: list[tuple[Board, ScriptedTransport]] = []


def connect(rows: int = 4, cols: int = 3, limits: SafetyLimits | None = None) -> tuple[Board, ScriptedTransport]:
    transport = ScriptedTransport(handshake(rows, cols))
    board = Board(transport, limits, retries=0, framing=False)  # exact plain transcripts: no resending
    assert not transport.script, "the handshake left scripted exchanges unused"
    _OPENED.append((board, transport))
    return board, transport


@pytest.fixture(autouse=True)
def _close_boards_left_open() -> Iterator[None]:
    """Close what a test left open, so no board is idled by the exit hook against a finished script."""
    yield
    while _OPENED:
        board, transport = _OPENED.pop()
        if board.closed:
            continue
        transport.script.clear()
        if board.link.framed:  # close() sends *RST and SYST:FRAM OFF, numbered after the last frame
            last = max(codec.parse_frame_header(w.split(b"\n", 1)[0] + b"\n").seq
                       for w in transport.written if w.startswith(b"!"))  # fmt: skip
            expect_framed(transport, last + 1, b"*RST\n", b"OK\n")
            expect_framed(transport, last + 2, b"SYST:FRAM OFF\n", b"OK\n")
        else:
            transport.expect(b"*RST\n", b"OK\n")
        board.close()


def firmware_limits(**changes: tuple[float, float]) -> SafetyLimits:
    names = {"v_row": "VROW", "v_col": "VCOL", "v_gate": "VGATE", "v_read": "VREAD",
             "pulse_width": "WIDTH", "i_col": "ICOL"}  # fmt: skip
    ranges = {name: FIRMWARE_LIMITS[wire] for name, wire in names.items()} | changes
    return SafetyLimits.model_validate({name: {"min": lo, "max": hi} for name, (lo, hi) in ranges.items()})


@pytest.fixture
def small() -> tuple[Board, ScriptedTransport]:
    """A 4 x 3 board with the firmware's limits."""
    return connect()


# ----------------------------------------------------------------------------- connect


def test_connect_handshake(small: tuple[Board, ScriptedTransport]) -> None:
    board, transport = small
    assert transport.written == [command for command, _ in handshake()]
    assert (board.identity.maker, board.identity.model, board.identity.serial, board.identity.firmware) == (
        "MEMHIL", "EMU-1T1R", "SN-0001", "0.1.0",
    )  # fmt: skip
    assert board.shape == (4, 3)
    assert board.firmware_limits.v_gate == Range(min=0.0, max=5.5)
    assert board.firmware_limits.pulse_width == Range(min=1e-8, max=1e-3)
    assert board.firmware_limits.i_col == Range(min=-0.05, max=0.05)
    assert board.limits == board.firmware_limits
    assert board.read_gate_voltage == 5.0
    assert board.tia_gains == TIA_GAINS
    assert board.resource == "FAKE::BOARD"


def test_connect_keeps_tighter_configured_limits() -> None:
    tight = firmware_limits(v_row=(-3.0, 3.0), pulse_width=(1e-7, 1e-4))
    board, _ = connect(limits=tight)
    assert board.limits == tight
    assert board.firmware_limits.v_row == Range(min=-4.0, max=4.0)


def test_connect_refuses_configured_limits_beyond_the_firmware() -> None:
    transport = ScriptedTransport(handshake())
    with pytest.raises(InvalidRequest, match="v_row, v_gate") as caught:
        Board(transport, firmware_limits(v_row=(-5.0, 4.0), v_gate=(0.0, 6.0)), framing=False)
    assert "FAKE::BOARD" in str(caught.value)
    assert transport.written == [command for command, _ in handshake()]  # the handshake only
    assert transport.closed


@pytest.mark.parametrize(
    ("step", "reply"),
    [(0, b"MEMHIL,EMU-1T1R,SN-0001\n"), (2, b"128\n"), (2, b"x,y\n"), (3, b"-4.0\n"), (9, b"five\n")],
    ids=["idn-three-fields", "arr-one-field", "arr-words", "lim-one-field", "vgre-word"],
)
def test_connect_refuses_a_malformed_description(step: int, reply: bytes) -> None:
    script = handshake()
    script[step] = (script[step][0], reply)
    transport = ScriptedTransport(script[: step + 1])
    with pytest.raises(LinkError, match="malformed"):
        Board(transport, framing=False)
    assert transport.closed


def test_connect_reports_a_firmware_error_during_the_handshake() -> None:
    transport = ScriptedTransport([(b"*IDN?\n", b'ERR -240,"board not powered"\n')])
    with pytest.raises(FirmwareError, match="board not powered"):
        Board(transport, framing=False)
    assert transport.closed


# ----------------------------------------------------------------------------- cell operations


def test_read_cell(small: tuple[Board, ScriptedTransport]) -> None:
    board, transport = small
    transport.expect(b"READ? 3,2,0.25\n", b"0.000412\n")
    transport.expect(b"READ? 0,0,-0.125\n", b"1.5e-05\n")
    assert board.read_cell(3, 2, v_read=0.25) == 0.000412
    assert board.read_cell(0, 0, v_read=-0.125) == 1.5e-5


@pytest.mark.parametrize(
    ("call", "header"),
    [("set_pulse", b"PULS:SET"), ("reset_pulse", b"PULS:RES"), ("form_pulse", b"PULS:FORM")],
)
def test_single_pulses(small: tuple[Board, ScriptedTransport], call: str, header: bytes) -> None:
    board, transport = small
    transport.expect(header + b" 3,2,2.5,1.25,0.0009765625\n", b"OK\n")
    getattr(board, call)(3, 2, 2.5, 1.25, WIDTH)
    assert not transport.script


@pytest.mark.parametrize(("kind", "header"), [(PulseKind.RESET, b"PULS:RES"), ("reset", b"PULS:RES"),
                                              ("RES", b"PULS:RES"), ("form", b"PULS:FORM")])  # fmt: skip
def test_pulse_kind_by_name(small: tuple[Board, ScriptedTransport], kind: str, header: bytes) -> None:
    board, transport = small
    transport.expect(header + b" 0,1,1.5,2.0,0.0009765625\n", b"OK\n")
    board.pulse(kind, 0, 1, 1.5, 2.0, WIDTH)
    assert not transport.script


# ----------------------------------------------------------------------------- bulk operations


def test_read_map_is_one_block(small: tuple[Board, ScriptedTransport]) -> None:
    board, transport = small
    conductance = np.arange(12, dtype=np.float32).reshape(4, 3) * 1e-5
    transport.expect(b"MAP? 0,0,4,3,0.25,COND\n", block_reply(conductance))
    result = board.read_map(v_read=0.25)
    assert result.shape == (4, 3)
    assert result.dtype == np.float64
    np.testing.assert_array_equal(result, conductance)
    assert len(transport.written) == len(handshake()) + 1


def test_read_map_of_a_region_as_current(small: tuple[Board, ScriptedTransport]) -> None:
    board, transport = small
    current = np.array([[1e-6, 2e-6], [3e-6, -4e-6]], dtype=np.float32)
    transport.expect(b"MAP? 1,1,2,2,-0.25,CURR\n", block_reply(current))
    np.testing.assert_array_equal(board.read_map(-0.25, Region(1, 1, 2, 2), quantity="current"), current)


def test_read_map_refuses_a_value_reply(small: tuple[Board, ScriptedTransport]) -> None:
    board, transport = small
    transport.expect(b"MAP? 0,0,4,3,0.25,COND\n", b"0.5\n")
    with pytest.raises(LinkError, match=r"expected a (binary )?block"):
        board.read_map(v_read=0.25)


def test_vmm_block_in_block_out(small: tuple[Board, ScriptedTransport]) -> None:
    board, transport = small
    v_rows = np.array([[0.25, -0.125, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0]])
    currents = np.array([[1e-5, 2e-5, -3e-5], [0.0, 0.0, 0.0]], dtype=np.float32)
    transport.expect(b"VMM? 0,0,4,3,2," + block_reply(v_rows), block_reply(currents))
    result = board.vmm(v_rows)
    assert result.shape == (2, 3)
    np.testing.assert_array_equal(result, currents)


def test_vmm_of_one_vector_on_a_region(small: tuple[Board, ScriptedTransport]) -> None:
    board, transport = small
    transport.expect(b"VMM? 2,1,2,2,1," + block_reply([[0.25, 0.5]]), block_reply([[1e-6, 2e-6]]))
    result = board.vmm([0.25, 0.5], Region(2, 1, 2, 2))
    np.testing.assert_array_equal(result, np.array([[1e-6, 2e-6]], dtype=np.float32))


def test_apply_pulses_sends_four_planes_with_unmasked_cells_zeroed(small: tuple[Board, ScriptedTransport]) -> None:
    board, transport = small
    amplitude = np.array([[1.0, 1.5, 2.0], [2.5, 3.0, 3.5], [9.0, 9.0, 9.0], [0.5, 1.0, 1.5]])
    mask = np.array([[1, 0, 1], [0, 1, 0], [0, 0, 0], [1, 1, 0]], dtype=bool)
    expected_planes = np.zeros((4, 4, 3))
    expected_planes[0] = np.where(mask, amplitude, 0)  # the 9 V cells are unmasked: not checked, not sent
    expected_planes[1] = np.where(mask, 1.25, 0)
    expected_planes[2] = np.where(mask, WIDTH, 0)
    expected_planes[3] = mask
    transport.expect(b"PULS:BATC SET,0,0,4,3," + block_reply(expected_planes), b"5\n")
    assert board.apply_pulses("SET", amplitude, v_gate=1.25, width=WIDTH, mask=mask) == 5


def test_apply_pulses_at_an_origin(small: tuple[Board, ScriptedTransport]) -> None:
    board, transport = small
    planes = np.zeros((4, 2, 2))
    planes[0], planes[1], planes[2], planes[3] = 1.5, 2.0, WIDTH, 1
    transport.expect(b"PULS:BATC RES,2,1,2,2," + block_reply(planes), b"4\n")
    assert board.apply_pulses(PulseKind.RESET, np.full((2, 2), 1.5), 2.0, WIDTH, origin=(2, 1)) == 4


def test_checked_batch_is_sent_as_checked(small: tuple[Board, ScriptedTransport]) -> None:
    board, transport = small
    mask = np.eye(4, 3, dtype=bool)
    batch = board.check_pulses("FORM", 3.0, 4.0, WIDTH, mask)
    assert len(transport.written) == len(handshake())  # the dry run sent nothing
    assert batch.count == 3
    assert batch.region == Region(0, 0, 4, 3)
    transport.expect(b"PULS:BATC FORM,0,0,4,3," + block_reply(batch.planes), b"3\n")
    assert board.apply_pulses(batch) == 3


def test_apply_pulses_with_an_empty_mask_sends_nothing(small: tuple[Board, ScriptedTransport]) -> None:
    board, transport = small
    assert board.apply_pulses("SET", 2.0, 1.0, WIDTH, mask=np.zeros((4, 3), bool)) == 0
    assert len(transport.written) == len(handshake())


def test_batch_at_a_limit_float32_cannot_express_is_sent(small: tuple[Board, ScriptedTransport]) -> None:
    """A width of exactly 1e-3 s (the WIDTH maximum) travels as the nearest float32 and is accepted."""
    board, transport = small
    planes = np.zeros((4, 4, 3), dtype=np.float32)
    planes[0], planes[1], planes[2], planes[3] = 2.0, 1.0, 1e-3, 1
    transport.expect(b"PULS:BATC SET,0,0,4,3," + block_reply(planes), b"12\n")
    assert board.apply_pulses("SET", 2.0, 1.0, 1e-3) == 12


@pytest.mark.filterwarnings("error")  # numpy's overflow warning is noise: the value is refused, by name
def test_a_batch_value_past_float32_is_refused_quietly(small: tuple[Board, ScriptedTransport]) -> None:
    board, transport = small
    before = transport.sent
    with pytest.raises(LimitError, match="amplitude"):
        board.apply_pulses("SET", 1e300, 1.0, 1e-6)
    assert transport.sent == before


def test_iv_sweep_is_one_block_each_way(small: tuple[Board, ScriptedTransport]) -> None:
    board, transport = small
    voltages = np.array([0.5, 1.5, -1.0, -2.0])
    currents = np.array([5e-5, 4e-4, -3e-4, -1e-5], dtype=np.float32)
    transport.expect(b"SWEEP? 3,2,1.25,0.0009765625,4," + block_reply(voltages), block_reply(currents))
    np.testing.assert_array_equal(board.iv_sweep(3, 2, voltages, v_gate=1.25, width=WIDTH), currents)


# ----------------------------------------------------------------------------- primitives


def test_low_level_primitives(small: tuple[Board, ScriptedTransport]) -> None:
    board, transport = small
    for command, reply in [
        (b"DAC:VOLT ROW,3,1.5\n", b"OK\n"), (b"DAC:VOLT GATE,3,5.0\n", b"OK\n"), (b"DAC:VOLT COL,2,-0.25\n", b"OK\n"),
        (b"DAC:VOLT? ROW,3\n", b"1.50004\n"), (b"MUX:ROW 3,1\n", b"OK\n"), (b"MUX:COL 2,1\n", b"OK\n"),
        (b"ADC:SAMP? 2,1000.0\n", b"2.4e-05,79,0\n"), (b"ADC:SAMP? 2,1000000.0\n", b"3.1e-06,8191,1\n"),
        (b"MUX:COL 2,0\n", b"OK\n"), (b"MUX:OPEN\n", b"OK\n"),
    ]:  # fmt: skip
        transport.expect(command, reply)
    board.set_dac("ROW", 3, 1.5)
    board.set_dac("GATE", 3, 5.0)
    board.set_dac("COL", 2, -0.25)
    assert board.dac_voltage("ROW", 3) == 1.50004
    board.select_row(3)
    board.select_column(2)
    low_gain = board.sample_adc(2, 1e3)
    high_gain = board.sample_adc(2, 1e6)
    board.select_column(2, connected=False)
    board.open_muxes()
    assert (low_gain.current, low_gain.code, low_gain.saturated) == (2.4e-5, 79, False)
    assert (high_gain.code, high_gain.saturated) == (8191, True)
    assert not transport.script


def test_adc_gain_that_rounds_to_a_listed_one_is_sent_as_listed(small: tuple[Board, ScriptedTransport]) -> None:
    # The board compares the number sent with those TIA:GAIN? lists: a caller's 1000.0000001 is sent
    # as 1000.0, never as itself (a lab board refuses it with -224).
    board, transport = small
    transport.expect(b"ADC:SAMP? 2,1000.0\n", b"2.4e-05,79,0\n")
    sample = board.sample_adc(2, 1e3 * (1 + 1e-10))
    assert (sample.current, sample.code) == (2.4e-5, 79)
    assert not transport.script


def test_raw_query(small: tuple[Board, ScriptedTransport]) -> None:
    board, transport = small
    transport.expect(b"SYST:VERS?\n", b"1.0\n")
    transport.expect(b"*RST\n", b"OK\n")
    assert board.query("SYST:VERS?") == "1.0"
    assert board.query("*RST") == "OK"


def test_idle_for_and_clock(small: tuple[Board, ScriptedTransport]) -> None:
    board, transport = small
    transport.expect(b"SYST:WAIT 2.5\n", b"OK\n")
    transport.expect(b"SYST:TIME?\n", b"2.50015\n")
    board.idle_for(2.5)
    assert board.clock() == 2.50015
    assert transport.timeout == 1.0  # the longer wait's timeout was restored


# ----------------------------------------------------------------------------- close and errors


def test_close_sends_reset_once(small: tuple[Board, ScriptedTransport]) -> None:
    board, transport = small
    transport.expect(b"*RST\n", b"OK\n")
    board.close()
    board.close()
    assert transport.written[-1] == b"*RST\n"
    assert transport.written.count(b"*RST\n") == 1
    assert transport.closed and board.closed


def test_context_manager_sends_reset_on_exit() -> None:
    transport = ScriptedTransport([*handshake(), (b"READ? 0,0,0.25\n", b"1e-4\n"), (b"*RST\n", b"OK\n")])
    with Board(transport, framing=False) as board:
        board.read_cell(0, 0, 0.25)
    assert transport.written[-1] == b"*RST\n"
    assert transport.closed


def test_closed_board_sends_nothing(small: tuple[Board, ScriptedTransport]) -> None:
    board, transport = small
    transport.expect(b"*RST\n", b"OK\n")
    board.close()
    sent = list(transport.written)
    with pytest.raises(LinkError, match="closed"):
        board.read_cell(0, 0, 0.25)
    assert transport.written == sent


def test_firmware_error_carries_code_message_command_and_resource(small: tuple[Board, ScriptedTransport]) -> None:
    board, transport = small
    transport.expect(b"PULS:SET 1,1,2.5,1.25,0.0009765625\n", b'ERR -222,"amplitude 2.5 V outside VROW [-2, 2] V"\n')
    with pytest.raises(FirmwareError) as caught:
        board.set_pulse(1, 1, 2.5, 1.25, WIDTH)
    error = caught.value
    assert error.code == -222
    assert error.message == "amplitude 2.5 V outside VROW [-2, 2] V"
    assert error.command == "PULS:SET 1,1,2.5,1.25,0.0009765625"
    assert error.resource == "FAKE::BOARD"
    assert "-222" in str(error) and "VROW" in str(error)
    transport.expect(b"READ? 1,1,0.25\n", b"0.0001\n")  # the link is still in step
    assert board.read_cell(1, 1, 0.25) == 0.0001


def test_garbled_reply_is_a_link_error_naming_the_command(small: tuple[Board, ScriptedTransport]) -> None:
    board, transport = small
    transport.expect(b"MAP? 0,0,4,3,0.25,COND\n", b"#x\n")
    with pytest.raises(LinkError, match="garbled reply") as caught:
        board.read_map(0.25)
    assert caught.value.command == "MAP? 0,0,4,3,0.25,COND"


def test_missing_reply_is_a_timeout_naming_resource_and_command(small: tuple[Board, ScriptedTransport]) -> None:
    board, transport = small
    transport.expect(b"*OPC?\n", b"")
    with pytest.raises(LinkError) as caught:
        board.query("*OPC?")
    assert caught.value.resource == "FAKE::BOARD"
    assert caught.value.command == "*OPC?"
    assert "'*OPC?'" in str(caught.value)


# ----------------------------------------------------------------------------- refused requests send nothing

Request = Callable[[Board], object]
BULK = np.full((128, 64), 2.0)


def bad_element(plane: str, index: tuple[int, int], value: float) -> dict[str, np.ndarray]:
    planes = {"amplitude": BULK.copy(), "v_gate": np.full((128, 64), 1.5), "width": np.full((128, 64), WIDTH)}
    planes[plane][index] = value
    return planes


def width_with(shape: tuple[int, int], index: tuple[int, int], value: float) -> np.ndarray:
    width = np.full(shape, WIDTH)
    width[index] = value
    return width


REFUSED: dict[str, tuple[Request, type[Exception], str]] = {
    "set amplitude above v_row": (lambda b: b.set_pulse(0, 0, 4.5, 1.0, WIDTH), LimitError,
                                  r"SET amplitude \(v_row\) = 4.5 V is outside the limit \[0, 4\] V"),
    "reset amplitude above v_col": (lambda b: b.reset_pulse(0, 0, 4.01, 1.0, WIDTH), LimitError, r"v_col\) = 4.01"),
    "form amplitude above v_row": (lambda b: b.form_pulse(0, 0, 7, 1.0, WIDTH), LimitError, "FORM amplitude"),
    "negative amplitude": (lambda b: b.set_pulse(0, 0, -1.0, 1.0, WIDTH), LimitError, "amplitude .* = -1 V"),
    "gate above v_gate": (lambda b: b.set_pulse(0, 0, 2.0, 6.0, WIDTH), LimitError, r"v_gate = 6 V .* \[0, 5.5\]"),
    "gate below v_gate": (lambda b: b.set_pulse(0, 0, 2.0, -0.5, WIDTH), LimitError, "v_gate = -0.5"),
    "width too long": (lambda b: b.set_pulse(0, 0, 2.0, 1.0, 2e-3), LimitError, "width = 0.002 s"),
    "width too short": (lambda b: b.set_pulse(0, 0, 2.0, 1.0, 1e-9), LimitError, "width = 1e-09 s"),
    "zero width": (lambda b: b.set_pulse(0, 0, 2.0, 1.0, 0.0), LimitError, "width = 0 s"),
    "nan amplitude": (lambda b: b.set_pulse(0, 0, float("nan"), 1.0, WIDTH), LimitError, "amplitude .* = nan"),
    "inf gate": (lambda b: b.set_pulse(0, 0, 2.0, float("inf"), WIDTH), LimitError, "v_gate = inf"),
    "nan width": (lambda b: b.set_pulse(0, 0, 2.0, 1.0, float("nan")), LimitError, "width = nan"),
    "unknown pulse kind": (lambda b: b.pulse("ZAP", 0, 0, 2.0, 1.0, WIDTH), InvalidRequest, "unknown pulse kind"),
    "pulse row outside": (lambda b: b.set_pulse(128, 0, 2.0, 1.0, WIDTH), LimitError, r"row = 128 .* \[0, 127\]"),
    "read col outside": (lambda b: b.read_cell(0, 64, 0.2), LimitError, r"col = 64 .* \[0, 63\]"),
    "read negative row": (lambda b: b.read_cell(-1, 0, 0.2), LimitError, "row = -1"),
    "read at zero volts": (lambda b: b.read_cell(0, 0, 0.0), InvalidRequest, "v_read = 0 V"),
    "read above v_read": (lambda b: b.read_cell(0, 0, 0.6), LimitError, r"v_read = 0.6 V .* \[-0.5, 0.5\]"),
    "read at nan volts": (lambda b: b.read_cell(0, 0, float("nan")), LimitError, "v_read = nan"),
    "map at zero volts": (lambda b: b.read_map(0.0), InvalidRequest, "v_read = 0 V"),
    "map region too tall": (lambda b: b.read_map(0.2, Region(100, 0, 29, 64)), LimitError, "region.nrows = 29"),
    "map region too wide": (lambda b: b.read_map(0.2, Region(0, 60, 1, 5)), LimitError, "region.ncols = 5"),
    "map region empty": (lambda b: b.read_map(0.2, Region(0, 0, 0, 64)), LimitError, "region.nrows = 0"),
    "map region origin outside": (lambda b: b.read_map(0.2, Region(128, 0, 1, 1)), LimitError, "region.row0"),
    "vmm input above v_read": (lambda b: b.vmm(np.pad([[0.7]], ((0, 2), (0, 127)))), LimitError,
                               r"v_rows\[0, 0\] = 0.7 V"),
    "vmm nan input": (lambda b: b.vmm(np.full((1, 128), np.nan)), LimitError, r"v_rows\[0, 0\] = nan"),
    "vmm column current over i_col": (lambda b: b.vmm(np.full((3, 128), 0.5)), LimitError,
                                      r"predicted column current of vector\[0\] = 0.0768 A .* \[-0.05, 0.05\]"),
    "vmm wrong vector length": (lambda b: b.vmm(np.zeros((2, 64))), InvalidRequest, r"expected \(n, 128\)"),
    "batch bad width at [77, 33]": (lambda b: b.apply_pulses("SET", **bad_element("width", (77, 33), 2e-3)),
                                    LimitError, r"SET width\[77, 33\] = 0.002 s"),
    "batch bad gate at [127, 63]": (lambda b: b.apply_pulses("SET", **bad_element("v_gate", (127, 63), 5.6)),
                                    LimitError, r"SET v_gate\[127, 63\] = 5.6 V"),
    "batch nan amplitude at [0, 5]": (lambda b: b.apply_pulses("RES", **bad_element("amplitude", (0, 5), np.nan)),
                                      LimitError, r"RESET amplitude \(v_col\)\[0, 5\] = nan"),
    "batch bad cell named in array coordinates": (
        lambda b: b.apply_pulses("SET", 2.0, 1.0, width_with((20, 10), (0, 1), 1.0), origin=(10, 5)),
        LimitError, r"width\[10, 6\] = 1 s"),
    "batch beyond the array": (lambda b: b.apply_pulses("SET", np.full((10, 10), 2.0), 1.0, WIDTH, origin=(120, 0)),
                               LimitError, "region.nrows = 10"),
    "batch of three dimensions": (lambda b: b.apply_pulses("SET", np.full((2, 2, 2), 2.0), 1.0, WIDTH),
                                  InvalidRequest, "expected \\(rows, cols\\)"),
    "dry run of a bad batch": (lambda b: b.check_pulses("SET", BULK, 1.0, 5e-3), LimitError, r"width\[0, 0\]"),
    "sweep above v_row": (lambda b: b.iv_sweep(0, 0, [1.0, 4.5], 1.0, WIDTH), LimitError,
                          r"sweep voltage\[1\] \(v_row\) = 4.5 V"),
    "sweep below -v_col": (lambda b: b.iv_sweep(0, 0, [-1.0, -4.5], 1.0, WIDTH), LimitError,
                           r"sweep voltage\[1\] \(v_col\) = -4.5 V"),
    "sweep nan step": (lambda b: b.iv_sweep(0, 0, [np.nan], 1.0, WIDTH), LimitError, r"sweep voltage\[0\]"),
    "sweep gate above v_gate": (lambda b: b.iv_sweep(0, 0, [1.0], 5.6, WIDTH), LimitError, "v_gate = 5.6"),
    "sweep width too long": (lambda b: b.iv_sweep(0, 0, [1.0], 1.0, 1.0), LimitError, "width = 1 s"),
    "sweep cell outside": (lambda b: b.iv_sweep(128, 0, [1.0], 1.0, WIDTH), LimitError, "row = 128"),
    "dac above v_row": (lambda b: b.set_dac("ROW", 0, 4.5), LimitError, r"ROW voltage = 4.5 V .* \[-4, 4\]"),
    "dac gate negative": (lambda b: b.set_dac("GATE", 0, -0.1), LimitError, "GATE voltage = -0.1"),
    "dac col channel outside": (lambda b: b.set_dac("COL", 64, 0.1), LimitError, "COL channel = 64"),
    "dac unknown line": (lambda b: b.set_dac("BODY", 0, 0.1), ValueError, "BODY"),
    "dac query channel outside": (lambda b: b.dac_voltage("GATE", 128), LimitError, "GATE channel = 128"),
    "select row outside": (lambda b: b.select_row(128), LimitError, "row = 128"),
    "select col outside": (lambda b: b.select_column(-1), LimitError, "col = -1"),
    "adc gain not on the board": (lambda b: b.sample_adc(0, 2e3), InvalidRequest, "tia_gain = 2000.0 ohm"),
    "adc col outside": (lambda b: b.sample_adc(64, 1e3), LimitError, "col = 64"),
    "negative wait": (lambda b: b.idle_for(-1.0), LimitError, "seconds = -1"),
}


@pytest.mark.parametrize(("request_", "error", "message"), REFUSED.values(), ids=REFUSED.keys())
def test_refused_request_sends_nothing(request_: Request, error: type[Exception], message: str) -> None:
    board, transport = connect(128, 64)
    sent = list(transport.written)
    with pytest.raises(error, match=message):
        request_(board)
    assert transport.written == sent
    assert not transport.inbox


def test_configured_limits_refuse_what_the_firmware_would_allow() -> None:
    board, transport = connect(limits=firmware_limits(v_row=(-3.0, 3.0), i_col=(-1e-4, 1e-4)))
    sent = list(transport.written)
    with pytest.raises(LimitError, match=r"\[0, 3\] V"):
        board.set_pulse(0, 0, 3.5, 1.0, WIDTH)
    # 0.25 V across the highest cell conductance (1.2 mS) is 0.3 mA: over the configured 0.1 mA.
    with pytest.raises(LimitError, match="predicted column current"):
        board.read_cell(0, 0, 0.25)
    assert transport.written == sent


def test_a_batch_is_refused_whole_naming_the_first_bad_cell() -> None:
    board, transport = connect(128, 64)
    planes = bad_element("amplitude", (5, 9), 4.5)
    planes["amplitude"][100, 2] = 4.5
    with pytest.raises(LimitError) as caught:
        board.apply_pulses("SET", **planes)
    assert caught.value.parameter == "SET amplitude (v_row)[5, 9]"
    assert (caught.value.value, caught.value.low, caught.value.high) == (4.5, 0.0, 4.0)
    assert transport.written == [command for command, _ in handshake(128, 64)]


@pytest.mark.parametrize("at_limit", ["width", "v_read"])
def test_a_value_exactly_at_a_limit_is_sent(at_limit: str) -> None:
    """1e-3 s and 0.3 V have no exact float32; ASCII arguments carry them exactly and they pass."""
    board, transport = connect(limits=firmware_limits(v_read=(-0.3, 0.3)))
    transport.expect(ANY_COMMAND, b"OK\n" if at_limit == "width" else b"0.0001\n")
    if at_limit == "width":
        board.set_pulse(0, 0, 2.0, 1.0, 1e-3)
        sent_value, limit = float(transport.written[-1].split(b",")[-1]), 1e-3
    else:
        board.read_cell(0, 0, 0.3)
        sent_value, limit = float(transport.written[-1].split(b",")[-1]), 0.3
    assert sent_value <= limit


# ----------------------------------------------------------------------------- framed mode

TOKEN = "5eed0f1e2a3b4c5d"  # what secrets.token_hex(8) gives in these tests
FRAM = f"SYST:FRAM {TOKEN}\n".encode()
NO_FRAMED_MODE = b"ERR -113,\"undefined header 'SYST:FRAM'\"\n"


@pytest.fixture(autouse=True)
def fixed_token(monkeypatch: pytest.MonkeyPatch) -> str:
    """The session token a Board draws at connect, made predictable."""
    monkeypatch.setattr("drivers.link.secrets.token_hex", lambda nbytes=None: TOKEN)
    return TOKEN


def framed_handshake(rows: int = 4, cols: int = 3, session_reply: bytes = b"0\n") -> list[tuple[bytes, bytes]]:
    """What a Board sends on connect to a firmware that offers framed mode, and the firmware's answers."""
    plain = handshake(rows, cols)
    script = [*plain[:2], (FRAM, session_reply)]  # identity and version in plain lines
    for seq, (command, reply) in enumerate(plain[2:], start=1):
        script.append((codec.encode_frame(seq, command), codec.encode_frame(seq, reply)))
    return script


def expect_framed(transport: ScriptedTransport, seq: int, command: bytes, reply: bytes) -> None:
    transport.expect(codec.encode_frame(seq, command), codec.encode_frame(seq, reply))


def connect_framed(rows: int = 4, cols: int = 3) -> tuple[Board, ScriptedTransport]:
    transport = ScriptedTransport(framed_handshake(rows, cols))
    board = Board(transport, retries=0)
    assert not transport.script, "the handshake left scripted exchanges unused"
    assert board.link.framed
    _OPENED.append((board, transport))
    return board, transport


def test_framed_handshake_transcript() -> None:
    board, transport = connect_framed()
    assert transport.written == [command for command, _ in framed_handshake()]
    assert transport.written[:3] == [b"*IDN?\n", b"SYST:VERS?\n", b"SYST:FRAM 5eed0f1e2a3b4c5d\n"]  # all plain
    crc = zlib.crc32(b"1,10,SYST:ARR?\n")
    assert transport.written[3] == b"!1,10,%08x\nSYST:ARR?\n" % crc  # then numbered from 1, one frame each
    assert board.shape == (4, 3)
    assert board.firmware_limits.pulse_width == Range(min=1e-8, max=1e-3)
    assert board.tia_gains == TIA_GAINS
    expect_framed(transport, 10, b"READ? 3,2,0.25\n", b"0.000412\n")
    assert board.read_cell(3, 2, 0.25) == 0.000412
    expect_framed(transport, 11, b"*RST\n", b"OK\n")
    expect_framed(transport, 12, b"SYST:FRAM OFF\n", b"OK\n")  # plain lines for whoever comes next
    board.close()
    assert transport.closed and not transport.script
    assert not board.link.framed


def test_framed_bulk_operations_carry_their_blocks_in_frames() -> None:
    board, transport = connect_framed()
    v_rows = np.array([[0.25, -0.125, 0.0, 0.5]])
    currents = np.array([[1e-5, 2e-5, -3e-5]], dtype=np.float32)
    expect_framed(transport, 10, b"VMM? 0,0,4,3,1," + block_reply(v_rows), block_reply(currents))
    np.testing.assert_array_equal(board.vmm(v_rows), currents)
    planes = np.zeros((4, 4, 3))
    planes[0], planes[1], planes[2], planes[3] = 1.5, 2.0, WIDTH, 1
    expect_framed(transport, 11, b"PULS:BATC SET,0,0,4,3," + block_reply(planes), b"12\n")
    assert board.apply_pulses("SET", 1.5, 2.0, WIDTH) == 12
    conductance = np.arange(12, dtype=np.float32).reshape(4, 3)
    expect_framed(transport, 12, b"MAP? 0,0,4,3,0.25,COND\n", block_reply(conductance))
    np.testing.assert_array_equal(board.read_map(0.25), conductance)


@pytest.mark.parametrize("session_reply", [b"0\n", b"41\n", b"\x16\n"], ids=["new", "other-number", "damaged"])
def test_a_new_session_is_numbered_from_1_whatever_the_board_replies(session_reply: bytes) -> None:
    """A new token has no history: the number in the plain reply (which may be damaged) is not used."""
    transport = ScriptedTransport(framed_handshake(session_reply=session_reply))
    board = Board(transport, retries=0)
    _OPENED.append((board, transport))
    assert transport.written[3].startswith(b"!1,")
    expect_framed(transport, 10, b"*OPC?\n", b"1\n")
    assert board.query("*OPC?") == "1"


def test_a_firmware_without_framed_mode_gives_plain_mode() -> None:
    transport = ScriptedTransport([*handshake()[:2], (FRAM, NO_FRAMED_MODE), *handshake()[2:]])
    board = Board(transport, retries=0)
    _OPENED.append((board, transport))
    assert board.link.framed is False
    assert transport.written == [b"*IDN?\n", b"SYST:VERS?\n", FRAM, *(command for command, _ in handshake()[2:])]
    assert board.shape == (4, 3)
    transport.expect(b"PULS:SET 3,2,2.5,1.25,0.0009765625\n", b"OK\n")  # plain from here on
    board.set_pulse(3, 2, 2.5, 1.25, WIDTH)
    transport.expect(b"*RST\n", b"OK\n")
    board.close()
    assert transport.written[-1] == b"*RST\n"


def test_framing_off_never_offers_frames() -> None:
    transport = ScriptedTransport(handshake())
    board = Board(transport, retries=0, framing=False)
    _OPENED.append((board, transport))
    assert board.link.framed is False
    assert FRAM not in transport.written


def test_framing_required_from_a_firmware_without_it_is_refused() -> None:
    transport = ScriptedTransport([*handshake()[:2], (FRAM, NO_FRAMED_MODE), *handshake()[2:]])
    with pytest.raises(InvalidRequest, match="SYST:FRAM") as caught:
        Board(transport, framing=True)
    assert "FAKE::BOARD" in str(caught.value)
    assert transport.written[:3] == [b"*IDN?\n", b"SYST:VERS?\n", FRAM]
    assert not any(w.startswith(b"!") for w in transport.written)  # not a frame sent
    assert transport.closed


@pytest.mark.parametrize("framing", [None, True])
def test_another_refusal_of_framed_mode_is_an_error(framing: bool | None) -> None:
    transport = ScriptedTransport([*handshake()[:2], (FRAM, b'ERR -224,"session refused"\n')])
    with pytest.raises(FirmwareError, match="session refused") as caught:
        Board(transport, framing=framing)
    assert caught.value.code == -224 and caught.value.resource == "FAKE::BOARD"
    assert transport.closed


def test_a_late_reply_to_an_earlier_number_is_dropped() -> None:
    board, transport = connect_framed()
    transport.expect(codec.encode_frame(10, b"READ? 0,0,0.25\n"),
                     codec.encode_frame(9, b"5.0\n") + codec.encode_frame(10, b"1.5e-05\n"))  # fmt: skip
    assert board.read_cell(0, 0, 0.25) == 1.5e-5
    assert board.link.stats.stale_replies == 1
    assert not transport.inbox


@pytest.mark.parametrize(
    ("reply", "message"),
    [(codec.encode_frame(0, b'ERR -160,"damaged"\n'), "damaged"),
     (codec.encode_frame(10, b"1.5e-05\n")[:-2] + b"6\n", "checksum"), (b"1.5e-05\n", "not a frame header")],
    ids=["number-0", "bad-checksum", "plain-reply"],
)  # fmt: skip
def test_a_framed_reply_that_is_not_the_answer_is_a_link_error(reply: bytes, message: str) -> None:
    board, transport = connect_framed()
    transport.expect(codec.encode_frame(10, b"READ? 0,0,0.25\n"), reply)
    with pytest.raises(LinkError, match=message) as caught:
        board.read_cell(0, 0, 0.25)
    assert caught.value.resource == "FAKE::BOARD"
    assert caught.value.command == "READ? 0,0,0.25"


@pytest.mark.parametrize(("request_", "error", "message"), REFUSED.values(), ids=REFUSED.keys())
def test_refused_request_in_framed_mode_sends_nothing_and_uses_no_number(
    request_: Request, error: type[Exception], message: str
) -> None:
    board, transport = connect_framed(128, 64)
    sent = list(transport.written)
    with pytest.raises(error, match=message):
        request_(board)
    assert transport.written == sent
    assert not transport.inbox
    expect_framed(transport, 10, b"*OPC?\n", b"1\n")  # the next command takes the next number
    assert board.query("*OPC?") == "1"


class Reopen:
    """``reopen`` for a Board: hands out scripted links one after the other."""

    def __init__(self, *links: ScriptedTransport) -> None:
        self.links = list(links)
        self.opened: list[ScriptedTransport] = []

    def __call__(self) -> ScriptedTransport:
        self.opened.append(self.links.pop(0))
        return self.opened[-1]


@contextlib.contextmanager
def closed_at_the_end(board: Board, links: list[ScriptedTransport]) -> Iterator[None]:
    """Whatever the test did, close the board without a scripted reply (its link may be any of ``links``)."""
    try:
        yield
    finally:
        board.link.retries, board.link.reconnect_attempts = 0, 0
        for link in links:
            link.script.clear()
            if not link.closed:
                link.expect(ANY_COMMAND, b"")
        board.close()


def session_again(seq: int, board_seq: int, session_reply: bytes = b"9\n") -> list[tuple[bytes, bytes]]:
    """How a Board takes its session up again after a failure: SYST:FRAM (plain), then how far the
    board got (checksummed), numbered ``seq``."""
    return [(FRAM, session_reply),
            (codec.encode_frame(seq, b"SYST:SEQ?\n"), codec.encode_frame(seq, b"%d\n" % board_seq))]  # fmt: skip


def greeting(first_seq: int, board_seq: int, identity: bytes = IDENTITY, session_reply: bytes = b"9\n"
             ) -> list[tuple[bytes, bytes]]:  # fmt: skip
    """What a Board sends after reopening a link (numbering from ``first_seq``), and the board's answers:
    the session again, and who it is."""
    return [*session_again(first_seq, board_seq, session_reply),
            (codec.encode_frame(first_seq + 1, b"*IDN?\n"), codec.encode_frame(first_seq + 1, identity))]  # fmt: skip


def lose_a_read_twice(link: ScriptedTransport) -> None:
    """A read whose reply is lost, then lost again when resent: the third attempt reconnects."""
    link.expect(codec.encode_frame(10, b"READ? 0,0,0.25\n"), b"")
    link.expect(codec.encode_frame(11, b"READ? 0,0,0.25\n"), b"")  # a read goes again under a new number


def test_a_reconnect_reopens_the_session_and_checks_the_board(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("drivers.link.RECONNECT_FIRST_PAUSE", 0.0)
    link = ScriptedTransport(framed_handshake())
    again = ScriptedTransport(greeting(12, board_seq=11, session_reply=b"1\xb2\n"))  # damaged: not used
    expect_framed(again, 14, b"READ? 0,0,0.25\n", b"1.5e-05\n")
    board = Board(link, retries=2, reopen=Reopen(again))
    with closed_at_the_end(board, [link, again]):
        lose_a_read_twice(link)
        assert board.read_cell(0, 0, 0.25) == 1.5e-5
        assert board.link.stats.reconnects == 1 and link.closed


def test_a_lost_session_reply_at_connect_is_asked_again() -> None:
    script = framed_handshake()
    script[2:2] = [(FRAM, b"")]
    transport = ScriptedTransport(script)
    board = Board(transport)
    _OPENED.append((board, transport))
    assert board.link.framed and board.shape == (4, 3)
    assert transport.written[:4] == [b"*IDN?\n", b"SYST:VERS?\n", FRAM, FRAM]


def test_a_damaged_identity_while_reconnecting_fails_that_attempt_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("drivers.link.RECONNECT_FIRST_PAUSE", 0.0)
    link = ScriptedTransport(framed_handshake())
    damaged_frame = codec.encode_frame(13, IDENTITY).replace(b"MEMHIL", b"ME\xcdHIL")  # fails its checksum
    damaged = ScriptedTransport([*session_again(12, board_seq=11), (codec.encode_frame(13, b"*IDN?\n"), damaged_frame)])
    good = ScriptedTransport(greeting(14, board_seq=13))
    expect_framed(good, 16, b"READ? 0,0,0.25\n", b"1.5e-05\n")
    board = Board(link, retries=2, reopen=Reopen(damaged, good))
    with closed_at_the_end(board, [link, damaged, good]):
        lose_a_read_twice(link)
        assert board.read_cell(0, 0, 0.25) == 1.5e-5
        assert board.link.stats.reconnects == 1 and damaged.closed


def test_another_board_answering_after_a_reconnect_is_sent_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("drivers.link.RECONNECT_FIRST_PAUSE", 0.0)
    link = ScriptedTransport(framed_handshake())
    other = b"MEMHIL,EMU-1T1R,SN-0002,0.1.0\n"
    stranger = ScriptedTransport([*greeting(12, board_seq=11, identity=other),
                                  (codec.encode_frame(14, b"*IDN?\n"), codec.encode_frame(14, other))])  # fmt: skip
    board = Board(link, retries=2, reopen=Reopen(stranger))
    with closed_at_the_end(board, [link, stranger]):
        lose_a_read_twice(link)
        with pytest.raises(BoardError, match=r"a different board answers: .*SN-0002"):
            board.read_cell(0, 0, 0.25)
        assert not stranger.script and stranger.closed  # asked twice, then closed
        with pytest.raises(LinkError, match="unreachable"):
            board.set_pulse(0, 0, 2.5, 1.2, WIDTH)  # and nothing more is sent to it


def test_a_pulse_in_flight_when_the_board_restarted_is_of_unknown_outcome() -> None:
    link = ScriptedTransport(framed_handshake())
    pulse = b"PULS:SET 0,0,2.5,1.2,0.0009765625\n"
    link.expect(codec.encode_frame(10, pulse), b"")  # the pulse's reply is lost
    link.script.extend(session_again(11, board_seq=0, session_reply=b"0\n"))  # a board that restarted meanwhile
    board = Board(link, retries=2)
    with closed_at_the_end(board, [link]):
        with pytest.raises(BoardError, match=r"restarted .*whether PULS:SET \(command 10\) was applied is unknown"):
            board.set_pulse(0, 0, 2.5, 1.2, WIDTH)
        assert not link.script  # and it was not sent again
