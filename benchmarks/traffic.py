"""Counting what crosses the link: the bytes and commands of an operation, measured at the transport."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from drivers import Board
from drivers.transports.base import PassThrough, Transport


@dataclass
class Traffic:
    """What one operation moved over the link."""

    sent: int = 0
    """bytes written to the board"""
    received: int = 0
    """bytes read back"""
    round_trips: int = 0
    """commands written"""

    def per_operation(self, operations: int) -> dict[str, float]:
        """The mean over ``operations`` operations that moved this much between them."""
        return {name: value / operations for name, value in asdict(self).items()}


class CountingTransport(PassThrough):
    """Passes everything to ``inner`` and counts the bytes each way."""

    def __init__(self, inner: Transport, traffic: Traffic) -> None:
        super().__init__(inner)
        self.traffic = traffic

    def write(self, data: bytes) -> None:
        self.traffic.sent += len(data)
        self.traffic.round_trips += 1
        self.inner.write(data)

    def read_exact(self, count: int) -> bytes:
        data = self.inner.read_exact(count)
        self.traffic.received += len(data)
        return data

    def read_line(self) -> bytes:
        data = self.inner.read_line()
        self.traffic.received += len(data)
        return data


def count_traffic(board: Board, operation: Callable[[], object]) -> Traffic:
    """Run ``operation`` once with the board's transport wrapped in a byte counter."""
    traffic = Traffic()
    inner = board.link.transport
    board.link.transport = CountingTransport(inner, traffic)
    try:
        operation()
    finally:
        board.link.transport = inner
    return traffic
