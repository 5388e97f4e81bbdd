"""Resource strings pick the transport, as in pyvisa.

=====================================  ==============================================
``TCPIP::HOST::PORT::SOCKET``           LAN board or emulator server, through pyvisa
``ASRL/dev/ttyACM0::INSTR``             serial board through pyvisa
``serial:///dev/ttyUSB0?baudrate=N``    serial board through pyserial directly
``emulator://?preset=NAME&seed=N``      an endpoint in this process (a plugin scheme)
=====================================  ==============================================
"""

from __future__ import annotations

import functools

from drivers.board import Board
from drivers.limits import SafetyLimits
from drivers.lock import ResourceLock
from drivers.resource_names import parse_resource
from drivers.transports.base import Transport

DEFAULT_TIMEOUT = 10.0


def is_in_process(resource: str) -> bool:
    """Whether ``resource`` is a board inside this process (it does not outlive the process)."""
    return not parse_resource(resource).shared


def open_transport(
    resource: str, timeout: float = DEFAULT_TIMEOUT, visa_backend: str = "@py", baud_rate: int | None = None
) -> Transport:
    """The transport a resource string names; a string no transport can open is a
    :class:`~drivers.resource_names.ResourceError` before any library sees it."""
    interface = parse_resource(resource).interface
    if interface == "serial":
        from drivers.transports.serial_port import SerialTransport

        return SerialTransport(resource, timeout)
    if interface == "in-process":
        from drivers.transports.inprocess import InProcessTransport

        return InProcessTransport(resource, timeout)
    from drivers.transports.visa import VisaTransport

    return VisaTransport(resource, timeout, backend=visa_backend, baud_rate=baud_rate)


def open_board(
    resource: str,
    limits: SafetyLimits | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    visa_backend: str = "@py",
    baud_rate: int | None = None,
    framing: bool | None = None,
) -> Board:
    """Open the board a resource string names; use it as a context manager.

    A LAN or serial board is locked for this process while it is open: a second opener, here or in
    another process, gets :class:`~drivers.lock.BoardBusy` naming the owner.

    Args:
        resource: see the module docstring.
        limits: the host's safety limits (default: the firmware's absolute limits).
        timeout: longest silence tolerated while waiting for a reply, s.
        visa_backend: pyvisa backend for VISA resources (``@py``; ``@ivi`` for NI-VISA).
        baud_rate: for ``ASRL`` resources through pyvisa.
        framing: numbered, checksummed frames (``True``), plain lines (``False``), or frames when
            the firmware offers them (``None``).
    """
    # One board, one owner. An in-process emulator is private to this process: nothing to share
    # and nothing to reconnect to (opening it again would make a new board).
    external = parse_resource(resource).shared
    lock = ResourceLock(resource) if external else None
    if lock is not None:
        lock.acquire()
    try:
        transport = open_transport(resource, timeout, visa_backend, baud_rate)
        reopen = functools.partial(open_transport, resource, timeout, visa_backend, baud_rate) if external else None
        return Board(transport, limits, lock=lock, framing=framing, reopen=reopen)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
