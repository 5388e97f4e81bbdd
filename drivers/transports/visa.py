"""A board through pyvisa: LAN sockets (``TCPIP::...::SOCKET``) and serial (``ASRL...::INSTR``).

The pyvisa-py backend (``@py``) is the default so no vendor VISA is needed; a lab with NI-VISA
passes ``visa_backend="@ivi"``.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any

import pyvisa
from pyvisa import constants

from drivers.errors import LinkError, LinkLost, LinkTimeout
from drivers.transports.base import Transport


def _socket_of(inst: Any) -> socket.socket | None:
    """The socket under a pyvisa-py LAN session, when it exposes one."""
    try:
        session = inst.visalib.sessions[inst.session]
        sock = getattr(session, "interface", None)
    except (AttributeError, KeyError, TypeError):
        return None
    return sock if isinstance(sock, socket.socket) else None


def open_failure(exc: BaseException, backend: str) -> str:
    """Why pyvisa could not open a resource, in the user's terms rather than the library's."""
    seen: BaseException | None = exc
    while seen is not None:  # the cause may be wrapped by pyvisa
        if isinstance(seen, ConnectionRefusedError) or getattr(seen, "errno", None) == errno.ECONNREFUSED:
            return "connection refused (is the board on, and serving on that port?)"
        if isinstance(seen, socket.gaierror):
            return f"no such host ({seen.strerror or seen})"
        if isinstance(seen, TimeoutError | socket.timeout):
            return "no answer from the host (timed out connecting)"
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"pyvisa ({backend}) refused it: {text}"


def _connect_error(sock: socket.socket) -> str:
    """A pending connect's failure on a socket pyvisa-py opened (empty when connected or connecting)."""
    try:
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    except OSError:
        return ""
    if code == errno.ECONNREFUSED:
        return "connection refused (is the board on, and serving on that port?)"
    return os.strerror(code) if code else ""


class VisaTransport(Transport):
    def __init__(self, resource: str, timeout: float, backend: str = "@py", baud_rate: int | None = None) -> None:
        self.resource = resource
        try:
            self._manager = pyvisa.ResourceManager(backend)
            inst: Any = self._manager.open_resource(
                resource, read_termination="\n", write_termination="", timeout=int(timeout * 1000)
            )
            if baud_rate is not None and resource.upper().startswith("ASRL"):
                inst.baud_rate = baud_rate
            self._socket = _socket_of(inst) if resource.upper().endswith("::SOCKET") else None
            if self._socket is not None:
                # Each command waits for its reply, so Nagle's algorithm would hold the tail of every
                # multi-packet block back until the board's delayed ACK (about 40 ms a command).
                # pyvisa-py does not accept VI_ATTR_TCPIP_NODELAY for SOCKET resources.
                self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._inst = inst
        except Exception as exc:  # pyvisa-py raises bare Exception for some bad addresses
            raise LinkError(resource, f"cannot open: {open_failure(exc, backend)}") from exc
        self._timeout = timeout
        if self._socket is not None:
            refused = _connect_error(self._socket)
            if refused:  # pyvisa-py connects without waiting; say so now, not as a broken pipe later
                self.close()
                raise LinkError(resource, f"cannot open: {refused}")

    @property
    def timeout(self) -> float:
        return self._timeout

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        self._timeout = seconds
        self._inst.timeout = int(seconds * 1000)

    def _failure(self, exc: Exception, what: str) -> LinkError:
        if isinstance(exc, pyvisa.VisaIOError) and exc.error_code == constants.StatusCode.error_timeout:
            if self._peer_closed():  # pyvisa-py waits out the timeout on a socket the board closed
                return LinkLost(self.resource, f"the board closed the connection while {what}")
            return LinkTimeout(self.resource, f"timed out after {self._timeout:g} s {what}")
        return LinkLost(self.resource, f"{what} failed: {exc}")

    def _peer_closed(self) -> bool:
        if self._socket is None:
            return False
        try:
            return self._socket.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def write(self, data: bytes) -> None:
        try:
            self._inst.write_raw(data)
        except (pyvisa.Error, OSError) as exc:
            raise self._failure(exc, f"writing {len(data)} bytes") from exc

    def read_exact(self, count: int) -> bytes:
        # Binary payloads contain 0x0A bytes; with the termination character enabled pyvisa-py
        # would end a low-level read at each of them (hundreds of reads per map), so switch it
        # off for exact-count reads.
        self._inst.set_visa_attribute(constants.ResourceAttribute.termchar_enabled, False)
        try:
            data: bytes = self._inst.read_bytes(count, break_on_termchar=False)
        except (pyvisa.Error, OSError) as exc:
            raise self._failure(exc, f"waiting for {count} bytes") from exc
        finally:
            self._inst.set_visa_attribute(constants.ResourceAttribute.termchar_enabled, True)
        return data

    def read_line(self) -> bytes:
        try:
            data: bytes = self._inst.read_raw()
        except (pyvisa.Error, OSError) as exc:
            raise self._failure(exc, "waiting for a line end") from exc
        return data

    def discard_input(self, quiet: float) -> int:
        saved = self._timeout
        self.timeout = quiet
        dropped = 0
        try:
            while True:
                dropped += len(self._inst.read_raw())
        except (pyvisa.Error, OSError):
            return dropped
        finally:
            self.timeout = saved

    def close(self) -> None:
        # pyvisa hands every caller in a process the same ResourceManager per backend: closing it
        # would close every other board's session too, so it is closed only with its last resource.
        try:
            self._inst.close()
        finally:
            if not self._manager.list_opened_resources():
                self._manager.close()
