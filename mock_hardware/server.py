"""Serving the emulated board over a real TCP socket or a real pseudo-terminal.

One event loop, one client at a time (docs/wire-protocol.md, "Concurrent clients"): a second
client is sent a busy line and closed at once, unless the first has been silent long enough to be
taken over. Commands are run one at a time and their replies go out through a non-blocking
buffer; while that buffer holds more than ``BACKLOG_LIMIT`` nothing more is read or run, and a
client that takes no reply for ``stall_timeout`` is released. A command left incomplete for
``quiet_timeout`` is discarded with an error. The loop ends when stdin closes (if stdin is a pipe
or terminal) or the process is signalled. Given a ``rate`` (bytes per second, see
:mod:`mock_hardware.pacing`), bytes cross the link no faster than that, each way, as on a UART.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import signal
import socket
import sys
import threading
import time
import tty
from collections import deque
from collections.abc import Callable
from types import FrameType

from drivers import codec
from drivers.codec import Command, ErrorCode, Framed, ParseError
from mock_hardware.faults import FaultPlan
from mock_hardware.firmware import Firmware
from mock_hardware.pacing import Pacer

QUIET_TIMEOUT = 1.0
POLL_INTERVAL = 0.1
READ_CHUNK = 1 << 16
BACKLOG_LIMIT = 1 << 20  # bytes of unsent replies beyond which no further command is read or run
STALL_TIMEOUT = 10.0  # s without any reply byte taken while replies wait: the client is released
TAKEOVER_SILENCE = 5.0  # s a client must have been silent (nothing in or out) for a new one to take over
BUSY_LINE = codec.encode_error(
    ErrorCode.SETTINGS_CONFLICT, "busy: another client is using this board; one client at a time"
)


class _Stop:
    """Set by signals or stdin's end."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True


class _Connection:
    """One open link: a fd to read from and write to, the commands parsed but not yet run, and the
    replies not yet sent."""

    def __init__(
        self, fd: int, close: Callable[[], None], commands_before: int, sock: socket.socket | None = None,
        rate: float | None = None,
    ) -> None:  # fmt: skip
        self.fd = fd
        self.close = close
        self.sock = sock
        self.items: deque[Command | ParseError | Framed] = deque()
        self.pending = bytearray()
        self.inbound = bytearray()  # bytes received that a paced link has not yet carried to the board
        self.pace_in = Pacer(rate) if rate else None
        self.pace_out = Pacer(rate) if rate else None
        self.last_input = time.monotonic()
        self.last_progress = time.monotonic()  # when replies last left (or began to wait)
        self.commands_before = commands_before  # the firmware's count when this link opened

    @property
    def idle_since(self) -> float:
        """Seconds the link has been silent both ways, 0 while anything waits."""
        if self.items or self.pending or self.inbound:
            return 0.0
        return time.monotonic() - max(self.last_input, self.last_progress)


def _peer_closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


class EmulatorServer:
    def __init__(
        self, firmware: Firmware, watch_stdin: bool = True, quiet_timeout: float = QUIET_TIMEOUT,
        stall_timeout: float = STALL_TIMEOUT, takeover_silence: float = TAKEOVER_SILENCE,
        rate: float | None = None,
    ) -> None:  # fmt: skip
        self.firmware = firmware
        self.rate = rate
        """bytes per second each way (``None``: as fast as the OS moves them)"""
        self.watch_stdin = watch_stdin
        self.quiet_timeout = quiet_timeout
        self.stall_timeout = stall_timeout
        self.takeover_silence = takeover_silence
        self.stop = _Stop()
        self.selector = selectors.DefaultSelector()
        self.connection: _Connection | None = None
        self._listener: socket.socket | None = None
        self.faults = firmware.faults.plan if firmware.faults is not None else FaultPlan()
        self.refused = 0
        self.links_failed = 0
        self.busy_refusals = 0  # second clients sent the busy line
        self.released = 0  # clients released for not reading their replies
        self.largest_backlog = 0  # bytes: the most replies ever waiting unsent

    # ------------------------------------------------------------------ transports

    def serve_tcp(self, host: str, port: int, announce: Callable[[str], None]) -> None:
        """Listen on ``host:port`` (port 0: any free port) and serve clients one at a time."""
        listener = socket.create_server((host, port), reuse_port=False)
        listener.setblocking(False)
        bound_host, bound_port = listener.getsockname()[:2]
        self._listener = listener
        self.selector.register(listener, selectors.EVENT_READ, "listen")
        try:
            self._loop(
                on_listen=lambda: self._accept(listener),
                ready=lambda: announce(f"TCPIP::{bound_host}::{bound_port}::SOCKET"),
            )
        finally:
            self._listener = None
            if listener.fileno() in self.selector.get_map():
                self.selector.unregister(listener)
            listener.close()

    def serve_pty(self, announce: Callable[[str], None]) -> None:
        """Open a pseudo-terminal and serve whoever opens its slave side."""
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        # Keeping the slave open ourselves means a client closing it does not error the master.
        self._open(_Connection(master, lambda: None, self.firmware.commands_served, rate=self.rate))
        try:
            self._loop(on_listen=lambda: None, ready=lambda: announce(f"ASRL{os.ttyname(slave)}::INSTR"))
        finally:
            os.close(master)
            os.close(slave)

    # ------------------------------------------------------------------ the loop

    def _open(self, connection: _Connection) -> None:
        self.connection = connection
        self.selector.register(connection.fd, selectors.EVENT_READ, "link")

    def _accept(self, listener: socket.socket) -> None:
        client, _ = listener.accept()
        if self.refused < self.faults.refuse_connections:  # an injected fault
            self.refused += 1
            client.close()
            return
        current = self.connection
        if current is not None and current.sock is not None and _peer_closed(current.sock):
            self._drop()  # it left; its end of file may wait behind this accept in the same poll
            current = None
        if current is not None:
            if current.idle_since < self.takeover_silence:
                # One client at a time, and a second one is told so at once rather than left waiting.
                self.busy_refusals += 1
                with contextlib.suppress(OSError):
                    client.setblocking(False)
                    client.send(BUSY_LINE)
                client.close()
                return
            self._drop()  # silent long enough: its host has most likely gone (a half-open connection)
        client.setblocking(False)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._open(_Connection(client.fileno(), client.close, self.firmware.commands_served, client, self.rate))

    def _drop(self) -> None:
        connection = self.connection
        if connection is None:
            return
        self.selector.unregister(connection.fd)
        connection.close()
        self.connection = None
        self.firmware.disconnected()

    def _watch_stdin(self) -> int | None:
        """stdin's fd when it can tell the loop to stop (a pipe or a terminal); ``None`` when it is
        ``/dev/null``, a file or closed (a script, nohup, a service): then only a signal stops it."""
        if not self.watch_stdin or sys.stdin is None:
            return None
        try:
            fd = sys.stdin.fileno()
            self.selector.register(fd, selectors.EVENT_READ, "stdin")
        except (OSError, ValueError):  # PermissionError: epoll cannot watch /dev/null or a regular file
            return None
        return fd

    def _loop(self, on_listen: Callable[[], None], ready: Callable[[], None]) -> None:
        in_main = threading.current_thread() is threading.main_thread()  # a test may serve from a thread
        previous = {sig: signal.signal(sig, self.stop) for sig in (signal.SIGTERM, signal.SIGINT)} if in_main else {}
        stdin_fd = self._watch_stdin()
        try:
            ready()  # only now: a signal from here on stops the loop cleanly
            while not self.stop.requested:
                for key, events in self.selector.select(self._poll_interval()):
                    if key.data == "stdin":
                        if not os.read(stdin_fd or 0, 4096):
                            self.stop.requested = True
                    elif key.data == "listen":
                        on_listen()
                    elif key.data == "link" and self.connection is not None:
                        connection = self.connection
                        if events & selectors.EVENT_READ:
                            self._receive(connection)
                        if self.connection is connection and events & selectors.EVENT_WRITE:
                            self._send(connection)
                            if self.connection is connection:
                                self._work(connection)
                self._pace()
                self._check_quiet()
                self._check_stalled()
        finally:
            if stdin_fd is not None:
                self.selector.unregister(stdin_fd)
            self._drop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _receive(self, connection: _Connection) -> None:
        try:
            data = os.read(connection.fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.ECONNRESET):
                data = b""
            else:
                raise
        if not data:
            self._drop()
            return
        connection.last_input = time.monotonic()
        if connection.pace_in is not None:
            connection.inbound += data
            self._carry_inbound(connection)
            return
        connection.items.extend(self.firmware.parser.feed(data))
        self._work(connection)

    def _carry_inbound(self, connection: _Connection) -> None:
        """Hand the board the received bytes a paced link would have carried by now."""
        assert connection.pace_in is not None
        count = connection.pace_in.allowed(len(connection.inbound))
        if not count:
            return
        data = bytes(connection.inbound[:count])
        del connection.inbound[:count]
        connection.last_input = time.monotonic()
        connection.items.extend(self.firmware.parser.feed(data))
        self._work(connection)

    def _pace(self) -> None:
        """On a paced link: carry what the link has carried since the last turn of the loop, both ways."""
        connection = self.connection
        if connection is None or connection.pace_in is None:
            return
        if connection.inbound:
            self._carry_inbound(connection)
        if self.connection is connection and connection.pending:
            self._send(connection)

    def _poll_interval(self) -> float:
        """How long the loop may sleep: shorter while a paced link has bytes on their way."""
        connection = self.connection
        if connection is None or connection.pace_in is None or connection.pace_out is None:
            return POLL_INTERVAL
        waits = [POLL_INTERVAL]
        if connection.inbound:
            waits.append(connection.pace_in.wait())
        if connection.pending:
            waits.append(connection.pace_out.wait())
        return min(waits)

    def _work(self, connection: _Connection) -> None:
        """Run the commands received, one at a time, while the replies waiting stay under the limit."""
        while connection.items and len(connection.pending) <= BACKLOG_LIMIT:
            reply = self.firmware.run(connection.items.popleft())
            if self._link_fails_now(connection):
                return
            self._queue(connection, reply)
            if self.connection is not connection:
                return
        self._interest(connection)

    def _interest(self, connection: _Connection) -> None:
        # Nothing more is read while commands wait to run: the client's own buffers fill and push back.
        reading = not connection.items and len(connection.pending) <= BACKLOG_LIMIT
        reading = reading and len(connection.inbound) <= BACKLOG_LIMIT
        # A paced link sends on the loop's clock (see _pace), not whenever the OS could take more.
        writing = bool(connection.pending) and connection.pace_out is None
        wanted = (selectors.EVENT_READ if reading else 0) | (selectors.EVENT_WRITE if writing else 0)
        self.selector.modify(connection.fd, wanted or selectors.EVENT_READ, "link")

    def _link_fails_now(self, connection: _Connection) -> bool:
        """An injected fault: the link goes down mid-session, losing the replies in flight."""
        served = self.firmware.commands_served - connection.commands_before
        if not self.faults.close_after or served < self.faults.close_after:
            return False
        if self.faults.close_times and self.links_failed >= self.faults.close_times:
            return False
        self.links_failed += 1
        self._lose_link(connection)
        return True

    def _lose_link(self, connection: _Connection) -> None:
        """The link goes down: a TCP client is dropped; a serial port stays open, and what was in
        flight is lost and the board idles (a glitch the board cannot tell from silence)."""
        if self._listener is not None:
            self._drop()
            return
        connection.pending.clear()
        connection.items.clear()
        connection.inbound.clear()
        connection.commands_before = self.firmware.commands_served
        self.firmware.glitched()
        self._interest(connection)

    def _queue(self, connection: _Connection, reply: bytes) -> None:
        if not reply:
            return
        if self.firmware.faults is not None and (pause := self.firmware.faults.delay()):
            time.sleep(pause)  # an injected fault: a reply late past the host's timeout
        if not connection.pending:
            connection.last_progress = time.monotonic()
        connection.pending += reply
        self.largest_backlog = max(self.largest_backlog, len(connection.pending))
        self._send(connection)

    def _send(self, connection: _Connection) -> None:
        piece = connection.pending[: self.faults.chunk_size] if self.faults.chunk_size else connection.pending
        allowed = len(piece)
        if connection.pace_out is not None:
            allowed = connection.pace_out.allowed(allowed)
            piece = piece[:allowed]
        try:
            written = os.write(connection.fd, piece) if piece else 0
        except BlockingIOError:
            written = 0
        except OSError:
            self._drop()
            return
        if connection.pace_out is not None and written < allowed:
            connection.pace_out.refund(allowed - written)
        if written:
            connection.last_progress = time.monotonic()
        del connection.pending[:written]
        self._interest(connection)

    def _check_quiet(self) -> None:
        connection = self.connection
        if connection is None or not self.firmware.parser.has_partial:
            return
        if connection.items or connection.inbound or len(connection.pending) > BACKLOG_LIMIT:
            connection.last_input = time.monotonic()  # the board is not reading: the silence is its own
            return
        if time.monotonic() - connection.last_input > self.quiet_timeout:
            self._queue(connection, self.firmware.link_quiet())

    def _check_stalled(self) -> None:
        """A client that takes none of its replies for ``stall_timeout`` is released (the board idles)."""
        connection = self.connection
        if connection is None or not connection.pending:
            return
        if time.monotonic() - connection.last_progress <= self.stall_timeout:
            return
        self.released += 1
        self._lose_link(connection)  # a pty has one client: what it does not read is dropped
