"""Regressions of issue 10 at the link: one client at a time and never left hanging, a client that stops
reading costs bounded memory and is released, ``serve </dev/null`` serves."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from mock_hardware import server as server_module
from mock_hardware.emulator import build_firmware
from mock_hardware.server import EmulatorServer
from tests.conftest import READY_TIMEOUT, REPO_ROOT, _read_ready_line
from tests.emulator_thread import serving_in_thread

MAP = b"MAP? 0,0,128,64,0.2,COND\n"  # a 32 KiB reply
MAP_REPLY = len(b"#532768") + 32768 + 1


@contextmanager
def serving(**options: float) -> Iterator[tuple[EmulatorServer, tuple[str, int]]]:
    """An emulator server on a loopback port, in a thread of this process (to look inside it)."""
    with serving_in_thread(build_firmware("ideal", 0, {"rows": "128", "cols": "64"}), **options) as (server, where):
        _, host, port, _ = where.split("::")
        yield server, (host, int(port))


def ask(sock: socket.socket, line: bytes) -> bytes:
    sock.sendall(line)
    return sock.makefile("rb").readline()


def test_a_client_that_stops_reading_costs_bounded_memory_and_gets_every_reply_when_it_reads() -> None:
    """Regression: +29 MB of reply backlog after 300 unread maps."""
    with serving() as (server, address), socket.create_connection(address, timeout=10) as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        client.sendall(MAP * 300)
        time.sleep(1.5)  # the server runs what it can and stops
        assert server.largest_backlog <= server_module.BACKLOG_LIMIT + MAP_REPLY
        assert server.connection is not None and server.connection.items  # commands wait, unread
        received = 0
        while received < 300 * MAP_REPLY:
            chunk = client.recv(1 << 20)
            assert chunk, "the server closed the link"
            received += len(chunk)
        assert received == 300 * MAP_REPLY  # flow control, not loss
        assert server.largest_backlog <= server_module.BACKLOG_LIMIT + MAP_REPLY


def test_a_stalled_client_is_released_and_the_next_served() -> None:
    """Regression: a client that stopped reading held the board forever."""
    with serving(stall_timeout=0.5) as (server, address):
        stalled = socket.create_connection(address, timeout=10)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        stalled.sendall(MAP * 1000)  # more than the kernel buffers hold
        deadline = time.monotonic() + 10
        while not server.released and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.released == 1
        with socket.create_connection(address, timeout=10) as next_client:
            assert ask(next_client, b"*OPC?\n") == b"1\n"
        stalled.close()


def test_a_silent_client_is_taken_over_and_a_busy_one_is_not() -> None:
    """A host whose old connection went half-open can reconnect; a working client keeps the board."""
    with serving(takeover_silence=1.0) as (server, address):
        first = socket.create_connection(address, timeout=10)
        assert ask(first, b"DAC:VOLT ROW,1,0.3\n") == b"OK\n"
        with socket.create_connection(address, timeout=10) as second:  # the first has just spoken: busy
            assert second.makefile("rb").readline().startswith(b'ERR -221,"busy')
        time.sleep(1.6)
        with socket.create_connection(address, timeout=10) as third:
            assert ask(third, b"DAC:VOLT? ROW,1\n") == b"0.0\n"  # served, and the board idled at the takeover
        assert first.recv(100) == b""  # the silent one was closed
        assert server.busy_refusals == 1
        first.close()


def test_serve_with_stdin_from_dev_null_prints_ready_and_serves(killable: list[subprocess.Popen[bytes]]) -> None:
    """Regression: ``serve </dev/null`` died with PermissionError from watching stdin, printing no READY."""
    process = subprocess.Popen(
        [sys.executable, "-m", "mock_hardware", "serve", "--tcp", "127.0.0.1:0", "--seed", "1"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO_ROOT,
    )  # fmt: skip
    killable.append(process)
    line = _read_ready_line(process, READY_TIMEOUT)
    assert line.startswith(b"READY TCPIP::"), (line, process.stderr.read() if process.poll() is not None else b"")
    _, host, port, _ = line.decode().strip().split(" ", 1)[1].split("::")
    with socket.create_connection((host, int(port)), timeout=10) as client:
        assert ask(client, b"*IDN?\n").startswith(b"MEMHIL,")
    process.terminate()
    assert process.wait(10) == 0
