"""The link record: every flush leaves each board's pulse counts and link counters on disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from drivers import open_board
from hil import run_layout as layout
from hil.link_record import record_link
from hil.storage import RunFile, read_run

EMULATOR = "emulator://?preset=ideal&seed=1&rows=8&cols=4"


def recorded(run: RunFile) -> tuple[dict[str, Any], np.ndarray[Any, Any]]:
    """The link record and wear map the file holds."""
    wear = run.read(layout.wear("board0"))
    assert wear is not None
    return run.read_attrs(layout.link("board0")), wear


def test_a_flush_after_pulses_records_them_and_one_after_a_clear_records_them_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A flush that finds nothing new since the last skips the rewrite: what it skipped must be in
    # the file already, and a file whose data was cleared must get its record back at the next flush.
    path = tmp_path / "run.h5"
    with (
        open_board(EMULATOR) as board,
        RunFile(path, procedure="test", config={}, show_progress=False) as run,
        record_link({"board0": board}, run),
    ):
        board.apply_pulses("SET", amplitude=1.0, v_gate=1.0, width=1e-6, mask=np.eye(8, 4, dtype=bool))
        run.flush()
        attrs, wear = recorded(run)
        assert attrs["pulses_applied"] == attrs["session_pulses"] == board.pulses_applied == 4
        np.testing.assert_array_equal(wear[0], np.eye(8, 4))
        writes: list[str] = []
        original = run.write
        monkeypatch.setattr(run, "write", lambda name, *a, **k: (writes.append(name), original(name, *a, **k)))
        run.flush()  # nothing new: nothing written
        assert writes == []
        board.apply_pulses("RESET", amplitude=1.0, v_gate=2.0, width=1e-6, mask=np.eye(8, 4, dtype=bool))
        run.flush()
        assert writes == [layout.wear("board0")]
        attrs, wear = recorded(run)
        assert attrs["pulses_applied"] == 8 and wear[1].sum() == 4
        run.clear()  # (a resumed run that starts over drops everything measured)
        run.flush()
        assert recorded(run)[1].sum() == 8
    closed = read_run(path)
    assert closed.attrs[layout.link("board0")]["pulses_applied"] == 8
    assert closed.datasets[layout.wear("board0")].sum() == 8
