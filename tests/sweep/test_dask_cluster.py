"""A campaign on a real Dask cluster on loopback (``dask scheduler`` and two ``dask worker`` processes),
with one worker killed (SIGKILL) in the middle of a cell: every cell completes exactly once and
every run file is whole."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import pytest
from distributed import Client

from hil.sweep.campaign import expand, parse_campaign
from hil.sweep.cell import CELLS_FOLDER
from hil.sweep.runner import run_campaign
from hil.sweep.table import load_results

DASK = str(Path(sys.executable).parent / "dask")
READY_TIMEOUT = 60.0
UPDATES = 12
CAMPAIGN = {
    "name": "killed-worker", "kind": "train", "seeds": 4, "emulator": "emulator://?preset=umass-ta-hfo2",
    "base": {"model": "mlp", "updates": UPDATES, "batch_size": 10, "eval_every": UPDATES, "calibrate": False,
             "optimizer": {"name": "sgd", "lr": 0.1}},
    "axes": {"emulator.write_noise": [2e-6, 8e-6]},
}  # fmt: skip


@dataclass
class Cluster:
    address: str
    workers: list[subprocess.Popen[bytes]]


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def dask_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A scheduler and two single-threaded workers (no nanny: a killed worker stays dead), all on loopback."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    logs = tmp_path / "dask-logs"
    logs.mkdir()
    scheduler_file = tmp_path / "scheduler.json"
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str, *argv: str) -> subprocess.Popen[bytes]:
        with (logs / f"{name}.log").open("wb") as log:
            process = subprocess.Popen([DASK, *argv], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
        started.append(process)
        return process

    try:
        start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
              "--scheduler-file", str(scheduler_file))  # fmt: skip
        deadline = time.monotonic() + READY_TIMEOUT
        while not scheduler_file.exists() or not scheduler_file.read_text().strip():
            if time.monotonic() > deadline or started[0].poll() is not None:
                pytest.fail(f"dask scheduler did not start:\n{(logs / 'scheduler.log').read_text()}")
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        worker_flags = ("--nthreads", "1", "--no-nanny", "--no-dashboard")
        workers = [start(f"worker{i}", "worker", address, *worker_flags, "--name", f"w{i}",
                         "--local-directory", str(tmp_path / f"w{i}")) for i in range(2)]  # fmt: skip
        yield Cluster(address, workers)
    finally:
        for process in reversed(started):
            _stop(process)


def _kill_a_worker_mid_cell(folder: Path, victim: int, killed: dict[str, str], done: threading.Event) -> None:
    """SIGKILL ``victim`` once it is running a cell whose run file exists (so the file is being written)."""
    cells = folder / CELLS_FOLDER
    while not done.is_set():
        for attempts in cells.glob("*.attempts") if cells.exists() else []:
            lines = attempts.read_text().splitlines()
            if lines and lines[-1].split()[-1] == str(victim) and attempts.with_suffix(".h5").exists():
                time.sleep(0.1)  # well inside the cell (which takes over a second)
                os.kill(victim, signal.SIGKILL)
                killed["key"] = attempts.stem
                return
        time.sleep(0.02)


def test_a_campaign_survives_a_killed_worker(dask_cluster: Cluster, tmp_path: Path) -> None:
    campaign = parse_campaign(CAMPAIGN)
    keys = {cell.key for cell in expand(campaign)}
    assert len(keys) == 8
    folder = tmp_path / "campaign"
    with Client(dask_cluster.address, timeout="30s") as client:
        client.wait_for_workers(2, timeout=READY_TIMEOUT)
        pids = set(client.run(os.getpid).values())
        assert pids == {w.pid for w in dask_cluster.workers}
        victim, survivor = dask_cluster.workers
        killed: dict[str, str] = {}
        done = threading.Event()
        killer = threading.Thread(target=_kill_a_worker_mid_cell, args=(folder, victim.pid, killed, done))
        killer.start()
        try:
            report = run_campaign(campaign, folder, client=client, progress=False)
        finally:
            done.set()
            killer.join()
    assert victim.wait(timeout=10) == -signal.SIGKILL and "key" in killed, "the worker was not killed mid-cell"
    assert survivor.poll() is None
    assert (report.completed, report.failed, report.cells) == (8, 0, 8), report.errors

    frame, _ = load_results(folder)
    assert sorted(frame["key"]) == sorted(keys)  # one row per cell, none twice
    assert (frame["status"] == "completed").all()
    for key in keys:
        with h5py.File(folder / CELLS_FOLDER / f"{key}.h5", "r") as run:  # every file opens: none corrupted
            assert run.attrs["status"] == "completed"
            journal = run["data/train/journal"][()]
            assert journal[:, 0].tolist() == list(range(UPDATES))  # each update journaled once, in order
            assert run["data/sweep"].attrs["key"] == key
    # The killed cell started on the victim and was run again, to completion, on the survivor.
    starts = (folder / CELLS_FOLDER / f"{killed['key']}.attempts").read_text().splitlines()
    assert [line.split()[-1] for line in starts] == [str(victim.pid), str(survivor.pid)]
    row = frame[frame["key"] == killed["key"]].iloc[0]
    assert row["attempts"] == 2 and row["board"].startswith("emulator://")
