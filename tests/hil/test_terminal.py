"""What the terminal shows: each phase of a run on its own line, messages never inside a bar,
a log file beside the run, global options after the subcommand, help with units."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from hil.cli import build_parser, main
from hil.storage import software_version
from tests.hil.test_training import TINY_TOML

BOARD = "emulator://?preset=umass-ta-hfo2&seed=3&rows=32&cols=10"
PHASES = ("checking the run against the boards", "calibrating board0", "placing the layers", "programming board0",
          "evaluating the transferred weights", "training")  # fmt: skip


def test_a_training_run_shows_each_phase_and_no_message_runs_into_a_bar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_TOML)
    out = tmp_path / "run.h5"
    assert main(["train", "--config", str(config), "--board", BOARD, "--updates", "6", "--eval-every", "3",
                 "--out", str(out), "-v"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    err = captured.err
    starts = [re.search(rf"(?:^|[\r\n]){re.escape(name)}[:( ]", err) for name in PHASES]
    assert all(starts), err  # each phase has a bar of its own
    positions = [match.start() for match in starts if match]
    assert positions == sorted(positions)  # in the order the run goes through them
    assert re.search(r"calibrating board0: 100%\|[^\r\n]*\| 3/3 \[", err)  # a count (and time left) per phase
    assert re.search(r"evaluating the transferred weights: 100%\|[^\r\n]*\| (\d+)/\1 \[", err)  # test samples
    # Every bar update ends where the next begins (\r) or on a new line: nothing is printed into it.
    assert not re.search(r"step/s[^\]\r\n]*\][ \t]*[^ \t\r\n]", err)
    assert captured.out.startswith("training ")  # the opening message on a line of its own
    last_training = [line for line in re.split(r"[\r\n]", err) if line.startswith("training:")][-1]
    assert "test=" in last_training and "loss=" in last_training  # the last evaluation stays in view
    log = out.with_suffix(".log").read_text()
    assert "calibrating board0" in log and "INFO" in log and "-> " not in log  # no wire traffic without -vv


def test_minus_vv_after_the_subcommand_writes_the_wire_traffic_to_the_runs_log(tmp_path: Path) -> None:
    out = tmp_path / "yield.h5"
    assert main(["characterize", "yield-map", BOARD, "--out", str(out), "-vv"]) == 0
    log = out.with_suffix(".log").read_text()
    assert "DEBUG drivers.link" in log and "-> MAP" in log  # the map read (MAP? or its compact MAP:CODE?)


def test_version_help_metavars_and_units(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--version"])
    assert capsys.readouterr().out.strip() == f"hil {software_version()}"
    help_text = build_parser()._subparsers._group_actions[0].choices["characterize"]  # type: ignore[union-attr]
    endurance = help_text._subparsers._group_actions[0].choices["endurance"].format_help()
    assert "--v-read V " in endurance and "--max-cycles N " in endurance and "OPTION_" not in endurance
    assert main(["info", BOARD]) == 0
    assert re.search(r"v_row  \[-?[\d.]+, [\d.]+\] V\n", capsys.readouterr().out)


def test_a_board_on_a_slow_link_shows_its_long_transfers_moving(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stated link rate splits a map into commands of a bounded time, and the bar follows them."""
    from io import StringIO

    from drivers import Progress
    from hil import terminal
    from hil.config import BoardConfig
    from hil.terminal import TransferBar

    monkeypatch.setattr(terminal, "TRANSFER_DELAY_S", 0.0)  # shown from its start, not after 5 s

    with BoardConfig(resource="emulator://?seed=1").open() as fast:
        assert fast.progress is None  # no link rate: nothing is split, no bar
    with BoardConfig(resource="emulator://?seed=1", link_rate=4000).open() as board:
        assert isinstance(board.progress, TransferBar)
        shown = StringIO()
        bar = TransferBar("chip", file=shown)
        seen: list[tuple[int, int]] = []

        def follow(progress: Progress) -> None:
            seen.append((progress.done, progress.total))
            bar(progress)

        board.progress = follow
        rows = board.shape[0]
        board.read_map()
    assert len(seen) > 2 and seen[-1] == (rows, rows)  # several commands, the last one completing the map
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert bar.bar is None  # the bar is closed once the map is whole
    assert f"chip: map:   0%|          | 0/{rows}" in shown.getvalue()


def test_two_runs_in_one_process_keep_their_logs_apart(tmp_path: Path) -> None:
    """Runs in threads of one process (a sweep's cells): each run's log holds its own records only."""
    import logging
    import threading

    from hil.storage import RunFile

    both_open = threading.Barrier(2, timeout=60)  # a safety net against a hang, not a timing assertion
    log = logging.getLogger("hil.test_terminal")
    previous = logging.getLogger().level
    logging.getLogger().setLevel(logging.INFO)

    def run(name: str) -> None:
        with RunFile(tmp_path / f"{name}.h5", procedure="test", config={}, show_progress=False):
            both_open.wait()
            for step in range(20):
                log.info("%s step %d", name, step)
            both_open.wait()

    try:
        threads = [threading.Thread(target=run, args=(name,)) for name in ("first", "second")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        logging.getLogger().setLevel(previous)
    for name, other in (("first", "second"), ("second", "first")):
        text = (tmp_path / f"{name}.log").read_text()
        assert text.count(f"{name} step") == 20 and f"{other} step" not in text


def test_a_slow_link_without_a_terminal_reads_its_map(monkeypatch: pytest.MonkeyPatch) -> None:
    """No terminal (a log file, cron, CI): the bar is tqdm's disabled one, which keeps no ``desc``.
    Was: the map's second command failed with AttributeError: 'tqdm' object has no attribute 'desc'."""
    import io
    import sys

    from hil.config import BoardConfig
    from hil.terminal import TransferBar

    monkeypatch.setattr(sys, "stderr", io.StringIO())  # no terminal: tqdm disables itself
    with BoardConfig(resource="emulator://?seed=1&rows=16&cols=8", link_rate=1).open() as board:
        assert isinstance(board.progress, TransferBar)
        conductance = board.read_map()  # split into a command per row at 1 byte/s
    assert conductance.shape == (16, 8)


def test_without_a_terminal_each_phase_is_whole_lines_not_redraws(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """stderr to a log file (nohup, cron, CI): no \\r redraws (ten a second, a half-line each in the
    log), but each phase's first line and its final count, with the last test accuracy."""
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_TOML)
    out = tmp_path / "run.h5"
    assert main(["train", "--config", str(config), "--board", BOARD, "--updates", "6", "--eval-every", "3",
                 "--out", str(out)]) == 0  # fmt: skip
    err = capsys.readouterr().err  # captured: not a terminal
    assert "\r" not in err, err[:500]
    lines = err.splitlines()
    assert re.search(r"^calibrating board0: 100%\|[^\n]*\| 3/3 \[", err, re.MULTILINE), err
    training = [line for line in lines if line.startswith("training:")]
    assert 2 <= len(training) <= 3, training  # its start, its end (and one per 30 s in between)
    assert re.match(r"training: 100%\|.*\| 6/6 \[.*loss=.*test=", training[-1]), training[-1]


def test_a_bar_is_redrawn_in_place_on_a_terminal_and_written_in_lines_apart_in_a_log() -> None:
    from io import StringIO

    from hil.terminal import LINE_INTERVAL_S, progress_bar

    class Terminal(StringIO):
        def isatty(self) -> bool:
            return True

    log, screen = StringIO(), Terminal()
    for stream in (log, screen):
        bar = progress_bar("work", 2000, file=stream)
        for _ in range(2000):
            bar.update(1)  # in far less than LINE_INTERVAL_S
        bar.close()
    assert LINE_INTERVAL_S >= 10
    assert log.getvalue().splitlines()[0].startswith("work:   0%") and "\r" not in log.getvalue()
    assert len(log.getvalue().splitlines()) == 2 and "2000/2000" in log.getvalue().splitlines()[1]
    assert "\r" in screen.getvalue()


def test_a_long_transfer_without_a_terminal_writes_a_line_once_it_has_taken_a_while(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 128-row map at 9600 baud takes 27 s: a log saw nothing of it (the bar was disabled off a
    terminal). Now a line with its count and time left once TRANSFER_DELAY_S has passed, then
    lines as far apart as a phase's; a short transfer writes none."""
    import io
    import sys

    from drivers import Progress
    from hil import terminal

    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    short = terminal.TransferBar("chip")
    for done in range(0, 129, 16):
        short(Progress("map", done, 128, "rows"))  # all within TRANSFER_DELAY_S
    assert log.getvalue() == ""
    monkeypatch.setattr(terminal, "TRANSFER_DELAY_S", 0.05)  # a transfer this long is a long one here
    long = terminal.TransferBar("chip")
    long(Progress("map", 0, 128, "rows"))
    time.sleep(0.1)
    for done in range(16, 128, 16):
        long(Progress("map", done, 128, "rows"))
    lines = log.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chip: map:  12%|") and "16/128 [00:00<00:" in lines[0], lines
    long(Progress("map", 128, 128, "rows"))
    assert long.bar is None and "\r" not in log.getvalue()
