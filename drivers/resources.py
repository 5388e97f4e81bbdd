"""Resource strings pick the transport, as in pyvisa.

=====================================  ==============================================
``TCPIP::HOST::PORT::SOCKET``           LAN board or emulator server, through pyvisa
``ASRL/dev/ttyACM0::INSTR``             serial board through pyvisa (``@py``: read through pyserial)
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
PURE_PYTHON_VISA = "@py"
BITS_PER_SERIAL_BYTE = 10  # 8N1


def link_rate_of(resource: str, baud_rate: int | None) -> float | None:
    """Bytes per second a serial resource's stated baud rate carries (8N1); ``None`` when none is stated
    (a LAN board, or a USB board whose speed the baud rate does not set)."""
    interface = parse_resource(resource).interface
    if interface == "serial":
        from drivers.transports.serial_port import url_baud_rate

        baud_rate = url_baud_rate(resource)
    elif interface != "asrl":
        return None
    return baud_rate / BITS_PER_SERIAL_BYTE if baud_rate else None


def is_in_process(resource: str) -> bool:
    """Whether ``resource`` is a board inside this process (it does not outlive the process)."""
    return not parse_resource(resource).shared


def open_transport(
    resource: str, timeout: float = DEFAULT_TIMEOUT, visa_backend: str = PURE_PYTHON_VISA, baud_rate: int | None = None
) -> Transport:
    """The transport a resource string names; a string no transport can open is a
    :class:`~drivers.resource_names.ResourceError` before any library sees it."""
    name = parse_resource(resource)
    interface = name.interface
    if interface == "serial" or (interface == "asrl" and visa_backend == PURE_PYTHON_VISA):
        # pyvisa-py reads a serial port one byte per call (a 128x64 map: 150 ms against under 1 ms);
        # pyserial reads what has arrived in one call. The ASRL name stays the resource's name.
        from drivers.transports.serial_port import SerialTransport, asrl_port

        if interface == "serial":
            return SerialTransport(resource, timeout)
        return SerialTransport(resource, timeout, port=asrl_port(name.device), baud_rate=baud_rate)
    if interface == "in-process":
        from drivers.transports.inprocess import InProcessTransport

        return InProcessTransport(resource, timeout)
    from drivers.transports.visa import VisaTransport

    return VisaTransport(resource, timeout, backend=visa_backend, baud_rate=baud_rate)


def open_board(
    resource: str,
    limits: SafetyLimits | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    visa_backend: str = PURE_PYTHON_VISA,
    baud_rate: int | None = None,
    framing: bool | None = None,
    compact: bool | None = None,
    link_rate: float | None = None,
) -> Board:
    """Open the board a resource string names; use it as a context manager.

    A LAN or serial board is locked for this process while it is open: a second opener, here or in
    another process, gets :class:`~drivers.lock.BoardBusy` naming the owner.

    Args:
        resource: see the module docstring.
        limits: the host's safety limits (default: the firmware's absolute limits).
        timeout: longest silence tolerated while waiting for a reply, s.
        visa_backend: pyvisa backend for VISA resources (``@py``; ``@ivi`` for NI-VISA). With ``@py``
            an ``ASRL`` resource is read through pyserial (bulk reads; pyvisa-py reads byte by byte).
        baud_rate: for ``ASRL`` resources (``serial://`` ones state it in the URL).
        framing: numbered, checksummed frames (``True``), plain lines (``False``), or frames when
            the firmware offers them (``None``).
        compact: the compact encodings of protocol 1.3 (``True``), the 1.2 forms (``False``), or the
            compact ones when the board offers them (``None``).
        link_rate: the link's speed, bytes per second, so that work is split into commands of at most
            ``Board.max_command_time`` each; default: a serial resource's stated baud rate / 10.
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
        rate = link_rate if link_rate is not None else link_rate_of(resource, baud_rate)
        return Board(transport, limits, lock=lock, framing=framing, reopen=reopen, compact=compact, link_rate=rate)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
