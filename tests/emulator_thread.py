"""An emulator server on a loopback port in a thread of the test's process, to serve a firmware the test
built (a broken variant) or to look inside the server while it runs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from mock_hardware.firmware import Firmware
from mock_hardware.server import EmulatorServer


@contextmanager
def serving_in_thread(firmware: Firmware, **options: float) -> Iterator[tuple[EmulatorServer, str]]:
    """(server, its ``TCPIP::127.0.0.1::PORT::SOCKET`` resource); stopped on exit."""
    server = EmulatorServer(firmware, watch_stdin=False, **options)
    ready = threading.Event()
    where: list[str] = []

    def announce(resource: str) -> None:
        where.append(resource)
        ready.set()

    thread = threading.Thread(target=server.serve_tcp, args=("127.0.0.1", 0, announce), daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the emulator server did not start")
    try:
        yield server, where[0]
    finally:
        server.stop.requested = True
        thread.join(10)
