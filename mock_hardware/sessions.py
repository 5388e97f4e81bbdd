"""What framed mode remembers of one host's session (docs/wire-protocol.md, "Framed mode").

The board keeps the replies of the last few commands it ran that must not run twice (pulses,
sweeps, waits), by sequence number, so that one sent again is answered from its kept reply
instead of being run again. Other commands are safe to run again: the host sends them again
under a new number, and their replies need no keeping.
"""

from __future__ import annotations

from collections import OrderedDict

REPLIES_KEPT = 8  # the host has one such command in flight


class FramedSession:
    """The sequence numbers one session ran, and their latest replies."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.last_seq = 0
        """the highest number run in this session"""
        self._replies: OrderedDict[int, bytes] = OrderedDict()
        self._dropped_through = 0  # the highest number whose reply is no longer kept

    def kept(self, seq: int) -> bytes | None:
        """The reply of command ``seq`` if it ran and its reply is still kept."""
        return self._replies.get(seq)

    def forgotten(self, seq: int) -> bool:
        """Whether ``seq`` may have run but its reply is gone: every kept kind of command run above
        the highest number whose reply was dropped is kept, so only a number at or below it is unknown."""
        return seq <= self._dropped_through

    def record(self, seq: int, reply: bytes, keep: bool) -> None:
        """Command ``seq`` ran and answered ``reply``, to be kept if the command must not run twice."""
        self.last_seq = max(self.last_seq, seq)
        if not keep:
            return
        self._replies[seq] = reply
        while len(self._replies) > REPLIES_KEPT:
            dropped, _ = self._replies.popitem(last=False)
            self._dropped_through = max(self._dropped_through, dropped)
