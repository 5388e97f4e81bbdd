"""A bounded fuzz of the firmware interpreter: 10^5 mutated inputs, seeded and repeatable.

Every input is a valid command mutated at the byte level (flips, cuts, insertions, duplicated or
huge numbers, bogus block headers). The firmware must answer, never raise, never wedge, and never
change a cell on input it answered only with errors.
"""

from __future__ import annotations

import numpy as np

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
