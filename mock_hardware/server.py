"""Serving the emulated board over a real TCP socket or a real pseudo-terminal.

One event loop, one client at a time: bytes in go to the firmware, its replies go out through a
non-blocking buffer, a command left incomplete for ``quiet_timeout`` is discarded with an error,
and the loop ends when stdin closes or the process is signalled.
"""

from __future__ import annotations

import errno
import os
import selectors
import signal
import socket
import sys
import time
import tty
from collections.abc import Callable
from types import FrameType

from mock_hardware.faults import FaultPlan
from mock_hardware.firmware import Firmware

QUIET_TIMEOUT = 1.0
POLL_INTERVAL = 0.1
READ_CHUNK = 1 << 16


class _Stop:
    """Set by signals or stdin's end."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True


class _Connection:
    """One open link: a fd to read from and write to, with its pending output."""

    def __init__(self, fd: int, close: Callable[[], None], commands_before: int) -> None:
        self.fd = fd
        self.close = close
        self.pending = bytearray()
        self.last_input = time.monotonic()
        self.commands_before = commands_before  # the firmware's count when this link opened


class EmulatorServer:
    def __init__(self, firmware: Firmware, watch_stdin: bool = True, quiet_timeout: float = QUIET_TIMEOUT) -> None:
        self.firmware = firmware
        self.watch_stdin = watch_stdin
        self.quiet_timeout = quiet_timeout
        self.stop = _Stop()
        self.selector = selectors.DefaultSelector()
        self.connection: _Connection | None = None
        self._listener: socket.socket | None = None
        self.faults = firmware.faults.plan if firmware.faults is not None else FaultPlan()
        self.refused = 0
        self.links_failed = 0

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
        self._open(_Connection(master, lambda: None, self.firmware.commands_served))
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
        client.setblocking(False)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._open(_Connection(client.fileno(), client.close, self.firmware.commands_served))
        # One client at a time: the next waits in the listen backlog until this one leaves.
        self.selector.unregister(listener)

    def _drop(self) -> None:
        connection = self.connection
        if connection is None:
            return
        self.selector.unregister(connection.fd)
        connection.close()
        self.connection = None
        self.firmware.disconnected()
        if self._listener is not None:
            self.selector.register(self._listener, selectors.EVENT_READ, "listen")

    def _loop(self, on_listen: Callable[[], None], ready: Callable[[], None]) -> None:
        previous = {sig: signal.signal(sig, self.stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        stdin_fd = sys.stdin.fileno() if self.watch_stdin else None
        if stdin_fd is not None:
            self.selector.register(stdin_fd, selectors.EVENT_READ, "stdin")
        try:
            ready()  # only now: a signal from here on stops the loop cleanly
            while not self.stop.requested:
                for key, events in self.selector.select(POLL_INTERVAL):
                    if key.data == "stdin":
                        if not os.read(stdin_fd or 0, 4096):
                            self.stop.requested = True
                    elif key.data == "listen":
                        on_listen()
                    elif key.data == "link" and self.connection is not None:
                        if events & selectors.EVENT_READ:
                            self._receive(self.connection)
                        if self.connection is not None and events & selectors.EVENT_WRITE:
                            self._send(self.connection)
                self._check_quiet()
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
        replies = self.firmware.feed(data)
        if self._link_fails_now(connection):
            return
        self._queue(connection, replies)

    def _link_fails_now(self, connection: _Connection) -> bool:
        """An injected fault: the link goes down mid-session, losing the replies in flight."""
        served = self.firmware.commands_served - connection.commands_before
        if not self.faults.close_after or served < self.faults.close_after:
            return False
        if self.faults.close_times and self.links_failed >= self.faults.close_times:
            return False
        self.links_failed += 1
        if self._listener is not None:
            self._drop()
        else:  # a serial port stays open: a glitch loses what was in flight and the board idles
            connection.pending.clear()
            connection.commands_before = self.firmware.commands_served
            self.firmware.glitched()
        return True

    def _queue(self, connection: _Connection, reply: bytes) -> None:
        if not reply:
            return
        if self.firmware.faults is not None and (pause := self.firmware.faults.delay()):
            time.sleep(pause)  # an injected fault: a reply late past the host's timeout
        connection.pending += reply
        self._send(connection)

    def _send(self, connection: _Connection) -> None:
        piece = connection.pending[: self.faults.chunk_size] if self.faults.chunk_size else connection.pending
        try:
            written = os.write(connection.fd, piece)
        except BlockingIOError:
            written = 0
        except OSError:
            self._drop()
            return
        del connection.pending[:written]
        wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if connection.pending else 0)
        self.selector.modify(connection.fd, wanted, "link")

    def _check_quiet(self) -> None:
        connection = self.connection
        if connection is None or not self.firmware.parser.has_partial:
            return
        if time.monotonic() - connection.last_input > self.quiet_timeout:
            self._queue(connection, self.firmware.link_quiet())
