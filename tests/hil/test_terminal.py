"""What the terminal shows: each phase of a run on its own line, messages never inside a bar,
a log file beside the run, global options after the subcommand, help with units."""

from __future__ import annotations

import re
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


def test_a_board_on_a_slow_link_shows_its_long_transfers_moving() -> None:
    """A stated link rate splits a map into commands of a bounded time, and the bar follows them."""
    from io import StringIO

    from drivers import Progress
    from hil.config import BoardConfig
    from hil.terminal import TransferBar

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
