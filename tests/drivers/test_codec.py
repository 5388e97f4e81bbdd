"""The wire codec: blocks, command lines, replies, and the firmware's incremental framing."""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import codec
from drivers.codec import Command, CommandParser, ErrorCode, Framed, ParseError

# ----------------------------------------------------------------------------- helpers


def wire_block(values: np.ndarray) -> bytes:
    """A definite-length block built by hand (not by the codec under test)."""
    payload = np.asarray(values, dtype="<f4").tobytes(order="C")
    digits = str(len(payload))
    return b"#" + str(len(digits)).encode() + digits.encode() + payload


class TrickleStream:
    """A byte stream whose reads hand over one byte per call, like a slow serial link."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0
        self.calls = 0

    def _one_byte(self) -> bytes:
        if self.position >= len(self.data):
            raise EOFError("read past the end of the stream")
        self.calls += 1
        byte = self.data[self.position : self.position + 1]
        self.position += 1
        return byte

    def read_exact(self, count: int) -> bytes:
        return b"".join(self._one_byte() for _ in range(count))

    def read_line(self) -> bytes:
        line = b""
        while not line.endswith(b"\n"):
            line += self._one_byte()
        return line

    @property
    def remaining(self) -> bytes:
        return self.data[self.position :]


def read_reply(data: bytes) -> tuple[codec.Reply, bytes]:
    """One reply read from ``data`` byte by byte, and the bytes left unread."""
    stream = TrickleStream(data)
    reply = codec.read_reply(stream.read_exact, stream.read_line)
    return reply, stream.remaining


def feed_whole(data: bytes) -> list[Command | ParseError]:
    return CommandParser().feed(data)


def feed_in_pieces(data: bytes, cuts: list[int]) -> list[Command | ParseError]:
    parser = CommandParser()
    out: list[Command | ParseError] = []
    edges = [0, *sorted(set(cuts)), len(data)]
    for start, end in itertools.pairwise(edges):
        out += parser.feed(data[start:end])
    return out


def feed_bytewise(data: bytes) -> list[Command | ParseError]:
    return feed_in_pieces(data, list(range(1, len(data))))


def codes(items: list[Command | ParseError]) -> list[int | str]:
    """Each framed item as its header (commands) or error code (framing errors)."""
    return [item.header if isinstance(item, Command) else int(item.code) for item in items]


# ----------------------------------------------------------------------------- blocks

SHAPES = [(), (0,), (1,), (7,), (3, 4), (2, 3, 4), (0, 5)]
DTYPES = [np.float64, np.float32, np.float16, np.int8, np.int32, np.int64, np.uint16, np.bool_, ">f4", ">f8"]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_block_carries_any_dtype_as_little_endian_float32(shape: tuple[int, ...], dtype: str) -> None:
    values = np.random.default_rng(sum(shape) + 1).integers(0, 100, size=shape) * 0.5
    if np.dtype(dtype).kind in "fi":
        values -= 25
    values = values.astype(dtype)
    payload = values.astype("<f4").tobytes()
    block = codec.encode_block(values)
    assert block == wire_block(values)
    decoded = codec.decode_block(block[len(block) - len(payload) :], shape)
    assert decoded.dtype == np.dtype("<f4")
    assert decoded.shape == shape
    np.testing.assert_array_equal(decoded, values.astype(np.float32))


def test_block_of_a_non_contiguous_array_is_row_major() -> None:
    fortran = np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4))
    transposed_view = np.arange(12.0).reshape(4, 3).T
    assert codec.encode_block(fortran) == wire_block(np.arange(12.0))
    assert codec.encode_block(transposed_view) == wire_block(np.array([[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]]))


def test_block_of_python_lists_and_scalars() -> None:
    assert codec.encode_block([1, 2.5]) == b"#18" + np.array([1, 2.5], "<f4").tobytes()
    assert codec.encode_block(3) == b"#14" + np.float32(3).tobytes()


def test_empty_block_is_hash_one_zero() -> None:
    assert codec.encode_block(np.zeros(0)) == b"#10"
    assert codec.decode_block(b"").shape == (0,)
    assert codec.decode_block(b"", (0, 4)).shape == (0, 4)


@pytest.mark.parametrize(
    ("length", "header"),
    [(0, b"#10"), (4, b"#14"), (9, b"#19"), (40, b"#240"), (192, b"#3192"), (32768, b"#532768"),
     (16 * 1024 * 1024, b"#816777216"), (999_999_999, b"#9999999999")],
)  # fmt: skip
def test_block_header_digits(length: int, header: bytes) -> None:
    assert codec.block_header(length) == header


def test_block_header_refuses_ten_digit_lengths() -> None:
    with pytest.raises(ValueError, match="too long"):
        codec.block_header(1_000_000_000)


def test_decode_block_refuses_a_partial_float() -> None:
    with pytest.raises(ValueError, match="not a whole number of float32"):
        codec.decode_block(b"\x00" * 6)


def test_decode_block_refuses_a_shape_that_does_not_fit() -> None:
    with pytest.raises(ValueError):
        codec.decode_block(np.zeros(6, "<f4").tobytes(), (4, 2))


def test_decoded_block_is_little_endian_whatever_the_host() -> None:
    payload = bytes([0x00, 0x00, 0x80, 0x3F])  # 1.0 as little-endian float32
    assert codec.decode_block(payload)[0] == 1.0


# ----------------------------------------------------------------------------- numbers and commands


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0"), (7, "7"), (-3, "-3"), (np.int64(12), "12"), (np.uint16(5), "5"), (True, "1"), (False, "0"),
     (np.bool_(True), "1"), (0.2, "0.2"), (1e-6, "1e-06"), (-0.5, "-0.5"), (2.5, "2.5"), (np.float32(0.5), "0.5")],
)  # fmt: skip
def test_format_number(value: float, text: str) -> None:
    assert codec.format_number(value) == text


@given(st.floats(allow_nan=False, allow_infinity=False))
@settings(max_examples=200)
def test_format_number_is_exact(value: float) -> None:
    """The board parses back exactly the value the host checked against its limits."""
    assert float(codec.format_number(value)) == value


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, np.float32("nan")])
def test_format_number_refuses_non_finite(value: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        codec.format_number(value)


def test_encode_command_without_arguments() -> None:
    assert codec.encode_command("*IDN?") == b"*IDN?\n"


def test_encode_command_with_arguments() -> None:
    assert codec.encode_command("PULS:SET", (3, 7, 2.5, 1.1, 1e-6)) == b"PULS:SET 3,7,2.5,1.1,1e-06\n"
    assert codec.encode_command("DAC:VOLT?", ("ROW", 0)) == b"DAC:VOLT? ROW,0\n"


def test_encode_command_with_a_block_as_last_argument() -> None:
    values = np.array([[0.25, -0.5]])
    assert codec.encode_command("VMM?", (0, 0, 2, 1, 1), values) == b"VMM? 0,0,2,1,1," + wire_block(values) + b"\n"
    assert codec.encode_command("X", (), values) == b"X " + wire_block(values) + b"\n"


def test_encode_command_refuses_non_finite_arguments() -> None:
    with pytest.raises(ValueError, match="finite"):
        codec.encode_command("READ?", (0, 0, math.nan))


# ----------------------------------------------------------------------------- replies


def test_reply_encoders() -> None:
    assert codec.encode_ok() == b"OK\n"
    assert codec.encode_value(128, 64) == b"128,64\n"
    assert codec.encode_value("MEMHIL", "EMU", 0.5) == b"MEMHIL,EMU,0.5\n"
    assert codec.encode_block_reply([1.0]) == b"#14" + np.float32(1).tobytes() + b"\n"


def test_error_reply_keeps_the_line_and_quotes_intact() -> None:
    line = codec.encode_error(-222, 'amplitude "9"\nV\u00b5 outside')
    assert line == b'ERR -222,"amplitude \'9\' V? outside"\n'
    assert line.count(b"\n") == 1


@pytest.mark.parametrize(
    ("line", "kind", "text", "code"),
    [
        (b"OK\n", "ok", "", 0),
        (b"OK\r\n", "ok", "", 0),
        (b"0.000412\n", "value", "0.000412", 0),
        (b"128,64\n", "value", "128,64", 0),
        (b'ERR -222,"amplitude 9 V outside VROW [-4, 4] V"\n', "error", "amplitude 9 V outside VROW [-4, 4] V", -222),
        (b'ERR -113,"undefined header \'FOO\'"', "error", "undefined header 'FOO'", -113),
        (b'ERR x,"garbled code"\n', "error", "garbled code", 0),
    ],
)
def test_parse_line_reply(line: bytes, kind: str, text: str, code: int) -> None:
    reply = codec.parse_line_reply(line)
    assert (reply.kind, reply.text, reply.code) == (kind, text, code)


def test_value_reply_fields() -> None:
    fields = codec.parse_line_reply(b"MEMHIL,EMU-1T1R,SN-0001,0.1.0\n").fields
    assert fields == ["MEMHIL", "EMU-1T1R", "SN-0001", "0.1.0"]


@pytest.mark.parametrize(
    "reply",
    [codec.encode_ok(), codec.encode_value(0.000412), codec.encode_value(128, 64), codec.encode_error(-160, "bad"),
     codec.encode_block_reply(np.arange(6.0)), codec.encode_block_reply(np.zeros(0))],
    ids=["ok", "value", "fields", "error", "block", "empty-block"],
)  # fmt: skip
def test_read_reply_byte_by_byte_stops_at_the_reply_end(reply: bytes) -> None:
    following = b"NEXT\n"
    parsed, left = read_reply(reply + following)
    assert left == following
    assert parsed == read_reply(reply)[0]


def test_read_reply_of_each_kind() -> None:
    assert read_reply(b"OK\n")[0].kind == "ok"
    value = read_reply(b"1.5e-4\n")[0]
    assert (value.kind, value.text) == ("value", "1.5e-4")
    error = read_reply(b'ERR -224,"gain 2000 ohm"\n')[0]
    assert (error.kind, error.code, error.text) == ("error", -224, "gain 2000 ohm")
    assert read_reply(b"\n")[0] == codec.Reply("value", text="")


def test_read_reply_block_whose_payload_holds_line_ends_and_hashes() -> None:
    payload = b"\n#\n#" + b"\n" * 4  # two float32 values made of protocol punctuation
    reply, left = read_reply(b"#18" + payload + b"\n" + b"OK\n")
    assert reply.kind == "block"
    assert reply.payload == payload
    assert left == b"OK\n"


def test_read_reply_block_followed_by_crlf() -> None:
    reply, left = read_reply(b"#14abcd\r\nOK\n")
    assert reply.payload == b"abcd"
    assert left == b"OK\n"


def test_read_reply_of_a_large_block() -> None:
    values = np.random.default_rng(0).standard_normal((128, 64))
    data = codec.encode_block_reply(values)
    stream = TrickleStream(data)
    reply = codec.read_reply(stream.read_exact, stream.read_line)
    np.testing.assert_array_equal(codec.decode_block(reply.payload, (128, 64)), values.astype(np.float32))
    assert stream.remaining == b""


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"#0\n", "malformed block header"), (b"#x12\n", "malformed block header"),
     (b"#2a4abcd\n", "malformed block length"), (b"#14abcdX", "not followed by the line end"),
     (b"#14abcd\rX", "not followed by the line end")],
)  # fmt: skip
def test_read_reply_refuses_malformed_blocks(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_reply(data)


# ----------------------------------------------------------------------------- firmware framing

VMM_PAYLOAD = b"\n#\n#\r\n#\n"  # two float32 values made of protocol punctuation

SESSION = (
    b"*IDN?\n"
    b"read? 3,7,0.2\n"
    b"DAC:VOLT ROW,0,1.5\r\n"
    b"VMM? 0,0,2,1,1,#18" + VMM_PAYLOAD + b"\n"
    b"PULS:BATC " + wire_block(np.zeros(4)) + b"\n"
    b"MAP? 0,0,2,2,0.2,COND\n"
)
SESSION_COMMANDS = [
    Command("*IDN?", ()),
    Command("READ?", ("3", "7", "0.2")),
    Command("DAC:VOLT", ("ROW", "0", "1.5")),
    Command("VMM?", ("0", "0", "2", "1", "1"), VMM_PAYLOAD),
    Command("PULS:BATC", (), np.zeros(4, "<f4").tobytes()),
    Command("MAP?", ("0", "0", "2", "2", "0.2", "COND")),
]


def test_parser_frames_a_session() -> None:
    assert feed_whole(SESSION) == SESSION_COMMANDS


def test_parser_gives_the_same_commands_whatever_the_split() -> None:
    for cut in range(len(SESSION) + 1):
        assert feed_in_pieces(SESSION, [cut]) == SESSION_COMMANDS, f"split at byte {cut}"
    assert feed_bytewise(SESSION) == SESSION_COMMANDS


@given(st.lists(st.integers(min_value=1, max_value=len(SESSION) - 1), max_size=12))
@settings(max_examples=100)
def test_parser_gives_the_same_commands_for_random_chunking(cuts: list[int]) -> None:
    assert feed_in_pieces(SESSION, cuts) == SESSION_COMMANDS


def test_parser_keeps_partial_input_until_the_line_end() -> None:
    parser = CommandParser()
    assert parser.feed(b"READ? 0,") == []
    assert parser.has_partial
    assert parser.feed(b"0,0.2") == []
    assert parser.feed(b"\n") == [Command("READ?", ("0", "0", "0.2"))]
    assert not parser.has_partial


def test_parser_waits_for_a_whole_block_payload() -> None:
    parser = CommandParser()
    assert parser.feed(b"VMM? 0,0,2,1,1,#18\n\n\n") == []
    assert parser.has_partial
    assert parser.feed(b"\n" * 5) == []  # the whole payload, but not its line end
    assert parser.feed(b"\n") == [Command("VMM?", ("0", "0", "2", "1", "1"), b"\n" * 8)]


def test_parser_accepts_crlf_line_ends() -> None:
    assert feed_whole(b"*RST\r\n*OPC?\r\n") == [Command("*RST", ()), Command("*OPC?", ())]


def test_parser_accepts_crlf_after_a_block_in_one_piece() -> None:
    assert feed_whole(b"X #14abcd\r\n*RST\n") == [Command("X", (), b"abcd"), Command("*RST", ())]


def test_parser_accepts_crlf_after_a_block_split_between_cr_and_lf() -> None:
    data = b"X #14abcd\r\n*RST\n"
    cut = data.index(b"\r") + 1
    assert feed_in_pieces(data, [cut]) == [Command("X", (), b"abcd"), Command("*RST", ())]


def test_parser_normalises_headers_and_spaces() -> None:
    assert feed_whole(b"syst:arr?\n  *idn?  \nREAD? 1 , 2 ,0.2\n") == [
        Command("SYST:ARR?", ()), Command("*IDN?", ()), Command("READ?", ("1", "2", "0.2")),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("data", "code"),
    [(b"\n", -102), (b"   \n", -102), (b"READ? 1,,2\n", -102), (b"READ? 1,2,\n", -102),
     (b"*IDN\x00?\n", -102), (b"\xff\xfe\n", -102), (b"\tREAD?\n", -102), (b"#14abcd\n", -102),
     (b"VMM? 0,0,1,1,1#14abcd\n", -102)],
)  # fmt: skip
def test_parser_reports_syntax_errors(data: bytes, code: int) -> None:
    assert codes(feed_whole(data + b"*OPC?\n")) == [code, "*OPC?"]


def test_parser_refuses_an_overlong_line_and_serves_the_next() -> None:
    data = b"A" * 5000 + b"\n*IDN?\n"
    expected = [int(ErrorCode.INPUT_OVERRUN), "*IDN?"]
    assert codes(feed_whole(data)) == expected
    assert codes(feed_in_pieces(data, [100, 4097, 4200])) == expected
    assert codes(feed_in_pieces(data, list(range(0, len(data), 512)))) == expected


def test_parser_line_limit_is_4096_bytes() -> None:
    assert codes(feed_whole(b"X" * 4096 + b"\n")) == ["X" * 4096]
    assert codes(feed_whole(b"X" * 4097 + b"\n")) == [-363]
    assert codes(feed_bytewise(b"X" * 4097 + b"\n")) == [-363]


def test_parser_refuses_an_overlong_line_that_never_ends() -> None:
    parser = CommandParser()
    assert codes(parser.feed(b"A" * 5000)) == [-363]
    assert parser.feed(b"A" * 5000) == []  # still skipping: one error per line
    assert codes(parser.feed(b"A\n*RST\n")) == ["*RST"]


def test_an_overlong_line_with_a_late_block_is_drained_until_the_link_is_quiet() -> None:
    """The block's bounds cannot be trusted: nothing after it runs until the link goes quiet."""
    data = b"A" * 5000 + b"#15hello\n*IDN?\n"
    for step in (1, len(data)):
        parser = CommandParser()
        items = [item for at in range(0, len(data), step) for item in parser.feed(data[at : at + step])]
        assert codes(items) == [-363], step
        assert parser.discard_partial() is None  # already answered
        assert codes(parser.feed(b"*IDN?\n")) == ["*IDN?"]


def test_parser_discards_exactly_the_declared_length_of_an_oversized_block() -> None:
    """Regression (issue 10): after -223 the board resynchronised at the next line end, inside the payload,
    and a PULS:SET in the payload ran. It must discard exactly the declared payload, then its line end."""
    length = codec.MAX_BLOCK_BYTES + 4
    payload = (b"\nPULS:SET 0,0,2.5,1.2,1e-6\n" * (length // 27 + 1))[:length]
    data = b"VMM? 0,0,1,1,1,#8%d" % length + payload + b"\n*IDN?\n"
    assert codes(feed_whole(data)) == [int(ErrorCode.TOO_MUCH_DATA), "*IDN?"]
    assert codes(feed_in_pieces(data, [20, 30, 4096, length // 2, len(data) - 8])) == [-223, "*IDN?"]


def test_a_refused_block_followed_by_more_than_its_length_drains_until_quiet() -> None:
    parser = CommandParser()
    header = b"VMM? 0,0,1,1,1,#8%d" % (codec.MAX_BLOCK_BYTES + 1)
    assert codes(parser.feed(header + bytes(codec.MAX_BLOCK_BYTES + 1) + b"EXTRA\nPULS:SET 0,0,2,1,1e-6\n")) == [-223]
    assert parser.has_partial and parser.discard_partial() is None  # answered already
    assert codes(parser.feed(b"*IDN?\n")) == ["*IDN?"]


def test_parser_accepts_a_block_of_exactly_16_mib() -> None:
    parser = CommandParser()
    header = b"X #816777216"
    assert parser.feed(header) == []
    assert parser.has_partial
    [command] = parser.feed(bytes(16 * 1024 * 1024) + b"\n")
    assert isinstance(command, Command)
    assert len(command.block or b"") == 16 * 1024 * 1024


@pytest.mark.parametrize(
    "header",
    [b"#0", b"#x", b"#3ab", b"#2 4", b"#"],
    ids=["zero-digits", "letter", "short-digits", "space-in-length", "bare-hash"],
)
def test_parser_refuses_a_malformed_block_header_and_drains_until_quiet(header: bytes) -> None:
    """Regression (issue 10): after a malformed block header the payload ran as commands. Its length is
    unknown, so everything is discarded until the link goes quiet."""
    data = b"VMM? 0,0,1,1,1," + header + b"\nPULS:SET 0,0,2.5,1.2,1e-6\n*IDN?\n"
    for step in (1, len(data)):
        parser = CommandParser()
        items = [item for at in range(0, len(data), step) for item in parser.feed(data[at : at + step])]
        assert codes(items) == [int(ErrorCode.BLOCK_DATA)], step
        assert parser.draining and parser.discard_partial() is None
        assert codes(parser.feed(b"*IDN?\n")) == ["*IDN?"]


def test_parser_refuses_a_block_not_followed_by_the_line_end_and_drains() -> None:
    data = b"X #14abcdEXTRA\nPULS:SET 0,0,2.5,1.2,1e-6\n"
    assert codes(feed_whole(data)) == [-160]
    assert codes(feed_bytewise(data)) == [-160]


def test_discard_partial_drops_an_unfinished_line() -> None:
    parser = CommandParser()
    parser.feed(b"PULS:SET 0,0,2")
    error = parser.discard_partial()
    assert error is not None and error.code == ErrorCode.BLOCK_DATA
    assert not parser.has_partial
    # The fragment that arrives later is a command of its own, never glued to the discarded part.
    assert codes(parser.feed(b",1.2,1e-6\n*RST\n")) == [",1.2,1E-6", "*RST"]


def test_discard_partial_drops_an_unfinished_block_and_serves_the_next_command() -> None:
    parser = CommandParser()
    assert parser.feed(b"VMM? 0,0,2,1,1,#18\n#") == []
    assert parser.discard_partial() is not None
    assert parser.feed(b"*IDN?\n") == [Command("*IDN?", ())]


def test_discard_partial_drops_an_overlong_line_being_skipped() -> None:
    parser = CommandParser()
    [overrun] = parser.feed(b"A" * 5000)
    assert isinstance(overrun, ParseError) and overrun.code == ErrorCode.INPUT_OVERRUN
    assert parser.has_partial
    assert parser.discard_partial() is None  # the line was answered already: no second reply
    assert parser.feed(b"*RST\n") == [Command("*RST", ())]


def test_discard_partial_with_nothing_pending_is_silent() -> None:
    parser = CommandParser()
    assert parser.discard_partial() is None
    parser.feed(b"*RST\n")
    assert parser.discard_partial() is None


# ----------------------------------------------------------------------------- frames


def frame_by_hand(seq: int, body: bytes) -> bytes:
    """A frame as docs/wire-protocol.md spells it, built without the codec under test."""
    crc = zlib.crc32(b"%d,%d," % (seq, len(body)) + body)
    return b"!%d,%d,%08x\n" % (seq, len(body), crc) + body


def split_frame(frame: bytes) -> tuple[bytes, bytes]:
    """A frame's header line (with its line end) and what follows it, as a receiver sees them."""
    end = frame.find(b"\n")
    return (frame, b"") if end < 0 else (frame[: end + 1], frame[end + 1 :])


# The example of docs/wire-protocol.md, byte for byte.
DOCUMENTED_FRAMES = [
    (1, b"PULS:SET 0,0,2.5,1.2,1e-06\n", b"!1,27,c4c0d9c8\n"),
    (2, b"SYST:DONE? 1\n", b"!2,13,3cdc3502\n"),
    (2, b"1\n", b"!2,2,b1bca402\n"),
    (1, b"OK\n", b"!1,3,67edd328\n"),
]
BLOCK_PUNCTUATION = b"\n!\n!" + b"!\r\n#"  # two float32 values made of framing punctuation
FRAMED_VMM = b"VMM? 0,0,1,1,2,#18" + BLOCK_PUNCTUATION + b"\n"
FRAME_BODIES = [
    b"OK\n", b"0.000412\n", b"MEMHIL,EMU-1T1R,SN-0001,0.1.0\n", b'ERR -160,"frame checksum mismatch"\n',
    codec.encode_block_reply(np.arange(6.0)), codec.encode_block_reply(np.zeros(0)), FRAMED_VMM, b"", b"!",
]  # fmt: skip


@pytest.mark.parametrize(("seq", "body", "header"), DOCUMENTED_FRAMES)
def test_encode_frame_gives_the_documented_bytes(seq: int, body: bytes, header: bytes) -> None:
    assert codec.encode_frame(seq, body) == header + body == frame_by_hand(seq, body)


@pytest.mark.parametrize("body", FRAME_BODIES, ids=range(len(FRAME_BODIES)))
@pytest.mark.parametrize("seq", [0, 1, 9, 10, 4_294_967_296, 9_999_999_999, 10**10, codec.MAX_SEQ])
def test_frame_round_trip(seq: int, body: bytes) -> None:
    frame = codec.encode_frame(seq, body)
    assert frame == frame_by_hand(seq, body)
    line, rest = split_frame(frame)
    header = codec.parse_frame_header(line)
    assert header == codec.FrameHeader(seq, len(body), zlib.crc32(b"%d,%d," % (seq, len(body)) + body))
    assert rest == body
    assert header.checks(body)
    assert codec.unframe(frame) == body


@given(st.integers(0, codec.MAX_SEQ), st.binary(max_size=300))
@settings(max_examples=200)
def test_any_body_survives_the_frame_intact(seq: int, body: bytes) -> None:
    line, rest = split_frame(codec.encode_frame(seq, body))
    header = codec.parse_frame_header(line)
    assert (header.seq, header.length, rest) == (seq, len(body), body)
    assert header.checks(rest)


@pytest.mark.parametrize("seq", [10**10, codec.MAX_SEQ + 1, 10**30, -1])
def test_encode_frame_makes_only_frames_parse_frame_header_reads(seq: int) -> None:
    """A number the header cannot carry is refused when the frame is made, not when it arrives."""
    try:
        frame = codec.encode_frame(seq, b"OK\n")
    except ValueError:
        assert not 0 <= seq <= codec.MAX_SEQ
        return
    assert codec.parse_frame_header(split_frame(frame)[0]).seq == seq


def test_parse_frame_header_accepts_crlf() -> None:
    header = codec.parse_frame_header(b"!1,27,c4c0d9c8\r\n")
    assert header == codec.FrameHeader(1, 27, 0xC4C0D9C8)
    assert header.checks(b"PULS:SET 0,0,2.5,1.2,1e-06\n")


def test_the_checksum_covers_sequence_number_length_and_body() -> None:
    body = b"READ? 1,2,0.2\n"
    header = codec.parse_frame_header(split_frame(codec.encode_frame(12, body))[0])
    assert header.checks(body)
    assert not codec.FrameHeader(13, header.length, header.crc).checks(body)  # another number
    assert not header.checks(body[:-1])  # another length (and body)
    assert not header.checks(body.replace(b"1,2", b"2,1"))  # the same bytes in another order
    assert codec.frame_checksum(12, body) != zlib.crc32(body)  # not the body's CRC alone


def damaged_copies(frame: bytes) -> Iterator[tuple[int, bytes]]:
    """Every copy of ``frame`` with exactly one byte changed, to each of the 255 other values."""
    for at in range(len(frame)):
        for value in range(256):
            if value != frame[at]:
                yield at, frame[:at] + bytes([value]) + frame[at + 1 :]


SMALL_FRAME = codec.encode_frame(12, b"READ? 1,2,0.2\n")


def test_a_frame_damaged_in_any_one_byte_fails_its_header_or_its_checksum() -> None:
    """Exhaustive: every byte position of a small frame, header and body, every other value.

    The receiver reads the header line, then the number of bytes the header declares (a longer
    declared length would make it wait for bytes that are not part of this frame).
    """
    accepted = []
    for at, damaged in damaged_copies(SMALL_FRAME):
        line, rest = split_frame(damaged)
        try:
            header = codec.parse_frame_header(line)
        except ValueError:
            continue
        if header.length <= len(rest) and header.checks(rest[: header.length]):
            accepted.append((at, damaged))
    assert accepted == []


def test_a_frame_whose_length_field_is_damaged_fails_its_check() -> None:
    body = b"READ? 1,2,0.2\n"
    line, _ = split_frame(codec.encode_frame(12, body))
    for digit in b"0123456789":
        damaged = line.replace(b",14,", b",1" + bytes([digit]) + b",")
        if damaged == line:
            continue
        header = codec.parse_frame_header(damaged)
        assert header.length != len(body)
        assert not header.checks(body), f"{damaged!r} passes its check with the {len(body)}-byte body"


@pytest.mark.parametrize(
    "line",
    [b"!a,5,0123abcd\n", b"!1,b,0123abcd\n", b"!1,5,0123ABCD\n", b"!1,5,0123abcg\n", b"!1,5,0123abc\n",
     b"!1,5,0123abcde\n", b"!1,5\n", b"!1,,0123abcd\n", b"!,5,0123abcd\n", b"!1,5,\n", b"!\n", b"!1,5,0123abcd",
     b"1,5,0123abcd\n", b"!-1,5,0123abcd\n", b"!+1,5,0123abcd\n", b"! 1,5,0123abcd\n", b"!1, 5,0123abcd\n",
     b"!1,5,0123abcd,\n", b"!1,5,0123abcd \n", b"!%d,5,0123abcd\n" % (codec.MAX_SEQ + 1), b"!1,12345678901,0123abcd\n",
     b"!1,5,0123abcd\nX", b"!1\xb9,5,0123abcd\n", b"!1,5,0123abcd\r\r\n"],
    ids=["seq-letter", "length-letter", "uppercase-hex", "non-hex", "seven-hex", "nine-hex", "no-crc",
         "empty-length", "empty-seq", "empty-crc", "bare-mark", "no-line-end", "no-mark", "negative-seq",
         "plus-sign", "space-after-mark", "space-in-fields", "trailing-comma", "trailing-space", "seq-over-the-limit",
         "eleven-digit-length", "bytes-after-line-end", "superscript-digit", "two-cr"],
)  # fmt: skip
def test_parse_frame_header_refuses_malformed_headers(line: bytes) -> None:
    with pytest.raises(ValueError):
        codec.parse_frame_header(line)


def test_parse_frame_header_refuses_a_length_over_the_frame_limit() -> None:
    assert codec.MAX_FRAME_BYTES == 16 * 1024 * 1024 + 4096 + 64  # a 16 MiB block, a command line and 64 bytes
    assert codec.parse_frame_header(b"!1,%d,0123abcd\n" % codec.MAX_FRAME_BYTES).length == codec.MAX_FRAME_BYTES
    with pytest.raises(ValueError, match="limit"):
        codec.parse_frame_header(b"!1,%d,0123abcd\n" % (codec.MAX_FRAME_BYTES + 1))
    with pytest.raises(ValueError, match="limit"):
        codec.parse_frame_header(b"!1,9999999999,0123abcd\n")


def test_unframe() -> None:
    assert codec.unframe(codec.encode_frame(3, b"OK\n")) == b"OK\n"
    block = codec.encode_block_reply(np.frombuffer(BLOCK_PUNCTUATION, "<f4"))
    assert codec.unframe(codec.encode_frame(4, block)) == block  # line ends inside the body stay
    assert codec.unframe(codec.encode_frame(5, b"")) == b""
    for plain in (b"OK\n", b"0.5\n", b'ERR -113,"x"\n', block, b""):
        assert codec.unframe(plain) == plain  # plain-mode bytes as they are


@pytest.mark.parametrize(
    ("data", "expected"),
    [(b"OK\n", codec.Reply("ok")), (b"OK\r\n", codec.Reply("ok")), (b"0.000412\n", codec.Reply("value", "0.000412")),
     (b"128,64\n", codec.Reply("value", "128,64")), (b"\n", codec.Reply("value", "")),
     (b'ERR -221,"command 3 is older"\n', codec.Reply("error", "command 3 is older", code=-221)),
     (b"#18" + BLOCK_PUNCTUATION + b"\n", codec.Reply("block", payload=BLOCK_PUNCTUATION)),
     (b"#14abcd\r\n", codec.Reply("block", payload=b"abcd")), (b"#10\n", codec.Reply("block"))],
    ids=["ok", "ok-crlf", "value", "fields", "empty-value", "error", "block", "block-crlf", "empty-block"],
)  # fmt: skip
def test_parse_reply_of_each_kind(data: bytes, expected: codec.Reply) -> None:
    assert codec.parse_reply(data) == expected


@pytest.mark.parametrize(
    "data",
    [b"", b"OK", b"0.5", b"OK\nOK\n", b"1\n2\n", b"OK\nX", b"#14abcd\nOK\n", b"#14abcd\n\n", b"#18abcd\n",
     b"#14abc", b"#14abcd", b"#14abcdX", b"#3", b"#0\n", b"#x4abcd\n", b"#2a4abcd\n"],
    ids=["empty", "ok-no-line-end", "value-no-line-end", "two-replies", "two-values", "trailing-byte",
         "block-then-reply", "block-then-empty-line", "truncated-block", "short-payload", "no-line-end-after-block",
         "junk-after-block", "truncated-header", "zero-digit-count", "letter-digit-count", "letter-in-length"],
)  # fmt: skip
def test_parse_reply_refuses_trailing_bytes_and_truncated_replies(data: bytes) -> None:
    with pytest.raises(ValueError):
        codec.parse_reply(data)


# ----------------------------------------------------------------------------- the parser, framed

PULSE_LINE = b"PULS:SET 0,0,2.5,1.2,1e-06\n"
PULSE = Command("PULS:SET", ("0", "0", "2.5", "1.2", "1e-06"))
VMM_IN_FRAME = Command("VMM?", ("0", "0", "1", "1", "2"), BLOCK_PUNCTUATION)


def feed_every_split(data: bytes) -> list[list[Command | ParseError | Framed]]:
    """What the parser makes of ``data`` fed whole, byte by byte, and cut in two at every boundary."""
    return [feed_whole(data), feed_bytewise(data), *(feed_in_pieces(data, [cut]) for cut in range(1, len(data)))]


def framed_codes(items: list[Command | ParseError | Framed]) -> list[object]:
    """Like :func:`codes`, with a framed item as (seq, its header or error code, intact)."""
    out: list[object] = []
    for item in items:
        if isinstance(item, Framed):
            inner = item.item.header if isinstance(item.item, Command) else int(item.item.code)
            out.append((item.seq, inner, item.intact))
        else:
            out.append(item.header if isinstance(item, Command) else int(item.code))
    return out


def test_parser_yields_one_framed_command_whatever_the_split() -> None:
    frame = codec.encode_frame(7, PULSE_LINE)
    for split, items in enumerate(feed_every_split(frame)):
        assert items == [Framed(7, PULSE)], f"split {split}"


def test_parser_keeps_a_partial_frame_until_its_body_is_complete() -> None:
    frame = codec.encode_frame(7, PULSE_LINE)
    parser = CommandParser()
    assert parser.feed(frame[:-1]) == []
    assert parser.has_partial
    assert parser.feed(frame[-1:]) == [Framed(7, PULSE)]
    assert not parser.has_partial


def test_parser_takes_a_frame_with_a_binary_block_holding_line_ends_and_marks() -> None:
    frame = codec.encode_frame(3, FRAMED_VMM)
    assert frame.count(b"\n") == 5 and frame.count(b"!") == 4  # the body holds the framing punctuation
    for split, items in enumerate(feed_every_split(frame + b"*OPC?\n")):
        assert items == [Framed(3, VMM_IN_FRAME), Command("*OPC?", ())], f"split {split}"


INTERLEAVED = (
    b"*IDN?\n" + codec.encode_frame(1, b"READ? 3,7,0.2\n") + b"*OPC?\n" + codec.encode_frame(2, FRAMED_VMM)
    + codec.encode_frame(3, PULSE_LINE) + b"SYST:ARR?\r\n" + codec.encode_frame(4, b"*RST\r\n")
)  # fmt: skip
INTERLEAVED_ITEMS = [
    Command("*IDN?", ()), Framed(1, Command("READ?", ("3", "7", "0.2"))), Command("*OPC?", ()),
    Framed(2, VMM_IN_FRAME), Framed(3, PULSE), Command("SYST:ARR?", ()), Framed(4, Command("*RST", ())),
]  # fmt: skip


def test_parser_takes_plain_and_framed_commands_interleaved() -> None:
    for split, items in enumerate(feed_every_split(INTERLEAVED)):
        assert items == INTERLEAVED_ITEMS, f"split {split}"


@given(st.lists(st.integers(min_value=1, max_value=len(INTERLEAVED) - 1), max_size=16))
@settings(max_examples=100)
def test_parser_takes_interleaved_commands_for_random_chunking(cuts: list[int]) -> None:
    assert feed_in_pieces(INTERLEAVED, cuts) == INTERLEAVED_ITEMS


def damage(frame: bytes, at: int) -> bytes:
    return frame[:at] + bytes([frame[at] ^ 0x01]) + frame[at + 1 :]


def test_a_damaged_frame_is_refused_as_damaged_and_the_next_command_is_served() -> None:
    frame = codec.encode_frame(5, PULSE_LINE)
    damaged = damage(frame, len(frame) - 3)  # a digit of the width
    for split, items in enumerate(feed_every_split(damaged + b"*OPC?\n")):
        assert framed_codes(items) == [(5, -160, False), "*OPC?"], f"split {split}"
        assert "checksum" in items[0].item.message  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "body",
    [b"*RST\n*OPC?\n", b"*RST\n*", b"*RST", b"", b"VMM? 0,0,1,1,1,#18abc\n", b"PULS:SET 0,0", b"#14abcd\n\n",
     codec.encode_frame(9, b"*RST\n"), codec.encode_frame(9, b"*RST\n")[:-1]],
    ids=["two-commands", "command-and-a-half", "no-line-end", "empty", "short-block", "partial-line",
         "block-and-empty-line", "nested-frame", "partial-nested-frame"],
)  # fmt: skip
def test_a_frame_must_hold_exactly_one_whole_command(body: bytes) -> None:
    frame = codec.encode_frame(6, body)
    for split, items in enumerate(feed_every_split(frame + b"*OPC?\n")):
        assert framed_codes(items) == [(6, -102, True), "*OPC?"], f"split {split}"


def test_a_frame_holding_a_malformed_command_carries_its_error() -> None:
    items = feed_whole(codec.encode_frame(2, b"READ? 1,,2\n") + codec.encode_frame(3, b"X" * 5000 + b"\n"))
    assert framed_codes(items) == [(2, -102, True), (3, -363, True)]


def test_a_frame_header_without_a_line_end_is_refused_and_input_drained_until_quiet() -> None:
    data = b"!" + b"9" * (codec.MAX_FRAME_HEADER_BYTES + 500) + b"\nPULS:SET 0,0,2,1,1e-6\n*OPC?\n"
    for split, items in enumerate([feed_whole(data), feed_bytewise(data), feed_in_pieces(data, [10, 70, 300])]):
        assert framed_codes(items) == [(0, -160, False)], f"split {split}"  # one refusal, numbered 0


def test_a_frame_header_gets_no_more_than_its_limit_to_end() -> None:
    parser = CommandParser()
    assert parser.feed(b"!" + b"1" * (codec.MAX_FRAME_HEADER_BYTES - 2)) == []  # may still end
    assert framed_codes(parser.feed(b"1" * 8)) == [(0, -160, False)]  # past the limit without a line end
    assert parser.feed(b"1" * 100 + b"\n*RST\n") == []  # drained: one error for one header
    assert parser.discard_partial() is None
    assert framed_codes(parser.feed(b"*RST\n")) == ["*RST"]


@pytest.mark.parametrize(
    "header",
    [b"!x,5,0123abcd\n", b"!1,5,0123ABCD\n", b"!\n", b"!1,%d,0123abcd\n" % (codec.MAX_FRAME_BYTES + 1),
     b"!1x,19,00000000\n"],
    ids=["letter", "uppercase-hex", "bare-mark", "over-the-limit", "issue-10"],
)  # fmt: skip
def test_a_malformed_frame_header_refuses_its_body_and_serves_the_next_line(header: bytes) -> None:
    """Regression (issue 10): the body of a frame whose header is damaged ran as a plain command."""
    for body in (b"DAC:VOLT ROW,3,0.4\n", b"VMM? 0,0,1,1,1,#14\n\n\n\n\n"):
        for split, items in enumerate(feed_every_split(header + body + b"*OPC?\n")):
            assert framed_codes(items) == [(0, -160, False), "*OPC?"], f"split {split}"


def test_a_malformed_frame_header_whose_body_never_comes_is_answered_when_the_link_is_quiet() -> None:
    parser = CommandParser()
    assert parser.feed(b"!1x,19,00000000\n") == []
    assert framed_codes([parser.discard_partial()]) == [(0, -160, False)]  # type: ignore[list-item]


def test_discard_partial_mid_frame_is_the_block_data_error() -> None:
    frame = codec.encode_frame(8, FRAMED_VMM)
    for cut in (1, 5, frame.index(b"\n") + 1, len(frame) - 1):
        parser = CommandParser()
        assert parser.feed(frame[:cut]) == []
        assert parser.has_partial
        error = parser.discard_partial()
        assert error is not None and error.code == ErrorCode.BLOCK_DATA, f"cut at {cut}"
        assert not parser.has_partial
        assert parser.feed(codec.encode_frame(9, b"*IDN?\n")) == [Framed(9, Command("*IDN?", ()))]


def test_a_frame_damaged_in_any_one_byte_never_comes_out_intact() -> None:
    """Exhaustive over the byte positions of a small frame (a few values each): its command never comes out as an
    intact frame, a damaged body never comes out at all, and the parser serves the next command.

    (A frame whose header cannot be read leaves its body to be read as plain input: the firmware refuses a
    plain command that must not run twice on a framed link.)"""
    frame = codec.encode_frame(12, b"READ? 1,2,0.2\n")
    header_end = frame.index(b"\n") + 1
    in_frame, plain = [], []
    for at in range(len(frame)):
        for value in (frame[at] ^ 0x01, frame[at] ^ 0x20, 0x00, ord("\n"), ord("!")):
            damaged = frame[:at] + bytes([value]) + frame[at + 1 :]
            if damaged == frame:
                continue
            parser = CommandParser()
            items = parser.feed(damaged + b"*OPC?\n")
            parser.discard_partial()
            items += parser.feed(b"*IDN?\n")
            assert items[-1] == Command("*IDN?", ())
            if any(isinstance(i, Framed) and i.intact and i.item == Command("READ?", ("1", "2", "0.2")) for i in items):
                in_frame.append(damaged)
            if at >= header_end and any(isinstance(i, Command) and i.header == "READ?" for i in items):
                plain.append(damaged)
    assert in_frame == [] and plain == []
