"""A Transport straight into a Firmware object in this process (no entry point, no socket): for tests
that serve a firmware they built themselves, such as a deliberately broken variant."""

from __future__ import annotations

from drivers.errors import LinkLost, LinkTimeout
from drivers.transports.base import Transport
from mock_hardware.firmware import Firmware


class FirmwareTransport(Transport):
    """Each write is fed to the firmware; the link is then quiet (the host waits for its reply)."""

    def __init__(self, firmware: Firmware, resource: str = "firmware://test") -> None:
        self.firmware = firmware
        self.resource = resource
        self.timeout = 1.0
        self._received = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        if self.closed:
            raise LinkLost(self.resource, "link is closed")
        self._received += self.firmware.feed(data) + self.firmware.link_quiet()

    def read_exact(self, count: int) -> bytes:
        if len(self._received) < count:
            raise LinkTimeout(self.resource, f"the board sent no more bytes while waiting for {count} bytes")
        data = bytes(self._received[:count])
        del self._received[:count]
        return data

    def read_line(self) -> bytes:
        end = self._received.find(b"\n")
        if end < 0:
            raise LinkTimeout(self.resource, "the board sent no more bytes while waiting for a line end")
        return self.read_exact(end + 1)

    def discard_input(self, quiet: float) -> int:
        dropped = len(self._received)
        self._received.clear()
        return dropped

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.firmware.disconnected()
