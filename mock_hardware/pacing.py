"""Pacing a link's bytes to the speed of a real one: a UART at a baud rate, or a fixed bytes per second.

The emulator's servers run at memory speed; a lab board behind a 115200-baud UART moves about
11.5 kB/s each way. A :class:`Pacer` per direction hands bytes on no sooner than the link could
have carried them, so a benchmark (or a user rehearsing on the emulator) sees what the link costs.
"""

from __future__ import annotations

import time
from collections.abc import Callable

BITS_PER_SERIAL_BYTE = 10  # 8N1: a start bit, 8 data bits, a stop bit
MIN_WAIT = 0.0005  # s: the shortest sleep worth taking between paced pieces


def bytes_per_second(baud: int | None = None, rate: float | None = None) -> float | None:
    """The link's speed in bytes per second from a baud rate (8N1) or a byte rate; ``None``: unpaced."""
    if baud is not None and rate is not None:
        raise ValueError("give a baud rate or a byte rate, not both")
    if baud is not None:
        if baud <= 0:
            raise ValueError(f"baud rate {baud} must be positive")
        return baud / BITS_PER_SERIAL_BYTE
    if rate is not None and rate <= 0:
        raise ValueError(f"bytes per second {rate:g} must be positive")
    return rate


class Pacer:
    """One direction of a link carrying ``rate`` bytes per second.

    A byte is released only once the link could have finished carrying it: after an idle spell the
    link starts fresh (no saved-up burst), and back-to-back bytes follow each other at ``rate``.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._free_at = 0.0  # when the last byte handed over finished crossing the link
        self._idle = True  # nothing was left waiting at the last call

    def allowed(self, waiting: int) -> int:
        """How many of ``waiting`` bytes may be handed over now (the caller hands them over)."""
        if not waiting:
            return 0
        now = self._clock()
        if self._idle:  # the link was idle: these bytes start crossing now, with nothing saved up
            self._free_at = max(self._free_at, now)
        count = min(waiting, int((now - self._free_at) * self.rate + 1e-6))  # 1e-6: a whole byte despite rounding
        self._free_at += count / self.rate
        self._idle = count == waiting
        return count

    def refund(self, count: int) -> None:
        """``count`` of the bytes allowed were not handed over after all (the OS took fewer)."""
        self._free_at -= count / self.rate

    def wait(self) -> float:
        """Seconds until the next byte may be handed over."""
        return max(MIN_WAIT, self._free_at + 1.0 / self.rate - self._clock())
