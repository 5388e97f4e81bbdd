"""Regressions of issue 10: each finding a raw client made against the emulated board, in process.

(The link-level findings, a second TCP client, a client that stops reading, ``serve </dev/null``,
are in tests/mock_hardware/test_firmware_server.py.)
"""

from __future__ import annotations

import numpy as np
import pytest

from drivers import codec
from mock_hardware.firmware import Firmware
from tests.mock_hardware.test_firmware import (
    PULSE,
    ask,
    ask_framed,
    command,
    error_code,
    framed,
    framed_reply,
    make_firmware,
    open_session,
    pulse_count,
    state,
    value,
)  # fmt: skip

PULSE_LINE = b"\nPULS:SET 0,0,2.5,1.2,1e-6\n"


@pytest.fixture
def fw() -> Firmware:
    return make_firmware()


def test_a_pulse_inside_an_oversized_block_never_runs(fw: Firmware) -> None:
    length = codec.MAX_BLOCK_BYTES + 4  # 16,777,220 bytes, as in the issue
    payload = (PULSE_LINE * (length // len(PULSE_LINE) + 1))[:length]
    out = fw.feed(b"VMM? 0,0,2,2,1,#8%d" % length + payload + b"\n*OPC?\n")
    assert out == b'ERR -223,"block of %d bytes exceeds the %d-byte limit"\n1\n' % (length, codec.MAX_BLOCK_BYTES)
    assert pulse_count(fw) == 0


def test_random_float32_payload_after_a_refused_block_gets_one_reply(fw: Firmware) -> None:
    length = codec.MAX_BLOCK_BYTES + 4096
    payload = np.random.default_rng(1).normal(size=length // 4).astype("<f4").tobytes()
    out = fw.feed(b"VMM? 0,0,2,2,1,#8%d" % length + payload + b"\n")
    assert out.count(b"\n") == 1 and out.startswith(b"ERR -223")  # not 43,465 error replies
    assert pulse_count(fw) == 0


def test_a_pulse_after_a_malformed_block_header_never_runs(fw: Firmware) -> None:
    out = fw.feed(b"VMM? 0,0,2,2,1,#0" + PULSE_LINE + b"*OPC?\n")
    assert out.count(b"\n") == 1 and out.startswith(b"ERR -160")
    assert fw.link_quiet() == b""  # answered already
    assert pulse_count(fw) == 0


def test_a_damaged_frame_header_never_runs_its_body(fw: Firmware) -> None:
    open_session(fw)
    before = state(fw)
    out = fw.feed(b"!1x,19,00000000\nDAC:VOLT ROW,3,0.4\n")
    seq, reply = framed_reply(out)
    assert (seq, reply.kind, reply.code) == (0, "error", -160)  # one reply: no OK after it
    assert value(fw, "DAC:VOLT? ROW,3") == [0.0] and state(fw) == before


@pytest.mark.parametrize("nan", [np.float32("nan"), -np.float32("nan"), np.float32("inf")], ids=["nan", "-nan", "inf"])
def test_sweep_refuses_non_finite_voltages(fw: Firmware, nan: np.float32) -> None:
    before = state(fw)
    assert error_code(fw, command("SWEEP?", 0, 0, 3.0, 1e-6, 2, block=np.array([0.5, nan], "<f4"))) == -222
    assert pulse_count(fw) == 0 and state(fw) == before


def test_batch_refuses_a_non_finite_mask(fw: Firmware) -> None:
    planes = np.stack([np.full((1, 1), 1.0), np.full((1, 1), 1.0), np.full((1, 1), 1e-6), np.full((1, 1), np.nan)])
    assert error_code(fw, command("PULS:BATC", "SET", 0, 0, 1, 1, block=planes)) == -222
    assert pulse_count(fw) == 0


# ----------------------------------------------------------------------------- sessions


def test_two_sessions_are_kept_and_a_resend_in_the_first_does_not_pulse_again(fw: Firmware) -> None:
    open_session(fw, "tokY")
    assert ask_framed(fw, 2, PULSE).kind == "ok"
    open_session(fw, "tokX")
    assert ask_framed(fw, 1, "*OPC?").text == "1"
    assert open_session(fw, "tokY") == 2
    assert ask_framed(fw, 2, PULSE).kind == "ok" and pulse_count(fw) == 1  # kept reply: not pulsed twice


def test_sessions_kept_are_bounded_the_least_recently_used_forgotten(fw: Firmware) -> None:
    for k in range(5):
        open_session(fw, f"tok{k}")
        ask_framed(fw, 1, PULSE)
    assert len(fw.sessions) == 4 and "tok0" not in fw.sessions
    assert open_session(fw, "tok0") == 0  # forgotten: a new session


def test_a_fresh_link_without_fram_gets_no_other_sessions_replies(fw: Firmware) -> None:
    open_session(fw)
    assert ask_framed(fw, 1, PULSE).kind == "ok"
    fw.disconnected()  # another TCP connection
    reply = ask_framed(fw, 1, "*IDN?")
    assert (reply.kind, reply.code) == ("error", -221) and "SYST:FRAM" in reply.text  # not the kept OK


def test_refused_frames_do_not_advance_seq(fw: Firmware) -> None:
    open_session(fw)
    assert ask_framed(fw, 1, "*OPC?").text == "1"
    assert ask_framed(fw, 2, "PULS:SET 0,0,9,1.2,1e-6").code == -222  # refused: did not run
    assert ask_framed(fw, 3, "NO:SUCH").code == -113
    assert ask_framed(fw, 4, "SYST:SEQ?").text == "1"
    assert ask(fw, "SYST:DONE? 2").text == "0"


def test_fram_off_keeps_the_session_for_later(fw: Firmware) -> None:
    open_session(fw)
    ask_framed(fw, 1, PULSE)
    assert ask(fw, "SYST:FRAM OFF").kind == "ok"
    assert framed_reply(fw.feed(framed(1, PULSE)))[1].code == -221  # plain link: frames need a session
    assert open_session(fw) == 1 and ask_framed(fw, 1, PULSE).kind == "ok" and pulse_count(fw) == 1


# ----------------------------------------------------------------------------- ICOL with primitives


def test_primitives_cannot_drive_a_column_past_icol(fw: Firmware) -> None:
    """Regression: 40 rows at 4 V into one column gave a saturated ADC:SAMP? with ~100 mA and no refusal."""
    big = make_firmware(preset="umass-ta-hfo2", seed=1, rows="64", cols="4")  # the board
    limit = value(big, "SYST:LIM? ICOL")[1]
    assert ask(big, "MUX:COL 0,1").kind == "ok"
    refused = None
    for row in range(40):
        for line in (f"DAC:VOLT GATE,{row},5", f"MUX:ROW {row},1", f"DAC:VOLT ROW,{row},4"):
            reply = ask(big, line)
            if reply.kind == "error":
                refused = (row, line, reply)
                break
        if refused:
            break
    assert refused is not None, "nothing refused 40 rows at 4 V into one column"
    row, line, reply = refused
    assert reply.code == -240 and "ICOL" in reply.text
    currents = big._primitive_currents(big.row_selected, big.col_selected, big.dac)
    assert abs(currents).max() <= limit  # the refused level was not applied
    sample = ask(big, "ADC:SAMP? 0,100")
    assert sample.kind == "value" and abs(float(sample.fields[0])) <= limit
    assert ask(big, f"DAC:VOLT ROW,{row - 1},0").kind == "ok"  # turning a level down is always allowed


# ----------------------------------------------------------------------------- numbers and sizes


@pytest.mark.parametrize("text", ["0_1", "1_000", "0x10", "1e", "e5", "1.2.3", "١", "1 2", "--1", "+-1"])
def test_numbers_outside_the_documented_grammar_are_refused(fw: Firmware, text: str) -> None:
    """Regression: DAC:VOLT ROW,0,0_1 was accepted as 1.0 V (Python's float() grammar)."""
    before = state(fw)
    assert error_code(fw, f"DAC:VOLT ROW,0,{text}".encode() + b"\n") in (-102, -104)
    assert state(fw) == before


@pytest.mark.parametrize(("text", "volts"), [("+1", 1.0), (".5", 0.5), ("5.", 5.0), ("2.5E-1", 0.25), ("-0.0", 0.0),
                                             ("1e-400", 0.0), ("  0.25 ", 0.25)])  # fmt: skip
def test_numbers_of_the_grammar_are_taken(fw: Firmware, text: str, volts: float) -> None:
    assert ask(fw, f"DAC:VOLT GATE,0,{text}").kind == "ok"
    assert value(fw, "DAC:VOLT? GATE,0")[0] == pytest.approx(volts, abs=1e-4)


@pytest.mark.parametrize("text", ["nan", "-NaN", "inf", "-Infinity", "1e400"])
def test_non_finite_numbers_are_out_of_range(fw: Firmware, text: str) -> None:
    assert error_code(fw, f"DAC:VOLT GATE,0,{text}") == -222


def test_a_reply_over_the_block_limit_is_refused_before_running(fw: Firmware) -> None:
    """Regression: VMM? nrows=1, ncols=64 with a full 16 MiB block would have answered 1 GiB."""
    wide = make_firmware(rows="4", cols="64")
    nvec = codec.MAX_BLOCK_BYTES // 4
    reply = ask(wide, command("VMM?", 0, 0, 1, 64, nvec, block=np.zeros((nvec, 1), "<f4")))
    assert (reply.kind, reply.code) == ("error", -223) and "split" in reply.text
    assert codec.MAX_BLOCK_BYTES // 4 // 64 * 64 * 4 <= codec.MAX_BLOCK_BYTES  # the host's split fits
