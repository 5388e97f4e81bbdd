"""The campaign runner on a local Dask cluster: a pool board that fails is taken out with its reason,
a rerun skips completed cells, and Ctrl-C stops the campaign with no run left running."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from hil.storage import read_run
from hil.sweep.campaign import expand, parse_campaign
from hil.sweep.cell import CELLS_FOLDER
from hil.sweep.runner import run_campaign
from hil.sweep.table import META, load_results
from tests.conftest import EmulatorFactory


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_failing_board_is_taken_out_of_the_pool_and_its_cells_run_on_the_others(
    tmp_path: Path, emulator_process: EmulatorFactory
) -> None:
    live = emulator_process("tcp", seed=2, preset="ideal")
    dead = f"TCPIP::127.0.0.1::{_closed_port()}::SOCKET"  # nothing listens: the board is gone
    campaign = parse_campaign({"name": "pool", "kind": "characterize", "pool": [dead, live.resource], "seeds": 3,
                               "base": {"procedure": "pulse-response", "options": {"n_pulses": 3}}})  # fmt: skip
    cells = expand(campaign)
    assert any(int(c.key, 16) % 2 == 0 for c in cells)  # (keys are stable) some cell tries the dead board first
    folder = tmp_path / "c"
    report = run_campaign(campaign, folder, workers=1, progress=False)
    assert list(report.pool_out) == [dead] and report.pool_out[dead].startswith("Link"), report.pool_out
    assert (report.completed, report.failed) == (3, 0), report.errors
    frame, meta = load_results(folder)
    assert set(frame["board"]) == {live.resource} and (frame["status"] == "completed").all()
    assert meta["pool_out"] == report.pool_out

    assert sorted(frame["attempts"])[-1] == 2  # the cell that met the dead board ran again on the live one

    # A rerun of the same campaign finds every cell done and runs nothing (no cluster is even started).
    logs = sorted((folder / CELLS_FOLDER).glob("*.attempts"))
    before = [log.read_text() for log in logs]
    again = run_campaign(campaign, folder, workers=1, progress=False)
    assert (again.already_done, again.completed) == (3, 0)
    assert [log.read_text() for log in logs] == before


def test_ctrl_c_stops_the_campaign_with_no_run_left_running(tmp_path: Path) -> None:
    campaign = parse_campaign({
        "name": "stop", "kind": "train", "seeds": 6, "emulator": "emulator://?preset=ideal",
        "base": {"model": "mlp", "updates": 400, "batch_size": 10, "eval_every": 400, "calibrate": False,
                 "optimizer": {"name": "sgd", "lr": 0.1}},
    })  # fmt: skip
    folder = tmp_path / "c"
    cells = folder / CELLS_FOLDER

    def interrupt_once_a_cell_runs() -> None:
        deadline = time.monotonic() + 120
        while not list(cells.glob("*.h5")) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does

    threading.Thread(target=interrupt_once_a_cell_runs, daemon=True).start()
    started = time.monotonic()
    try:
        report = run_campaign(campaign, folder, workers=1, progress=False)
    except KeyboardInterrupt:
        pass
    else:
        pytest.fail(f"the campaign was not interrupted: {report}")
    assert time.monotonic() - started < 90
    statuses = [read_run(path).root["status"] for path in cells.glob("*.h5")]
    assert statuses and "interrupted" in statuses and "running" not in statuses, statuses
    frame, _ = load_results(folder)  # the table was written on the way out
    assert "interrupted" in set(frame["status"])
    assert json.loads((folder / META).read_text())["cells"] == 6
