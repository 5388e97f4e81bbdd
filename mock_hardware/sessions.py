"""What framed mode remembers of the hosts' sessions (docs/wire-protocol.md, "Framed mode").

The board keeps the replies of the last few commands each session ran that must not run twice
(pulses, sweeps, waits), by sequence number, with a checksum of the command each answered, so that
one sent again is answered from its kept reply instead of being run again, and a number reused
for another command is refused. Other commands are safe to run again: the host sends them again
under a new number, and their replies need no keeping.

Up to :data:`SESSIONS_KEPT` sessions are remembered, by token; taking up another one beyond that
forgets the one used least recently.
"""

from __future__ import annotations

from collections import OrderedDict

from drivers.codec import crc32

REPLIES_KEPT = 8  # per session: the host has one such command in flight
SESSIONS_KEPT = 4  # sessions remembered at once (a host that reconnects takes its own up again)


class FramedSession:
    """The sequence numbers one session ran, and the latest replies of those that must not run twice."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.last_seq = 0
        """the highest number run (not refused) in this session"""
        self._replies: OrderedDict[int, tuple[int, bytes]] = OrderedDict()  # seq -> (crc of the command, reply)
        self._dropped_through = 0  # the highest number whose reply is no longer kept

    def kept(self, seq: int) -> bytes | None:
        """The reply of command ``seq`` if it ran and its reply is still kept."""
        entry = self._replies.get(seq)
        return entry[1] if entry is not None else None

    def same_command(self, seq: int, command: bytes | memoryview) -> bool:
        """Whether ``command`` is the one whose reply is kept under ``seq``."""
        entry = self._replies.get(seq)
        return entry is not None and entry[0] == crc32(command)

    def forgotten(self, seq: int) -> bool:
        """Whether ``seq`` may have run but its reply is gone: every kept kind of command run above
        the highest number whose reply was dropped is kept, so only a number at or below it is unknown."""
        return seq <= self._dropped_through

    def record(self, seq: int, command: bytes | memoryview, reply: bytes, keep: bool) -> None:
        """Command ``seq`` ran and answered ``reply``; kept if the command must not run twice."""
        self.last_seq = max(self.last_seq, seq)
        if not keep:
            return
        self._replies[seq] = (crc32(command), reply)
        while len(self._replies) > REPLIES_KEPT:
            dropped, _ = self._replies.popitem(last=False)
            self._dropped_through = max(self._dropped_through, dropped)


class SessionStore:
    """The sessions a board remembers, by token, the least recently taken up forgotten first."""

    def __init__(self, capacity: int = SESSIONS_KEPT) -> None:
        self.capacity = capacity
        self._sessions: OrderedDict[str, FramedSession] = OrderedDict()

    def take_up(self, token: str) -> FramedSession:
        """The session ``token`` names, new if the board does not remember it."""
        session = self._sessions.pop(token, None) or FramedSession(token)
        self._sessions[token] = session
        while len(self._sessions) > self.capacity:
            self._sessions.popitem(last=False)
        return session

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, token: object) -> bool:
        return token in self._sessions
