"""Link and firmware faults the emulated board can inject, seeded, to prove the host survives them.

A :class:`FaultPlan` says how often each fault happens; a :class:`FaultInjector` draws them. The
firmware applies the reply faults to each reply it produces (so they reach the host on every
transport: TCP, pty and in process) and the servers apply the connection faults.
"""

from __future__ import annotations

import numpy as np
from pydantic import ConfigDict, Field

from drivers.config_model import ConfigModel


class FaultPlan(ConfigModel):
    """Probabilities are per command (or per reply); counts are whole numbers, 0 for never."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, description="seed of the fault draws, independent of the device physics")
    drop_reply: float = Field(0.0, ge=0, le=1, description="a command is executed but its reply is lost")
    corrupt_reply: float = Field(0.0, ge=0, le=1, description="one byte of a reply is changed")
    firmware_error: float = Field(0.0, ge=0, le=1, description="a command is refused with ERR -240, not executed")
    delay_reply: float = Field(0.0, ge=0, le=1, description="a reply is held back by delay_seconds (servers)")
    delay_seconds: float = Field(2.0, ge=0, le=60, description="how long a delayed reply is held back, s")
    chunk_size: int = Field(0, ge=0, description="servers send replies in pieces of this many bytes (0: whole)")
    close_after: int = Field(0, ge=0, description="servers close the connection after this many commands")
    close_times: int = Field(0, ge=0, description="how many times close_after strikes (0: on every link)")
    refuse_connections: int = Field(0, ge=0, description="the TCP server refuses this many connections first")

    @property
    def any(self) -> bool:
        return self != FaultPlan(seed=self.seed)


class FaultInjector:
    """Draws the faults of one plan; counts what it injected."""

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan
        self._rng = np.random.default_rng(plan.seed)
        self.injected: dict[str, int] = {"drop_reply": 0, "corrupt_reply": 0, "firmware_error": 0, "delay_reply": 0}

    def _happens(self, name: str, probability: float) -> bool:
        if probability and self._rng.random() < probability:
            self.injected[name] += 1
            return True
        return False

    def refuse_command(self) -> bool:
        """Answer this command with a firmware error instead of executing it."""
        return self._happens("firmware_error", self.plan.firmware_error)

    def reply(self, data: bytes) -> bytes:
        """What of one reply reaches the link: nothing, a corrupted copy, or the reply."""
        if self._happens("drop_reply", self.plan.drop_reply):
            return b""
        if data and self._happens("corrupt_reply", self.plan.corrupt_reply):
            corrupted = bytearray(data)
            at = int(self._rng.integers(len(corrupted)))
            corrupted[at] ^= int(self._rng.integers(1, 256))
            return bytes(corrupted)
        return data

    def delay(self) -> float:
        """Seconds to hold the next reply back (servers)."""
        return self.plan.delay_seconds if self._happens("delay_reply", self.plan.delay_reply) else 0.0
