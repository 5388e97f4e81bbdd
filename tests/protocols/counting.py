"""A Board wrapper for tests that prove how many round trips a protocol makes."""

from __future__ import annotations

from typing import Any

from drivers import Board


class CountingBoard:
    """Counts the Board calls a protocol makes; per-cell calls are counted apart."""

    def __init__(self, board: Board) -> None:
        self.calls: dict[str, int] = {"read_map": 0, "apply_pulses": 0, "read_cell": 0, "pulse": 0}
        for name in self.calls:
            original = getattr(board, name)
            setattr(board, name, self._counted(name, original))

    def _counted(self, name: str, original: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return original(*args, **kwargs)

        return call

    @property
    def total(self) -> int:
        return sum(self.calls.values())
