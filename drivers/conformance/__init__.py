"""The conformance kit: the wire contract (docs/wire-protocol.md) checked against any board, through
its transports. ``run_conformance(resource)`` or ``hil conformance RESOURCE``."""

from __future__ import annotations

import contextlib
import functools

from drivers.conformance.kit import CHECKS, CheckResult, ConformanceOptions, Report, run_checks
from drivers.conformance.raw_socket import SocketTransport
from drivers.lock import ResourceLock
from drivers.resources import is_in_process, open_transport

__all__ = ["CHECKS", "CheckResult", "ConformanceOptions", "Report", "run_checks", "run_conformance"]


def is_serial(resource: str) -> bool:
    upper = resource.upper()
    return upper.startswith("ASRL") or resource.startswith("serial://")


def run_conformance(
    resource: str, options: ConformanceOptions | None = None, only: tuple[str, ...] = (), timeout: float = 10.0
) -> Report:
    """Check the board ``resource`` names against the contract; the board is locked while it runs."""
    options = options or ConformanceOptions()
    external = not is_in_process(resource)
    tcp = resource.upper().startswith("TCPIP") and resource.upper().endswith("::SOCKET")
    updates: dict[str, object] = {}
    if not external:
        updates["quiet_wait"] = 0.0  # an in-process board counts the link quiet after every write
    if is_serial(resource) and not options.stress:
        updates["large_transfers"] = False
    if tcp and options.reconnect is None:
        updates["reconnect"] = functools.partial(SocketTransport, resource, timeout)
    if updates:
        options = _replace(options, updates)
    lock = ResourceLock(resource) if external else None
    with contextlib.ExitStack() as stack:
        if lock is not None:
            lock.acquire()
            stack.callback(lock.release)
        transport = open_transport(resource, timeout)
        try:
            return run_checks(transport, options, only, resource)
        finally:
            with contextlib.suppress(Exception):  # a check may have closed it and gone on over another link
                transport.close()


def _replace(options: ConformanceOptions, updates: dict[str, object]) -> ConformanceOptions:
    from dataclasses import replace

    return replace(options, **updates)  # type: ignore[arg-type]
