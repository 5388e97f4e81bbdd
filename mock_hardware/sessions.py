"""What framed mode remembers of one host's session (docs/wire-protocol.md, "Framed mode").

The board keeps the replies of the last few commands it ran, by sequence number, so that a
command sent again is answered from its kept reply instead of being run twice.
"""

from __future__ import annotations

from collections import OrderedDict

REPLIES_KEPT = 8  # the host has one command in flight, and asks about it while it recovers


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
        """Whether ``seq`` may have run but its reply is gone: every number run above the highest
        one whose reply was dropped is kept, so only a number at or below it is unknown."""
        return seq <= self._dropped_through

    def record(self, seq: int, reply: bytes) -> None:
        """Command ``seq`` ran and answered ``reply``."""
        self.last_seq = max(self.last_seq, seq)
        self._replies[seq] = reply
        while len(self._replies) > REPLIES_KEPT:
            dropped, _ = self._replies.popitem(last=False)
            self._dropped_through = max(self._dropped_through, dropped)
