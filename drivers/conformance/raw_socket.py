"""A plain TCP socket as a Transport, for the kit's second connections to a LAN board.

(Not through pyvisa: a pyvisa-py resource manager is shared by the process, and closing a second
VISA session's manager would close the kit's first session with it.)
"""

from __future__ import annotations

import socket
import time

from drivers.errors import LinkLost, LinkTimeout
from drivers.transports.base import Transport


def tcp_address(resource: str) -> tuple[str, int]:
    """``TCPIP::HOST::PORT::SOCKET`` -> (HOST, PORT)."""
    parts = resource.split("::")
    if len(parts) != 4 or parts[0].upper() != "TCPIP" or parts[3].upper() != "SOCKET":
        raise ValueError(f"{resource!r} is not TCPIP::HOST::PORT::SOCKET")
    return parts[1], int(parts[2])


class SocketTransport(Transport):
    def __init__(self, resource: str, timeout: float) -> None:
        self.resource = resource
        self.timeout = timeout
        try:
            self._sock = socket.create_connection(tcp_address(resource), timeout=timeout)
        except OSError as exc:
            raise LinkLost(resource, f"cannot connect: {exc}") from exc
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = bytearray()

    def write(self, data: bytes) -> None:
        try:
            self._sock.settimeout(self.timeout)
            self._sock.sendall(data)
        except OSError as exc:
            raise LinkLost(self.resource, f"write failed: {exc}") from exc

    def _fill(self, what: str) -> None:
        self._sock.settimeout(self.timeout)
        try:
            chunk = self._sock.recv(1 << 20)
        except TimeoutError as exc:
            raise LinkTimeout(self.resource, f"timed out after {self.timeout:g} s waiting for {what}") from exc
        except OSError as exc:
            raise LinkLost(self.resource, f"read failed: {exc}") from exc
        if not chunk:
            raise LinkLost(self.resource, f"the board closed the connection while waiting for {what}")
        self._buffer += chunk

    def read_exact(self, count: int) -> bytes:
        while len(self._buffer) < count:
            self._fill(f"{count} bytes")
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    def read_line(self) -> bytes:
        while (end := self._buffer.find(b"\n")) < 0:
            self._fill("a line end")
        return self.read_exact(end + 1)

    def discard_input(self, quiet: float) -> int:
        dropped = len(self._buffer)
        self._buffer.clear()
        self._sock.settimeout(quiet)
        started = time.monotonic()
        try:
            while time.monotonic() - started < 60:
                chunk = self._sock.recv(1 << 20)
                if not chunk:
                    break
                dropped += len(chunk)
        except (TimeoutError, OSError):
            pass
        return dropped

    def close(self) -> None:
        self._sock.close()
