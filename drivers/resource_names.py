"""What a resource string names: which transport, which physical board, and whether it is shared.

Resource strings are typed by people, so one board has many spellings: ``TCPIP::`` and
``TCPIP0::``, ``localhost``, ``127.1`` and ``127.0.0.1``, ``/dev/serial/by-id/...`` and the
``/dev/ttyACM0`` it links to, ``ASRL/dev/ttyACM0::INSTR`` and ``serial:///dev/ttyACM0``.
:func:`board_key` maps every spelling of one board to one key (what the board lock is keyed by);
:func:`parse_resource` refuses, with the reason, a string no transport can open, before any
third-party library sees it.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from drivers.errors import InvalidRequest

Interface = Literal["tcpip-socket", "tcpip-instr", "asrl", "serial", "in-process"]

# Interfaces pyvisa knows but this platform has no transport for (GPIB, USB-TMC, VXI, PXI).
UNSUPPORTED_VISA = ("GPIB", "USB", "VXI", "PXI", "FIREWIRE", "GPIB-VXI")
MAX_RESOURCE_LENGTH = 1024

_TCPIP = re.compile(r"^TCPIP(\d*)$", re.IGNORECASE)
_ASRL = re.compile(r"^ASRL(.+?)(?:::INSTR)?$", re.IGNORECASE)


class ResourceError(InvalidRequest):
    """A resource string that names no board this platform can reach; nothing was opened."""

    def __init__(self, resource: str, reason: str) -> None:
        self.resource, self.reason = resource, reason
        super().__init__(f"resource {resource!r}: {reason}")


@dataclass(frozen=True)
class ResourceName:
    """A parsed resource string."""

    resource: str
    interface: Interface
    host: str = ""
    port: int = 0
    device: str = ""
    """serial device path (``/dev/ttyACM0``, ``COM3``) or ASRL number"""

    @property
    def shared(self) -> bool:
        """A board outside this process, which another process may reach too (so it is locked)."""
        return self.interface != "in-process"


def parse_resource(resource: str) -> ResourceName:
    """Which interface ``resource`` uses and its parts; :class:`ResourceError` naming what is wrong."""
    text = resource.strip()
    if not text:
        raise ResourceError(resource, "empty; expected TCPIP::HOST::PORT::SOCKET, ASRL<port>::INSTR, "
                            "serial://<port>?baudrate=N or emulator://?preset=NAME")  # fmt: skip
    if len(text) > MAX_RESOURCE_LENGTH:
        raise ResourceError(resource[:40] + "...", f"longer than {MAX_RESOURCE_LENGTH} characters")
    if text.startswith("serial://"):
        parts = urlsplit(text)
        device = (parts.netloc + parts.path) if parts.netloc else parts.path
        if not device:
            raise ResourceError(resource, "names no serial port; expected serial:///dev/ttyUSB0?baudrate=115200")
        return ResourceName(text, "serial", device=device)
    if "://" in text:
        return ResourceName(text, "in-process")
    fields = text.split("::")
    head = fields[0].upper()
    if _TCPIP.match(head):
        return _parse_tcpip(resource, fields)
    asrl = _ASRL.match(text)
    if head.startswith("ASRL") and asrl:
        return ResourceName(text, "asrl", device=asrl.group(1))
    if head.startswith(UNSUPPORTED_VISA):
        raise ResourceError(resource, f"interface {head} is not supported; this platform reaches boards over "
                            "TCPIP::HOST::PORT::SOCKET, ASRL<port>::INSTR or serial://<port>")  # fmt: skip
    raise ResourceError(resource, "cannot tell which transport it needs; expected TCPIP::HOST::PORT::SOCKET, "
                        "ASRL<port>::INSTR, serial://<port>?baudrate=N or emulator://?preset=NAME")  # fmt: skip


def _parse_tcpip(resource: str, fields: list[str]) -> ResourceName:
    kind = fields[-1].upper() if len(fields) > 2 else ""
    if kind == "SOCKET":
        if len(fields) != 4:
            raise ResourceError(resource, "expected TCPIP::HOST::PORT::SOCKET")
        host, port_text = fields[1].strip(), fields[2].strip()
        if not host:
            raise ResourceError(resource, "names no host; expected TCPIP::HOST::PORT::SOCKET")
        if not port_text.isdigit():
            raise ResourceError(resource, f"port {port_text!r} is not a whole number in [1, 65535]")
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise ResourceError(resource, f"port {port} is outside [1, 65535]")
        return ResourceName(resource.strip(), "tcpip-socket", host=host, port=port)
    if kind == "INSTR" and len(fields) in (3, 4) and fields[1].strip():
        return ResourceName(resource.strip(), "tcpip-instr", host=fields[1].strip(), device=fields[2].lower())
    raise ResourceError(resource, "names no host and port; expected TCPIP::HOST::PORT::SOCKET")


def resolve_host(resource: str, host: str) -> str:
    """The address ``host`` stands for (so ``localhost``, ``127.1`` and ``127.0.0.1`` are one board)."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ResourceError(resource, f"no such host {host!r} ({_reason(exc)})") from None
    # getaddrinfo's first answer is the one a connect tries first; IPv4 preferred so that
    # "localhost" on a dual-stack machine keys as 127.0.0.1, as "127.1" does.
    addresses = sorted({str(info[4][0]) for info in infos}, key=lambda a: (":" in a, a))
    return addresses[0]


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def board_key(resource: str) -> str:
    """One key per physical board, whatever the spelling of its resource string."""
    name = parse_resource(resource)
    if name.interface in ("tcpip-socket", "tcpip-instr"):
        address = resolve_host(resource, name.host)
        where = name.port if name.interface == "tcpip-socket" else name.device
        return f"tcpip:{address}:{where}"
    if name.interface in ("asrl", "serial"):
        # ASRL/dev/ttyACM0::INSTR and serial:///dev/ttyACM0 drive the same port; a symlink
        # (/dev/serial/by-id/...) is the port it points to. ASRL3 is COM3 on Windows.
        device = name.device
        if device.isdigit():
            device = f"COM{device}"
        if os.name == "nt" or device.upper().startswith("COM"):
            return f"serial:{device.upper()}"
        return f"serial:{os.path.realpath(device)}"
    return f"in-process:{name.resource}"
