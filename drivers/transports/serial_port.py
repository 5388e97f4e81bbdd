"""A serial board through pyserial directly: bulk reads in large chunks, not byte by byte."""

from __future__ import annotations

import os
import time
from urllib.parse import parse_qs, urlsplit

import serial

from drivers.errors import LinkError, LinkLost, LinkTimeout
from drivers.transports.base import Transport

DEFAULT_BAUD_RATE = 115200
VISA_DEFAULT_BAUD_RATE = 9600  # what VISA opens an ASRL resource at unless told otherwise


def parse_serial_url(resource: str) -> tuple[str, int]:
    """``serial:///dev/ttyUSB0?baudrate=921600`` -> (``/dev/ttyUSB0``, 921600)."""
    parts = urlsplit(resource)
    port = (parts.netloc + parts.path) if parts.netloc else parts.path
    if not port:
        raise ValueError(f"{resource!r} names no serial port; expected serial:///dev/ttyUSB0?baudrate=115200")
    query = parse_qs(parts.query)
    unknown = set(query) - {"baudrate"}
    if unknown:
        raise ValueError(f"{resource!r}: unknown option(s) {', '.join(sorted(unknown))}; known: baudrate")
    try:
        baud_rate = int(query.get("baudrate", [str(DEFAULT_BAUD_RATE)])[0])
    except ValueError:
        raise ValueError(f"{resource!r}: baudrate must be a whole number") from None
    return port, baud_rate


def asrl_port(device: str) -> str:
    """The serial port an ``ASRL<device>::INSTR`` resource names, as pyvisa-py names it (``ASRL3``: COM3 on
    Windows; ``ASRL/dev/ttyUSB0``: that device)."""
    return f"COM{device}" if device.isdigit() and os.name == "nt" else device


def url_baud_rate(resource: str) -> int | None:
    """The baud rate a ``serial://`` resource states (``None``: it states none)."""
    if not resource.startswith("serial://"):
        return None
    stated = parse_qs(urlsplit(resource).query).get("baudrate")
    return parse_serial_url(resource)[1] if stated else None


class SerialTransport(Transport):
    """A serial port through pyserial: ``serial://PORT?baudrate=N``, or (``port`` given) an ``ASRL``
    resource, which keeps its VISA name while reading in bulk rather than byte by byte."""

    def __init__(self, resource: str, timeout: float, port: str | None = None, baud_rate: int | None = None) -> None:
        self.resource = resource
        if port is None:
            port, baud_rate = parse_serial_url(resource)
        elif baud_rate is None:
            baud_rate = VISA_DEFAULT_BAUD_RATE
        try:
            self._port = serial.Serial(port, baudrate=baud_rate, timeout=timeout, write_timeout=timeout)
        except (serial.SerialException, OSError) as exc:
            raise LinkError(resource, f"cannot open serial port {port}: {exc}") from exc
        self._timeout = timeout
        self._buffer = bytearray()

    @property
    def timeout(self) -> float:
        return self._timeout

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        self._timeout = seconds
        self._port.timeout = seconds
        self._port.write_timeout = seconds

    def write(self, data: bytes) -> None:
        try:
            self._port.write(data)
        except serial.SerialTimeoutException as exc:
            raise LinkTimeout(self.resource, f"write of {len(data)} bytes timed out") from exc
        except (serial.SerialException, OSError) as exc:
            raise LinkLost(self.resource, f"write failed: {exc}") from exc

    def _fill(self, waiting_for: str) -> None:
        """Read whatever has arrived (at least one byte) into the buffer, in one call."""
        try:
            chunk = self._port.read(max(1, self._port.in_waiting))
        except (serial.SerialException, OSError) as exc:
            raise LinkLost(self.resource, f"read failed: {exc}") from exc
        if not chunk:
            raise LinkTimeout(self.resource, f"timed out after {self._timeout:g} s waiting for {waiting_for}")
        self._buffer += chunk

    def read_exact(self, count: int) -> bytes:
        # Each read waits at most `timeout` for progress, so a long block keeps going as long
        # as bytes keep arriving.
        while len(self._buffer) < count:
            self._fill(f"{count - len(self._buffer)} of {count} bytes")
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    def read_line(self) -> bytes:
        # pyserial's read_until reads byte by byte; buffering what has arrived is several times faster.
        while (end := self._buffer.find(b"\n")) < 0:
            self._fill("a line end")
        return self.read_exact(end + 1)

    def discard_input(self, quiet: float) -> int:
        dropped = len(self._buffer)
        self._buffer.clear()
        while True:
            time.sleep(quiet)
            waiting = self._port.in_waiting
            if not waiting:
                return dropped
            dropped += len(self._port.read(waiting))

    def close(self) -> None:
        self._port.close()
