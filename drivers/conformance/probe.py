"""Raw access to a board's wire for the conformance kit: bytes out, replies in, and a transcript of
both for the report of a failed check."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from drivers import codec
from drivers.errors import LinkError
from drivers.transports.base import Transport

SHOWN_BYTES = 160  # of each side of an exchange, in a report
FRAME_CRC = re.compile(rb"!\d+,\d+,([0-9A-Fa-f]{8})")


@dataclass
class Exchange:
    sent: bytes
    received: bytearray = field(default_factory=bytearray)


def shorten(data: bytes) -> str:
    """Bytes as a report shows them: repr, long payloads cut in the middle."""
    if len(data) <= SHOWN_BYTES:
        return repr(bytes(data))
    return f"{bytes(data[: SHOWN_BYTES // 2])!r} ... ({len(data)} bytes) ... {bytes(data[-SHOWN_BYTES // 4 :])!r}"


def _why_not_a_frame(line: bytes) -> str:
    """What a firmware writer most likely got wrong in a frame header the codec refused, if it is that."""
    match = FRAME_CRC.fullmatch(line.rstrip(b"\r\n"))
    if match is not None and match[1] != match[1].lower():
        return " (its checksum is upper-case hex: the grammar's crc is 8 lower-case hex digits, printf %08x)"
    return ""


class CheckFailed(Exception):
    """A check found the board off the contract; the message says what the contract wanted."""


class Probe:
    """One link to the board, spoken byte by byte."""

    def __init__(self, transport: Transport, quiet_wait: float) -> None:
        self.transport = transport
        self.quiet_wait = quiet_wait
        """how long to stay silent for the board to count the link quiet (0: it does after each write)"""
        self.transcript: list[Exchange] = []

    # ------------------------------------------------------------------ bytes

    def send(self, data: bytes) -> None:
        self.transcript.append(Exchange(data))
        self.transport.write(data)

    def _read_exact(self, count: int) -> bytes:
        data = self.transport.read_exact(count)
        self._record(data)
        return data

    def _read_line(self) -> bytes:
        data = self.transport.read_line()
        self._record(data)
        return data

    def _record(self, data: bytes) -> None:
        if not self.transcript:
            self.transcript.append(Exchange(b""))
        self.transcript[-1].received += data

    # ------------------------------------------------------------------ replies

    def reply(self) -> codec.Reply:
        """The next reply (plain); a link failure is a failed check."""
        try:
            return codec.read_reply(self._read_exact, self._read_line)
        except LinkError as exc:
            raise CheckFailed(f"no reply: {exc}") from exc
        except ValueError as exc:
            raise CheckFailed(f"a reply outside the grammar: {exc}") from exc

    def ask(self, command: bytes | str) -> codec.Reply:
        """Send one command (a str gets its line end) and read its one reply."""
        self.send(command if isinstance(command, bytes) else command.encode("ascii") + b"\n")
        return self.reply()

    def value(self, command: bytes | str) -> list[str]:
        reply = self.ask(command)
        if reply.kind != "value":
            raise CheckFailed(f"{_name(command)} should answer a value line, got {_shown(reply)}")
        return reply.fields

    def ok(self, command: bytes | str) -> None:
        reply = self.ask(command)
        if reply.kind != "ok":
            raise CheckFailed(f"{_name(command)} should answer OK, got {_shown(reply)}")

    def refused(self, command: bytes | str, code: int, why: str) -> codec.Reply:
        """The command must be refused with ``code``."""
        reply = self.ask(command)
        if reply.kind != "error" or reply.code != code:
            raise CheckFailed(f"{why}: expected ERR {code}, got {_shown(reply)}")
        return reply

    def framed_reply(self) -> tuple[int, codec.Reply]:
        """The next reply, which must be a frame whose checksum holds."""
        try:
            line = self._read_line()
            header = codec.parse_frame_header(line)
            body = self._read_exact(header.length)
        except LinkError as exc:
            raise CheckFailed(f"no framed reply: {exc}") from exc
        except ValueError as exc:
            raise CheckFailed(f"a framed reply outside the grammar: {exc}{_why_not_a_frame(line)}") from exc
        if not header.checks(body):
            raise CheckFailed("a framed reply fails its checksum")
        try:
            return header.seq, codec.parse_reply(body)
        except ValueError as exc:
            raise CheckFailed(f"a frame's body is not one reply: {exc}") from exc

    def ask_framed(self, seq: int, command: bytes | str) -> tuple[int, codec.Reply]:
        body = command if isinstance(command, bytes) else command.encode("ascii") + b"\n"
        self.send(codec.encode_frame(seq, body))
        return self.framed_reply()

    def number(self, command: str) -> float:
        fields = self.value(command)
        try:
            return float(fields[0])
        except ValueError:
            raise CheckFailed(f"{command} answered {fields[0]!r}, not a number") from None

    # ------------------------------------------------------------------ the link

    def wait_quiet(self) -> None:
        """Stay silent until the board counts the link quiet (1 s by the contract)."""
        if self.quiet_wait:
            time.sleep(self.quiet_wait)

    def extra_bytes(self, quiet: float = 0.2) -> int:
        """Bytes that arrive, unasked, before ``quiet`` s of silence (a reply too many)."""
        dropped = self.transport.discard_input(quiet)
        if dropped:
            self._record(b"<%d unasked bytes>" % dropped)
        return dropped

    def resynchronise(self, quiet: float = 1.0, attempts: int = 5) -> None:
        """After a failed check: drop whatever the board still sends until it has been silent for
        ``quiet`` s, then make sure the next reply is the next command's (a unique wait is echoed)."""
        for _ in range(attempts):
            self.transport.discard_input(quiet if self.quiet_wait else 0.0)
            self.send(b"*OPC?\n")
            try:
                answered = codec.read_reply(self._read_exact, self._read_line).text == "1"
                if answered and not self.transport.discard_input(0.2 if self.quiet_wait else 0.0):
                    return
            except (LinkError, ValueError):
                continue

    def clean(self) -> None:
        """Between checks: drop anything late, forget the transcript."""
        self.transport.discard_input(0.05 if self.quiet_wait else 0.0)
        self.transcript.clear()


def _name(command: bytes | str) -> str:
    text = command.decode("ascii", "replace") if isinstance(command, bytes) else command
    return text.split("#", 1)[0].strip()[:60]


def _shown(reply: codec.Reply) -> str:
    if reply.kind == "error":
        return f"ERR {reply.code} ({reply.text[:80]})"
    if reply.kind == "block":
        return f"a block of {len(reply.payload)} bytes"
    return "OK" if reply.kind == "ok" else repr(reply.text[:80])
