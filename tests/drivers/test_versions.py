"""The host drives boards of every protocol version: 1.0 (plain lines only), 1.1 (framed mode with one
session, refused frames counted by SYST:SEQ?), 1.2 (float32 blocks only) and 1.3 (this version: the
compact encodings), and sends an older board none of the newer commands."""

from __future__ import annotations

import numpy as np
import pytest

from drivers import Board, FirmwareError, InvalidRequest, codec
from mock_hardware.emulator import build_firmware
from mock_hardware.firmware import Firmware
from mock_hardware.sessions import FramedSession
from tests.drivers.test_retries import NextReplies
from tests.firmware_transport import FirmwareTransport

COMPACT = {"MAP:CODE?", "VMM:CODE?", "PULS:SPAR"}
NEWER = {"SYST:FRAM", "SYST:DONE?", "SYST:SEQ?", "SYST:PCNT?"} | COMPACT


class Board12(Firmware):
    """A 1.2 board: no compact encodings."""

    def execute(self, item: codec.Command | codec.ParseError) -> bytes:
        if isinstance(item, codec.Command) and item.header in COMPACT:
            self.commands_served += 1
            return codec.encode_error(codec.ErrorCode.UNDEFINED_HEADER, f"undefined header {item.header!r}")
        if isinstance(item, codec.Command) and item.header == "SYST:VERS?":
            return codec.encode_value("1.2")
        return super().execute(item)


class Board10(Firmware):
    """A 1.0 board: no framed mode, no pulse count."""

    def execute(self, item: codec.Command | codec.ParseError) -> bytes:
        if isinstance(item, codec.Command) and item.header in NEWER:
            self.commands_served += 1
            return codec.encode_error(codec.ErrorCode.UNDEFINED_HEADER, f"undefined header {item.header!r}")
        if isinstance(item, codec.Command) and item.header == "SYST:VERS?":
            return codec.encode_value("1.0")
        return super().execute(item)


class Board11(Board12):
    """A 1.1 board: one session for every link, and refused frames counted as run (SYST:SEQ? advances)."""

    def _execute_framed(self, frame: codec.Framed) -> bytes:
        session = self.session
        fresh = session is not None and session.kept(frame.seq) is None and not session.forgotten(frame.seq)
        if frame.intact and session is not None and fresh:
            reply = self.execute(frame.item)
            once = isinstance(frame.item, codec.Command) and frame.item.header in {
                "PULS:SET", "PULS:RES", "PULS:FORM", "PULS:BATC", "SWEEP?", "SYST:WAIT"}  # fmt: skip
            session.record(frame.seq, frame.body, reply, keep=once)  # refusals too, as 1.1 did
            return codec.encode_frame(frame.seq, reply)
        return super()._execute_framed(frame)

    def _open_session(self, command: codec.Command) -> bytes:
        token = command.args[0]
        if token.upper() != "OFF" and (self.session is None or self.session.token != token):
            self.session = FramedSession(token)  # the one session a 1.1 board keeps
            return codec.encode_value(0)
        return super()._open_session(command) if token.upper() == "OFF" else codec.encode_value(self.session.last_seq)


def _firmware(kind: type[Firmware]) -> Firmware:
    base = build_firmware("ideal", 0, {"rows": "4", "cols": "4"})
    return kind(base.array, base.spec)


class Headers(FirmwareTransport):
    """Keeps the header of every command sent."""

    def __init__(self, firmware: Firmware) -> None:
        super().__init__(firmware)
        self.headers: set[str] = set()

    def write(self, data: bytes) -> None:
        self.headers.add(codec.unframe(data).split(b"\n", 1)[0].split(b" ", 1)[0].decode())
        super().write(data)


def _drive(board: Board) -> None:
    g = board.read_map()
    board.set_pulse(1, 1, 2.5, 3.0, 1e-4)
    assert board.read_map()[1, 1] > g[1, 1]
    assert board.vmm(np.full((2, 4), 0.1)).shape == (2, 4)
    assert board.apply_pulses("SET", 2.5, 3.0, 1e-4, mask=np.eye(4, dtype=bool)) == 4


def test_the_host_drives_a_1_0_board_in_plain_lines() -> None:
    firmware = _firmware(Board10)
    with Board(FirmwareTransport(firmware)) as board:
        assert not board.link.framed and board.describe()["protocol"] == "1.0"
        _drive(board)
    assert firmware.pulses_applied == 5


def test_the_host_drives_a_1_1_board_framed_and_survives_a_lost_reply_after_a_refusal() -> None:
    firmware = _firmware(Board11)
    with Board(FirmwareTransport(firmware)) as board:
        assert board.link.framed
        _drive(board)
        with pytest.raises(FirmwareError):  # refused by the board: a 1.1 board still counts its number
            board.query("PULS:SET 0,0,9,1.2,1e-6")
        firmware.faults = NextReplies(1)  # the next reply is lost: the host recovers with SYST:SEQ?
        board.set_pulse(2, 2, 2.5, 3.0, 1e-4)
        firmware.faults = None
        assert board.link.stats.retries == 1 and board.link.stats.applied_before_loss == 1
    assert firmware.pulses_applied == 6  # the lost reply's pulse ran once


def test_the_host_drives_a_1_2_board_in_float32_blocks_only() -> None:
    firmware = _firmware(Board12)
    transport = Headers(firmware)
    with Board(transport) as board:
        assert board.describe()["protocol"] == "1.2" and board.scales is None
        _drive(board)
        with pytest.raises(InvalidRequest, match=r"compact encodings were required.*protocol 1\.2"):
            Board(Headers(_firmware(Board12)), compact=True)
    assert firmware.pulses_applied == 5
    assert {"MAP?", "VMM?", "PULS:BATC"} <= transport.headers and not transport.headers & COMPACT


def test_the_host_drives_a_1_3_board_in_the_compact_forms() -> None:
    firmware = _firmware(Firmware)
    transport = Headers(firmware)
    with Board(transport) as board:
        assert board.describe()["protocol"] == "1.3" and board.scales is not None
        _drive(board)
    assert firmware.pulses_applied == 5
    assert transport.headers >= COMPACT and not transport.headers & {"MAP?", "VMM?", "PULS:BATC"}


def test_the_host_drives_a_1_3_board_and_survives_a_lost_reply_after_a_refusal() -> None:
    firmware = _firmware(Firmware)
    with Board(FirmwareTransport(firmware)) as board:
        assert board.describe()["protocol"] == "1.3"
        _drive(board)
        with pytest.raises(FirmwareError):  # refused: does not count, and the host does not count it either
            board.query("PULS:SET 0,0,9,1.2,1e-6")
        firmware.faults = NextReplies(1)
        board.set_pulse(2, 2, 2.5, 3.0, 1e-4)
        firmware.faults = None
        assert board.link.stats.applied_before_loss == 1
    assert firmware.pulses_applied == 6


class LoseNextWrite(FirmwareTransport):
    lose_next = False

    def write(self, data: bytes) -> None:
        if self.lose_next:
            self.lose_next = False
            return
        super().write(data)


def test_a_command_lost_on_the_way_after_a_refusal_is_sent_again_not_taken_for_a_restart() -> None:
    """A refused frame does not advance SYST:SEQ?, so the host must not count it as run either."""
    firmware = _firmware(Firmware)
    transport = LoseNextWrite(firmware)
    with Board(transport) as board:
        with pytest.raises(FirmwareError):
            board.query("PULS:SET 0,0,9,1.2,1e-6")
        transport.lose_next = True
        board.set_pulse(2, 2, 2.5, 3.0, 1e-4)  # not a BoardError "the board restarted"
        assert board.link.stats.retries == 1 and board.link.stats.applied_before_loss == 0
    assert firmware.pulses_applied == 1
