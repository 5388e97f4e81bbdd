"""The array's clock: simulated (advanced by operations and waits) or the wall clock."""

from __future__ import annotations

import time
from typing import Literal


class Clock:
    """Seconds since the array was made.

    Simulated: time moves only when told (pulse widths, read durations, per-command latency,
    waits), so an experiment over "hours" runs in seconds and repeats exactly. Wall: time is real
    elapsed time; :meth:`advance` is then a no-op (the real operation already took its time) and
    :meth:`wait` really sleeps.
    """

    def __init__(self, mode: Literal["simulated", "wall"]) -> None:
        self.mode = mode
        self._simulated = 0.0
        self._wall_start = time.monotonic()

    @property
    def now(self) -> float:
        if self.mode == "wall":
            return time.monotonic() - self._wall_start
        return self._simulated

    def advance(self, seconds: float) -> None:
        """Account for an operation that takes ``seconds``."""
        if seconds < 0:
            raise ValueError(f"cannot advance the clock by a negative time ({seconds} s)")
        if self.mode == "simulated":
            self._simulated += seconds

    def wait(self, seconds: float) -> None:
        """Let ``seconds`` pass with the array idle."""
        if seconds < 0:
            raise ValueError(f"cannot wait a negative time ({seconds} s)")
        if self.mode == "wall":
            time.sleep(seconds)
        else:
            self._simulated += seconds
