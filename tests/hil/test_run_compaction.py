"""A run file survives SIGKILL at any moment of its writing, and is compressed once closed.

The writer is forked (no interpreter start per kill, so many kills fit in seconds) and writes as a
training run does: a checkpoint rewritten in place into alternating slots and series grown by a
row, flushed, then the attribute that commits the step, flushed. Killed at random moments, the
file must open whole every time. Writing compressed data in a live file fails this test within
its first four kills ("filter returned failure during read", four runs of four):
:mod:`hil.run_compaction` says why.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from multiprocessing.synchronize import Event
from pathlib import Path

import h5py
import numpy as np
import pytest

from hil.storage import RunFile, read_run

KILLS = 40
SEED = 17
GIVE_UP = 60.0  # s for a writer's first step: a safety net against a hang, not a timing assertion


def _write_like_a_training_run(path: Path, seed: int, first_step: Event) -> None:
    rng = np.random.default_rng(seed)
    run = RunFile(path, procedure="train", config={}, flush_interval=0.0, show_progress=False)
    run.require_group("train")
    step = 0
    while True:
        slot = f"state/{'ab'[step % 2]}"
        run.write(f"{slot}/weights", rng.normal(size=(64, 54)))
        run.write(f"{slot}/steps", float(step))
        run.append("journal", np.array([step, rng.normal(), rng.normal()]))
        run.append("g", rng.normal(size=64))
        run.flush()  # the step's data on disk before the attribute that commits it, as training does
        run.set_attrs("train", completed_updates=step)
        run.flush()
        first_step.set()
        step += 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks the writer")
def test_a_run_file_killed_at_any_moment_still_opens(tmp_path: Path) -> None:
    fork = multiprocessing.get_context("fork")
    rng = np.random.default_rng(SEED)
    for kill in range(KILLS):
        path = tmp_path / f"run{kill}.h5"
        first_step = fork.Event()
        writer = fork.Process(target=_write_like_a_training_run, args=(path, kill, first_step))
        writer.start()
        assert first_step.wait(timeout=GIVE_UP)
        time.sleep(rng.uniform(0.0, 0.3))
        assert writer.pid is not None and writer.is_alive()
        os.kill(writer.pid, signal.SIGKILL)
        writer.join()
        run = read_run(path)  # raises on a chunk the kill left undecodable
        done = int(run.attrs["train"]["completed_updates"])
        assert len(run.datasets["journal"]) >= done + 1
        path.unlink()


def test_a_closed_run_file_is_compressed_and_reopening_it_makes_it_plain_again(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    rows = np.random.default_rng(0).random((300, 64)).astype(np.float32).astype(np.float64)
    with RunFile(path, procedure="test", config={"k": 1}, show_progress=False) as run:
        for row in rows[:200]:
            run.append("series/g", row)
        assert run._file["data/series/g"].compression is None  # what a kill would leave: plain
        run.write("map", rows[:64])
        run.set_attrs("map", unit="S")

    def stored(name: str) -> tuple[str | None, tuple[int | None, ...]]:
        with h5py.File(path, "r") as f:
            return f["data"][name].compression, f["data"][name].maxshape

    assert stored("series/g") == ("gzip", (None, 64))  # compressed, and still a series that can grow
    assert stored("map")[0] == "gzip"
    closed = read_run(path)
    np.testing.assert_array_equal(closed.datasets["series/g"], rows[:200])
    assert closed.attrs["map"]["unit"] == "S" and closed.root["status"] == "completed"

    run = RunFile.reopen(path, show_progress=False)
    assert run._file["data/series/g"].compression is None  # safe to grow again
    for row in rows[200:]:
        run.append("series/g", row)
    run.close()
    np.testing.assert_array_equal(read_run(path).datasets["series/g"], rows)
    assert stored("series/g")[0] == "gzip"
    assert not list(tmp_path.glob("*.partial"))


def test_a_failed_compaction_keeps_the_plain_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "run.h5"

    def full_disk(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with RunFile(path, procedure="test", config={}, show_progress=False) as run:
        run.write("map", np.arange(4096.0).reshape(64, 64) + 0.1)
    np.testing.assert_array_equal(read_run(path).datasets["map"], np.arange(4096.0).reshape(64, 64) + 0.1)
    with h5py.File(path, "r") as f:
        assert f["data/map"].compression is None
    assert not list(tmp_path.glob("*.partial"))
