"""The chip ledger: a chip's pulses, findings and runs across run files, and their reuse."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from drivers import open_board
from hil.cli import main
from hil.ledger import ChipLedger, LedgerError
from hil.storage import read_run
from tests.conftest import REPO_ROOT, EmulatorFactory
from tests.hil.test_kill_resume import steps_on_disk
from tests.hil.test_training import EMULATOR_ARGS, TINY_TOML

EMULATOR = EMULATOR_ARGS  # a 32 x 10 array: room for the tiny network
SHORT = ["--updates", "6", "--eval-every", "3"]


def test_three_runs_on_one_chip_add_up_to_the_boards_own_pulse_count(
    emulator_process: EmulatorFactory, tmp_path: Path, chip_ledgers: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    emulator = emulator_process(preset="umass-ta-hfo2", seed=2, extra=EMULATOR)
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_TOML)
    runs = {
        "yield": ["characterize", "yield-map", emulator.resource, "--destructive"],
        "train": ["train", "--board", emulator.resource, "--config", str(config), *SHORT],
        "retention": ["characterize", "retention", emulator.resource, "--program", "set", "--nrows", "3", "--ncols",
                      "3", "--working-cells", "3600", "--t-first", "0.01", "--t-last", "0.1"],
    }  # fmt: skip
    for name, argv in runs.items():
        assert main([*argv, "--out", str(tmp_path / f"{name}.h5")]) == 0, capsys.readouterr().err
    with open_board(emulator.resource, timeout=5) as board:
        counted = board.pulse_count()
    history = ChipLedger(chip_ledgers, "SN-0001").read()
    assert history.shape == (32, 10)
    assert counted > 0 and int(history.total_pulses.sum()) == counted
    in_files = [int(read_run(tmp_path / f"{name}.h5").attrs[f"link/{board}"]["pulses_applied"])
                for name, board in (("yield", "board"), ("train", "board0"), ("retention", "board"))]  # fmt: skip
    assert [r["pulses"] for r in history.runs] == in_files and sum(in_files) == counted
    assert [r["procedure"] for r in history.runs] == ["yield-map", "train", "retention"]
    assert set(history.pulses) == {"set", "reset"}
    assert history.defects is not None and history.calibration is not None and history.conductance is not None
    assert history.defects.run.endswith("train.h5")  # the latest defect map: the training run's calibration
    cells = read_run(tmp_path / "retention.h5").config["options"]["cells"]
    normal = history.defects.arrays["class"][:3, :3] == 0  # the retention took the working cells from it
    assert sorted(map(tuple, cells)) == [(int(r), int(c)) for r, c in zip(*np.nonzero(normal), strict=True)]
    assert len(history.yield_history) == 2

    capsys.readouterr()
    assert main(["chip", "SN-0001", "--cell", "3,7", "--plot", str(tmp_path / "chip.png")]) == 0
    out = capsys.readouterr().out
    assert f"pulses: {counted:,} (reset " in out and "3 run(s)" in out and (tmp_path / "chip.png").is_file()
    assert f"cell: (3, 7): {int(history.total_pulses[3, 7]):,} pulses" in out and "window" in out
    assert main(["chip", "SN-0404"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_training_reuses_a_fresh_calibration_and_measures_a_stale_one(
    emulator_process: EmulatorFactory, tmp_path: Path, chip_ledgers: Path
) -> None:
    emulator = emulator_process(preset="umass-ta-hfo2", seed=2, extra=EMULATOR)
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_TOML)
    base = ["train", "--board", emulator.resource, "--config", str(config), "--updates", "2"]
    assert main([*base, "--out", str(tmp_path / "first.h5")]) == 0
    first = read_run(tmp_path / "first.h5")
    assert first.attrs["prepare/calibration/board0"]["source"] == "measured"
    assert main([*base, "--reuse-calibration", "3600", "--out", str(tmp_path / "second.h5")]) == 0
    second = read_run(tmp_path / "second.h5")
    assert second.attrs["prepare/calibration/board0"]["source"] == "ledger"
    for key in ("k", "c", "stuck_low", "stuck_high", "g_measured"):
        name = f"prepare/calibration/board0/{key}"
        np.testing.assert_array_equal(second.datasets[name], first.datasets[name])
    calibration_pulses = int(first.datasets["prepare/calibration/board0/g_measured"].shape[0]) * 2 * 32 * 10
    spent = [int(r.attrs["link/board0"]["pulses_applied"]) for r in (first, second)]
    assert spent[0] - spent[1] >= calibration_pulses * 0.9  # no calibration pulses the second time
    history = ChipLedger(chip_ledgers, "SN-0001").read()
    assert history.calibration is not None and history.calibration.run.endswith("first.h5")  # not re-dated
    assert main([*base, "--reuse-calibration", "0", "--out", str(tmp_path / "third.h5")]) == 0
    assert read_run(tmp_path / "third.h5").attrs["prepare/calibration/board0"]["source"] == "measured"


def test_a_ledger_refuses_another_shape_and_reading_a_missing_chip(tmp_path: Path) -> None:
    from hil.ledger.store import Session

    ledger = ChipLedger(tmp_path, "SN-9")
    with pytest.raises(LedgerError, match="no ledger for chip 'SN-9'"):
        ledger.read()
    ledger.record(Session("a.h5", "train", "board0", {"set": np.ones((2, 3), np.int64)}), "X", (2, 3))
    with pytest.raises(LedgerError, match="2 x 3 chip; this board is 4 x 4"):
        ledger.record(Session("b.h5", "train", "board0", {"set": np.ones((4, 4), np.int64)}), "X", (4, 4))
    assert int(ledger.read().total_pulses.sum()) == 6


# ---------------------------------------------------------------------------- killed sessions

WRITER = """
import sys
import numpy as np
from hil.ledger.store import ChipLedger, Session
ledger = ChipLedger(sys.argv[1], "SN-KILL")
while True:
    ones = np.ones((32, 10), np.int64)
    ledger.record(Session("run.h5", "train", "board0", {"set": ones, "reset": 2 * ones},
                          calibration={"k": ones * 1e-5, "c": ones * 1e-6, "v_gate_window": np.array([0.6, 1.2])}),
                  "emulator", (32, 10))
    print("recorded", flush=True)
"""


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_a_ledger_writer_killed_again_and_again_leaves_a_whole_ledger(
    tmp_path: Path, killable: list[subprocess.Popen[bytes]]
) -> None:
    """Each update is a whole new ledger moved over the old one: a writer killed anywhere inside an
    update leaves the ledger as it was before the update or after it, never torn."""
    rng = np.random.default_rng(12)
    updates = 0
    for _ in range(5):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], cwd=REPO_ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        killable.append(writer)
        assert writer.stdout is not None
        assert writer.stdout.readline() == b"recorded\n", writer.stderr.read() if writer.stderr else b""
        time.sleep(rng.uniform(0.0, 0.3))  # somewhere in a later update
        os.kill(writer.pid, signal.SIGKILL)
        assert writer.wait() == -signal.SIGKILL
        history = ChipLedger(tmp_path, "SN-KILL").read()  # whatever the kill interrupted, it opens whole
        done = len(history.runs)
        assert done > updates  # nothing recorded was lost, and the first update of this writer is in
        np.testing.assert_array_equal(history.pulses["set"], np.full((32, 10), done))
        np.testing.assert_array_equal(history.pulses["reset"], np.full((32, 10), 2 * done))
        assert len(history.calibrations) == done
        updates = done


def test_a_killed_session_s_wear_is_settled_once_by_the_next_session_on_the_chip(
    emulator_process: EmulatorFactory, tmp_path: Path, chip_ledgers: Path, killable: list[subprocess.Popen[bytes]]
) -> None:
    emulator = emulator_process(preset="umass-ta-hfo2", seed=3, extra=EMULATOR)
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_TOML)
    path = tmp_path / "train.h5"
    train = ["train", "--board", emulator.resource, "--config", str(config), "--out", str(path),
             "--updates", "24", "--eval-every", "8"]  # fmt: skip
    log = tmp_path / "killed.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "hil.cli", *train], cwd=REPO_ROOT, stdout=out,
                                   stderr=subprocess.STDOUT)  # fmt: skip
    killable.append(process)
    give_up = time.monotonic() + 180  # a safety net against a hang, not a timing assertion
    while steps_on_disk(path, lambda f: int(f["data/train"].attrs["completed_updates"])) < 2:
        assert process.poll() is None and time.monotonic() < give_up, log.read_text()[-3000:]
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    opened = ChipLedger(chip_ledgers, "SN-0001").read()
    assert [s.run for s in opened.open_sessions.values()] == [str(path.resolve())]  # registered as it began
    killed_wear = read_run(path).datasets["wear/board0"]

    # Another run on the chip settles the killed session first; then the killed run is resumed to its end.
    yield_map = tmp_path / "yield.h5"
    assert main(["characterize", "yield-map", emulator.resource, "--destructive", "--out", str(yield_map)]) == 0
    settled = ChipLedger(chip_ledgers, "SN-0001").read()
    assert [(Path(r["run"]).name, r["status"]) for r in settled.runs] == [("train.h5", "killed"),
                                                                           ("yield.h5", "completed")]  # fmt: skip
    assert main(["train", "--resume", str(path)]) == 0

    with open_board(emulator.resource, timeout=5) as board:
        counted = board.pulse_count()
    history = ChipLedger(chip_ledgers, "SN-0001").read()
    assert not history.open_sessions
    assert [r["status"] for r in history.runs] == ["killed", "completed", "completed"]
    assert history.pulses_counted == counted > 0  # every pulse once: the killed session's not twice
    # Per device: the killed session's flushed wear, the yield map's and the resumed session's, each once.
    kinds = str(read_run(path).attrs["wear/board0"]["kinds"]).split(",")
    resumed = dict(zip(kinds, read_run(path).datasets["wear/board0"], strict=True))
    assert int(killed_wear.sum()) > 0 and int(resumed["set"].sum()) > 0
    assert int(history.total_pulses.sum()) == int(killed_wear.sum()) + settled.runs[1]["pulses"] + sum(
        int(c.sum()) for c in resumed.values())
    assert history.unattributed_pulses == counted - int(history.total_pulses.sum()) >= 0


def test_gate_calibration_reuses_a_fresh_one_from_the_ledger_which_keeps_every_calibration(
    emulator_process: EmulatorFactory, tmp_path: Path, chip_ledgers: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    emulator = emulator_process(preset="umass-ta-hfo2", seed=4, extra=EMULATOR)
    base = ["characterize", "gate-calibration", emulator.resource, "--n-gates", "4", "--v-gate-min", "0.6",
            "--v-gate-max", "1.5"]  # fmt: skip
    runs = {
        "first": base,
        "reused": [*base, "--reuse-calibration", "3600"],
        "other-pulses": [*base, "--amplitude", "2.4", "--reuse-calibration", "3600"],  # not the same calibration
        "stale": [*base, "--reuse-calibration", "0"],
    }
    for name, argv in runs.items():
        assert main([*argv, "--out", str(tmp_path / f"{name}.h5")]) == 0, capsys.readouterr().err
    data = {name: read_run(tmp_path / f"{name}.h5") for name in runs}
    pulses = {name: int(run.attrs["link/board"]["pulses_applied"]) for name, run in data.items()}
    assert pulses["reused"] == 0 and pulses["first"] == pulses["other-pulses"] == pulses["stale"] > 0
    assert data["reused"].attrs["calibration"]["source"] == "ledger"
    assert "source" not in data["first"].attrs["calibration"]
    for key in ("k", "c", "residual", "g", "v_gate"):
        np.testing.assert_array_equal(data["reused"].datasets[f"calibration/{key}"],
                                      data["first"].datasets[f"calibration/{key}"])  # fmt: skip
    assert "taken from the chip's ledger" in capsys.readouterr().out

    history = ChipLedger(chip_ledgers, "SN-0001").read()
    # Three measured, each kept with its date and run; the reused one is not recorded again.
    assert [Path(d.run).stem for d in history.calibrations] == ["first", "other-pulses", "stale"]
    windows = history.window_history((3, 7))
    assert len(windows) == 3 and all(high > low for _, low, high in windows)
    assert main(["chip", "SN-0001", "--cell", "3,7", "--plot", str(tmp_path / "chip.png")]) == 0
    out = capsys.readouterr().out
    assert out.count("window ") == 3 and "calibrations:   3" not in out and "calibrations: 3," in out


def test_an_open_session_whose_run_file_is_gone_is_closed_with_what_it_credited(tmp_path: Path) -> None:
    from hil.ledger.facts import settled_history
    from hil.ledger.store import ChipHistory, OpenSession

    ledger = ChipLedger(tmp_path, "SN-7")
    gone = OpenSession(str(tmp_path / "deleted.h5"), "board0", "train", 1, -1, "2026-12-03T12:00:00+00:00",
                       credited={"set": np.full((2, 3), 4, np.int64)})  # fmt: skip

    def begin(history: ChipHistory) -> None:
        history.open_sessions[gone.key] = gone
        history.add_pulses(gone.credited)

    ledger.update(begin, "X", (2, 3))
    history = settled_history(ledger)
    assert not history.open_sessions and history.runs[-1]["status"] == "run file gone"
    assert int(history.total_pulses.sum()) == 24 == int(ChipLedger(tmp_path, "SN-7").read().total_pulses.sum())
