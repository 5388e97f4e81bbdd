"""The emulated board's firmware: every command of docs/wire-protocol.md, its error codes, its own
limits (refused, never clamped, nothing changed), the electronics it models, and robustness
against any byte sequence.
"""

from __future__ import annotations

import io
import itertools
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers import codec, compact
from mock_hardware.emulator import build_firmware
from mock_hardware.faults import FaultInjector, FaultPlan
from mock_hardware.firmware import Firmware
from tests.conftest import REPO_ROOT

ROWS, COLS = 8, 4


def make_firmware(seed: int = 3, preset: str = "ideal", **overrides: str) -> Firmware:
    return build_firmware(preset, seed, {"rows": str(ROWS), "cols": str(COLS), **overrides})


@pytest.fixture
def fw() -> Firmware:
    return make_firmware()


def command(header: str, *args: str | float, block: np.ndarray | list[float] | bytes | None = None) -> bytes:
    return codec.encode_command(header, args, block)


def replies(data: bytes) -> list[codec.Reply]:
    """Every reply in a byte stream, in order."""
    stream = io.BytesIO(data)

    def read_exact(count: int) -> bytes:
        chunk = stream.read(count)
        assert len(chunk) == count, f"reply stream ends inside a reply: {data!r}"
        return chunk

    def read_line() -> bytes:
        line = stream.readline()
        assert line.endswith(b"\n"), f"reply stream ends inside a line: {data!r}"
        return line

    out = []
    while stream.tell() < len(data):
        out.append(codec.read_reply(read_exact, read_line))
    return out


def ask(fw: Firmware, data: bytes | str) -> codec.Reply:
    """Send one command; its one reply."""
    raw = data if isinstance(data, bytes) else data.encode() + b"\n"
    [reply] = replies(fw.feed(raw))
    return reply


def value(fw: Firmware, data: bytes | str) -> list[float]:
    reply = ask(fw, data)
    assert reply.kind == "value", reply
    return [float(f) for f in reply.fields]


def error_code(fw: Firmware, data: bytes | str) -> int:
    reply = ask(fw, data)
    assert reply.kind == "error", f"{data!r} was accepted: {reply}"
    return reply.code


def state(fw: Firmware) -> tuple[bytes, ...]:
    """Everything a refused command must leave alone: cells, DAC levels and mux selections."""
    return (
        fw.array.conductance.tobytes(), *(levels.tobytes() for levels in fw.dac.values()),
        fw.row_selected.tobytes(), fw.col_selected.tobytes(),
    )  # fmt: skip


def energize(fw: Firmware) -> None:
    """Row 0 at 0.2 V with its gate on, column 0 selected: the setup of a DC measurement."""
    for line in ("DAC:VOLT ROW,0,0.2", "DAC:VOLT GATE,0,5", "MUX:ROW 0,1", "MUX:COL 0,1"):
        assert ask(fw, line).kind == "ok"


def batch_planes(amplitude: float, v_gate: float, width: float, mask: np.ndarray) -> np.ndarray:
    shape = mask.shape
    return np.stack([np.full(shape, amplitude), np.full(shape, v_gate), np.full(shape, width), mask])


# ----------------------------------------------------------------------------- every command

VALID: dict[str, bytes] = {
    "*IDN?": command("*IDN?"),
    "*RST": command("*RST"),
    "*OPC?": command("*OPC?"),
    "SYST:WAIT": command("SYST:WAIT", 0.5),
    "SYST:TIME?": command("SYST:TIME?"),
    "SYST:VERS?": command("SYST:VERS?"),
    "SYST:ARR?": command("SYST:ARR?"),
    "SYST:LIM?": command("SYST:LIM?", "VGATE"),
    "SYST:VGRE?": command("SYST:VGRE?"),
    "SYST:PCNT?": command("SYST:PCNT?"),
    "DAC:RES?": command("DAC:RES?"),
    "DAC:RANG?": command("DAC:RANG?", "GATE"),
    "ADC:RES?": command("ADC:RES?"),
    "ADC:RANG?": command("ADC:RANG?"),
    "TIA:GAIN?": command("TIA:GAIN?"),
    "DAC:VOLT": command("DAC:VOLT", "ROW", 1, 1.5),
    "DAC:VOLT?": command("DAC:VOLT?", "COL", 3),
    "MUX:ROW": command("MUX:ROW", 7, 1),
    "MUX:COL": command("MUX:COL", 3, 0),
    "MUX:OPEN": command("MUX:OPEN"),
    "ADC:SAMP?": b"MUX:COL 2,1\nADC:SAMP? 2,1000\n",
    "READ?": command("READ?", 7, 3, 0.2),
    "PULS:SET": command("PULS:SET", 1, 2, 2.0, 1.0, 1e-6),
    "PULS:RES": command("PULS:RES", 1, 2, 2.0, 3.0, 1e-6),
    "PULS:FORM": command("PULS:FORM", 1, 2, 3.0, 1.0, 1e-6),
    "MAP?": command("MAP?", 0, 0, ROWS, COLS, 0.2, "COND"),
    "VMM?": command("VMM?", 0, 0, ROWS, COLS, 2, block=np.full((2, ROWS), 0.1)),
    "PULS:BATC": command("PULS:BATC", "SET", 0, 0, 2, 2, block=batch_planes(2.0, 1.0, 1e-6, np.eye(2))),
    "SWEEP?": command("SWEEP?", 0, 1, 1.0, 1e-6, 3, block=[0.5, 1.5, -1.0]),
    "MAP:CODE?": command("MAP:CODE?", 0, 0, ROWS, COLS, 0.2),
    "VMM:CODE?": command("VMM:CODE?", 0, 0, ROWS, COLS, 2, "ALL", block=compact.encode_vmm_selection(
        np.ones(ROWS, bool), np.ones(COLS, bool)) + np.full((2, ROWS), 655, "<i2").tobytes()),  # every row and column
    "PULS:SPAR": command("PULS:SPAR", "SET", 0, 0, 2, 2, "IDX", 2, 2.0, "DAC", 1e-6,
                         block=np.array([0, 3, 10923, 10923], "<u2").tobytes()),  # cells 0 and 3, gates of 1 V
    "SYST:FRAM": command("SYST:FRAM", "tok"),
    "SYST:SEQ?": command("SYST:SEQ?"),
    "SYST:DONE?": b"SYST:FRAM tok\nSYST:DONE? 1\n",  # asks about a session
}
SET_UP_FIRST = ("ADC:SAMP?", "SYST:DONE?")  # the last line of these is the command
EXPECTED_KIND = {"*RST": "ok", "SYST:WAIT": "ok", "DAC:VOLT": "ok", "MUX:ROW": "ok", "MUX:COL": "ok",
                 "MUX:OPEN": "ok", "PULS:SET": "ok", "PULS:RES": "ok", "PULS:FORM": "ok",
                 "MAP?": "block", "VMM?": "block", "SWEEP?": "block",
                 "MAP:CODE?": "block", "VMM:CODE?": "block"}  # fmt: skip


def documented_headers() -> set[str]:
    text = (REPO_ROOT / "docs" / "wire-protocol.md").read_text()
    return set(re.findall(r"^\| `([*A-Z:?]+[?A-Z])[ `]", text, flags=re.MULTILINE)) - {
        "VROW", "VCOL", "VGATE", "VREAD", "WIDTH", "ICOL",  # limit names, not commands
    }  # fmt: skip


def test_this_file_covers_every_documented_command() -> None:
    assert documented_headers() == set(VALID)


@pytest.mark.parametrize("header", VALID)
def test_every_documented_command_is_answered(fw: Firmware, header: str) -> None:
    *_, reply = replies(fw.feed(VALID[header]))
    assert reply.kind == EXPECTED_KIND.get(header, "value"), reply


@pytest.mark.parametrize("header", VALID)
def test_headers_are_case_insensitive(fw: Firmware, header: str) -> None:
    lower = VALID[header].replace(header.encode(), header.lower().encode(), 1)
    *_, reply = replies(fw.feed(lower))
    assert reply.kind == EXPECTED_KIND.get(header, "value"), reply


def test_description_replies(fw: Firmware) -> None:
    assert ask(fw, "*IDN?").fields == ["MEMHIL", "EMU-1T1R", "SN-0001", "0.1.0"]
    assert value(fw, "*OPC?") == [1]
    assert ask(fw, "SYST:VERS?").text == codec.PROTOCOL_VERSION
    assert value(fw, "SYST:ARR?") == [ROWS, COLS]
    assert value(fw, "SYST:LIM? VROW") == [-4.0, 4.0]
    assert value(fw, "SYST:LIM? vcol") == [-4.0, 4.0]
    assert value(fw, "SYST:LIM? VGATE") == [0.0, 5.5]
    assert value(fw, "SYST:LIM? VREAD") == [-0.5, 0.5]
    assert value(fw, "SYST:LIM? WIDTH") == [1e-8, 1e-3]
    assert value(fw, "SYST:LIM? ICOL") == [-0.05, 0.05]
    assert value(fw, "SYST:VGRE?") == [5.0]
    assert value(fw, "DAC:RES?") == [16]
    assert value(fw, "DAC:RANG? ROW") == [-5.0, 5.0]
    assert value(fw, "DAC:RANG? GATE") == [0.0, 6.0]
    assert value(fw, "ADC:RES?") == [14]
    assert value(fw, "ADC:RANG?") == [-2.5, 2.5]
    gains = value(fw, "TIA:GAIN?")
    assert gains == sorted(gains) and len(gains) == 5


def test_replies_come_in_command_order_when_pipelined(fw: Firmware) -> None:
    out = replies(fw.feed(b"SYST:ARR?\nFOO\n*OPC?\nDAC:VOLT ROW,0,1\nDAC:VOLT? ROW,0\n"))
    assert [r.kind for r in out] == ["value", "error", "value", "ok", "value"]
    assert out[0].text == f"{ROWS},{COLS}" and out[1].code == -113 and out[2].text == "1"


def test_wait_advances_the_board_clock(fw: Firmware) -> None:
    [before] = value(fw, "SYST:TIME?")
    assert ask(fw, "SYST:WAIT 3600").kind == "ok"
    [after] = value(fw, "SYST:TIME?")
    assert after - before >= 3600


# ----------------------------------------------------------------------------- argument errors


def with_args(header: str, args: list[str]) -> bytes:
    """``VALID[header]`` with its text arguments replaced (any block kept)."""
    line = VALID[header].splitlines(keepends=True)[-1] if header in SET_UP_FIRST else VALID[header]
    hash_at = line.find(b"#")
    block = line[hash_at:] if hash_at >= 0 else b"\n"
    separator = b"," if hash_at >= 0 and args else b" " if hash_at >= 0 else b""
    text = header.encode() + (b" " + ",".join(args).encode() if args else b"")
    return text + separator + block


def valid_args(header: str) -> list[str]:
    line = VALID[header].splitlines()[-1] if header in SET_UP_FIRST else VALID[header]
    text = line.split(b"#")[0].decode().strip().rstrip(",")
    _, _, rest = text.partition(" ")
    return rest.split(",") if rest else []


@pytest.mark.parametrize("header", VALID)
def test_one_parameter_too_many_is_error_108(fw: Firmware, header: str) -> None:
    assert error_code(fw, with_args(header, [*valid_args(header), "1"])) == -108


@pytest.mark.parametrize("header", [h for h in VALID if valid_args(h)])
def test_one_parameter_missing_is_error_109(fw: Firmware, header: str) -> None:
    assert error_code(fw, with_args(header, valid_args(header)[:-1])) == -109


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"FOO\n", -113), (b"SYST:FOO?\n", -113), (b"*IDN\n", -113), (b"\n", -102), (b"READ? 0,,1\n", -102),
        (b"READ? 0,0,0.2,#14abcd\n", -102),  # a block where none is taken
        (b"VMM? 0,0,1,1,1\n", -102),  # no block where one is needed
        (b"READ? a,0,0.2\n", -104), (b"READ? 0,0.5,0.2\n", -104), (b"READ? 0,0,abc\n", -104),
        (b"ADC:SAMP? 0,big\n", -104), (b"SYST:WAIT soon\n", -104),
        (b"VMM? 0,0,1,1,x,#10\n", -104), (b"SWEEP? 0,0,1,1e-6,n,#10\n", -104),
        (b"DAC:VOLT FOO,0,1\n", -224), (b"DAC:RANG? BODY\n", -224), (b"SYST:LIM? VMAX\n", -224),
        (b"MUX:ROW 0,2\n", -224), (b"MAP? 0,0,1,1,0.2,VOLT\n", -224),
        (b"PULS:BATC ZAP,0,0,1,1,#216" + bytes(16) + b"\n", -224),
        (b"ADC:SAMP? 0,2000\n", -224),  # not one of TIA:GAIN?
        (b"ADC:SAMP? 0,1000.000001\n", -224),  # close to a listed gain is not one (a board compares what it got)
        (b"READ? 0,0,nan\n", -222), (b"READ? 0,0,inf\n", -222), (b"PULS:SET 0,0,2,1,-inf\n", -222),
        (b"VMM? 0,0,1,1,2,#14" + bytes(4) + b"\n", -160),  # 2 vectors need 8 bytes
        (b"PULS:BATC SET,0,0,1,2,#216" + bytes(16) + b"\n", -160),  # 4 planes of 1x2 need 32 bytes
        (b"SWEEP? 0,0,1,1e-6,2,#212" + bytes(12) + b"\n", -160),
        (b"VMM? 0,0,1,1,1,#x\n", -160), (b"X" * 5000 + b"\n", -363), (b"VMM? 0,0,1,1,1,#9999999999\n", -223),
    ],
)  # fmt: skip
def test_error_codes(fw: Firmware, line: bytes, code: int) -> None:
    before = state(fw)
    assert error_code(fw, line) == code
    assert state(fw) == before
    fw.link_quiet()  # a malformed block drains input until the link is quiet
    assert ask(fw, "*OPC?").text == "1"  # and the next command is served


def test_a_negative_index_is_out_of_range(fw: Firmware) -> None:
    assert error_code(fw, "READ? -1,0,0.2") == -222


def test_error_messages_name_parameter_value_and_limit(fw: Firmware) -> None:
    reply = ask(fw, "PULS:SET 0,0,9,1.2,1e-6")
    assert reply.code == -222
    assert "amplitude" in reply.text and "9 V" in reply.text and "VROW [-4, 4] V" in reply.text
    assert "gain 2000" in ask(fw, "ADC:SAMP? 0,2000").text
    assert "'FOO'" in ask(fw, "FOO").text


# ----------------------------------------------------------------------------- firmware limits

REFUSED_BEYOND_LIMITS = {
    "set amplitude beyond VROW": command("PULS:SET", 0, 0, 4.5, 1.0, 1e-6),
    "form amplitude beyond VROW": command("PULS:FORM", 0, 0, 4.01, 1.0, 1e-6),
    "reset amplitude beyond VCOL": command("PULS:RES", 0, 0, 4.5, 1.0, 1e-6),
    "negative amplitude": command("PULS:SET", 0, 0, -1.0, 1.0, 1e-6),
    "gate beyond VGATE": command("PULS:SET", 0, 0, 2.0, 5.6, 1e-6),
    "negative gate": command("PULS:SET", 0, 0, 2.0, -0.1, 1e-6),
    "width beyond WIDTH": command("PULS:SET", 0, 0, 2.0, 1.0, 2e-3),
    "width below WIDTH": command("PULS:RES", 0, 0, 2.0, 1.0, 5e-9),
    "pulse row outside": command("PULS:SET", ROWS, 0, 2.0, 1.0, 1e-6),
    "pulse col outside": command("PULS:SET", 0, COLS, 2.0, 1.0, 1e-6),
    "read at zero volts": command("READ?", 0, 0, 0),
    "read beyond VREAD": command("READ?", 0, 0, 0.6),
    "read row outside": command("READ?", ROWS, 0, 0.2),
    "map too tall": command("MAP?", 0, 0, ROWS + 1, COLS, 0.2, "COND"),
    "map past the last row": command("MAP?", ROWS - 1, 0, 2, 1, 0.2, "COND"),
    "map without rows": command("MAP?", 0, 0, 0, COLS, 0.2, "COND"),
    "map origin outside": command("MAP?", 0, COLS, 1, 1, 0.2, "CURR"),
    "map at zero volts": command("MAP?", 0, 0, 1, 1, 0, "COND"),
    "vmm input beyond VREAD": command("VMM?", 0, 0, ROWS, COLS, 2, block=np.pad([[0.0, 0.6]], ((0, 1), (0, ROWS - 2)))),
    "vmm nan input": command("VMM?", 0, 0, 1, 1, 1, block=[np.nan]),
    "batch with one bad gate": command("PULS:BATC", "SET", 2, 1, 3, 3,
                                       block=np.where(np.arange(36).reshape(4, 3, 3) == 13, 5.6,
                                                      batch_planes(2.0, 1.0, 1e-6, np.ones((3, 3))))),
    "batch region outside": command("PULS:BATC", "SET", 7, 0, 2, 1, block=batch_planes(2, 1, 1e-6, np.ones((2, 1)))),
    "dac row beyond VROW (inside its DAC range)": command("DAC:VOLT", "ROW", 0, 4.5),
    "dac col beyond VCOL": command("DAC:VOLT", "COL", 0, -4.5),
    "dac gate beyond VGATE": command("DAC:VOLT", "GATE", 0, 5.6),
    "dac channel outside": command("DAC:VOLT", "ROW", ROWS, 0.1),
    "mux row outside": command("MUX:ROW", ROWS, 1),
    "mux col outside": command("MUX:COL", COLS, 1),
    "sample col outside": command("ADC:SAMP?", COLS, 1000),
    "negative wait": command("SYST:WAIT", -1),
    "endless wait": command("SYST:WAIT", 1e8),
    "sweep beyond VROW": command("SWEEP?", 0, 0, 1.0, 1e-6, 2, block=[1.0, 4.5]),
    "sweep beyond VCOL": command("SWEEP?", 0, 0, 1.0, 1e-6, 2, block=[-1.0, -4.5]),
    "sweep gate beyond VGATE": command("SWEEP?", 0, 0, 5.6, 1e-6, 1, block=[1.0]),
    "sweep width beyond WIDTH": command("SWEEP?", 0, 0, 1.0, 1.0, 1, block=[1.0]),
}  # fmt: skip


@pytest.mark.parametrize("line", REFUSED_BEYOND_LIMITS.values(), ids=REFUSED_BEYOND_LIMITS.keys())
def test_firmware_refuses_beyond_its_limits_and_changes_nothing(fw: Firmware, line: bytes) -> None:
    energize(fw)  # a refused command must not even idle the board
    before = state(fw)
    assert error_code(fw, line) == -222
    assert state(fw) == before


def test_refused_batch_names_the_cell_in_array_coordinates(fw: Firmware) -> None:
    reply = ask(fw, REFUSED_BEYOND_LIMITS["batch with one bad gate"])
    # element 13 of the (4, 3, 3) planes is plane 1 (v_gate), local (1, 1): array cell (3, 2)
    assert reply.text == "v_gate[3, 2] = 5.6 V outside VGATE [0, 5.5] V"


def test_refused_vmm_names_the_vector_element(fw: Firmware) -> None:
    assert "v_rows[0, 1] = 0.6 V" in ask(fw, REFUSED_BEYOND_LIMITS["vmm input beyond VREAD"]).text


def test_unmasked_cells_of_a_batch_are_not_checked(fw: Firmware) -> None:
    mask = np.array([[1.0, 0.0]])
    planes = batch_planes(2.0, 1.0, 1e-6, mask)
    planes[0, 0, 1] = 99.0  # far beyond VROW, but not pulsed
    assert value(fw, command("PULS:BATC", "SET", 0, 0, 1, 2, block=planes)) == [1]


def test_values_at_the_limits_are_accepted(fw: Firmware) -> None:
    assert ask(fw, command("PULS:SET", 0, 0, 4.0, 5.5, 1e-3)).kind == "ok"
    assert ask(fw, command("PULS:RES", 0, 0, 4.0, 0.0, 1e-8)).kind == "ok"
    assert ask(fw, command("DAC:VOLT", "COL", 0, -4.0)).kind == "ok"
    assert ask(fw, command("READ?", 0, 0, -0.5)).kind == "value"
    # 1e-3 s and 1e-8 s have no exact float32: in a block they meet the limits as float32 expresses them.
    planes = batch_planes(4.0, 5.5, 1e-3, np.ones((1, 2)))
    planes[2, 0, 1] = 1e-8
    assert value(fw, command("PULS:BATC", "RES", 0, 0, 1, 2, block=planes)) == [2]


def test_vmm_over_the_column_current_limit_is_refused_and_changes_nothing() -> None:
    fw = make_firmware(g_initial_mean="9e-4", rows="128", cols="2")
    before = state(fw)
    # 128 rows at 0.5 V through 0.9 mS each: 58 mA into a column, beyond ICOL = 50 mA.
    reply = ask(fw, command("VMM?", 0, 0, 128, 2, 1, block=np.full((1, 128), 0.5)))
    assert (reply.kind, reply.code) == ("error", -240)
    assert "ICOL" in reply.text
    assert state(fw) == before


# ----------------------------------------------------------------------------- electronics


def test_dac_output_is_quantized_to_its_resolution(fw: Firmware) -> None:
    [bits] = value(fw, "DAC:RES?")
    low, high = value(fw, "DAC:RANG? ROW")
    step = (high - low) / (2**bits - 1)
    for requested in (0.123, -1.7, 3.999):
        assert ask(fw, command("DAC:VOLT", "ROW", 2, requested)).kind == "ok"
        [actual] = value(fw, "DAC:VOLT? ROW,2")
        assert actual != requested
        assert abs(actual - requested) < step and abs(actual) <= abs(requested)  # toward 0 V, within a code
        codes = actual / step  # codes are whole steps from 0 V
        assert codes == pytest.approx(round(codes), abs=1e-6)


@pytest.mark.parametrize(("line", "limit"), [("GATE", "VGATE"), ("ROW", "VROW"), ("COL", "VCOL")])
def test_dac_quantization_never_exceeds_a_limit_and_zero_is_zero(fw: Firmware, line: str, limit: str) -> None:
    """Regression (issue 10): DAC:VOLT GATE,127,5.5 read back 5.500023 V, over VGATE; 0 V read back 7.6e-5 V."""
    low, high = value(fw, f"SYST:LIM? {limit}")
    for requested in (high, low, 0.0, -0.0, high * 0.999999, low * 0.3333333):
        assert ask(fw, command("DAC:VOLT", line, 1, requested)).kind == "ok"
        [actual] = value(fw, f"DAC:VOLT? {line},1")
        assert low <= actual <= high, (requested, actual)
        if requested == 0:
            assert actual == 0.0


def test_dac_channels_are_independent(fw: Firmware) -> None:
    ask(fw, "DAC:VOLT GATE,3,2.5")
    assert value(fw, "DAC:VOLT? GATE,3")[0] == pytest.approx(2.5, abs=1e-4)
    assert value(fw, "DAC:VOLT? ROW,3") == [0.0]
    assert value(fw, "DAC:VOLT? GATE,2") == [0.0]


def test_sampling_needs_a_selected_column(fw: Firmware) -> None:
    reply = ask(fw, "ADC:SAMP? 1,1000")
    assert (reply.code, reply.text) == (-221, "column 1 is not selected (MUX:COL 1,1)")
    ask(fw, "MUX:COL 1,1")
    assert ask(fw, "ADC:SAMP? 1,1000").kind == "value"
    ask(fw, "MUX:OPEN")
    assert error_code(fw, "ADC:SAMP? 1,1000") == -221


def test_a_listed_gain_is_one_number_however_it_is_written(fw: Firmware) -> None:
    ask(fw, "MUX:COL 1,1")
    for written in ("1000", "1e3", "1.000000E+03", "+1000.0", "0.1e4"):
        assert ask(fw, f"ADC:SAMP? 1,{written}").kind == "value", written
    for near in ("1000.000001", "999.9999999999"):  # within the 1e-6 the emulator once took: refused
        assert error_code(fw, f"ADC:SAMP? 1,{near}") == -224, near
    assert "gain 1000.000001 ohm" in ask(fw, "ADC:SAMP? 1,1000.000001").text  # as sent, not rounded to 1000


def adc_sample(fw: Firmware, col: int, gain: float) -> tuple[float, int, bool]:
    current, code, saturated = ask(fw, command("ADC:SAMP?", col, gain)).fields
    return float(current), int(code), saturated == "1"


def test_adc_sample_measures_the_column_current(fw: Firmware) -> None:
    energize(fw)
    [bits] = value(fw, "ADC:RES?")
    low, high = value(fw, "ADC:RANG?")
    lsb = (high - low) / 2**bits
    [v_row] = value(fw, "DAC:VOLT? ROW,0")
    expected = v_row * fw.array.conductance[0, 0]
    current, code, saturated = adc_sample(fw, 0, 1e3)
    assert not saturated
    assert current == pytest.approx(code * lsb / 1e3)
    assert abs(current - expected) <= lsb / 1e3


def test_adc_saturates_at_a_gain_too_high_for_the_current(fw: Firmware) -> None:
    energize(fw)  # tens of uA: tens of volts out of a 1 MOhm TIA, far beyond its rail
    [bits] = value(fw, "ADC:RES?")
    low, high = value(fw, "ADC:RANG?")
    [v_row] = value(fw, "DAC:VOLT? ROW,0")
    true_current = v_row * fw.array.conductance[0, 0]
    assert true_current * 1e6 > high  # the premise: this current cannot fit at this gain
    current, code, saturated = adc_sample(fw, 0, 1e6)
    assert saturated
    assert code == 2 ** (bits - 1) - 1
    assert current == pytest.approx(code * (high - low) / 2**bits / 1e6)
    assert current < true_current  # the clipped reading understates, flagged rather than silent
    assert not adc_sample(fw, 0, 1e3)[2]  # a lower gain fits it


def test_no_current_without_gate_or_row_selection(fw: Firmware) -> None:
    energize(fw)
    ask(fw, "DAC:VOLT GATE,0,0.3")  # below the transistor threshold
    assert adc_sample(fw, 0, 1e6)[:2] == (0.0, 0)
    energize(fw)
    ask(fw, "MUX:ROW 0,0")
    assert adc_sample(fw, 0, 1e6)[:2] == (0.0, 0)


def test_sampling_leaves_the_lines_as_they_are(fw: Firmware) -> None:
    energize(fw)
    before = state(fw)
    adc_sample(fw, 0, 1e4)
    assert state(fw) == before


# ----------------------------------------------------------------------------- cells


def test_read_gives_the_cell_conductance_and_idles(fw: Firmware) -> None:
    energize(fw)
    [g] = value(fw, "READ? 5,2,0.2")
    assert g == pytest.approx(fw.array.conductance[5, 2], rel=1e-3)
    assert value(fw, "DAC:VOLT? ROW,0") == [0.0]
    assert error_code(fw, "ADC:SAMP? 0,1000") == -221  # column mux opened


def test_set_pulse_raises_conductance_and_reset_lowers_it(fw: Firmware) -> None:
    g0 = fw.array.conductance
    assert ask(fw, "PULS:SET 2,1,2.5,2.0,1e-4").kind == "ok"
    g1 = fw.array.conductance
    assert g1[2, 1] > g0[2, 1]
    changed = g1 != g0
    assert changed.sum() == 1  # only the addressed cell
    assert ask(fw, "PULS:RES 2,1,3.0,5.0,1e-4").kind == "ok"
    assert fw.array.conductance[2, 1] < g1[2, 1]


def test_pulse_idles_the_board(fw: Firmware) -> None:
    energize(fw)
    ask(fw, "PULS:SET 0,0,2,1,1e-6")
    assert value(fw, "DAC:VOLT? GATE,0") == [0.0]
    assert error_code(fw, "ADC:SAMP? 0,1000") == -221


def test_rst_idles_but_keeps_conductances(fw: Firmware) -> None:
    ask(fw, "PULS:SET 1,1,2.5,3.0,1e-4")
    programmed = fw.array.conductance
    energize(fw)
    assert ask(fw, "*RST").kind == "ok"
    assert not fw.row_selected.any() and not fw.col_selected.any()
    assert all(not levels.any() for levels in fw.dac.values())
    np.testing.assert_array_equal(fw.array.conductance, programmed)


def test_map_is_the_conductance_region(fw: Firmware) -> None:
    reply = ask(fw, "MAP? 2,1,3,2,0.2,COND")
    g = codec.decode_block(reply.payload, (3, 2))
    np.testing.assert_allclose(g, fw.array.conductance[2:5, 1:3], rtol=1e-3)
    current = codec.decode_block(ask(fw, "MAP? 2,1,3,2,-0.2,CURR").payload, (3, 2))
    np.testing.assert_allclose(current, -0.2 * fw.array.conductance[2:5, 1:3], rtol=1e-3)


def test_vmm_gives_column_currents(fw: Firmware) -> None:
    v_rows = np.linspace(-0.3, 0.3, 2 * 3).reshape(2, 3)
    reply = ask(fw, command("VMM?", 4, 1, 3, 2, 2, block=v_rows))
    currents = codec.decode_block(reply.payload, (2, 2))
    expected = v_rows.astype(np.float32) @ fw.array.conductance[4:7, 1:3]
    np.testing.assert_allclose(currents, expected, rtol=1e-2, atol=1e-9)


def test_vmm_of_no_vectors_is_refused_cleanly(fw: Firmware, caplog: pytest.LogCaptureFixture) -> None:
    """Regression (issue 10): nvec=0 answered -240 internal fault with a traceback in the log."""
    reply = ask(fw, command("VMM?", 0, 0, ROWS, COLS, 0, block=np.zeros((0, ROWS))))
    assert (reply.kind, reply.code) == ("error", -222) and "nvec" in reply.text
    assert "Traceback" not in caplog.text and not caplog.records
    reply = ask(fw, command("SWEEP?", 0, 0, 1.0, 1e-6, 0, block=np.zeros(0)))
    assert (reply.kind, reply.code) == ("error", -222) and "npts" in reply.text


def test_batch_pulses_only_masked_cells(fw: Firmware) -> None:
    mask = np.array([[1, 0, 1], [0, 1, 0]], dtype=float)
    before = fw.array.conductance
    assert value(fw, command("PULS:BATC", "SET", 3, 1, 2, 3, block=batch_planes(2.5, 3.0, 1e-4, mask))) == [3]
    after = fw.array.conductance
    region = (slice(3, 5), slice(1, 4))
    assert (after[region][mask == 1] > before[region][mask == 1]).all()
    untouched = np.ones_like(before, dtype=bool)
    untouched[region] = mask == 0
    np.testing.assert_array_equal(after[untouched], before[untouched])


def test_disconnect_idles_and_forgets_partial_input(fw: Firmware) -> None:
    energize(fw)
    fw.feed(b"PULS:SET 0,0,2")
    fw.disconnected()
    assert not fw.parser.has_partial
    assert all(not levels.any() for levels in fw.dac.values())
    assert ask(fw, "*OPC?").text == "1"


@pytest.mark.parametrize(
    "garbled",
    [b"VMM? 0,0,1,1,1,#x", b"VMM? 0,0,1,1,1,#9999999999", b"A" * 5000],
    ids=["bad-block-header", "oversized-block", "overlong-line"],
)
def test_an_answered_command_gets_no_second_reply_when_the_link_goes_quiet(fw: Firmware, garbled: bytes) -> None:
    assert len(replies(fw.feed(garbled))) == 1
    assert fw.link_quiet() == b""
    assert ask(fw, "*OPC?").text == "1"


def test_link_quiet_discards_a_partial_command(fw: Firmware) -> None:
    before = state(fw)
    assert fw.feed(b"PULS:SET 0,0,2.5,3.0") == b""
    reply = replies(fw.link_quiet())
    assert [(r.kind, r.code) for r in reply] == [("error", -160)]
    assert fw.link_quiet() == b""  # nothing left to discard: no reply
    assert state(fw) == before
    assert ask(fw, "*OPC?").text == "1"


# ----------------------------------------------------------------------------- framed mode

TOKEN = "host-7f3a_Q"
PULSE = "PULS:SET 1,2,2.5,3.0,1e-4"  # raises cell (1, 2) on the ideal preset


def framed(seq: int, line: bytes | str) -> bytes:
    return codec.encode_frame(seq, line if isinstance(line, bytes) else line.encode() + b"\n")


def framed_reply(data: bytes) -> tuple[int, codec.Reply]:
    """The one framed reply ``data`` holds: its number and what it carries. Its checksum must hold."""
    end = data.index(b"\n") + 1
    header = codec.parse_frame_header(data[:end])
    body = data[end:]
    assert len(body) == header.length and header.checks(body), f"not one intact frame: {data!r}"
    return header.seq, codec.parse_reply(body)


def ask_framed(fw: Firmware, seq: int, line: bytes | str) -> codec.Reply:
    number, reply = framed_reply(fw.feed(framed(seq, line)))
    assert number == seq
    return reply


def open_session(fw: Firmware, token: str = TOKEN) -> int:
    [last] = value(fw, f"SYST:FRAM {token}")
    return int(last)


def done(fw: Firmware, seq: int) -> int:
    reply = ask(fw, f"SYST:DONE? {seq}")
    return reply.code if reply.kind == "error" else int(reply.text)


def pulse_count(fw: Firmware) -> int:
    [count] = value(fw, "SYST:PCNT?")
    assert count == fw.pulses_applied
    return int(count)


def test_fram_replies_the_last_number_the_session_ran(fw: Firmware) -> None:
    assert open_session(fw) == 0  # a new session
    assert ask_framed(fw, 1, "*OPC?").text == "1"
    assert ask_framed(fw, 2, PULSE).kind == "ok"
    assert ask_framed(fw, 3, "READ? 0,0,0.2").kind == "value"
    assert ask(fw, "*RST").kind == "ok" and ask(fw, "READ? 0,0,0.2").kind == "value"  # plain commands between
    assert open_session(fw) == 3  # the same token: the session goes on
    assert (done(fw, 2), done(fw, 4)) == (1, 0)
    assert open_session(fw) == 3  # asking again changes nothing
    assert ask_framed(fw, 2, PULSE).kind == "ok" and fw.pulses_applied == 1  # still remembered: not run again
    assert open_session(fw, "another") == 0  # a new token: a new session, its history empty
    assert done(fw, 2) == 0
    assert ask_framed(fw, 2, PULSE).kind == "ok"
    assert fw.pulses_applied == 2  # number 2 of the new session is a new command
    assert open_session(fw) == 3  # the board keeps several sessions: the first one goes on


def test_fram_accepts_tokens_of_letters_digits_underscore_and_dash(fw: Firmware) -> None:
    for token in ("a", "Z" * 32, "0123456789", "A-b_c-D", "_", "-"):
        assert open_session(fw, token) == 0, token


@pytest.mark.parametrize(
    ("argument", "code"),
    [("a" * 33, -224), ("dot.ted", -224), ("two words", -224), ("semi;colon", -224), ("plus+", -224),
     ("quo'te", -224), ("", -109), ("a,b", -108)],
    ids=["33-characters", "dot", "space", "semicolon", "plus", "quote", "missing", "two-tokens"],
)  # fmt: skip
def test_fram_refuses_a_bad_token_and_keeps_the_session(fw: Firmware, argument: str, code: int) -> None:
    open_session(fw)
    ask_framed(fw, 1, PULSE)
    assert error_code(fw, f"SYST:FRAM {argument}".strip()) == code
    assert open_session(fw) == 1
    assert ask_framed(fw, 1, PULSE).kind == "ok"  # the kept reply of command 1, not a second pulse
    assert fw.pulses_applied == 1


def test_a_framed_command_before_fram_is_refused_and_not_run(fw: Firmware) -> None:
    before = state(fw)
    reply = ask_framed(fw, 1, PULSE)
    assert (reply.kind, reply.code) == ("error", -221)
    assert "SYST:FRAM" in reply.text
    assert state(fw) == before and fw.pulses_applied == 0
    assert open_session(fw) == 0  # nothing ran
    assert ask_framed(fw, 1, PULSE).kind == "ok"  # the same number, in a session: it runs
    assert fw.pulses_applied == 1 and state(fw) != before


RESENT = {
    "pulse": (PULSE, 1),
    "batch": (command("PULS:BATC", "SET", 0, 0, 3, 3, block=batch_planes(2.5, 3.0, 1e-4, np.eye(3))), 3),
    "sweep": (command("SWEEP?", 1, 2, 3.0, 1e-4, 4, block=[0.5, 2.5, -0.5, 0.0]), 4),
}


@pytest.mark.parametrize(("line", "pulses"), RESENT.values(), ids=RESENT.keys())
def test_a_resent_frame_gets_its_reply_byte_for_byte_and_does_not_run_again(
    fw: Firmware, line: bytes | str, pulses: int
) -> None:
    open_session(fw)
    ask_framed(fw, 1, "*OPC?")
    g0 = fw.array.conductance
    first = fw.feed(framed(2, line))
    assert framed_reply(first)[0] == 2 and framed_reply(first)[1].kind != "error"
    g1, clock = fw.array.conductance, fw.array.time
    assert fw.pulses_applied == pulses and not np.array_equal(g1, g0)
    for _ in range(3):
        assert fw.feed(framed(2, line)) == first
    assert fw.pulses_applied == pulses
    np.testing.assert_array_equal(fw.array.conductance, g1)
    assert fw.array.time == clock  # not even the command's latency: nothing ran
    assert pulse_count(fw) == pulses


def test_a_number_reused_for_another_command_is_refused(fw: Firmware) -> None:
    """Regression (issue 10): a resent number with a different body got the old body's kept reply."""
    open_session(fw)
    assert ask_framed(fw, 1, "SYST:WAIT 100").kind == "ok"
    clock, g = fw.array.time, fw.array.conductance
    reply = ask_framed(fw, 1, PULSE)  # command 1 ran (it was the wait): refused, not pulsed nor answered as the wait
    assert (reply.kind, reply.code) == ("error", -221) and "another command" in reply.text
    assert fw.pulses_applied == 0 and fw.array.time == clock
    np.testing.assert_array_equal(fw.array.conductance, g)


def test_a_command_safe_to_repeat_is_not_kept_and_runs_again(fw: Firmware) -> None:
    """A host sends such a command again under a new number; the board need not remember it."""
    open_session(fw)
    first = float(ask_framed(fw, 1, "SYST:TIME?").text)
    assert ask_framed(fw, 2, "SYST:WAIT 100").kind == "ok"
    assert float(ask_framed(fw, 1, "SYST:TIME?").text) > first + 99


def test_questions_do_not_push_a_pulse_out_of_the_kept_replies(fw: Firmware) -> None:
    open_session(fw)
    assert ask_framed(fw, 1, PULSE).kind == "ok"
    for seq in range(2, 40):  # a host's recovery asks many questions
        ask_framed(fw, seq, "SYST:DONE? 1" if seq % 2 else "SYST:SEQ?")
    assert done(fw, 1) == 1
    assert ask_framed(fw, 1, PULSE).kind == "ok" and fw.pulses_applied == 1


def test_seq_answers_the_highest_number_run_before_it(fw: Firmware) -> None:
    assert ask(fw, "SYST:SEQ?").text == "0"  # no session yet
    open_session(fw)
    assert ask_framed(fw, 1, "SYST:SEQ?").text == "0"
    ask_framed(fw, 5, PULSE)
    ask_framed(fw, 3, "*OPC?")
    assert ask_framed(fw, 6, "SYST:SEQ?").text == "5"
    assert open_session(fw, "restarted") == 0 and ask_framed(fw, 7, "SYST:SEQ?").text == "0"


def test_pipelined_frames_are_answered_in_order_with_their_numbers(fw: Firmware) -> None:
    open_session(fw)
    out = fw.feed(framed(1, "SYST:ARR?") + framed(2, "FOO") + b"*OPC?\n" + framed(3, PULSE))
    first, rest = out.split(b"\n", 1)
    header = codec.parse_frame_header(first + b"\n")
    assert (header.seq, codec.parse_reply(rest[: header.length])) == (1, codec.Reply("value", f"{ROWS},{COLS}"))
    rest = rest[header.length :]
    first, rest = rest.split(b"\n", 1)
    header = codec.parse_frame_header(first + b"\n")
    assert header.seq == 2 and codec.parse_reply(rest[: header.length]).code == -113
    rest = rest[header.length :]
    assert rest.startswith(b"1\n")  # the plain command's plain reply, in its place
    assert framed_reply(rest[2:]) == (3, codec.Reply("ok"))


def test_a_skipped_number_sent_later_is_run(fw: Firmware) -> None:
    open_session(fw)
    ask_framed(fw, 1, "*OPC?")
    assert ask_framed(fw, 3, PULSE).kind == "ok"
    assert done(fw, 2) == 0
    assert ask_framed(fw, 2, "PULS:SET 3,3,2.5,3.0,1e-4").kind == "ok"  # lower than the last run: still runs
    assert fw.pulses_applied == 2
    assert done(fw, 2) == 1
    assert open_session(fw) == 3  # the highest number run
    assert ask_framed(fw, 2, "PULS:SET 3,3,2.5,3.0,1e-4").kind == "ok" and fw.pulses_applied == 2


def test_a_number_older_than_the_kept_replies_is_refused_and_not_run(fw: Firmware) -> None:
    open_session(fw)
    for seq in range(1, 10):  # 9 pulses; the board keeps the replies of the last 8
        assert ask_framed(fw, seq, PULSE).kind == "ok"
    before = state(fw)
    refused = ask_framed(fw, 1, PULSE)
    assert (refused.kind, refused.code) == ("error", -221)
    assert state(fw) == before and fw.pulses_applied == 9
    assert ask_framed(fw, 2, PULSE).kind == "ok"  # the oldest kept reply is still there
    assert fw.pulses_applied == 9


def test_a_number_never_run_but_older_than_the_kept_replies_is_refused(fw: Firmware) -> None:
    open_session(fw)
    for seq in (1, *range(3, 12)):  # 2 is skipped; 10 pulses push out 1 and 3
        ask_framed(fw, seq, PULSE)
    assert done(fw, 2) == -221  # it cannot know whether 2 ran
    before = state(fw)
    assert ask_framed(fw, 2, PULSE).code == -221
    assert state(fw) == before and fw.pulses_applied == 10


def test_a_number_run_out_of_order_is_never_run_twice(fw: Firmware) -> None:
    open_session(fw)
    assert ask_framed(fw, 2, PULSE).kind == "ok"  # 2 before 1
    for seq in (1, *range(3, 10)):  # 9 pulses run: the first one run (2) is no longer kept
        ask_framed(fw, seq, PULSE)
    assert done(fw, 2) != 0  # it ran: 1, or -221 if the board cannot tell
    ask_framed(fw, 2, PULSE)
    assert fw.pulses_applied == 9


def test_a_number_never_run_and_above_the_lowest_kept_number_is_run(fw: Firmware) -> None:
    open_session(fw)
    for seq in (1, 10, *range(2, 9)):  # kept now: 10, then 2..8 (1 is gone)
        ask_framed(fw, seq, PULSE)
    assert done(fw, 9) == 0  # never run, and above 2, the lowest number kept
    assert ask_framed(fw, 9, PULSE).kind == "ok"
    assert fw.pulses_applied == 10


def test_done_says_whether_a_number_ran(fw: Firmware) -> None:
    open_session(fw)
    assert done(fw, 1) == 0
    assert ask_framed(fw, 1, PULSE).kind == "ok"
    assert (done(fw, 1), done(fw, 2), done(fw, 10**9)) == (1, 0, 0)
    assert ask_framed(fw, 2, "SYST:DONE? 1").text == "1"  # framed, as a host asks it
    assert ask_framed(fw, 3, "SYST:DONE? 4").text == "0"
    assert done(fw, 3) == 0  # a question is not kept: DONE? is about commands that must not run twice
    assert done(fw, 0) == -221  # numbers start at 1
    for seq in range(4, 12):  # 8 more pulses push 1 out
        ask_framed(fw, seq, PULSE)
    assert (done(fw, 1), done(fw, 3), done(fw, 4), done(fw, 11), done(fw, 12)) == (-221, 0, 1, 1, 0)
    assert error_code(fw, "SYST:DONE? x") == -104
    assert error_code(fw, "SYST:DONE? -1") == -104
    assert error_code(fw, "SYST:DONE? 1,2") == -108
    assert error_code(fw, "SYST:DONE?") == -109
    assert fw.pulses_applied == 9  # asking ran nothing


def test_pulse_count_counts_every_pulse_applied(fw: Firmware) -> None:
    assert pulse_count(fw) == 0
    for line in ("PULS:SET 0,0,2.5,3.0,1e-4", "PULS:RES 0,0,3.0,5.0,1e-4", "PULS:FORM 1,1,3.5,1.0,1e-5"):
        assert ask(fw, line).kind == "ok"
    assert pulse_count(fw) == 3
    mask = np.array([[1, 0, 1], [0, 1, 0]])
    planes = batch_planes(2.5, 3.0, 1e-4, mask)
    planes[0][mask == 0] = 9.0  # unmasked cells: neither checked nor pulsed nor counted
    assert value(fw, command("PULS:BATC", "SET", 2, 0, 2, 3, block=planes)) == [3]
    assert pulse_count(fw) == 6
    unmasked = batch_planes(3.0, 5.0, 1e-4, np.zeros((2, 2)))
    assert value(fw, command("PULS:BATC", "RES", 0, 0, 2, 2, block=unmasked)) == [0]
    assert pulse_count(fw) == 6
    assert ask(fw, command("SWEEP?", 3, 1, 3.0, 1e-4, 5, block=[0.5, 1.5, 0.0, -0.5, -1.5])).kind == "block"
    assert pulse_count(fw) == 11  # every step, 0 V included
    for line in ("READ? 0,0,0.2", "*RST", "MAP? 0,0,2,2,0.2,COND", command("VMM?", 0, 0, 2, 2, 1, block=[[0.1, 0.1]])):
        ask(fw, line)
    assert pulse_count(fw) == 11  # reads, VMM and resets pulse nothing


REFUSED_PULSES = {
    "single above VROW": "PULS:SET 0,0,9,1.0,1e-4",
    "single bad cell": "PULS:RES 0,99,1,1.0,1e-4",
    "batch with one bad masked cell": command(
        "PULS:BATC", "SET", 0, 0, 2, 2, block=np.stack([[[2.5, 2.5], [2.5, 4.5]], np.ones((2, 2)),
                                                        np.full((2, 2), 1e-4), np.ones((2, 2))])),
    "batch of the wrong size": command("PULS:BATC", "SET", 0, 0, 2, 2, block=np.ones(12)),
    "sweep with one step beyond VCOL": command("SWEEP?", 0, 0, 3.0, 1e-4, 3, block=[0.5, -4.5, 0.5]),
}  # fmt: skip


@pytest.mark.parametrize("line", REFUSED_PULSES.values(), ids=REFUSED_PULSES.keys())
def test_pulse_count_does_not_count_refused_pulses(fw: Firmware, line: bytes | str) -> None:
    ask(fw, "PULS:SET 1,1,2.5,3.0,1e-4")
    before = state(fw)
    assert ask(fw, line).kind == "error"
    assert ask_framed(fw, 1, line).kind == "error"  # framed, before a session
    open_session(fw)
    assert ask_framed(fw, 1, line).kind == "error"
    assert state(fw) == before
    assert pulse_count(fw) == 1


def test_pulse_count_does_not_count_a_pulse_the_board_failed_to_run(fw: Firmware) -> None:
    fw.faults = FaultInjector(FaultPlan(firmware_error=1.0))
    assert error_code(fw, "PULS:SET 1,1,2.5,3.0,1e-4") == -240
    fw.faults = None
    assert pulse_count(fw) == 0


def damage(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


FRAME_OF_PULSE = framed(2, PULSE)
DAMAGED_AT = {"sequence number": 1, "checksum": FRAME_OF_PULSE.index(b"\n") - 1,
              "first body byte": FRAME_OF_PULSE.index(b"\n") + 1, "a body digit": len(FRAME_OF_PULSE) - 5,
              "body line end": len(FRAME_OF_PULSE) - 1}  # fmt: skip


@pytest.mark.parametrize("at", DAMAGED_AT.values(), ids=DAMAGED_AT.keys())
def test_a_damaged_frame_is_answered_as_number_0_and_changes_nothing(fw: Firmware, at: int) -> None:
    open_session(fw)
    ask_framed(fw, 1, "*OPC?")
    energize(fw)
    before = state(fw)
    seq, reply = framed_reply(fw.feed(damage(FRAME_OF_PULSE, at)))
    assert (seq, reply.kind, reply.code) == (0, "error", -160)
    assert "checksum" in reply.text
    assert state(fw) == before and fw.pulses_applied == 0
    assert open_session(fw) == 1 and done(fw, 2) == 0  # the session did not move
    assert ask_framed(fw, 2, PULSE).kind == "ok"  # sent again intact: it runs, once
    assert fw.pulses_applied == 1


def test_a_damaged_frame_before_a_session_is_answered_as_number_0(fw: Firmware) -> None:
    seq, reply = framed_reply(fw.feed(damage(FRAME_OF_PULSE, len(FRAME_OF_PULSE) - 5)))
    assert (seq, reply.code) == (0, -160)
    assert fw.pulses_applied == 0


UNREADABLE_HEADERS = {"mark": (0, b"?"), "sequence number": (1, b"x"), "length": (3, b"-"),
                      "checksum": (FRAME_OF_PULSE.index(b"\n") - 1, b"G")}  # fmt: skip


@pytest.mark.parametrize(("at", "byte"), UNREADABLE_HEADERS.values(), ids=UNREADABLE_HEADERS.keys())
def test_a_frame_whose_header_is_damaged_unreadable_is_not_run(fw: Firmware, at: int, byte: bytes) -> None:
    open_session(fw)
    ask_framed(fw, 1, "*OPC?")
    before = state(fw)
    damaged = FRAME_OF_PULSE[:at] + byte + FRAME_OF_PULSE[at + 1 :]
    out = fw.feed(damaged) + fw.link_quiet()
    assert b"ERR -" in out  # answered with an error
    assert fw.pulses_applied == 0 and state(fw) == before


def test_on_a_framed_link_a_plain_command_that_must_not_run_twice_is_refused(fw: Firmware) -> None:
    """What makes an unreadable frame header safe: the body that follows it is plain, and is not run."""
    open_session(fw)
    before = state(fw)
    for line in (PULSE, "PULS:RES 1,2,3.0,5.0,1e-4", "PULS:FORM 1,2,3.5,1.0,1e-5", "SYST:WAIT 1",
                 command("PULS:BATC", "SET", 0, 0, 1, 1, block=batch_planes(2.5, 3.0, 1e-4, np.ones((1, 1)))),
                 command("SWEEP?", 1, 2, 3.0, 1e-4, 1, block=[2.5])):  # fmt: skip
        assert error_code(fw, line) == -221
    assert state(fw) == before and fw.pulses_applied == 0
    assert ask(fw, "READ? 1,2,0.2").kind == "value" and ask(fw, "*OPC?").text == "1"  # safe to repeat: served
    assert ask_framed(fw, 1, PULSE).kind == "ok" and fw.pulses_applied == 1  # in a frame it runs
    assert ask(fw, "SYST:FRAM OFF").kind == "ok"  # plain lines again
    assert ask(fw, PULSE).kind == "ok" and fw.pulses_applied == 2


def test_a_new_client_starts_in_plain_lines_and_the_session_goes_on(fw: Firmware) -> None:
    open_session(fw)
    ask_framed(fw, 1, PULSE)
    fw.disconnected()
    assert ask(fw, PULSE).kind == "ok" and fw.pulses_applied == 2  # the next client may not know frames
    assert open_session(fw) == 1  # the session is the board's, not the connection's
    assert ask_framed(fw, 1, PULSE).kind == "ok" and fw.pulses_applied == 2


# ----------------------------------------------------------------------------- robustness

IDN = b"MEMHIL,EMU-1T1R,SN-0001,0.1.0\n"
ROBUST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def feed_in_chunks(fw: Firmware, data: bytes, cuts: list[int]) -> bytes:
    edges = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
    return b"".join(fw.feed(data[a:b]) for a, b in itertools.pairwise(edges))


def still_serves(fw: Firmware) -> None:
    fw.link_quiet()
    assert fw.feed(b"*IDN?\n") == IDN


@ROBUST
@given(
    # Plain lines only: a block's bytes and a frame's body have their own rules (a damaged frame header takes
    # the next line as its refused body: `!\n*IDN?\n` is one reply for two line ends), tested on their own.
    st.binary(max_size=600).map(lambda b: b.replace(b"#", b"").replace(b"!", b"")),
    st.lists(st.integers(0, 10_000), max_size=8),
)
def test_random_lines_each_get_exactly_one_reply(data: bytes, cuts: list[int]) -> None:
    fw = make_firmware()
    before = state(fw)
    out = feed_in_chunks(fw, data, cuts)
    assert len(replies(out)) == data.count(b"\n")
    assert fw.array.conductance.tobytes() == before[0]
    still_serves(fw)


@ROBUST
@given(st.binary(max_size=600), st.lists(st.integers(0, 10_000), max_size=8))
def test_random_bytes_never_break_the_firmware(data: bytes, cuts: list[int]) -> None:
    fw = make_firmware()
    before = fw.array.conductance
    replies(feed_in_chunks(fw, data, cuts) + fw.link_quiet())  # well-formed replies, whatever came in
    np.testing.assert_array_equal(fw.array.conductance, before)
    still_serves(fw)


@st.composite
def mutated_commands(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(sorted(VALID.values()))))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["delete", "insert", "replace", "truncate", "duplicate"]))
        if action == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8) | st.sampled_from([b",", b"#", b"\n", b"-", b"e9"]))
        elif action == "replace" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif action == "truncate":
            del data[at:]
        elif action == "duplicate":
            data[at:at] = data[max(0, at - 8) : at]
    return bytes(data)


@ROBUST
@given(mutated_commands(), st.lists(st.integers(0, 10_000), max_size=6))
def test_mutated_commands_never_break_the_firmware_and_refusals_change_no_cell(data: bytes, cuts: list[int]) -> None:
    fw = make_firmware()
    before = fw.array.conductance
    out = replies(feed_in_chunks(fw, data, cuts) + fw.link_quiet())
    if data:
        assert out, "input with content gets at least one reply"
    if all(reply.kind == "error" for reply in out):
        np.testing.assert_array_equal(fw.array.conductance, before)
    still_serves(fw)
