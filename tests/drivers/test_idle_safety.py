"""The board is left idle (all lines 0 V, gates off, muxes open) however a session ends.

Every check looks at what the board saw: the commands its firmware received and its state at the
moment the link closed. The emulator also idles when a TCP client disconnects, so tests that must
prove the *driver* idled the board either watch the firmware before the link closes or use a link
that does not idle on disconnect (a pty, or a plain TCP server in this file).
"""

from __future__ import annotations

import selectors
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest

from drivers import Board, FirmwareError, codec, open_board
from drivers.resources import open_transport
from drivers.transports.base import PassThrough, Transport
from mock_hardware.emulator import build_firmware
from mock_hardware.firmware import Firmware
from tests.conftest import REPO_ROOT, EmulatorFactory
from tests.drivers.fake_transport import ScriptedTransport, handshake

SMALL_EMULATOR = "emulator://?preset=ideal&seed=1&rows=8&cols=4"


@dataclass(frozen=True)
class LineState:
    """What a board's lines are doing."""

    dac_levels: dict[str, tuple[float, ...]]
    rows_selected: tuple[int, ...]
    cols_selected: tuple[int, ...]

    @classmethod
    def of(cls, firmware: Firmware) -> LineState:
        return cls(
            {line: tuple(float(v) for v in levels) for line, levels in firmware.dac.items()},
            tuple(int(i) for i in np.flatnonzero(firmware.row_selected)),
            tuple(int(i) for i in np.flatnonzero(firmware.col_selected)),
        )

    @property
    def idle(self) -> bool:
        energized = any(any(levels) for levels in self.dac_levels.values())
        return not energized and not self.rows_selected and not self.cols_selected


def firmware_behind(transport: Transport) -> Firmware:
    """The emulator firmware at the far end of an in-process transport (its endpoint object)."""
    firmware: Firmware = transport._endpoint.firmware  # type: ignore[attr-defined]
    return firmware


class WatchedLink(PassThrough):
    """A real in-process link that records the commands sent and the firmware's state when it closes.

    The state is taken *before* the endpoint closes, because the endpoint idles the firmware on
    disconnect: what counts here is whether the driver idled it first.
    """

    def __init__(self, resource: str = SMALL_EMULATOR) -> None:
        super().__init__(open_transport(resource))
        self.firmware = firmware_behind(self.inner)
        self.commands: list[bytes] = []
        self.state_at_close: LineState | None = None

    def write(self, data: bytes) -> None:
        self.commands.append(codec.unframe(data))
        self.inner.write(data)

    def close(self) -> None:
        if self.state_at_close is None:
            self.state_at_close = LineState.of(self.firmware)
        self.inner.close()


CLOSING = [b"*RST\n", b"SYST:FRAM OFF\n"]  # what a framed board's close sends: idle, then plain lines again


def energize(board: Board) -> None:
    """Drive a row, its gate and a column, and close their muxes, as a debugging session would."""
    board.set_dac("ROW", 0, 0.2)
    board.set_dac("GATE", 0, 5.0)
    board.set_dac("COL", 1, 0.1)
    board.select_row(0)
    board.select_column(1)


def test_energize_really_drives_the_lines() -> None:
    """The precondition of every test below: without idling, the lines would stay driven."""
    link = WatchedLink()
    board = Board(link)
    energize(board)
    state = LineState.of(link.firmware)
    assert not state.idle
    assert state.rows_selected == (0,) and state.cols_selected == (1,)
    assert state.dac_levels["GATE"][0] == pytest.approx(5.0, abs=1e-3)
    board.close()


def test_close_idles_the_board() -> None:
    link = WatchedLink()
    board = Board(link)
    energize(board)
    board.close()
    assert link.commands[-2:] == CLOSING
    assert link.state_at_close is not None and link.state_at_close.idle


def test_close_twice_idles_once() -> None:
    link = WatchedLink()
    board = Board(link)
    board.close()
    board.close()
    assert link.commands.count(b"*RST\n") == 1


@pytest.mark.parametrize("interruption", [RuntimeError, KeyboardInterrupt, SystemExit], ids=lambda e: e.__name__)
def test_leaving_with_by_an_exception_idles_the_board(interruption: type[BaseException]) -> None:
    link = WatchedLink()
    with pytest.raises(interruption), Board(link) as board:
        energize(board)
        raise interruption()
    assert board.closed
    assert link.commands[-2:] == CLOSING
    assert link.state_at_close is not None and link.state_at_close.idle


def test_a_refused_command_inside_with_idles_the_board() -> None:
    link = WatchedLink()
    with pytest.raises(FirmwareError, match="undefined header"), Board(link) as board:
        energize(board)
        board.query("BOGUS:CMD 1")
    assert link.commands[-2:] == CLOSING
    assert link.state_at_close is not None and link.state_at_close.idle


# ----------------------------------------------------------------------------- Ctrl-C mid-exchange


def interrupted_board() -> tuple[Board, ScriptedTransport]:
    """A board whose read of a reply was interrupted: the reply is still in flight."""
    transport = ScriptedTransport(handshake())
    board = Board(transport, framing=False)
    transport.expect(b"READ? 0,0,0.25\n", b"0.000111\n")
    transport.interrupt_next_read = True
    with pytest.raises(KeyboardInterrupt):
        board.read_cell(0, 0, 0.25)
    assert transport.inbox == b"0.000111\n"  # the stale reply waits on the link
    return board, transport


def test_ctrl_c_between_write_and_read_still_idles_on_close() -> None:
    board, transport = interrupted_board()
    transport.expect(b"*RST\n", b"OK\n")
    board.close()
    assert transport.written[-1] == b"*RST\n"
    assert transport.discarded == len(b"0.000111\n")
    assert not transport.inbox  # the *RST's own OK was read, not the stale value
    assert transport.closed


def test_ctrl_c_inside_with_between_write_and_read_idles() -> None:
    transport = ScriptedTransport([*handshake(), (b"MAP? 0,0,4,3,0.25,COND\n", b"#10\n")])
    with pytest.raises(KeyboardInterrupt), Board(transport, framing=False) as board:
        transport.interrupt_next_read = True
        transport.script.append((b"*RST\n", b"OK\n"))
        board.read_map(0.25)
    assert transport.written[-1] == b"*RST\n"
    assert transport.discarded == len(b"#10\n")
    assert not transport.script


def test_ctrl_c_between_write_and_read_leaves_the_next_exchange_in_step() -> None:
    board, transport = interrupted_board()
    transport.expect(b"READ? 1,1,0.25\n", b"0.000222\n")
    assert board.read_cell(1, 1, 0.25) == 0.000222


# ----------------------------------------------------------------------------- interpreter exit

EXIT_WITHOUT_CLOSE = textwrap.dedent(
    """
    import sys
    import drivers

    board = drivers.open_board(sys.argv[1], timeout=5)
    board.set_dac("ROW", 0, 0.2)
    board.set_dac("GATE", 0, 5.0)
    board.set_dac("COL", 1, 0.1)
    board.select_row(0)
    board.select_column(1)
    print("energized", flush=True)
    # the script ends without closing the board
    """
)


def run_script(source: str, *argv: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-c", source, *argv], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "energized" in result.stdout, result.stderr
    return result


def test_interpreter_exit_idles_an_in_process_board() -> None:
    """The firmware's received commands and its state just before the link closed, as printed at exit."""
    watch = textwrap.dedent(
        """
        import atexit, sys
        import numpy as np

        seen = []

        def report():  # registered before drivers is imported, so it runs after the drivers' exit hook
            print("LAST", *(command for command, _ in seen[-2:]))
            print("IDLE", seen[-1][1])

        atexit.register(report)
        import drivers.resources
        real_open_transport = drivers.resources.open_transport

        def watched_open_transport(*args, **kwargs):
            transport = real_open_transport(*args, **kwargs)
            firmware = transport._endpoint.firmware
            feed = firmware.feed

            def watched_feed(data):
                reply = feed(data)
                idle = not (any(v.any() for v in firmware.dac.values()) or firmware.row_selected.any()
                            or firmware.col_selected.any())
                seen.append((data.decode().strip().splitlines()[-1], idle))  # the command, not its frame
                return reply

            firmware.feed = watched_feed
            return transport

        drivers.resources.open_transport = watched_open_transport
        """
    )
    result = run_script(watch + EXIT_WITHOUT_CLOSE, SMALL_EMULATOR)
    assert "LAST *RST SYST:FRAM OFF" in result.stdout, result.stdout + result.stderr
    assert "IDLE True" in result.stdout
    assert "could not idle" not in result.stderr


def dac_and_mux_state(resource: str) -> tuple[float, float, float, str]:
    """Row 0, gate 0 and column 1 DAC levels, and what sampling column 1 says about its mux."""
    with open_board(resource, timeout=5) as board:
        levels = board.dac_voltage("ROW", 0), board.dac_voltage("GATE", 0), board.dac_voltage("COL", 1)
        try:
            board.sample_adc(1, 1e3)
            column_mux = "closed"
        except FirmwareError as refused:
            column_mux = "open" if refused.code == -221 else f"error {refused.code}"
    return (*levels, column_mux)


def test_interpreter_exit_idles_a_serial_board(emulator_process: EmulatorFactory) -> None:
    """A pty does not tell the emulator that the client left, so only the driver's *RST can idle it."""
    emulator = emulator_process("pty", seed=1, preset="ideal")
    run_script(EXIT_WITHOUT_CLOSE, emulator.serial_resource)
    assert dac_and_mux_state(emulator.serial_resource) == (0.0, 0.0, 0.0, "open")


def test_interpreter_exit_idles_a_serial_board_through_pyvisa(emulator_process: EmulatorFactory) -> None:
    """pyvisa closes its sessions at exit too: the board must be idled before that."""
    emulator = emulator_process("pty", seed=1, preset="ideal")
    result = run_script(EXIT_WITHOUT_CLOSE, emulator.resource)
    assert dac_and_mux_state(emulator.serial_resource) == (0.0, 0.0, 0.0, "open")
    assert "could not idle" not in result.stderr


@dataclass
class FirmwareOverTcp:
    """A bare TCP server that hands bytes to an emulator firmware and, unlike the emulator's own
    server, does nothing when the client disconnects: whatever state the client left stays."""

    firmware: Firmware
    listener: socket.socket = field(default_factory=lambda: socket.create_server(("127.0.0.1", 0)))
    received: bytearray = field(default_factory=bytearray)

    def __post_init__(self) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def resource(self) -> str:
        return f"TCPIP::127.0.0.1::{self.listener.getsockname()[1]}::SOCKET"

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.listener, selectors.EVENT_READ)
            while not self.stop.is_set():
                for key, _ in selector.select(0.05):
                    if key.fileobj is self.listener:
                        client, _ = self.listener.accept()
                        selector.register(client, selectors.EVENT_READ)
                        continue
                    client = key.fileobj
                    assert isinstance(client, socket.socket)
                    data = client.recv(65536)
                    if not data:
                        selector.unregister(client)
                        client.close()
                        continue
                    self.received += data
                    client.sendall(self.firmware.feed(data))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.listener.close()


@pytest.fixture
def firmware_over_tcp() -> Iterator[FirmwareOverTcp]:
    server = FirmwareOverTcp(build_firmware("ideal", 1, {"rows": "8", "cols": "4"}))
    yield server
    server.close()


def test_interpreter_exit_idles_a_lan_board(firmware_over_tcp: FirmwareOverTcp) -> None:
    """pyvisa closes its sessions at exit too: the board must be idled before that."""
    result = run_script(EXIT_WITHOUT_CLOSE, firmware_over_tcp.resource)
    assert LineState.of(firmware_over_tcp.firmware).idle
    lines = bytes(firmware_over_tcp.received).splitlines()  # ..., frame header, *RST, frame header, SYST:FRAM OFF
    assert lines[-3] == b"*RST" and lines[-1] == b"SYST:FRAM OFF"
    assert "could not idle" not in result.stderr


def test_a_closed_lan_board_is_idled_by_the_driver(firmware_over_tcp: FirmwareOverTcp) -> None:
    """The same link as above, closed explicitly: the *RST reaches the board over pyvisa."""
    with open_board(firmware_over_tcp.resource, timeout=5) as board:
        energize(board)
        assert not LineState.of(firmware_over_tcp.firmware).idle
    lines = bytes(firmware_over_tcp.received).splitlines()  # ..., frame header, *RST, frame header, SYST:FRAM OFF
    assert lines[-3] == b"*RST" and lines[-1] == b"SYST:FRAM OFF"
    assert LineState.of(firmware_over_tcp.firmware).idle
