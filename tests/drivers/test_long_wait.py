"""Waits of any length: a SYST:WAIT longer than a transport's timeout can express is split."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers import open_board
from drivers.board import MAX_WAIT_CHUNK, wait_chunks
from drivers.lock import LOCK_DIR_ENV
from tests.conftest import EmulatorFactory


def test_a_long_wait_is_split_into_waits_the_transport_can_time() -> None:
    assert wait_chunks(5.0) == [5.0]
    chunks = wait_chunks(1e7)
    assert len(chunks) == 100 and max(chunks) <= MAX_WAIT_CHUNK and sum(chunks) == pytest.approx(1e7)


def test_the_longest_documented_wait_works_over_tcp(
    emulator_process: EmulatorFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path))
    emulator = emulator_process(seed=1, extra=("--rows", "4", "--cols", "4"))
    with open_board(emulator.resource, timeout=5) as board:
        start = board.clock()
        board.idle_for(1e7)  # pyvisa refused the single wait's 1e10 ms reply timeout
        assert board.clock() - start >= 1e7
