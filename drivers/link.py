"""A link to a board that survives faults: one command, one reply, resent, resynchronised or
reconnected as is safe, in plain lines or in framed mode (docs/wire-protocol.md).

The :class:`~drivers.board.Board` speaks through a :class:`Link`; the link knows nothing of what
commands mean beyond which are safe to repeat and which leave the board idle.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy.typing as npt

from drivers import codec, commands
from drivers.errors import BoardError, FirmwareError, LinkError, LinkLost, LinkTimeout
from drivers.transports.base import Transport

log = logging.getLogger(__name__)

# Which commands may be sent again, and which leave the board idle, is the command table's to say
# (drivers/commands.py): the link only asks it.
RECONNECT_FIRST_PAUSE = 0.1  # s, doubled after each failed attempt
RECONNECT_MAX_PAUSE = 5.0  # s
# Plain lines carry no number, so a reply that comes after its command timed out would be read as
# the next command's (and every answer after it would be one behind). After a timeout the link
# waits for that reply, dropping it, before it sends anything else: up to this many timeouts after
# the command was sent, and at most LATE_REPLY_MAX_EXTRA past its timeout.
LATE_REPLY_WAIT = 3.0
LATE_REPLY_MAX_EXTRA = 5.0  # s


@dataclass
class LinkStats:
    """What the link's faults cost, counted by the driver."""

    retries: int = 0
    """commands sent again after a link failure"""
    reconnects: int = 0
    """times the link was opened again"""
    stale_replies: int = 0
    """late replies to earlier attempts, dropped (recognised by their sequence number in framed
    mode; awaited after a timeout in plain mode)"""
    applied_before_loss: int = 0
    """commands (not safe to repeat) the board had run when their reply was lost: answered, not re-run"""


class Link:
    """Exchanges over one transport, with the budget to survive its faults.

    Args:
        transport: the open byte stream to the board.
        retries: how many times a command is sent again after a link failure (in plain mode, only
            a command that is safe to repeat).
        reconnect_attempts: how many times ``reopen`` is tried, with growing pauses, before giving up.
    """

    def __init__(self, transport: Transport, retries: int = 2, reconnect_attempts: int = 5) -> None:
        self.transport = transport
        self.resource = transport.resource
        self.retries = retries
        self.reconnect_attempts = reconnect_attempts
        self.reopen: Callable[[], Transport] | None = None
        """opens the link again after it drops; ``None``: a failure is final"""
        self.identity: str | None = None
        """``*IDN?`` as the board first answered it, to know it again after a reconnect"""
        self.stats = LinkStats()
        self.closed = False
        self.unreachable = False  # reconnecting failed, or another board answered: nothing more is sent
        self._desynced = False  # a reply may be in flight from an interrupted exchange
        self._owed = 0  # plain mode: replies of timed-out commands the board may still send
        self._owed_until = 0.0  # monotonic time after which they are taken as lost
        self._session: str | None = None  # framed mode's session token
        self._seq = 0  # last sequence number sent
        self._acknowledged = 0  # last sequence number run and answered (refusals do not count)
        self._lines: dict[bytes, bytes] = {}  # line levels set by primitives, restored after a reconnect

    @property
    def framed(self) -> bool:
        """Whether commands travel in numbered, checksummed frames."""
        return self._session is not None

    def start_framing(self) -> None:
        """Framed mode under a new session, if the firmware offers it (simple firmware says -113)."""
        token = secrets.token_hex(8)
        try:
            self.exchange(commands.FRAM.header, (token,))  # a new token's history is empty: the number it gives is 0
        except FirmwareError as exc:
            if exc.code != codec.ErrorCode.UNDEFINED_HEADER:
                raise
            log.info("%s: the firmware has no framed mode; using plain lines", self.resource)
            return
        self._session = token

    def end_framing(self) -> None:
        """Plain lines again (``SYST:FRAM OFF``), for whoever talks to the board next."""
        if self._session is not None:
            self.exchange(commands.FRAM.header, ("OFF",))
            self._session = None

    def close(self) -> None:
        self.closed = True
        self.transport.close()

    def _resync(self) -> None:
        """Drop the reply of an interrupted exchange so the next reply is the next command's."""
        self._await_owed_replies()
        dropped = self.transport.discard_input(quiet=0.2)
        if dropped:
            # Expected after a Ctrl-C mid-command (the reply arrives late): routine, not alarming.
            log.info("%s: discarded %d stale bytes from an interrupted command", self.resource, dropped)
        self._desynced = False

    def _await_owed_replies(self) -> None:
        """Read and drop the late replies plain mode still expects, until they are taken as lost."""
        saved = self.transport.timeout
        try:
            while self._owed and (remaining := self._owed_until - time.monotonic()) > 0:
                self.transport.timeout = remaining
                try:
                    codec.read_reply(self.transport.read_exact, self.transport.read_line)
                except (LinkError, ValueError):
                    break  # not come (lost) or damaged: whatever is left is drained after
                self._owed -= 1
                self.stats.stale_replies += 1
                log.info("%s: dropped a late reply to a command that had timed out", self.resource)
        finally:
            self.transport.timeout = saved
            self._owed = 0

    def exchange(
        self, header: str, args: Sequence[str | int | float] = (), block: npt.ArrayLike | bytes | None = None,
        values: int | None = None, reply_bytes: int | None = None,
    ) -> codec.Reply:  # fmt: skip
        """One command, one reply, surviving link faults where that is safe.

        After a link failure the link is resynchronised (or reconnected) and the command sent
        again, at most ``retries`` times. In framed mode any command may be: it goes again under
        its sequence number, and the board answers a number it has executed with the reply it
        kept instead of running it again, so a lost reply never doubles a pulse. In plain mode
        only the commands the table marks safe to repeat are sent again; a pulse whose reply is lost is an error.
        ``values``: the reply must be a block of that many values (anything else is a late reply
        to an earlier command, which plain mode cannot otherwise tell); ``reply_bytes``: the same for a
        block of that many bytes (the compact encodings).
        """
        if values is not None:
            reply_bytes = values * codec.BLOCK_DTYPE.itemsize
        if self.closed or self.unreachable:
            raise LinkError(self.resource, "the link is closed" if self.closed else "the board is unreachable", header)
        parts = codec.command_parts(header, args, block)  # joined once, into the frame (or the line)
        # the command's text for messages: its first 80 bytes up to any block (the text before a block
        # is the first part: a VMM's block, up to megabytes, is not copied for it)
        command = parts[0][:80].split(b"#", 1)[0].decode("ascii", "replace").rstrip(" ,\n")
        wire, seq = self._wire(parts)
        attempts = 1 + (self.retries if seq is not None or commands.repeat_safe(header) else 0)
        failure: LinkError | None = None
        for attempt in range(1, attempts + 1):
            try:
                if failure is not None:
                    self._recover(failure, attempt, header, seq)
                    if commands.repeat_safe(header):  # safe to run again: a fresh number, so it runs after a reconnect
                        wire, seq = self._wire(parts)
                reply = self._round_trip(wire, seq, command)
                if reply_bytes is not None and (reply.kind != "block" or len(reply.payload) != reply_bytes):
                    got = f"{len(reply.payload)} bytes" if reply.kind == "block" else f"{reply.text!r}"
                    self._desynced = True  # the awaited reply may still come: drop it before the next command
                    raise LinkError(self.resource, f"expected a block of {reply_bytes} bytes, got {got}", command)
                self._track_lines(header, parts)
                return reply
            except LinkError as exc:
                failure = exc
                if self.closed or self.unreachable or attempt == attempts:
                    if exc.command in (None, command):
                        raise
                    # It failed while recovering: say which command was in flight.
                    raise type(exc)(self.resource, f"{exc} (while recovering)", command) from exc
                self.stats.retries += 1
                log.warning("%s: sending %r again (%d of %d): %s", self.resource, command, attempt, self.retries, exc)
        raise AssertionError("unreachable")  # pragma: no cover

    def _wire(self, parts: tuple[bytes, ...]) -> tuple[bytes, int | None]:
        """A command (its bytes in parts, :func:`codec.command_parts`) as it goes on the wire: in framed
        mode, in a frame with the next sequence number."""
        if self._session is None:
            return parts[0] if len(parts) == 1 else b"".join(parts), None
        self._seq += 1
        return codec.encode_frame_of(self._seq, parts), self._seq

    def _round_trip(self, wire: bytes, seq: int | None, command: str) -> codec.Reply:
        """Send one command as it goes on the wire and read its reply (framed when ``seq`` is)."""
        if self._desynced:
            self._resync()
        log.debug("%s -> %s (%d bytes)", self.resource, command, len(wire))
        self._desynced = True
        sent = time.monotonic()
        try:
            self.transport.write(wire)
            if seq is None:
                reply = codec.read_reply(self.transport.read_exact, self.transport.read_line)
            else:
                reply = self._read_framed_reply(seq)
        except LinkError as exc:
            if seq is None and isinstance(exc, LinkTimeout):
                timeout = self.transport.timeout
                wait = min(LATE_REPLY_WAIT * timeout, timeout + LATE_REPLY_MAX_EXTRA)
                self._owed += 1
                self._owed_until = max(self._owed_until, sent + wait)
            exc.command = command
            exc.args = (f"{exc} during {command!r}",)
            raise
        except ValueError as exc:
            raise LinkError(self.resource, f"garbled reply: {exc}", command) from exc
        self._desynced = False
        log.debug("%s <- %s", self.resource, reply.kind if reply.kind == "block" else reply.text or reply.kind)
        if reply.kind == "error":
            raise FirmwareError(reply.code, reply.text, command, self.resource)
        return reply

    def _read_framed_reply(self, seq: int) -> codec.Reply:
        while True:
            header = codec.parse_frame_header(self.transport.read_line())
            body = self.transport.read_exact(header.length)
            if not header.checks(body):
                raise LinkError(self.resource, "the reply failed its checksum: it was damaged on the link")
            if header.seq == 0:
                raise LinkError(self.resource, "the board received the command damaged and did not execute it")
            if header.seq == seq:
                reply = codec.parse_reply(body)
                if reply.kind != "error":  # a refused command did not run: the board does not count it
                    self._acknowledged = seq
                return reply
            # One command is in flight at a time: any other number is a late reply to an earlier
            # attempt or question, already dealt with.
            self.stats.stale_replies += 1
            log.info("%s: dropped the late reply to command %d", self.resource, header.seq)

    def _recover(self, failure: LinkError, attempt: int, header: str, seq: int | None) -> None:
        """Make the link usable again after ``failure`` and find out whether the command ran.

        The link is cleared of late bytes (or opened again, after a closed connection or a second
        failure), the line levels set by primitives are set again (the board may have idled), and
        for a command that must not run twice the session is taken up again and the board asked
        whether it ran it.
        """
        once = seq is not None and not commands.repeat_safe(header)  # its outcome matters: it must not run twice
        if self.reopen is not None and (isinstance(failure, LinkLost) or attempt > 2):
            remembers = self._reconnect(self.reopen, failure)
        else:
            self._resync()
            remembers = self._resume_session() if once else True
        if not commands.idles(header):  # after an idling command the lines are idle whether it ran or not
            self._restore_lines()
        if seq is None or not once:
            return
        if not remembers:
            raise BoardError(
                f"{self.resource}: the board restarted and forgot the commands of this session; whether "
                f"{header} (command {seq}) was applied is unknown: read the cells back before going on"
            )
        if self._ask_here(commands.DONE.header, seq) == "1":
            self.stats.applied_before_loss += 1
            log.warning("%s: command %d (%s) was applied before its reply was lost; fetching the reply, "
                        "not applying it again", self.resource, seq, header)  # fmt: skip
        else:
            log.warning("%s: command %d (%s) was not applied; sending it again", self.resource, seq, header)

    def _ask_here(self, header: str, *args: str | int) -> str:
        """One exchange on the link as it is, without recovery (for recovering)."""
        return self._round_trip(*self._wire(codec.command_parts(header, args)), header).text

    def _resume_session(self) -> bool:
        """Take the session up again (framed mode); whether the board still knows its commands
        (``False``: it restarted, and what was in flight is of unknown outcome)."""
        if self._session is None:
            return True
        try:
            self._round_trip(codec.encode_command(commands.FRAM.header, (self._session,)), None, commands.FRAM.header)
        except FirmwareError as exc:  # a plain reply can be damaged into anything
            raise LinkError(self.resource, f"unexpected reply to SYST:FRAM: {exc}") from exc
        answered = self._acknowledged
        try:  # checksummed from here on
            board_seq = int(self._ask_here(commands.SEQ.header))
        except (FirmwareError, ValueError) as exc:
            raise LinkError(self.resource, f"unexpected reply to SYST:SEQ?: {exc}") from exc
        # Every command answered ran, so a board that ran fewer has restarted (a new session).
        return board_seq >= answered

    def _check_identity(self) -> None:
        """After a reconnect: the same board must answer, or nothing more is sent."""
        for _ in range(2):  # a plain reply may be damaged or late: a board is another only if it says so twice
            self._resync()
            identity = self._ask_here(commands.IDN.header)
            if self.identity is None or identity == self.identity:
                return
        self.unreachable = True
        self.transport.close()
        raise BoardError(f"{self.resource}: after reconnecting, a different board answers: {identity!r}, "
                         f"not {self.identity!r}; nothing more is sent to it")  # fmt: skip

    def _reconnect(self, reopen: Callable[[], Transport], failure: LinkError) -> bool:
        """Open the link again, with growing pauses; the session goes on and the board must be the
        same. Whether the board still knows the session's commands (see :meth:`_resume_session`)."""
        timeout = self.transport.timeout
        with contextlib.suppress(BoardError, OSError):
            self.transport.close()
        started, pause = time.monotonic(), RECONNECT_FIRST_PAUSE
        last: LinkError | None = None
        for _ in range(self.reconnect_attempts):
            time.sleep(pause)
            pause = min(2 * pause, RECONNECT_MAX_PAUSE)
            try:
                self.transport = reopen()
                self.transport.timeout = timeout
                self._resync()  # a reopened serial port may still hold a late reply
                remembers = self._resume_session()
                self._check_identity()
                break
            except LinkError as exc:
                last = exc
                with contextlib.suppress(BoardError, OSError):
                    self.transport.close()
        else:
            self.unreachable = True
            raise LinkLost(
                self.resource,
                f"the link failed ({failure}) and {self.reconnect_attempts} reconnect attempts over "
                f"{time.monotonic() - started:.1f} s failed (last: {last}). A LAN board idles itself when its "
                "client goes; check the cable and the board's power, then resume the run",
                failure.command,
            )
        self.stats.reconnects += 1
        log.warning("%s: reconnected after: %s", self.resource, failure)
        return remembers

    def _restore_lines(self) -> None:
        """Set again the line levels set by primitives; they stay remembered until each is set."""
        for data in list(self._lines.values()):
            self._round_trip(*self._wire((data,)), data.split(b" ", 1)[0].decode("ascii"))

    def _track_lines(self, header: str, parts: tuple[bytes, ...]) -> None:
        """Keep the line levels set by primitives (a command in its parts), to set them again after a reconnect."""
        if commands.idles(header):
            self._lines.clear()
        elif header == commands.MUX_OPEN.header:
            self._lines = {k: v for k, v in self._lines.items() if not k.startswith(b"MUX")}
        elif commands.sets_level(header):
            data = b"".join(parts)  # a line: primitives carry no block
            self._lines[data.rsplit(b",", 1)[0]] = data  # keyed by header, line and channel

