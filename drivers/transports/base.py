"""The small interface every transport implements."""

from __future__ import annotations

from abc import ABC, abstractmethod


class Transport(ABC):
    """A byte stream to one board.

    ``timeout`` is the longest silence tolerated while waiting for bytes, in seconds; a transport
    raises :class:`~drivers.errors.LinkTimeout` past it and :class:`~drivers.errors.LinkError`
    when the link fails, both naming ``resource``.
    """

    resource: str
    timeout: float

    @abstractmethod
    def write(self, data: bytes) -> None: ...

    @abstractmethod
    def read_exact(self, count: int) -> bytes:
        """Exactly ``count`` bytes."""

    @abstractmethod
    def read_line(self) -> bytes:
        """Bytes up to and including the next ``\\n``."""

    @abstractmethod
    def discard_input(self, quiet: float) -> int:
        """Throw away whatever arrives until the link has been silent for ``quiet`` s; bytes dropped."""

    @abstractmethod
    def close(self) -> None: ...
