"""Resuming honestly: a completed run only with a larger budget, and only on the chip it began on."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

from drivers import open_board
from drivers.lock import LOCK_DIR_ENV
from hil.cli import EXIT_ERROR, main
from hil.storage import RunFile, read_run, run_state
from protocols.recording import completed_steps
from tests.conftest import REPO_ROOT, EmulatorFactory, stop_process
from tests.hil.test_kill_resume import steps_on_disk
from tests.hil.test_training import EMULATOR_ARGS, TINY_TOML


def test_a_completed_run_is_resumed_only_with_a_larger_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "done.h5"
    base = ["train", "--model", "mlp", "--baseline", "--eval-every", "5"]
    assert main([*base, "--updates", "5", "--out", str(path)]) == 0
    before = read_run(path)
    capsys.readouterr()
    assert main(["train", "--resume", str(path)]) == EXIT_ERROR
    assert "5 of 5 updates are done" in capsys.readouterr().err
    assert read_run(path).root == before.root  # not counted as a resume, nothing overwritten
    assert main(["train", "--resume", str(path), "--updates", "10"]) == 0
    after = read_run(path)
    assert after.attrs["train"]["completed_updates"] == 10 and after.root["resumed"] == 1
    assert after.config["updates"] == 10


def test_a_run_resumed_on_another_chip_is_refused_unless_forced(
    emulator_process: EmulatorFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path / "locks"))
    first = emulator_process(seed=1, extra=EMULATOR_ARGS)
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_TOML)
    path = tmp_path / "run.h5"
    argv = ["train", "--board", first.resource, "--config", str(config), "--out", str(path), "--updates", "4"]
    assert main(argv) == 0
    began_on = read_run(path).root["board_identity"]
    assert "SN-0001" in began_on  # recorded at the start, not empty
    stop_process(first.process)
    host, port = first.tcp_address
    emulator_process(seed=1, extra=(*EMULATOR_ARGS, "--set", "serial=SN-0002"), listen=f"{host}:{port}")
    before = read_run(path).root
    capsys.readouterr()
    assert main(["train", "--resume", str(path), "--updates", "8"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "SN-0002" in err and "--force-other-board" in err and err.count("\n") == 1
    assert read_run(path).root == before  # refused before the file was touched
    with open_board(first.resource, timeout=5) as board:
        assert int(board.query("SYST:PCNT?")) == 0  # and before any pulse
    assert main(["train", "--resume", str(path), "--updates", "8", "--force-other-board"]) == 0
    after = read_run(path)
    assert after.attrs["train"]["completed_updates"] == 8 and "SN-0002" in after.root["board_identity"]


def test_show_tells_a_killed_run_from_a_live_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "run.h5"
    RunFile(path, procedure="endurance", config={}, show_progress=False).close("running")  # as a kill leaves it
    assert run_state(read_run(path)) == "running"  # its writer (this process) is alive
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with h5py.File(path, "r+") as f:  # as if a process now gone had written it
        f.attrs["pid"] = dead.pid
    assert run_state(read_run(path)) == "killed"
    assert main(["show", str(path), "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "state: killed" in out and f"hil characterize --resume {path}" in out


def cycles_journaled(f: h5py.File) -> int:
    return completed_steps(f["data/endurance/journal"][()])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_end_a_run_interrupted(signum: int, tmp_path: Path) -> None:
    path = tmp_path / "endurance.h5"
    argv = [sys.executable, "-m", "hil.cli", "characterize", "endurance", "emulator://?preset=ideal&rows=4&cols=4",
            "--out", str(path), "--max-cycles", "10000000", "--read-every", "1000"]  # fmt: skip
    process = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (path.exists() and steps_on_disk(path, cycles_journaled)) and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signum)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 128 + signum, err
    assert b"Traceback" not in err
    assert read_run(path).root["status"] == "interrupted"


def test_a_characterization_resumed_on_another_chip_is_refused_unless_forced(
    emulator_process: EmulatorFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Its devices' history is on the first chip: another chip answering on the same port is refused before
    the file or the board is touched, as for training."""
    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path / "locks"))
    first = emulator_process(seed=1)
    path = tmp_path / "cycles.h5"
    original = RunFile.progress
    calls = 0

    def ctrl_c_at_the_4th_step(self: RunFile, *args: object, **kwargs: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 4:
            raise KeyboardInterrupt
        original(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(RunFile, "progress", ctrl_c_at_the_4th_step)
        argv = ["characterize", "endurance", first.resource, "--out", str(path), "--max-cycles", "8"]
        assert main(argv) == 130
    stop_process(first.process)
    host, port = first.tcp_address
    emulator_process(seed=1, extra=("--set", "serial=SN-0002"), listen=f"{host}:{port}")
    before = read_run(path).root
    capsys.readouterr()
    assert main(["characterize", "--resume", str(path)]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "SN-0002" in err and "--force-other-board" in err and err.count("\n") == 1
    assert read_run(path).root == before
    with open_board(first.resource, timeout=5) as board:
        assert int(board.query("SYST:PCNT?")) == 0
    assert main(["characterize", "--resume", str(path), "--force-other-board"]) == 0
    assert read_run(path).root["status"] == "completed"
