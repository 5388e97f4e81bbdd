"""A Transport straight into a Firmware object in this process (no entry point, no socket): for tests
that serve a firmware they built themselves, such as a deliberately broken variant. It is the
in-process transport with the emulator's endpoint around that firmware."""

from __future__ import annotations

from drivers.transports.inprocess import InProcessTransport
from mock_hardware.firmware import Firmware
from mock_hardware.inprocess import EmulatorEndpoint


class FirmwareTransport(InProcessTransport):
    """Each write is fed to the firmware; the link is then quiet (the host waits for its reply)."""

    def __init__(self, firmware: Firmware, resource: str = "firmware://test", timeout: float = 1.0) -> None:
        # Not InProcessTransport.__init__: that finds its endpoint by the resource's scheme.
        self.resource = resource
        self.timeout = timeout
        self.firmware = firmware
        self._endpoint = EmulatorEndpoint(firmware)
        self._received = b""
        self._at = 0
        self._closed = False
