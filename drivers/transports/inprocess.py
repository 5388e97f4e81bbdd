"""A board endpoint in this process: bytes go straight to its firmware, no socket in between.

Endpoints are plugins found by the resource's URL scheme in the ``memristor_hil.endpoints``
entry-point group (the emulator registers ``emulator``). drivers/ never imports an endpoint's
package itself.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Protocol
from urllib.parse import urlsplit

from drivers.errors import LinkError, LinkLost, LinkTimeout
from drivers.transports.base import Transport

ENDPOINT_GROUP = "memristor_hil.endpoints"


class Endpoint(Protocol):
    """The far side of an in-process link: takes command bytes, gives back reply bytes."""

    def exchange(self, data: bytes) -> bytes: ...

    def close(self) -> None: ...


def endpoint_schemes() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=ENDPOINT_GROUP))


def open_endpoint(resource: str) -> Endpoint:
    scheme = urlsplit(resource).scheme
    found = [ep for ep in entry_points(group=ENDPOINT_GROUP) if ep.name == scheme]
    if not found:
        known = ", ".join(endpoint_schemes()) or "none installed"
        raise LinkError(resource, f"no in-process endpoint for scheme {scheme!r} (known: {known})")
    factory = found[0].load()
    endpoint: Endpoint = factory(resource)
    return endpoint


class InProcessTransport(Transport):
    def __init__(self, resource: str, timeout: float) -> None:
        self.resource = resource
        self.timeout = timeout
        try:
            self._endpoint = open_endpoint(resource)
        except ValueError as exc:
            raise LinkError(resource, f"cannot open: {exc}") from exc
        # The replies not read yet: bytes and a read position, so a reply read whole is handed on as
        # it came (no copy) and a part of one costs one copy (a bytearray's slice and bytes() were two).
        self._received = b""
        self._at = 0
        self._closed = False

    def write(self, data: bytes) -> None:
        if self._closed:
            raise LinkLost(self.resource, "link is closed")
        reply = self._endpoint.exchange(data)
        if self._at >= len(self._received):
            self._received, self._at = reply, 0
        else:
            self._received, self._at = self._received[self._at :] + reply, 0

    def _nothing_more(self, what: str) -> LinkTimeout:
        # In process the reply is complete the moment write returns, so waiting cannot help.
        return LinkTimeout(self.resource, f"the board sent no more bytes while waiting for {what}")

    def read_exact(self, count: int) -> bytes:
        start = self._at
        if len(self._received) - start < count:
            raise self._nothing_more(f"{count} bytes")
        self._at = start + count
        if start == 0 and count == len(self._received):
            return self._received
        return self._received[start : self._at]

    def read_line(self) -> bytes:
        end = self._received.find(b"\n", self._at)
        if end < 0:
            raise self._nothing_more("a line end")
        return self.read_exact(end + 1 - self._at)

    def discard_input(self, quiet: float) -> int:
        dropped = len(self._received) - self._at
        self._received, self._at = b"", 0
        return dropped

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._endpoint.close()
