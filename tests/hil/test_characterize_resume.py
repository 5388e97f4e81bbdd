"""Resuming a characterization run from its journal, in process: steps skipped, half steps dropped.

A run is stopped with Ctrl-C (KeyboardInterrupt) at a chosen call, which leaves its file as a kill
would at that point once flushed; it is then continued in the same file on the same in-process
board, as ``hil characterize --resume`` does. (SIGKILL itself, many times over, against an
emulator process: ``test_kill_resume.py``.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from drivers import Board, open_board
from hil import procedure_registry
from hil.cli import EXIT_ERROR, main
from hil.config import BoardConfig
from hil.storage import RunData, RunFile, read_run
from protocols.recording import Journal, completed_steps

BOARD = "emulator://?preset=umass-ta-hfo2&seed=4&rows=16&cols=8"

UNREACHABLE = "TCPIP::127.0.0.1::9::SOCKET"
# The journaled procedures, small: (group, options, steps).
JOURNALED: dict[str, tuple[str, dict[str, Any], int]] = {
    "endurance": ("endurance", {"max_cycles": 30, "read_every": 5}, 30),
    "pulse-response": ("pulse_response", {"n_pulses": 4}, 9),
    "retention": ("retention", {"program": "set", "t_last": 100.0, "points_per_decade": 2}, 5),
    "read-disturb": ("read_disturb", {"n_reads": 50, "record_every": 10}, 5),
}


@pytest.fixture
def board() -> Iterator[Board]:
    with open_board(BOARD) as opened:
        yield opened


def commands(board: Board) -> int:
    return int(board._transport._endpoint.firmware.commands_served)  # type: ignore[attr-defined]


def new_run(path: Path, name: str, options: dict[str, Any], resource: str = BOARD) -> RunFile:
    """A run file as ``hil characterize`` starts it."""
    spec = procedure_registry.REGISTRY[name]
    config = {"options": spec.options.model_validate(options).model_dump(mode="json"),
              "board": BoardConfig().model_dump(mode="json")}  # fmt: skip
    return RunFile(path, procedure=name, config=config, resource=resource, show_progress=False)


def stop_at(run: RunFile, method: str, name: str | None, occurrence: int) -> None:
    """Ctrl-C on the ``occurrence``-th call of ``run.<method>`` (for ``name``, if given)."""
    original: Callable[..., Any] = getattr(run, method)
    calls = 0

    def stopping(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        if name is None or (args and args[0] == name):
            calls += 1
            if calls == occurrence:
                raise KeyboardInterrupt
        return original(*args, **kwargs)

    setattr(run, method, stopping)


def measure_stopped(board: Board, path: Path, name: str, method: str, target: str | None, occurrence: int) -> RunData:
    options = JOURNALED[name][1]
    with pytest.raises(KeyboardInterrupt), new_run(path, name, options) as run:
        stop_at(run, method, target, occurrence)
        procedure_registry.REGISTRY[name].run(board, run, **options)
    return read_run(path)


def measure_resumed(board: Board, path: Path, name: str) -> tuple[object, RunData]:
    with RunFile.reopen(path, show_progress=False) as run:
        result = procedure_registry.REGISTRY[name].run(board, run, **JOURNALED[name][1])
    return result, read_run(path)


def steps(data: RunData, group: str) -> list[int]:
    return [int(s) for s in data.datasets[f"{group}/journal"][:, 0]]


@pytest.mark.parametrize("name", sorted(JOURNALED))
def test_a_run_stopped_between_steps_resumes_to_the_uninterrupted_result(name: str, tmp_path: Path) -> None:
    group, options, total = JOURNALED[name]
    with open_board(BOARD) as fresh, new_run(tmp_path / "straight.h5", name, options) as run:
        procedure_registry.REGISTRY[name].run(fresh, run, **options)
        straight_commands = commands(fresh)
    straight = read_run(tmp_path / "straight.h5")
    with open_board(BOARD) as board:  # the same emulated array, from the same seed
        stopped = measure_stopped(board, tmp_path / "stopped.h5", name, "progress", None, 3)
        assert stopped.root["status"] == "interrupted"
        assert completed_steps(stopped.datasets[f"{group}/journal"]) == 3
        _, resumed = measure_resumed(board, tmp_path / "stopped.h5", name)
        # No step was done twice (a resumed retention run asks the board's clock once more).
        assert commands(board) == straight_commands + (name == "retention")
    assert resumed.root["status"] == "completed" and resumed.root["resumed"] == 1
    assert steps(resumed, group) == list(range(1, total + 1))
    assert resumed.datasets.keys() == straight.datasets.keys()
    for dataset, values in straight.datasets.items():
        if name == "retention" and dataset == f"{group}/time":  # that clock query took a little time
            np.testing.assert_allclose(resumed.datasets[dataset], values, rtol=0.05)
        else:
            np.testing.assert_array_equal(resumed.datasets[dataset], values, err_msg=dataset)


def test_a_resumed_endurance_run_sends_only_the_cycles_left(board: Board, tmp_path: Path) -> None:
    stopped = measure_stopped(board, tmp_path / "e.h5", "endurance", "progress", None, 12)
    assert completed_steps(stopped.datasets["endurance/journal"]) == 12
    before = commands(board)
    result, resumed = measure_resumed(board, tmp_path / "e.h5", "endurance")
    # Cycles 13..30: a SET and a RESET batch each, and a map read after each at 15, 20, 25 and 30.
    assert commands(board) - before == 2 * 18 + 2 * 4
    assert resumed.datasets["endurance/cycle"].tolist() == [1, 5, 10, 15, 20, 25, 30]
    assert resumed.attrs["endurance"]["cycles_done"] == 30
    assert result.cycle.tolist() == [1, 5, 10, 15, 20, 25, 30]  # type: ignore[attr-defined]
    # The cells that failed before the stop stay failed: the resumed run rebuilt them from the rows.
    assert np.array_equal(result.failed_cycle >= 0, np.isnan(resumed.datasets["endurance/g_on"][-1]))  # type: ignore[attr-defined]


def test_a_half_written_step_is_dropped_and_done_again(board: Board, tmp_path: Path) -> None:
    # Stopped as cycle 10 is journaled: its reads are in the file, the journal ends at cycle 9.
    stopped = measure_stopped(board, tmp_path / "e.h5", "endurance", "append", "endurance/journal", 10)
    assert completed_steps(stopped.datasets["endurance/journal"]) == 9
    assert stopped.datasets["endurance/cycle"].tolist() == [1, 5, 10]
    _, resumed = measure_resumed(board, tmp_path / "e.h5", "endurance")
    assert steps(resumed, "endurance") == list(range(1, 31))
    assert resumed.datasets["endurance/cycle"].tolist() == [1, 5, 10, 15, 20, 25, 30]  # cycle 10 once
    assert resumed.datasets["endurance/g_on"].shape == resumed.datasets["endurance/g_off"].shape == (7, 128)


def test_a_journal_counts_steps_up_to_its_first_gap(tmp_path: Path) -> None:
    assert completed_steps(None) == 0
    assert completed_steps(np.zeros((0, 3))) == 0
    assert completed_steps([[1, 1], [2, 2], [3, 2]]) == 3
    assert completed_steps([[1, 1], [2, 2], [0, 0]]) == 2  # a torn last row
    path = tmp_path / "toy.h5"
    with pytest.raises(KeyboardInterrupt), RunFile(path, procedure="toy", config={}, show_progress=False) as run:
        journal = Journal(run, "toy")
        values = journal.series("value", unit="V")
        for k in range(5):
            values.append(np.full(2, float(k)))
            if k == 3:
                raise KeyboardInterrupt  # the 4th row is written, its step not journaled
            journal.step_done()
    assert read_run(path).datasets["toy/value"].shape == (4, 2)
    with RunFile.reopen(path, show_progress=False) as run:
        journal = Journal(run, "toy")
        values = journal.series("value", unit="V")
        assert journal.done == 3 and values.rows == 3
        assert [float(row[0]) for row in values.earlier] == [0.0, 1.0, 2.0]
        assert run.read("toy/value").shape == (3, 2)  # type: ignore[union-attr]
    data = read_run(path)
    assert data.attrs["toy/journal"]["columns"] == "step,value"
    assert data.attrs["toy/value"]["unit"] == "V"


def test_a_torn_first_journal_row_counts_nothing_and_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "toy.h5"
    with RunFile(path, procedure="toy", config={}, show_progress=False) as run:
        run.append("toy/value", np.zeros(2))
        run.append("toy/journal", np.array([0, 0]))  # as a kill inside the first flush could leave it
    with RunFile.reopen(path, show_progress=False) as run:
        journal = Journal(run, "toy")
        values = journal.series("value")
        assert journal.done == 0 and values.rows == 0
        values.append(np.ones(2))
        journal.step_done()
    data = read_run(path)
    assert data.datasets["toy/journal"].tolist() == [[1, 1]]
    assert data.datasets["toy/value"].tolist() == [[1.0, 1.0]]


def test_retention_refuses_to_go_on_when_the_boards_clock_went_back(board: Board, tmp_path: Path) -> None:
    measure_stopped(board, tmp_path / "r.h5", "retention", "progress", None, 3)
    with open_board(BOARD) as restarted, pytest.raises(ValueError, match=r"clock .* was restarted"):
        measure_resumed(restarted, tmp_path / "r.h5", "retention")
    assert read_run(tmp_path / "r.h5").datasets["retention/time"].shape == (3,)  # nothing lost


# ---------------------------------------------------------------------------- hil characterize --resume


def test_hil_characterize_resume_continues_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cycles.h5"
    original = RunFile.progress
    calls = 0

    def ctrl_c_at_the_8th_step(self: RunFile, *args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 8:
            raise KeyboardInterrupt
        original(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(RunFile, "progress", ctrl_c_at_the_8th_step)
        argv = ["characterize", "endurance", BOARD, "--out", str(path), "--max-cycles", "20", "--read-every", "4"]
        assert main(argv) == 130
    assert read_run(path).root["status"] == "interrupted"
    capsys.readouterr()

    assert main(["characterize", "--resume", str(path)]) == 0
    out, err = capsys.readouterr()
    assert f"resuming {path}: endurance after step 8" in out
    assert "does not outlive its process" in err  # an embedded emulator: a fresh array
    data = read_run(path)
    assert data.root["status"] == "completed" and data.root["resumed"] == 1
    assert steps(data, "endurance") == list(range(1, 21))
    assert data.datasets["endurance/cycle"].tolist() == [1, 4, 8, 12, 16, 20]
    assert data.config["options"]["max_cycles"] == 20  # options from the file
    assert path.with_suffix(".png").exists()


def test_a_procedure_without_a_journal_starts_over(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "yield.h5"
    with pytest.raises(KeyboardInterrupt), new_run(path, "yield-map", {}, resource=UNREACHABLE) as run:
        run.write("yield/g_initial", np.zeros((16, 8)))
        run.append("stale/rows", np.zeros(3))
        raise KeyboardInterrupt
    # The stored resource no longer reaches the board; --board names the one to continue on.
    assert main(["characterize", "--resume", str(path), "--board", BOARD]) == 0
    assert "yield-map from the beginning" in capsys.readouterr().out
    data = read_run(path)
    assert data.root["status"] == "completed" and data.root["resumed"] == 1
    assert "stale/rows" not in data.datasets
    assert data.datasets["yield/class"].shape == (16, 8)


@pytest.mark.parametrize(
    ("procedure", "status", "message"),
    [
        ("train", "running", "is a 'train' run, not a characterization run"),
        ("endurance", "completed", "already completed"),
    ],
)
def test_resume_refuses_what_it_cannot_continue(
    procedure: str, status: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "other.h5"
    run = RunFile(path, procedure=procedure, config={}, show_progress=False)
    run.close(status)
    before = path.read_bytes()
    assert main(["characterize", "--resume", str(path)]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert message in err and str(path) in err and "Traceback" not in err
    assert path.read_bytes() == before  # not touched


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["characterize"], "name a PROCEDURE"),
        (["characterize", "--resume", "x.h5", "endurance", "--out", "x.h5"], "no PROCEDURE"),
        (["characterize", "--board", BOARD, "endurance", "--out", "x.h5"], "--board is for --resume"),
        (["characterize", "--resume", "nowhere.h5"], "no such file"),
    ],
)
def test_characterize_arguments_that_do_not_fit_are_one_line_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == EXIT_ERROR
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x.h5").exists()
