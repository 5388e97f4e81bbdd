"""A scripted, recording Transport: the board's side of a transcript, in the style of PyMeasure's
``expected_protocol``. No emulator: every command the driver sends must be the next one in the
script, byte for byte, and the scripted reply is what the driver then reads.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import numpy.typing as npt

from drivers.errors import LinkTimeout
from drivers.transports.base import Transport

ANY_COMMAND = None
IDENTITY = b"MEMHIL,EMU-1T1R,SN-0001,0.1.0\n"
FIRMWARE_LIMITS = {
    "VROW": (-4.0, 4.0), "VCOL": (-4.0, 4.0), "VGATE": (0.0, 5.5),
    "VREAD": (-0.5, 0.5), "WIDTH": (1e-8, 1e-3), "ICOL": (-0.05, 0.05),
}  # fmt: skip
TIA_GAINS = (1e2, 1e3, 1e4, 1e5, 1e6)


def block_reply(values: npt.ArrayLike) -> bytes:
    """A reply block built by hand: ``#<n><len>`` + little-endian float32 + ``\\n``."""
    payload = np.ascontiguousarray(values, dtype="<f4").tobytes()
    digits = str(len(payload)).encode()
    return b"#" + str(len(digits)).encode() + digits + payload + b"\n"


DAC_RANGES = {"ROW": (-5.0, 5.0), "COL": (-5.0, 5.0), "GATE": (0.0, 6.0)}


def handshake(rows: int = 4, cols: int = 3, version: str = "1.2") -> list[tuple[bytes, bytes]]:
    """What a Board sends on connect, and a firmware's answers (a 1.2 board's by default: plain float32
    blocks; a 1.3 board is asked its converter scales, for the compact encodings)."""
    script = [(b"*IDN?\n", IDENTITY), (b"SYST:VERS?\n", version.encode() + b"\n"),
              (b"SYST:ARR?\n", f"{rows},{cols}\n".encode())]  # fmt: skip
    for name, (low, high) in FIRMWARE_LIMITS.items():
        script.append((f"SYST:LIM? {name}\n".encode(), f"{low!r},{high!r}\n".encode()))
    script.append((b"SYST:VGRE?\n", b"5.0\n"))
    script.append((b"TIA:GAIN?\n", ",".join(repr(g) for g in TIA_GAINS).encode() + b"\n"))
    if version >= "1.3":
        script += [(f"DAC:RANG? {line}\n".encode(), f"{low!r},{high!r}\n".encode())
                   for line, (low, high) in DAC_RANGES.items()]  # fmt: skip
        script += [(b"DAC:RES?\n", b"16\n"), (b"ADC:RES?\n", b"14\n"), (b"ADC:RANG?\n", b"-2.5,2.5\n")]
    return script


class ScriptedTransport(Transport):
    """Checks each write against the script, records it, and queues the scripted reply."""

    def __init__(self, script: list[tuple[bytes | None, bytes]], resource: str = "FAKE::BOARD") -> None:
        self.resource = resource
        self.timeout = 1.0
        self.script: deque[tuple[bytes | None, bytes]] = deque(script)
        self.written: list[bytes] = []
        self.inbox = bytearray()
        self.closed = False
        self.interrupt_next_read = False
        self.discarded = 0

    def expect(self, command: bytes | None, reply: bytes) -> None:
        """Script one more exchange; ``command=None`` accepts any command."""
        self.script.append((command, reply))

    @property
    def sent(self) -> bytes:
        return b"".join(self.written)

    def write(self, data: bytes) -> None:
        assert not self.closed, f"write of {data!r} after close"
        self.written.append(data)
        assert self.script, f"the driver sent {data!r} but the script expected nothing more"
        expected, reply = self.script.popleft()
        assert expected is ANY_COMMAND or data == expected, f"sent {data!r}, the script expected {expected!r}"
        self.inbox += reply

    def _take(self, count: int) -> bytes:
        if self.interrupt_next_read:
            self.interrupt_next_read = False
            raise KeyboardInterrupt
        if len(self.inbox) < count:
            raise LinkTimeout(self.resource, f"scripted board has {len(self.inbox)} bytes, the driver wants {count}")
        data = bytes(self.inbox[:count])
        del self.inbox[:count]
        return data

    def read_exact(self, count: int) -> bytes:
        return self._take(count)

    def read_line(self) -> bytes:
        end = self.inbox.find(b"\n")
        return self._take(end + 1 if end >= 0 else len(self.inbox) + 1)

    def discard_input(self, quiet: float) -> int:
        dropped = len(self.inbox)
        self.inbox.clear()
        self.discarded += dropped
        return dropped

    def close(self) -> None:
        self.closed = True

