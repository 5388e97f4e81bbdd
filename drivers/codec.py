"""The wire codec: one definition of the framing shared by the host and the firmware.

See docs/wire-protocol.md. Commands and replies are ``\\n``-terminated ASCII lines; arrays
travel as IEEE 488.2 definite-length blocks of little-endian float32.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import numpy.typing as npt
from isal.isal_zlib import crc32 as crc32  # re-exported: the one CRC-32 of both ends of the wire

PROTOCOL_VERSION = "1.3"
BLOCK_DTYPE = np.dtype("<f4")
MAX_LINE_BYTES = 4096
MAX_BLOCK_BYTES = 16 * 1024 * 1024
TERMINATOR = b"\n"
FRAME_MARK = b"!"
MAX_FRAME_HEADER_BYTES = 64
MAX_FRAME_BYTES = MAX_BLOCK_BYTES + MAX_LINE_BYTES + 64  # one command or reply, with its block
MAX_REPLY_BYTES = MAX_BLOCK_BYTES + 16  # a reply: a block of at most 16 MiB (#8 + 8 digits + payload + \n) or a line
MAX_REPLY_LINE_BYTES = MAX_LINE_BYTES  # a value or error line, with its line end


class ErrorCode(IntEnum):
    """SCPI-style error codes carried by ``ERR`` replies."""

    SYNTAX = -102
    DATA_TYPE = -104
    TOO_MANY_PARAMETERS = -108
    MISSING_PARAMETER = -109
    UNDEFINED_HEADER = -113
    BLOCK_DATA = -160
    SETTINGS_CONFLICT = -221
    OUT_OF_RANGE = -222
    TOO_MUCH_DATA = -223
    ILLEGAL_VALUE = -224
    HARDWARE = -240
    INPUT_OVERRUN = -363


# ----------------------------------------------------------------------------- blocks


def block_header(payload_length: int) -> bytes:
    """``#<n><length>`` for a payload of ``payload_length`` bytes."""
    digits = str(payload_length)
    if len(digits) > 9:
        raise ValueError(f"block of {payload_length} bytes is too long for a definite block")
    return f"#{len(digits)}{digits}".encode("ascii")


def encode_block(values: npt.ArrayLike | bytes) -> bytes:
    """A definite-length block of ``values`` as little-endian float32, row-major (``bytes``: as they are,
    a payload already laid out, as the compact encodings are)."""
    payload = values if isinstance(values, bytes) else np.ascontiguousarray(values, dtype=BLOCK_DTYPE).tobytes()
    return block_header(len(payload)) + payload


def decode_block(payload: bytes | memoryview, shape: tuple[int, ...] | None = None) -> npt.NDArray[np.float32]:
    """The float32 array carried by a block payload, optionally reshaped."""
    if len(payload) % BLOCK_DTYPE.itemsize:
        raise ValueError(f"block payload of {len(payload)} bytes is not a whole number of float32")
    values = np.frombuffer(payload, dtype=BLOCK_DTYPE)
    return values.reshape(shape) if shape is not None else values


def block_bounds(low: float, high: float) -> tuple[float, float]:
    """Limits as float32 block values can meet them.

    A limit such as 1e-3 s has no exact float32; the nearest float32 lies a fraction of an ulp
    beyond it. Both ends compare block values with the limits rounded the same way, so a value
    sent at a limit is accepted on both sides, and nothing beyond it by more than that fraction.
    """
    return float(np.float32(low)), float(np.float32(high))


# ----------------------------------------------------------------------------- frames

MAX_SEQ = 10**18 - 1  # sequence numbers are 1 to 18 decimal digits
_FRAME_HEADER = re.compile(rb"!(\d{1,18}),(\d{1,10}),([0-9a-f]{8})\r?\n")


@dataclass(frozen=True)
class FrameHeader:
    """``!<seq>,<length>,<crc32>``: the envelope of one command or reply in framed mode."""

    seq: int
    length: int
    crc: int

    def checks(self, body: bytes | memoryview) -> bool:
        """Whether ``body`` is what this header's checksum says was sent."""
        return self.length == len(body) and frame_checksum(self.seq, body) == self.crc


def frame_checksum(seq: int, body: bytes | memoryview) -> int:
    """CRC-32 over the sequence number, the length and the body, so no field can change unseen.

    The zlib/IEEE 802.3 CRC-32 of docs/wire-protocol.md (equal to ``zlib.crc32``), computed by
    ISA-L's carry-less-multiply kernel: a CNN update checksums megabytes of frames both ways, which
    zlib's table-driven loop took about 1.1 ms over and ISA-L about 13x less (docs/benchmarks.md)."""
    return crc32(body, crc32(b"%d,%d," % (seq, len(body))))


def encode_frame(seq: int, body: bytes) -> bytes:
    """A command or reply (``body``, with its line end) in framed mode."""
    return encode_frame_of(seq, (body,))


def encode_frame_of(seq: int, parts: Sequence[bytes]) -> bytes:
    """:func:`encode_frame` of the body ``b"".join(parts)``, made in one copy (a VMM command's block is
    up to megabytes: joining it into a command and then the command into a frame copied it twice)."""
    if not 0 <= seq <= MAX_SEQ:
        raise ValueError(f"sequence number {seq} outside 0..{MAX_SEQ}")
    length = sum(len(part) for part in parts)
    crc = crc32(b"%d,%d," % (seq, length))
    for part in parts:  # the checksum of the joined body (frame_checksum), part by part
        crc = crc32(part, crc)
    return b"".join((b"!%d,%d,%08x\n" % (seq, length, crc), *parts))


def unframe(data: bytes) -> bytes:
    """What a frame carries (the command or reply inside); plain-mode bytes as they are."""
    return data.split(TERMINATOR, 1)[1] if data[:1] == FRAME_MARK else data


def parse_frame_header(line: bytes) -> FrameHeader:
    """The header line of a frame; ``ValueError`` if it is not one."""
    match = _FRAME_HEADER.fullmatch(line)
    if match is None:
        raise ValueError(f"not a frame header: {line[:MAX_FRAME_HEADER_BYTES]!r}")
    seq, length, crc = int(match[1]), int(match[2]), int(match[3], 16)
    if length > MAX_FRAME_BYTES:
        raise ValueError(f"frame of {length} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
    return FrameHeader(seq, length, crc)


# ----------------------------------------------------------------------------- commands


def format_number(value: float | int) -> str:
    """A number as the protocol writes it: integers plain, floats in their shortest exact form.

    The exact form matters for safety: the value the board receives is the value the limits
    were checked against, never one rounded past a limit.
    """
    if isinstance(value, (bool, np.bool_)):
        return "1" if value else "0"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{number} cannot be sent: the protocol carries finite numbers only")
    return repr(number)


def encode_command(
    header: str,
    args: Sequence[str | int | float] = (),
    block: npt.ArrayLike | bytes | None = None,
) -> bytes:
    """One command line: ``HEADER a,b,c[,<block>]\\n``."""
    parts = command_parts(header, args, block)
    # one copy of a payload of up to megabytes (a VMM batch), not one per concatenation
    return parts[0] if len(parts) == 1 else b"".join(parts)


def command_parts(
    header: str,
    args: Sequence[str | int | float] = (),
    block: npt.ArrayLike | bytes | None = None,
) -> tuple[bytes, ...]:
    """:func:`encode_command`'s bytes in the parts they are joined from (the line; or the text before the
    block, the block's header, its payload and the line end), for a caller that frames them in one copy."""
    fields = [a if isinstance(a, str) else format_number(a) for a in args]
    text = header if not fields else f"{header} {','.join(fields)}"
    if block is None:
        return (text.encode("ascii") + TERMINATOR,)
    separator = "," if fields else " "
    payload = block if isinstance(block, bytes) else np.ascontiguousarray(block, dtype=BLOCK_DTYPE).tobytes()
    return ((text + separator).encode("ascii"), block_header(len(payload)), payload, TERMINATOR)


@dataclass(frozen=True)
class Command:
    """A command as the firmware received it."""

    header: str
    args: tuple[str, ...]
    block: bytes | memoryview | None = None
    """the binary block, as bytes or as a view of the bytes it arrived in (read-only either way)"""


@dataclass(frozen=True)
class ParseError:
    """Input the firmware could not frame into a command; answered with an ``ERR`` reply."""

    code: ErrorCode
    message: str


@dataclass(frozen=True)
class Framed:
    """A command that arrived in a frame (framed mode): its sequence number and what it held."""

    seq: int
    item: Command | ParseError
    intact: bool = True
    """False when the checksum failed or the header was unreadable: ``item`` is then the error to
    answer, and nothing runs"""
    body: bytes | memoryview = field(default=b"", compare=False)
    """the frame's body as it arrived (the command's bytes), to tell a resent command from another"""


class CommandParser:
    """Incremental framing of a byte stream into commands, for the firmware side.

    It never raises on input and never waits on a malformed header: every problem becomes a
    :class:`ParseError`. Where the error's end is known the parser resynchronises there: an
    overlong line at its line end, a block refused for its declared size after exactly its declared
    length. Where it is not (a malformed block header, a block not followed by its line end, a frame
    header without a line end) it discards everything until the link goes quiet
    (:meth:`discard_partial`), so no byte of a payload ever runs as a command. A command in a frame
    (``!seq,length,crc``, see :func:`encode_frame`) comes out as :class:`Framed`; the command after
    an unreadable frame header is taken as its body and comes out refused, not run.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._skipping = False  # discarding input up to the next line end
        self._draining = False  # discarding all input until the link goes quiet
        self._discard_left = 0  # bytes of a refused block still to discard, then its line end
        self._discard_end = False  # the refused block's payload is gone; its line end is next
        self._block_prefix: bytes | None = None  # command text before an embedded block
        self._block_length = 0
        self._frame: FrameHeader | None = None  # a frame whose body has not all arrived
        self._damaged_header: ParseError | None = None  # the next command is the body of an unreadable frame

    @property
    def has_partial(self) -> bool:
        """Whether part of a command has arrived without its end (or input is being discarded)."""
        return (
            bool(self._buffer) or self._skipping or self._draining or self._block_prefix is not None
            or self._frame is not None or bool(self._discard_left) or self._discard_end
            or self._damaged_header is not None
        )  # fmt: skip

    @property
    def draining(self) -> bool:
        """Whether all input is being discarded until the link goes quiet."""
        return self._draining

    def discard_partial(self) -> ParseError | Framed | None:
        """Drop an incomplete command (the link went quiet); its error, if it has not had one.

        The error of an unreadable frame header whose body never came is a :class:`Framed` numbered 0.
        """
        # A line being skipped or drained has had its error reply already: one command, one reply.
        unanswered = bool(self._buffer) or self._block_prefix is not None or self._frame is not None
        damaged = self._damaged_header
        self._buffer.clear()
        self._skipping = self._draining = self._discard_end = False
        self._discard_left = 0
        self._block_prefix = None
        self._frame = None
        self._damaged_header = None
        if damaged is not None:
            return Framed(0, damaged, intact=False)
        if not unanswered:
            return None
        return ParseError(ErrorCode.BLOCK_DATA, "incomplete command discarded after the link went quiet")

    def feed(self, data: bytes) -> list[Command | ParseError | Framed]:
        """Add received bytes; return every command (or framing error) they complete."""
        # Only immutable bytes: the command's block is a view of them (a caller's bytearray could change)
        if type(data) is bytes and data[:1] == FRAME_MARK and not self.has_partial:
            whole = _whole_frame(data)
            if whole is not None:  # exactly one intact frame holding one command: what the loop below makes of it
                return [whole]
        self._buffer += data
        out: list[Command | ParseError | Framed] = []
        while True:
            item = self._next()
            if item is None:
                return out
            out.append(item)

    def _next(self) -> Command | ParseError | Framed | None:
        item = self._next_item()
        if item is None or self._damaged_header is None:
            return item
        # The body of a frame whose header could not be read: refused whatever it holds, never run.
        error, self._damaged_header = self._damaged_header, None
        return Framed(0, error, intact=False)

    def _drain(self) -> None:
        self._buffer.clear()
        self._draining = True

    def _discarding(self) -> bool:
        """Discard what an earlier error says to; whether more input is needed before going on."""
        buf = self._buffer
        if self._draining:
            buf.clear()
            return True
        if self._discard_left:
            taken = min(len(buf), self._discard_left)
            del buf[:taken]
            self._discard_left -= taken
            if self._discard_left:
                return True
            self._discard_end = True
        if self._discard_end:
            if buf[:1] == b"\r" and len(buf) < 2:
                return True
            end = 2 if buf[:2] == b"\r\n" else 1 if buf[:1] == TERMINATOR else 0
            if not buf:
                return True
            self._discard_end = False
            if not end:  # more bytes than the block declared: where they end is unknown
                self._drain()
                return True
            del buf[:end]
        return False

    def _next_item(self) -> Command | ParseError | Framed | None:
        buf = self._buffer
        if self._discarding():
            return None
        if self._skipping:  # the rest of an overlong line
            end = buf.find(TERMINATOR)
            if buf.find(b"#", 0, end if end >= 0 else len(buf)) >= 0:
                self._skipping = False  # a block in the overlong line: its bounds cannot be trusted
                self._drain()
                return None
            if end < 0:
                buf.clear()
                return None
            del buf[: end + 1]
            self._skipping = False
        if self._block_prefix is not None:
            return self._take_block_payload()
        if self._frame is not None or buf[:1] == FRAME_MARK:
            return self._take_frame()
        end = buf.find(TERMINATOR)
        hash_at = buf.find(b"#", 0, end if end >= 0 else len(buf))
        if hash_at >= 0:
            if hash_at > MAX_LINE_BYTES:  # an overlong line before a block: the block's bounds cannot be trusted
                self._drain()
                return ParseError(
                    ErrorCode.INPUT_OVERRUN,
                    f"command line longer than {MAX_LINE_BYTES} bytes; input discarded until the link is quiet",
                )
            return self._take_block_header(hash_at)
        if end < 0:
            return self._overrun() if len(buf) > MAX_LINE_BYTES else None
        if end > MAX_LINE_BYTES:
            del buf[: end + 1]
            return ParseError(ErrorCode.INPUT_OVERRUN, f"command line longer than {MAX_LINE_BYTES} bytes")
        line = bytes(buf[:end])
        del buf[: end + 1]
        return _split_line(line, None)

    def _take_frame(self) -> Command | Framed | ParseError | None:
        buf = self._buffer
        if self._frame is None:
            end = buf.find(TERMINATOR, 0, MAX_FRAME_HEADER_BYTES)
            if end < 0:
                if len(buf) < MAX_FRAME_HEADER_BYTES:
                    return None
                self._drain()  # header and body have run together: where the body ends is unknown
                message = "malformed frame header: no line end; input discarded until the link is quiet"
                return Framed(0, ParseError(ErrorCode.BLOCK_DATA, message), intact=False)
            line = bytes(buf[: end + 1])
            del buf[: end + 1]
            try:
                self._frame = parse_frame_header(line)
            except ValueError as exc:
                # The next command is this frame's body: it is read, refused and never run.
                self._damaged_header = ParseError(
                    ErrorCode.BLOCK_DATA, f"malformed frame header: {exc}; its command was not executed"
                )
                return self._next_item()
        header = self._frame
        if len(buf) < header.length:
            return None
        with memoryview(buf) as view:  # one copy out of the buffer (a bytearray slice would be two)
            body = bytes(view[: header.length])
        del buf[: header.length]
        self._frame = None
        if not header.checks(body):
            damaged = "frame checksum mismatch: the command was damaged on the link and was not executed"
            return Framed(header.seq, ParseError(ErrorCode.BLOCK_DATA, damaged), intact=False, body=body)
        inner = CommandParser()
        items = inner.feed(body)
        if len(items) != 1 or inner.has_partial or isinstance(items[0], Framed):
            message = "a frame must hold exactly one whole command"
            return Framed(header.seq, ParseError(ErrorCode.SYNTAX, message), body=body)
        return Framed(header.seq, items[0], body=body)

    def _overrun(self) -> ParseError:
        end = self._buffer.find(TERMINATOR)
        if end >= 0:  # the overlong line is complete: drop it, keep what follows
            del self._buffer[: end + 1]
        else:
            self._buffer.clear()
            self._skipping = True
        return ParseError(ErrorCode.INPUT_OVERRUN, f"command line longer than {MAX_LINE_BYTES} bytes")

    def _take_block_header(self, hash_at: int) -> Command | ParseError | None:
        buf = self._buffer
        if len(buf) < hash_at + 2:
            return None
        n_char = buf[hash_at + 1 : hash_at + 2]
        if not n_char.isdigit() or n_char == b"0":
            return self._bad_block(hash_at, "block header '#' must be followed by a digit 1-9")
        n_digits = int(n_char)
        if len(buf) < hash_at + 2 + n_digits:
            return None
        digits = bytes(buf[hash_at + 2 : hash_at + 2 + n_digits])
        if not digits.isdigit():
            return self._bad_block(hash_at, f"block length {digits!r} is not {n_digits} decimal digits")
        length = int(digits)
        if length > MAX_BLOCK_BYTES:
            del buf[: hash_at + 2 + n_digits]
            self._discard_left = length  # exactly the declared payload, then its line end
            self._discard_end = not length
            return ParseError(
                ErrorCode.TOO_MUCH_DATA, f"block of {length} bytes exceeds the {MAX_BLOCK_BYTES}-byte limit"
            )
        self._block_prefix = bytes(buf[:hash_at])
        self._block_length = length
        del buf[: hash_at + 2 + n_digits]
        return self._take_block_payload()

    def _bad_block(self, hash_at: int, message: str) -> ParseError:
        self._drain()  # the payload's length is unknown: none of what follows can be trusted as commands
        return ParseError(ErrorCode.BLOCK_DATA, f"{message}; input discarded until the link is quiet")

    def _take_block_payload(self) -> Command | ParseError | None:
        buf = self._buffer
        need = self._block_length
        if len(buf) < need + 1:
            return None
        tail = 1
        if buf[need : need + 1] == b"\r":
            if len(buf) < need + 2:
                return None  # the \n of a \r\n has not arrived yet
            tail = 2
        with memoryview(buf) as view:  # one copy out of the buffer (a bytearray slice would be two)
            payload = bytes(view[:need])
        prefix = self._block_prefix or b""
        self._block_prefix = None
        if buf[need + tail - 1 : need + tail] != TERMINATOR:
            self._drain()  # the block was longer than declared: where it ends is unknown
            return ParseError(
                ErrorCode.BLOCK_DATA,
                "block payload is not followed by the line end; input discarded until the link is quiet",
            )
        del buf[: need + tail]
        return _split_line(prefix, payload)


def _whole_frame(data: bytes) -> Framed | None:
    """``data`` as :class:`CommandParser` frames it when it is exactly one frame, intact, holding exactly
    one command (a host's command as it arrives in one write); ``None`` for anything else, which the
    parser's general path then takes byte by byte. The same checks as that path, read straight from
    ``data``: the body and the block are views of it (a VMM block is up to megabytes), not copies
    through the parser's buffers."""
    end = data.find(TERMINATOR, 0, MAX_FRAME_HEADER_BYTES)
    if end < 0:
        return None
    try:
        header = parse_frame_header(data[: end + 1])
    except ValueError:
        return None
    start = end + 1
    if len(data) != start + header.length:
        return None
    view = memoryview(data)
    body = view[start:]
    if not header.checks(body):
        return None
    item = _one_command(data, start, view)
    return Framed(header.seq, item, body=body) if item is not None else None


def _one_command(data: bytes, start: int, view: memoryview) -> Command | ParseError | None:
    """What a fresh :class:`CommandParser` makes of the body ``data[start:]`` when that is exactly one
    command and nothing after it (no partial input left), its block a slice of ``view`` (``data``'s);
    ``None`` otherwise (a nested frame, a malformed or overlong line or block, bytes after the
    command), for the general path to say what is wrong."""
    if data[start : start + 1] == FRAME_MARK:
        return None
    size = len(data)
    end = data.find(TERMINATOR, start)
    hash_at = data.find(b"#", start, end if end >= 0 else size)
    if hash_at < 0:  # a line: exactly one, within the line limit
        if end != size - 1 or end - start > MAX_LINE_BYTES:
            return None
        return _split_line(data[start:end], None)
    if hash_at - start > MAX_LINE_BYTES:
        return None
    n_char = data[hash_at + 1 : hash_at + 2]
    if not n_char.isdigit() or n_char == b"0":
        return None
    first = hash_at + 2 + int(n_char)
    digits = data[hash_at + 2 : first]
    if len(digits) != int(n_char) or not digits.isdigit():
        return None
    length = int(digits)
    if length > MAX_BLOCK_BYTES or data[first + length :] not in (TERMINATOR, b"\r" + TERMINATOR):
        return None
    return _split_line(data[start:hash_at], view[first : first + length])


def _split_line(line: bytes, block: bytes | memoryview | None) -> Command | ParseError:
    if line.endswith(b"\r"):
        line = line[:-1]
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        return ParseError(ErrorCode.SYNTAX, "command contains non-ASCII bytes")
    if not text.isprintable():
        return ParseError(ErrorCode.SYNTAX, "command contains control characters")
    header, _, rest = text.strip().partition(" ")
    if not header:
        return ParseError(ErrorCode.SYNTAX, "empty command")
    if block is not None:
        if rest and not rest.endswith(","):
            return ParseError(ErrorCode.SYNTAX, "a block must follow a comma or the header's space")
        rest = rest[:-1] if rest else rest
    args = tuple(a.strip() for a in rest.split(",")) if rest.strip() else ()
    if any(not a for a in args):
        return ParseError(ErrorCode.SYNTAX, "empty parameter between commas")
    return Command(header.upper(), args, block)


# ----------------------------------------------------------------------------- replies


@dataclass(frozen=True)
class Reply:
    """One reply as the host received it: exactly one of value, block or error is meaningful."""

    kind: str  # "ok", "value", "block" or "error"
    text: str = ""
    payload: bytes = b""
    code: int = 0

    @property
    def fields(self) -> list[str]:
        return self.text.split(",")


def encode_ok() -> bytes:
    return b"OK" + TERMINATOR


def encode_value(*fields: str | int | float) -> bytes:
    text = ",".join(f if isinstance(f, str) else format_number(f) for f in fields)
    return text.encode("ascii") + TERMINATOR


def encode_error(code: int, message: str) -> bytes:
    """``ERR <code>,"<message>"``: printable ASCII, ``"`` written as ``'``, within the reply line limit."""
    printable = (c if " " <= c <= "~" else "?" if c > "~" else " " for c in message.replace('"', "'"))
    clean = "".join(printable)[: MAX_REPLY_LINE_BYTES - 20]
    return f'ERR {int(code)},"{clean}"'.encode("ascii") + TERMINATOR


def encode_block_reply(values: npt.ArrayLike) -> bytes:
    return encode_block(values) + TERMINATOR


def parse_line_reply(line: bytes) -> Reply:
    """A non-block reply line (terminator optional) as a :class:`Reply`."""
    text = line.decode("ascii", "replace").rstrip("\r\n")
    if text == "OK":
        return Reply("ok")
    if text.startswith("ERR "):
        code_text, _, message = text[4:].partition(",")
        try:
            code = int(code_text)
        except ValueError:
            code = 0
        return Reply("error", text=message.strip().strip('"'), code=code)
    return Reply("value", text=text)


def parse_reply(data: bytes) -> Reply:
    """One whole reply (with its line end) as a :class:`Reply`; ``ValueError`` if malformed."""
    at = 0

    def read_exact(count: int) -> bytes:
        nonlocal at
        if at + count > len(data):
            raise ValueError(f"reply of {len(data)} bytes ends early")
        at += count
        return data[at - count : at]

    def read_line() -> bytes:
        end = data.find(TERMINATOR, at)
        return read_exact((end if end >= 0 else len(data)) + 1 - at)

    reply = read_reply(read_exact, read_line)
    if at != len(data):
        raise ValueError(f"{len(data) - at} bytes follow the reply")
    return reply


def read_reply(read_exact: Callable[[int], bytes], read_line: Callable[[], bytes]) -> Reply:
    """Read one reply from a stream, given its exact-count and read-to-line-end functions."""
    first = read_exact(1)
    if first != b"#":
        if first == TERMINATOR:
            return Reply("value", text="")
        return parse_line_reply(first + read_line())
    n_char = read_exact(1)
    if not n_char.isdigit() or n_char == b"0":
        raise ValueError(f"malformed block header: '#' followed by {n_char!r}")
    digits = read_exact(int(n_char))
    if not digits.isdigit():
        raise ValueError(f"malformed block length {digits!r}")
    payload = read_exact(int(digits)) if int(digits) else b""
    end = read_exact(1)
    if end == b"\r":
        end = read_exact(1)
    if end != TERMINATOR:
        raise ValueError(f"block not followed by the line end (got {end!r})")
    return Reply("block", payload=payload)
