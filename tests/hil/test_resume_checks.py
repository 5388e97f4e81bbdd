"""Resuming honestly: a completed run only with a larger budget, and only on the chip it began on."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers import open_board
from drivers.lock import LOCK_DIR_ENV
from hil.cli import EXIT_ERROR, main
from hil.storage import read_run
from tests.conftest import EmulatorFactory, stop_process
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
