"""SIGKILL at random moments, again and again: every run resumes from its journal and completes.

A run is started as a subprocess against one emulator process (a TCP board that outlives its
clients, as a chip does). A seeded RNG picks a step; once the file's journal reaches it (read
without the writer's lock) the run is killed with SIGKILL, somewhere inside a later step. The file
must then be readable, its journal a gap-free prefix of the steps with every journaled step's data
on disk, and ``--resume`` must continue exactly where the journal ends. That is done ``KILLS``
times; the last resume runs to the end, where every step is journaled exactly once, in order: a
kill lost at most the step in flight (a step is journaled, and flushed, as it completes), and that
step was done again, once.

The give-up deadline is a safety net against a hang, not a timing assertion.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from drivers import open_board
from hil.run_layout import EVALUATIONS, JOURNAL, STATE_SLOTS, pulses_recorded
from hil.storage import RunData, read_run
from protocols.recording import completed_steps
from tests.conftest import REPO_ROOT, EmulatorFactory
from tests.hil.test_training import EMULATOR_ARGS, TINY_TOML, eval_updates, journal_updates

KILLS = 3
SEED = 2026
GIVE_UP = 180.0  # s for one process: a safety net, not a timing assertion
TRAIN_UPDATES, EVAL_EVERY = 600, 100
CYCLES, READ_EVERY = 3000, 7

Poll = Callable[[h5py.File], int]
Check = Callable[[RunData], int]


def steps_on_disk(path: Path, poll: Poll) -> int:
    """Steps the file's journal holds as last flushed, read without the writer's lock (0 if not readable yet)."""
    with contextlib.suppress(OSError, KeyError, RuntimeError, ValueError), h5py.File(path, "r", locking=False) as f:
        return poll(f)
    return 0


def kill_and_resume(
    command: list[str], path: Path, steps: int, poll: Poll, check: Check, resumed_message: Callable[[int], str],
    started: list[subprocess.Popen[bytes]], log_dir: Path,
) -> list[int]:  # fmt: skip
    """Run ``command``, SIGKILL it at a random step and resume it, ``KILLS`` times; then let it finish.

    ``check`` vets the file a kill left and returns the steps its journal holds; the steps journaled
    at each kill are returned.
    """
    rng = np.random.default_rng(SEED)
    argv, done_at_kill = command, []
    for attempt in range(KILLS + 1):
        log_path = log_dir / f"attempt-{attempt}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen([sys.executable, "-u", "-m", "hil.cli", *argv], cwd=REPO_ROOT,
                                       stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        started.append(process)
        if attempt == KILLS:
            assert process.wait(timeout=GIVE_UP) == 0, log_path.read_text()[-3000:]
        else:
            # The k-th kill comes in the k-th of KILLS + 1 stretches of the run, after at least one new step.
            previous = done_at_kill[-1] if done_at_kill else 0
            target = max(previous + 1, int(rng.uniform(attempt, attempt + 1) * steps / (KILLS + 1)))
            give_up = time.monotonic() + GIVE_UP
            while steps_on_disk(path, poll) < target and process.poll() is None and time.monotonic() < give_up:
                time.sleep(0.005)
            assert process.poll() is None, f"ended before step {target}:\n{log_path.read_text()[-3000:]}"
            time.sleep(rng.uniform(0.0, 0.05))  # somewhere inside a later step
            os.kill(process.pid, signal.SIGKILL)
            assert process.wait() == -signal.SIGKILL
            killed = read_run(path)  # whatever the kill interrupted, the file opens
            assert killed.root["status"] == "running"
            assert killed.root.get("resumed", 0) == attempt
            done = check(killed)
            assert previous < done < steps  # nothing journaled was lost; the run was not over
            done_at_kill.append(done)
            argv = [command[0], "--resume", str(path)]
        if attempt:  # the resume continued exactly where the journal of the last kill ended
            assert resumed_message(done_at_kill[attempt - 1]) in log_path.read_text()
    final = read_run(path)
    assert final.root["status"] == "completed"
    assert final.root["resumed"] == KILLS
    return done_at_kill


# ---------------------------------------------------------------------------- training


def test_a_training_run_killed_again_and_again_resumes_and_completes(
    emulator_process: EmulatorFactory, tmp_path: Path, killable: list[subprocess.Popen[bytes]]
) -> None:
    emulator = emulator_process(preset="umass-ta-hfo2", seed=1, extra=EMULATOR_ARGS)
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_TOML)
    path = tmp_path / "train.h5"
    command = ["train", "--board", emulator.resource, "--config", str(config), "--out", str(path),
               "--updates", str(TRAIN_UPDATES), "--eval-every", str(EVAL_EVERY)]  # fmt: skip

    def completed_updates(f: h5py.File) -> int:
        return int(f["data/train"].attrs["completed_updates"])

    def check(killed: RunData) -> int:
        done = int(killed.attrs["train"]["completed_updates"])
        assert journal_updates(killed)[:done] == list(range(done))  # rows past it: the update in flight
        assert len(killed.datasets[JOURNAL]) <= done + 1
        # Everything of the journaled updates is on disk: their evaluations and their checkpoint.
        evaluated = eval_updates(killed) if EVALUATIONS in killed.datasets else []
        assert [u for u in evaluated if u <= done] == list(range(EVAL_EVERY, done + 1, EVAL_EVERY))
        slot = killed.attrs["train"]["state"]
        assert slot == STATE_SLOTS[done % 2]
        assert float(killed.datasets[f"{slot}/optimizer/steps"]) == done
        return done

    resumed = f"resuming {path} after update {{}} of {TRAIN_UPDATES}"
    kill_and_resume(command, path, TRAIN_UPDATES, completed_updates, check, resumed.format, killable, tmp_path)

    final = read_run(path)
    assert journal_updates(final) == list(range(TRAIN_UPDATES))
    assert eval_updates(final) == list(range(EVAL_EVERY, TRAIN_UPDATES + 1, EVAL_EVERY))
    assert final.attrs["train"]["completed_updates"] == TRAIN_UPDATES
    assert float(final.datasets[f"{final.attrs['train']['state']}/optimizer/steps"]) == TRAIN_UPDATES
    assert final.datasets[JOURNAL][-100:, 3].mean() > 0.3  # it went on learning from the array it left
    # Every pulse that reached the chip is in the file, those of killed sessions included.
    with open_board(emulator.resource, timeout=5) as board:
        assert pulses_recorded(final) == int(board.query("SYST:PCNT?")) > 0


# ---------------------------------------------------------------------------- characterization


def read_cycles(last: int) -> list[int]:
    return [c for c in range(1, last + 1) if c == 1 or c % READ_EVERY == 0 or c == CYCLES]


def test_an_endurance_run_killed_again_and_again_resumes_and_completes(
    emulator_process: EmulatorFactory, tmp_path: Path, killable: list[subprocess.Popen[bytes]]
) -> None:
    emulator = emulator_process(preset="umass-ta-hfo2", seed=1, extra=("--rows", "16", "--cols", "8"))
    path = tmp_path / "endurance.h5"
    command = ["characterize", "endurance", emulator.resource, "--out", str(path), "--max-cycles", str(CYCLES),
               "--read-every", str(READ_EVERY)]  # fmt: skip

    def cycles_journaled(f: h5py.File) -> int:
        return completed_steps(f["data/endurance/journal"][()])

    def check(killed: RunData) -> int:
        journal = killed.datasets["endurance/journal"]
        done = completed_steps(journal)
        assert len(journal) <= done + 1  # at most the row of the step in flight, torn
        # Every journaled cycle's reads are on disk (rows past them: the cycle in flight, dropped on resume).
        rows = int(journal[done - 1, 1])
        assert journal[done - 1, 1:].tolist() == [rows] * 3
        assert killed.datasets["endurance/cycle"][:rows].tolist() == read_cycles(done)
        assert len(killed.datasets["endurance/g_on"]) >= rows and len(killed.datasets["endurance/g_off"]) >= rows
        return done

    resumed = f"resuming {path}: endurance after step {{}}"
    kill_and_resume(command, path, CYCLES, cycles_journaled, check, resumed.format, killable, tmp_path)

    final = read_run(path)
    assert final.datasets["endurance/journal"][:, 0].tolist() == list(range(1, CYCLES + 1))
    assert final.attrs["endurance"]["cycles_done"] == CYCLES
    assert final.datasets["endurance/cycle"].tolist() == read_cycles(CYCLES)  # each read exactly once, in order
    reads = len(read_cycles(CYCLES))
    assert final.datasets["endurance/g_on"].shape == final.datasets["endurance/g_off"].shape == (reads, 128)
    assert final.datasets["endurance/failed_cycle"].shape == (128,)
    assert path.with_suffix(".png").exists()
    with open_board(emulator.resource, timeout=5) as board:  # every pulse, killed sessions' too, is in the file
        assert pulses_recorded(final) == int(board.query("SYST:PCNT?")) > 0
