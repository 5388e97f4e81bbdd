"""``hil characterize all``, ``hil twin fit`` and ``hil twin check`` from the command line."""

from __future__ import annotations

import time
import tomllib
from pathlib import Path

import h5py
import pytest

from drivers import open_board
from hil import run_layout as layout
from hil.cli import main
from hil.storage import read_run
from tests.conftest import EmulatorFactory

CHIP = "emulator://?preset=umass-ta-hfo2&seed=6&rows=16&cols=8&bad_cols=3&unformed_fraction=0.1"
QUICK = ["--set", "retention.t_last=100", "--set", "write-noise.cycles=4"]
STEPS = ("forming", "yield-map", "gate-calibration", "write-noise", "wire-resistance", "retention")


def test_characterize_all_refuses_without_a_terminal_or_yes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["characterize", "all", CHIP, "--out-dir", str(tmp_path / "run"), *QUICK]) == 2
    out, err = capsys.readouterr()
    assert "pulses (at most)" in out and "gate-calibration" in out  # the budget was shown first
    assert "pass --yes" in err
    assert not any((tmp_path / "run").glob("*.h5"))


def test_characterize_all_rejects_an_unknown_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["characterize", "all", CHIP, "--out-dir", str(tmp_path), "--set", "nothing.x=1", "--yes"]) == 2
    assert "no suite step named 'nothing'" in capsys.readouterr().err


@pytest.mark.parametrize(("setting", "message"), [
    ("yield-map.nosuch=1", "bad --set: yield-map.nosuch: Extra inputs are not permitted (got 1)"),
    ("retention.t_last=-5", "bad --set: retention.t_last: Input should be greater than 0 (got -5)"),
    # taken as 1 before: the suite ran one calibration repeat
    ("gate-calibration.repeats=true", "bad --set: gate-calibration.repeats: a number is meant, not true (got True)"),
    ("write-noise.v_read=false", "bad --set: write-noise.v_read: a number is meant, not false (got False)"),
])  # fmt: skip
def test_a_bad_step_option_is_one_line_naming_step_field_and_value(
    setting: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["characterize", "all", CHIP, "--out-dir", str(tmp_path / "run"), "--set", setting, "--yes"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {message}"  # was pydantic's own text: "1 validation error for ...; For further ..."
    assert not (tmp_path / "run").exists()


def test_characterize_all_then_fit_then_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "run"
    assert main(["characterize", "all", CHIP, "--out-dir", str(out_dir), "--yes", *QUICK]) == 0
    for step in STEPS:
        run = read_run(out_dir / f"{step}.h5")
        assert run.root["status"] == "completed"
        assert run.config["board"]["resource"] == CHIP
    printed = capsys.readouterr().out
    assert '{"rows": [], "cols": [3]}' in printed and "write_noise:" in printed

    # Again on the same folder: nothing left to do. A step that did not complete runs again.
    assert main(["characterize", "all", CHIP, "--out-dir", str(out_dir), "--yes", *QUICK]) == 0
    assert "every step is done already" in capsys.readouterr().out
    with h5py.File(out_dir / "write-noise.h5", "r+") as f:
        f.attrs["status"] = "interrupted"
    assert main(["characterize", "all", CHIP, "--out-dir", str(out_dir), "--yes", *QUICK]) == 0
    out = capsys.readouterr().out
    assert "resume" in out and "write_noise:" in out and "retention:" not in out
    assert read_run(out_dir / "write-noise.h5").root["status"] == "completed"

    twin_path = tmp_path / "chip.toml"
    files = [str(out_dir / f"{step}.h5") for step in STEPS]
    assert main(["twin", "fit", *files, "--out", str(twin_path)]) == 0
    twin = tomllib.loads(twin_path.read_text())
    assert twin["parameters"]["bad_cols"] == [3]
    assert twin["parameters"]["unformed_fraction"] == pytest.approx(0.1, abs=0.01)
    source = twin["sources"]["set_slope"]
    assert source["procedure"] == "gate-calibration" and source["file"].endswith("gate-calibration.h5")
    assert source["uncertainty"] > 0
    assert twin["parameters"]["cell_map"] == "chip.cells.npz" and (tmp_path / "chip.cells.npz").exists()
    assert "cell_map = chip.cells.npz" in capsys.readouterr().out
    assert main(["twin", "fit", *files, "--out", str(twin_path)]) == 2  # no silent overwrite
    population = tmp_path / "population.toml"
    assert main(["twin", "fit", *files, "--out", str(population), "--population-only"]) == 0
    assert "cell_map" not in tomllib.loads(population.read_text())["parameters"]
    capsys.readouterr()

    with open_board(f"emulator://?params={twin_path}") as board:
        assert board.shape == (16, 8)

    assert main(["twin", "check", str(twin_path), f"emulator://?params={twin_path}&seed=9",
                 "--out-dir", str(tmp_path / "check"), "--yes", *QUICK]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "verdict" in out and "set_slope" in out and "parameters agree" in out
    # The twin has the chip's cells: against itself, no cell changed class.
    assert "0 newly stuck low, 0 no longer" in out and "working cells moved by" in out


def test_twin_fit_refuses_files_that_are_not_twin_procedures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "iv.h5"
    assert main(["characterize", "iv-sweep", CHIP, "--cells", "[[0, 0]]", "--out", str(path)]) == 0
    assert main(["twin", "fit", str(path), "--out", str(tmp_path / "chip.toml")]) == 2
    assert "no characterization run of forming" in capsys.readouterr().err


def test_twin_fit_takes_one_chips_files_and_the_later_of_a_procedure_measured_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = CHIP.replace("seed=6", "seed=7")
    paths = {name: tmp_path / f"{name}.h5" for name in ("map", "noise_before", "noise_after", "other_noise")}
    for name, chip, procedure in (
        ("map", CHIP, "yield-map"),
        ("noise_before", CHIP, "write-noise"),
        ("noise_after", CHIP, "write-noise"),
        ("other_noise", other, "write-noise"),
    ):
        extra = ["--cycles", "4"] if procedure == "write-noise" else []
        if name == "noise_after":
            time.sleep(1.1)  # run files stamp their start to the second
        assert main(["characterize", procedure, chip, "--out", str(paths[name]), *extra]) == 0
    capsys.readouterr()
    # Another chip's write noise beside this chip's yield map: was fitted into one twin without a word.
    out = tmp_path / "mixed.toml"
    assert main(["twin", "fit", str(paths["map"]), str(paths["other_noise"]), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "seed=7" in err and "a twin is fitted from one chip's files" in err
    assert not out.exists()
    # The same procedure twice: the later run, whatever the order given (was: the last file named).
    out = tmp_path / "chip.toml"
    files = [str(paths["noise_after"]), str(paths["map"]), str(paths["noise_before"])]
    assert main(["twin", "fit", *files, "--out", str(out)]) == 0
    fitted = tomllib.loads(out.read_text())
    assert fitted["sources"]["write_noise"]["file"] == str(paths["noise_after"])
    assert f"left out: {paths['noise_before']}" in capsys.readouterr().out


def test_a_characterization_file_records_the_resource_it_used(
    tmp_path: Path, emulator_process: EmulatorFactory
) -> None:
    emulator = emulator_process("tcp", extra=("--rows", "8", "--cols", "4"))
    path = tmp_path / "yield.h5"
    assert main(["characterize", "yield-map", emulator.resource, "--out", str(path)]) == 0
    assert read_run(path).config["board"]["resource"] == emulator.resource


def test_twin_fit_takes_one_chip_however_its_resource_is_spelled_or_its_firmware_updated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The same emulated chip with its query in another order, and a firmware update between two runs
    # of a real chip (same serial): were refused as two chips ("a twin is fitted from one chip's files").
    reordered = CHIP.replace("preset=umass-ta-hfo2&seed=6", "seed=6&preset=umass-ta-hfo2")
    assert reordered != CHIP
    map_path, noise_path = tmp_path / "map.h5", tmp_path / "noise.h5"
    assert main(["characterize", "yield-map", CHIP, "--out", str(map_path)]) == 0
    assert main(["characterize", "write-noise", reordered, "--out", str(noise_path), "--cycles", "4"]) == 0
    with h5py.File(noise_path, "r+") as f:
        identity = str(f.attrs[layout.BOARD_IDENTITY])
        assert "firmware 0.1.0" in identity
        f.attrs[layout.BOARD_IDENTITY] = identity.replace("firmware 0.1.0", "firmware 0.2.0")
    capsys.readouterr()
    out = tmp_path / "chip.toml"
    # The map named twice is read once (was: "left out" of the fit that used it).
    assert main(["twin", "fit", str(map_path), str(noise_path), str(map_path), "--out", str(out)]) == 0
    assert "left out" not in capsys.readouterr().out
    assert tomllib.loads(out.read_text())["sources"]["write_noise"]["file"] == str(noise_path)
