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


class PassThrough(Transport):
    """Another transport with every call passed on: subclasses watch (count, log) or spoil
    (drop, damage) what goes by, for measurements and tests."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.resource = inner.resource

    @property
    def timeout(self) -> float:
        return self.inner.timeout

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        self.inner.timeout = seconds

    def write(self, data: bytes) -> None:
        self.inner.write(data)

    def read_exact(self, count: int) -> bytes:
        return self.inner.read_exact(count)

    def read_line(self) -> bytes:
        return self.inner.read_line()

    def discard_input(self, quiet: float) -> int:
        return self.inner.discard_input(quiet)

    def close(self) -> None:
        self.inner.close()
