"""A bounded fuzz of the firmware interpreter: 10^5 mutated inputs, seeded and repeatable.

Every input is a valid command mutated at the byte level (flips, cuts, insertions, duplicated or
huge numbers, bogus block headers). The firmware must answer, never raise, never wedge, and never
change a cell on input it answered only with errors.
"""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers import codec
from mock_hardware.emulator import build_firmware

SEEDS = [
    b"*IDN?", b"*RST", b"SYST:ARR?", b"SYST:LIM? VROW", b"DAC:VOLT ROW,1,0.2", b"DAC:VOLT? GATE,0",
    b"MUX:ROW 2,1", b"ADC:SAMP? 1,1000", b"READ? 1,2,0.2", b"PULS:SET 1,1,2.5,1.2,1e-6",
    b"PULS:RES 2,3,1.8,5,1e-6", b"PULS:FORM 0,0,3.5,1,1e-5", b"MAP? 0,0,4,4,0.2,COND", b"SYST:WAIT 10",
]  # fmt: skip
INPUTS = 100_000


def _block_command(rng: np.random.Generator) -> bytes:
    kind = rng.choice([b"VMM? 0,0,2,2,3,", b"PULS:BATC SET,0,0,2,2,", b"SWEEP? 0,0,1.2,1e-6,4,"])
    values = rng.normal(0, rng.choice([0.1, 3.0, 1e6]), size=int(rng.integers(0, 20))).astype("<f4")
    return bytes(kind) + codec.encode_block(values)


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        op = int(rng.integers(0, 7))
        at = int(rng.integers(0, len(buf) + 1))
        if op == 0 and buf:  # flip a byte
            buf[min(at, len(buf) - 1)] = int(rng.integers(0, 256))
        elif op == 1:  # cut
            del buf[at:]
        elif op == 2:  # insert junk
            buf[at:at] = rng.integers(0, 256, int(rng.integers(1, 8)), dtype=np.uint8).tobytes()
        elif op == 3:  # a number out of any range
            buf[at:at] = rng.choice([b"1e309", b"-0", b"nan", b"99999999999999", b"-1", b"4.0000001"])
        elif op == 4:  # a bogus block header
            buf[at:at] = rng.choice([b"#", b"#0", b"#9999999999", b"#15ab", b"#3100"])
        elif op == 5:  # a separator in the wrong place
            buf[at:at] = rng.choice([b",", b",,", b" ", b"\r", b"\n"])
        else:  # case and duplication
            buf = bytearray(bytes(buf).lower()) if rng.random() < 0.5 else buf + buf
    return bytes(buf)


def test_ten_to_the_fifth_mutated_inputs() -> None:
    rng = np.random.default_rng(20261122)
    firmware = build_firmware("ideal", 0, {"rows": "4", "cols": "4"})
    answered_only_errors = changed_anyway = replies = 0
    for k in range(INPUTS):
        base = _block_command(rng) if rng.random() < 0.2 else SEEDS[int(rng.integers(len(SEEDS)))]
        data = _mutate(base, rng) + b"\n"
        before = firmware.array.conductance
        out = firmware.feed(data) + firmware.link_quiet()  # a truncated command must not wedge it
        lines = [line for line in out.split(b"\n") if line and not line.startswith(b"#")]
        replies += len(lines)
        if lines and all(line.startswith(b"ERR ") for line in lines) and b"#" not in out:
            answered_only_errors += 1
            if not np.array_equal(before, firmware.array.conductance):
                changed_anyway += 1
        if k % 10_000 == 0:  # still serving
            assert firmware.feed(b"*IDN?\n").startswith(b"MEMHIL,")
    assert replies >= INPUTS  # every input got at least one reply
    assert answered_only_errors > INPUTS // 4  # the fuzz really reached the refusal paths
    assert changed_anyway == 0
    assert firmware.feed(b"*IDN?\n").startswith(b"MEMHIL,")


# ----------------------------------------------------------------------------- framed input
#
# The same invariants for framed mode (docs/wire-protocol.md, "Framed mode"): valid frames around valid or
# mutated commands, resent, numbered out of order, then damaged at the byte level. Besides never raising and
# never wedging, every frame the firmware sends must pass its own checksum, a frame it answers as number 0
# must be a refusal, and input answered only with errors must leave every cell as it was.

FRAMED_INPUTS = 20_000
SESSION = b"SYST:FRAM fuzz-session\n"


def parse_output(out: bytes) -> list[tuple[int | None, codec.Reply]]:
    """Every reply the firmware sent, with its frame number (``None``: plain). Fails on anything else."""
    at = 0

    def read_exact(count: int) -> bytes:
        nonlocal at
        assert at + count <= len(out), f"the output ends inside a reply: {out!r}"
        at += count
        return out[at - count : at]

    def read_line() -> bytes:
        end = out.find(b"\n", at)
        assert end >= 0, f"the output ends inside a line: {out!r}"
        return read_exact(end + 1 - at)

    found: list[tuple[int | None, codec.Reply]] = []
    while at < len(out):
        if out[at : at + 1] == codec.FRAME_MARK:
            header = codec.parse_frame_header(read_line())
            body = read_exact(header.length)
            assert header.checks(body), f"the firmware sent a frame that fails its checksum: {out!r}"
            found.append((header.seq, codec.parse_reply(body)))
        else:
            found.append((None, codec.read_reply(read_exact, read_line)))
    return found


def check_framed_output(data: bytes, out: bytes) -> bool:
    """The invariants of one input's output; whether the input was answered only with errors."""
    found = parse_output(out)
    if data:
        assert found, f"{data!r} got no reply"
    for seq, reply in found:
        if seq == 0:  # a damaged frame (-160), or one numbered 0 (-221): nothing ran
            assert reply.kind == "error" and reply.code in (-160, -221), f"frame 0 that is not a refusal: {out!r}"
    return bool(found) and all(reply.kind == "error" for _, reply in found)


def _framed_input(rng: np.random.Generator, next_seq: int, sent: list[bytes]) -> bytes:
    if sent and rng.random() < 0.1:
        return sent[int(rng.integers(len(sent)))]  # a resend, byte for byte
    body = _block_command(rng) if rng.random() < 0.2 else SEEDS[int(rng.integers(len(SEEDS)))]
    if rng.random() < 0.2:
        body = _mutate(body, rng)  # a broken command in a sound frame
    seq = next_seq if rng.random() < 0.8 else int(rng.choice([0, 1, max(1, next_seq - 9), next_seq + 5]))
    frame = codec.encode_frame(seq, body + b"\n")
    if rng.random() < 0.4:
        frame = _mutate(frame, rng)  # damaged on the link
    sent.append(frame)
    del sent[:-20]
    return frame + (b"*OPC?\n" if rng.random() < 0.1 else b"")


def test_framed_inputs_mutated_and_resent() -> None:
    rng = np.random.default_rng(20261123)
    firmware = build_firmware("ideal", 0, {"rows": "4", "cols": "4"})
    assert firmware.feed(SESSION) == b"0\n"
    sent: list[bytes] = []
    answered_only_errors = changed_anyway = damaged = replayed = 0
    for k in range(FRAMED_INPUTS):
        data = _framed_input(rng, k + 1, sent)
        before, replays_before = firmware.array.conductance, firmware.replayed
        out = firmware.feed(data) + firmware.link_quiet()
        damaged += out.startswith(b"!0,")
        replayed += firmware.replayed > replays_before
        if check_framed_output(data, out):
            answered_only_errors += 1
            if not np.array_equal(before, firmware.array.conductance):
                changed_anyway += 1
        if k % 5_000 == 0:
            assert firmware.feed(b"*IDN?\n").startswith(b"MEMHIL,")
    assert answered_only_errors > FRAMED_INPUTS // 5  # the fuzz reached the refusals
    assert damaged > FRAMED_INPUTS // 10 and replayed > FRAMED_INPUTS // 100  # and damaged frames, and replays
    assert firmware.pulses_applied > FRAMED_INPUTS // 50  # and ran commands
    assert changed_anyway == 0
    # Still serving, in both modes, and the session goes on where it was.
    assert firmware.feed(b"*IDN?\n").startswith(b"MEMHIL,")
    last = int(firmware.feed(SESSION))
    out = parse_output(firmware.feed(codec.encode_frame(last + 1, b"*IDN?\n")))
    assert [(seq, reply.text.split(",")[0]) for seq, reply in out] == [(last + 1, "MEMHIL")]


@st.composite
def framed_inputs(draw: st.DrawFn) -> bytes:
    """A frame around a valid command, a block command or random bytes; then maybe damaged."""
    block = st.builds(lambda kind, values: kind + codec.encode_block(np.asarray(values, "<f4")),
                      st.sampled_from([b"VMM? 0,0,2,2,1,", b"PULS:BATC SET,0,0,1,2,", b"SWEEP? 0,0,1.2,1e-6,2,"]),
                      st.lists(st.floats(-5, 5, width=32), max_size=8))  # fmt: skip
    body = draw(st.sampled_from(SEEDS) | block | st.binary(max_size=40)) + b"\n"
    frame = bytearray(codec.encode_frame(draw(st.integers(0, 12) | st.integers(0, 10**10)), body))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(frame)))
        action = draw(st.sampled_from(["replace", "insert", "delete", "truncate", "duplicate"]))
        if action == "replace" and at < len(frame):
            frame[at] = draw(st.integers(0, 255))
        elif action == "insert":
            frame[at:at] = draw(st.binary(min_size=1, max_size=4) | st.sampled_from([b"!", b"\n", b"#", b","]))
        elif action == "delete":
            del frame[at : at + draw(st.integers(1, 4))]
        elif action == "truncate":
            del frame[at:]
        elif action == "duplicate":
            frame.extend(bytes(frame))
    return bytes(frame)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(framed_inputs(), min_size=1, max_size=6), st.booleans(), st.lists(st.integers(0, 2_000), max_size=6))
def test_framed_input_never_breaks_the_firmware(frames: list[bytes], session: bool, cuts: list[int]) -> None:
    firmware = build_firmware("ideal", 0, {"rows": "4", "cols": "4"})
    if session:
        assert firmware.feed(SESSION) == b"0\n"
    data = b"".join(frames)
    before = firmware.array.conductance
    edges = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
    out = b"".join(firmware.feed(data[a:b]) for a, b in itertools.pairwise(edges)) + firmware.link_quiet()
    if check_framed_output(data, out):
        np.testing.assert_array_equal(firmware.array.conductance, before)
    assert firmware.feed(b"*IDN?\n").startswith(b"MEMHIL,")
