"""The command table (drivers/commands.py) is the one declaration of the vocabulary: the link's
retry / at-most-once / idling behaviour, the Board's headers, the firmware's dispatch and the
tables of docs/wire-protocol.md all agree with it, and a new command needs only a row, a handler
and a Board method."""

from __future__ import annotations

import re

import numpy as np
import pytest

from drivers import Board, codec
from drivers import commands as cmd
from drivers.board import LIMIT_FIELDS
from drivers.commands import Arg, CommandSpec, ReplyShape
from drivers.errors import FirmwareError
from drivers.transports.base import PassThrough, Transport
from mock_hardware.emulator import build_firmware
from mock_hardware.firmware import Firmware, FirmwareLimits, handles
from tests.conftest import REPO_ROOT
from tests.firmware_transport import FirmwareTransport

DOC = (REPO_ROOT / "docs" / "wire-protocol.md").read_text()
PULSES = {"PULS:SET", "PULS:RES", "PULS:FORM", "PULS:BATC", "PULS:SPAR", "SWEEP?", "SYST:WAIT"}


def test_the_commands_that_must_not_run_twice_are_exactly_the_pulses_sweeps_and_waits() -> None:
    assert {h for h, spec in cmd.TABLE.items() if spec.at_most_once} == PULSES
    assert all(cmd.repeat_safe(h) != (h in PULSES) for h in cmd.TABLE)
    assert not cmd.repeat_safe("NO:SUCH") and cmd.at_most_once("NO:SUCH")  # unknown: the safe side
    assert cmd.repeat_safe("read?")  # headers are case-insensitive


def test_a_row_cannot_be_both_safe_to_repeat_and_at_most_once() -> None:
    with pytest.raises(ValueError, match="either safe to repeat or runs at most once"):
        CommandSpec("X", (), ReplyShape.OK, repeat_safe=True, at_most_once=True)
    with pytest.raises(ValueError, match="idle"):
        CommandSpec("X", (), ReplyShape.OK, idles=True, sets_level=True)


def test_the_firmware_handles_exactly_the_table() -> None:
    assert build_firmware("ideal", 0, {"rows": "4", "cols": "4"}).handled_headers == set(cmd.TABLE)


def test_limit_names_are_declared_once() -> None:
    assert tuple(FirmwareLimits.model_fields) == tuple(cmd.LimitName)
    assert set(LIMIT_FIELDS.values()) == set(cmd.LimitName)
    assert set(cmd.LIMIT_MEANINGS) == set(cmd.LimitName) and set(cmd.LINE_LIMIT) == set(cmd.Line)


def test_the_docs_command_index_is_the_table() -> None:
    assert cmd.markdown_index() in DOC, "regenerate it: python -m drivers.commands"


def _doc_command_cells() -> dict[str, str]:
    """Every command in the first column of the docs' command tables (the sections that describe the commands,
    not the generated index): header -> syntax."""
    described = DOC[DOC.index("## Common commands") : DOC.index("## Command index")]
    described += DOC[DOC.index("Framed mode (see") : DOC.index("Limit names for")]
    found: dict[str, str] = {}
    for cell in re.findall(r"^\| `([^`]+)` \|", described, flags=re.MULTILINE):
        header = cell.split(" ", 1)[0]
        if header in cmd.LimitName.__members__:
            continue  # the limit names' table
        found.setdefault(header, cell)
    return found


def test_the_docs_command_tables_document_every_command_with_its_arguments() -> None:
    cells = _doc_command_cells()
    assert set(cells) == set(cmd.TABLE)
    for header, cell in cells.items():
        spec = cmd.TABLE[header]
        if header in ("MAP?", "VMM?", "PULS:BATC", "MAP:CODE?", "VMM:CODE?", "PULS:SPAR"):  # <region>: four numbers
            cell = cell.replace("<region>", "<row0>,<col0>,<nrows>,<ncols>")
        assert len(re.findall(r"<[^>]+>", cell)) == spec.nargs + spec.block_in, (header, cell)


def test_the_error_codes_table_is_the_codecs() -> None:
    documented = {int(c) for c in re.findall(r"^\| (-\d+) \|", DOC, flags=re.MULTILINE)}
    assert documented == {int(c) for c in codec.ErrorCode}


class Recording(PassThrough):
    def __init__(self, inner: Transport) -> None:
        super().__init__(inner)
        self.headers: set[str] = set()

    def write(self, data: bytes) -> None:
        body = codec.unframe(data)
        self.headers.add(body.split(b"\n", 1)[0].split(b" ", 1)[0].decode())
        super().write(data)


def test_board_has_a_method_for_every_command_and_sends_only_the_tables_headers() -> None:
    recording = Recording(FirmwareTransport(build_firmware("ideal", 0, {"rows": "4", "cols": "4"})))
    with Board(recording) as board:
        board.describe()
        board.set_dac("GATE", 1, 1.0)
        board.dac_voltage("GATE", 1)
        board.select_row(1)
        board.select_column(1)
        board.sample_adc(1, board.tia_gains[0])
        board.open_muxes()
        board.idle_for(1.0)
        board.clock()
        board.read_cell(0, 0)
        for kind in cmd.PulseKind:
            board.pulse(kind, 0, 0, 1.0, 1.0, 1e-6)
        board.read_map()
        board.vmm(np.full((1, 4), 0.1))
        board.iv_sweep(0, 0, [0.5, -0.5], 1.0, 1e-6)
        board.apply_pulses("SET", 1.0, 1.0, 1e-6)
        assert board.pulse_count() == 3 + 2 + 16 and board.complete()
    older = Recording(FirmwareTransport(build_firmware("ideal", 0, {"rows": "4", "cols": "4"})))
    with Board(older, compact=False) as board:  # the 1.2 forms of the bulk commands
        board.read_map()
        board.vmm(np.full((1, 4), 0.1))
        board.apply_pulses("SET", 1.0, 1.0, 1e-6)
    link_only = {"SYST:DONE?", "SYST:SEQ?"}  # the link's own questions while it recovers (test_retries.py)
    assert recording.headers | older.headers == set(cmd.TABLE) - link_only
    assert {"MAP?", "VMM?", "PULS:BATC"} & recording.headers == set()  # a 1.3 board gets the compact forms


# ----------------------------------------------------------------------------- a new command, end to end

ECHO = CommandSpec("TEST:ECHO?", (("x", Arg.NUMBER),), ReplyShape.VALUE, fields=1, summary="twice x")


class EchoFirmware(Firmware):
    @handles(ECHO)
    def _echo(self, command: codec.Command) -> bytes:
        return codec.encode_value(2 * self._number(command.args[0], "x"))


class EchoBoard(Board):
    def echo(self, x: float) -> float:
        return float(self._ask(ECHO, x).text)


def test_a_new_command_is_a_row_a_handler_and_a_board_method(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing else changes: the dispatch, the parameter checks and the link's resend rules follow the row."""
    monkeypatch.setitem(cmd.TABLE, ECHO.header, ECHO)
    base = build_firmware("ideal", 0, {"rows": "4", "cols": "4"})
    firmware = EchoFirmware(base.array, base.spec)
    with EchoBoard(FirmwareTransport(firmware)) as board:
        assert board.link.framed  # in a frame, through the link's machinery
        assert board.echo(1.25) == 2.5
        with pytest.raises(FirmwareError) as refused:  # the table's parameter count is enforced
            board.query("TEST:ECHO? 1,2")
        assert refused.value.code == -108
        assert cmd.repeat_safe("TEST:ECHO?")  # and the link may resend it
    assert firmware.handled_headers == set(cmd.TABLE)
