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

from drivers import codec
from mock_hardware.emulator import build_firmware
from mock_hardware.firmware import Firmware
from tests.conftest import REPO_ROOT

ROWS, COLS = 8, 4


def make_firmware(seed: int = 3, preset: str = "ideal", **overrides: str) -> Firmware:
    return build_firmware(preset, seed, {"rows": str(ROWS), "cols": str(COLS), **overrides})


@pytest.fixture
def fw() -> Firmware:
    return make_firmware()


def command(header: str, *args: str | float, block: np.ndarray | list[float] | None = None) -> bytes:
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
}
EXPECTED_KIND = {"*RST": "ok", "SYST:WAIT": "ok", "DAC:VOLT": "ok", "MUX:ROW": "ok", "MUX:COL": "ok",
                 "MUX:OPEN": "ok", "PULS:SET": "ok", "PULS:RES": "ok", "PULS:FORM": "ok",
                 "MAP?": "block", "VMM?": "block", "SWEEP?": "block"}  # fmt: skip


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
    line = VALID[header].splitlines(keepends=True)[-1] if header == "ADC:SAMP?" else VALID[header]
    hash_at = line.find(b"#")
    block = line[hash_at:] if hash_at >= 0 else b"\n"
    separator = b"," if hash_at >= 0 and args else b" " if hash_at >= 0 else b""
    text = header.encode() + (b" " + ",".join(args).encode() if args else b"")
    return text + separator + block


def valid_args(header: str) -> list[str]:
    line = VALID[header].splitlines()[-1] if header == "ADC:SAMP?" else VALID[header]
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
        assert abs(actual - requested) <= step / 2
        codes = (actual - low) / step
        assert codes == pytest.approx(round(codes), abs=1e-6)


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


def test_empty_vmm_batch(fw: Firmware) -> None:
    reply = ask(fw, command("VMM?", 0, 0, ROWS, COLS, 0, block=np.zeros((0, ROWS))))
    assert (reply.kind, reply.payload) == ("block", b"")


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
@given(st.binary(max_size=600).map(lambda b: b.replace(b"#", b"")), st.lists(st.integers(0, 10_000), max_size=8))
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
