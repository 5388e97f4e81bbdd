"""Fixtures shared by the procedure tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from drivers import Board, open_board

OpenBoard = Callable[..., Board]


def boards_of(preset: str) -> Iterator[OpenBoard]:
    """``open_(rows, cols, seed, **params)``: in-process emulated boards of ``preset``, closed at teardown."""
    opened: list[Board] = []

    def open_(rows: int = 32, cols: int = 16, seed: int = 3, **params: object) -> Board:
        query = "".join(f"&{k}={v}" for k, v in params.items())
        board = open_board(f"emulator://?preset={preset}&seed={seed}&rows={rows}&cols={cols}{query}")
        opened.append(board)
        return board

    yield open_
    for board in opened:
        board.close()


@pytest.fixture
def chip() -> Iterator[OpenBoard]:
    """Boards of the Ta/HfO2 array (``umass-ta-hfo2``)."""
    yield from boards_of("umass-ta-hfo2")


@pytest.fixture
def tsinghua() -> Iterator[OpenBoard]:
    """Boards of the TaOx/HfOx array (``tsinghua-taox-hfox``)."""
    yield from boards_of("tsinghua-taox-hfox")
