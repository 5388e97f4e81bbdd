"""`hil characterize` and `hil show`, run in process against the embedded emulator."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from drivers import Board
from hil import procedure_registry
from hil.cli import EXIT_ERROR, main
from hil.storage import read_run
from protocols.recording import Recorder

BOARD = "emulator://?preset=umass-ta-hfo2&seed=4&rows=16&cols=8"


def test_a_procedure_writes_its_run_file_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "yield.h5"
    assert main(["characterize", "yield-map", BOARD, "--out", str(out)]) == 0
    run = read_run(out)
    assert run.root["status"] == "completed"
    assert run.procedure == "yield-map"
    assert run.datasets["yield/class"].shape == (16, 8)
    assert run.config["options"]["destructive"] is True
    assert out.with_suffix(".png").stat().st_size > 10_000
    assert "status completed" in capsys.readouterr().err


def test_flags_come_from_the_options_model(tmp_path: Path) -> None:
    out = tmp_path / "iv.h5"
    argv = ["characterize", "iv-sweep", BOARD, "--out", str(out), "--cells", "[[2, 3]]", "--cycles", "2",
            "--v-step", "0.1"]  # fmt: skip
    assert main(argv) == 0
    run = read_run(out)
    assert run.config["options"]["cells"] == [[2, 3]]
    assert run.datasets["iv/sweep"].tolist() == [[2, 3, 0], [2, 3, 1]]


@pytest.mark.parametrize(("argv", "message"), [(["--cycles", "0"], "cycles"), (["--cells", "[[99, 0]]"], "99")])
def test_bad_options_are_refused_before_a_pulse(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "iv.h5"
    assert main(["characterize", "iv-sweep", BOARD, "--out", str(out), *argv]) == EXIT_ERROR
    assert message in capsys.readouterr().err
    assert not out.exists() or "iv/current" not in read_run(out).datasets


def test_a_flag_that_is_not_json_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["characterize", "iv-sweep", BOARD, "--out", "x.h5", "--cells", "not json"])
    assert exit_info.value.code == 2
    assert "is not usable JSON" in capsys.readouterr().err


def test_an_existing_file_is_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "kept.h5"
    out.write_bytes(b"earlier data")
    assert main(["characterize", "yield-map", BOARD, "--out", str(out)]) == EXIT_ERROR
    assert "exists" in capsys.readouterr().err
    assert out.read_bytes() == b"earlier data"


def test_ctrl_c_keeps_the_data_and_idles_the_board(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    boards: list[Board] = []

    def interrupted(board: Board, recorder: Recorder, **options: Any) -> None:
        boards.append(board)
        board.set_dac("ROW", 0, 0.2)  # something live on a line when the technician presses Ctrl-C
        recorder.append("demo/g", board.read_map()[0])
        raise KeyboardInterrupt

    spec = procedure_registry.REGISTRY["read-disturb"]
    monkeypatch.setitem(procedure_registry.REGISTRY, "read-disturb", dataclasses.replace(spec, run=interrupted))
    out = tmp_path / "stopped.h5"
    assert main(["characterize", "read-disturb", BOARD, "--out", str(out)]) == 130
    run = read_run(out)
    assert run.root["status"] == "interrupted"
    assert run.datasets["demo/g"].shape == (1, 8)
    assert boards[0].closed
    endpoint = boards[0]._transport._endpoint  # type: ignore[attr-defined]
    assert not np.any(endpoint.firmware.dac["ROW"])  # idle: every line back at 0 V
    assert "interrupted" in capsys.readouterr().err


def test_show_describes_a_file_and_redraws_its_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "retention.h5"
    assert main(["characterize", "retention", BOARD, "--out", str(out), "--t-last", "100"]) == 0
    out.with_suffix(".png").unlink()
    capsys.readouterr()
    assert main(["show", str(out)]) == 0
    text = capsys.readouterr().out
    assert "procedure: retention" in text and "retention/g" in text
    assert out.with_suffix(".png").exists()


def test_show_of_a_missing_file_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(tmp_path / "nowhere.h5")]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "no such file" in err and "Traceback" not in err


def test_show_plot_into_a_folder_or_without_a_suffix_says_where_it_wrote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "yield.h5"
    assert main(["characterize", "yield-map", BOARD, "--out", str(out)]) == 0
    folder = tmp_path / "plots"
    folder.mkdir()
    capsys.readouterr()
    assert main(["show", str(out), "--plot", str(folder)]) == 0  # was: "plot: plots", written as plots.png beside it
    assert capsys.readouterr().out.strip().endswith(f"plot: {folder / 'yield.png'}")
    assert (folder / "yield.png").stat().st_size > 10_000 and not (tmp_path / "plots.png").exists()
    assert main(["show", str(out), "--plot", str(tmp_path / "named")]) == 0
    assert capsys.readouterr().out.strip().endswith(f"plot: {tmp_path / 'named.png'}")
    assert (tmp_path / "named.png").exists()
