"""The wire codec: blocks, command lines, replies, and the firmware's incremental framing."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import codec
from drivers.codec import Command, CommandParser, ErrorCode, ParseError

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


def test_parser_serves_commands_after_an_overlong_line_with_a_late_block() -> None:
    data = b"A" * 5000 + b"#15hello\n*IDN?\n"
    assert codes(feed_bytewise(data)) == [-363, "*IDN?"]
    assert codes(feed_whole(data)) == [-363, "*IDN?"]


def test_parser_refuses_an_oversized_declared_block_and_resyncs() -> None:
    data = b"VMM? 0,0,1,1,1,#816777220\n*IDN?\n"
    assert codes(feed_whole(data)) == [int(ErrorCode.TOO_MUCH_DATA), "*IDN?"]
    assert codes(feed_bytewise(data)) == [-223, "*IDN?"]


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
def test_parser_refuses_a_malformed_block_header_and_resyncs(header: bytes) -> None:
    data = b"VMM? 0,0,1,1,1," + header + b"\n*IDN?\n"
    assert codes(feed_whole(data)) == [int(ErrorCode.BLOCK_DATA), "*IDN?"]
    assert codes(feed_bytewise(data)) == [-160, "*IDN?"]


def test_parser_refuses_a_block_not_followed_by_the_line_end() -> None:
    data = b"X #14abcdEXTRA\n*IDN?\n"
    assert codes(feed_whole(data)) == [-160, "*IDN?"]
    assert codes(feed_bytewise(data)) == [-160, "*IDN?"]


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
