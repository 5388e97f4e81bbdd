"""The `hil` command line, run in process against the embedded emulator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hil.cli import EXIT_ERROR, main

IDEAL = "emulator://?preset=ideal&seed=2&rows=8&cols=4"


def test_info_reports_identity_size_and_limits(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", IDEAL, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["rows"], info["cols"]) == (8, 4)
    assert info["identity"].startswith("MEMHIL EMU-1T1R")
    assert info["limits"]["v_gate"] == {"min": 0.0, "max": 5.5}
    # ranges as numbers a script can use, not the reply's text
    low, high = info["adc_range_V"]
    assert isinstance(low, float) and low < high
    assert all(isinstance(v, float) for pair in info["dac_range_V"].values() for v in pair)


def test_map_prints_summary_and_writes_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "map.npy"
    assert main(["map", IDEAL, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    saved = np.load(out)
    assert saved.shape == (8, 4)
    # The ideal preset has no read noise: every fresh cell sits at the preset's mean conductance.
    assert np.allclose(saved, saved[0, 0], rtol=1e-3)
    assert f"median {saved[0, 0] * 1e6:.1f} uS" in text
    assert "8 x 4 map" in text


def test_a_map_file_says_what_it_holds_and_is_never_replaced_silently(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import xarray as xr

    for name in ("map.npy", "map.csv", "map.nc"):
        assert main(["map", IDEAL, "--v-read", "0.1", "--out", str(tmp_path / name)]) == 0
    about = json.loads((tmp_path / "map.npy.json").read_text())
    assert about["v_read_V"] == 0.1 and about["unit"] == "S" and "SN-" in about["board"] and about["read_utc"]
    header = [line for line in (tmp_path / "map.csv").read_text().splitlines() if line.startswith("#")]
    assert "# v_read_V: 0.1" in header and np.loadtxt(tmp_path / "map.csv", delimiter=",").shape == (8, 4)
    with xr.open_dataarray(tmp_path / "map.nc", engine="h5netcdf") as array:
        assert array.dims == ("row", "col") and array.attrs["units"] == "S" and array.attrs["v_read_V"] == 0.1
    before = (tmp_path / "map.csv").read_bytes()
    capsys.readouterr()
    assert main(["map", IDEAL, "--out", str(tmp_path / "map.csv")]) == EXIT_ERROR
    assert "exists" in capsys.readouterr().err and (tmp_path / "map.csv").read_bytes() == before
    assert main(["map", IDEAL, "--out", str(tmp_path / "map.csv"), "--overwrite"]) == 0


def test_map_counts_cells_outside_the_window(capsys: pytest.CaptureFixture[str]) -> None:
    # Every fresh ideal cell is near 120 uS: a 200-300 uS window puts all 32 below it.
    assert main(["map", IDEAL, "--window-min", "200e-6", "--window-max", "300e-6"]) == 0
    assert "32 of 32 cells (100.0 %) outside 200-300 uS (32 below, 0 above)" in capsys.readouterr().out


def test_config_file_supplies_resource_and_limits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "board.toml"
    config.write_text(f'resource = "{IDEAL}"\n[limits]\nv_row = {{ min = -3.0, max = 3.0 }}\n'
                      'v_col = { min = -3.0, max = 3.0 }\nv_gate = { min = 0.0, max = 5.0 }\n'
                      'v_read = { min = -0.3, max = 0.3 }\npulse_width = { min = 1e-8, max = 1e-4 }\n'
                      'i_col = { min = -0.02, max = 0.02 }\n')  # fmt: skip
    assert main(["info", "--config", str(config), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["limits"]["v_row"] == {"min": -3.0, "max": 3.0}
    assert info["firmware_limits"]["v_row"] == {"min": -4.0, "max": 4.0}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["info", "nonsense"], "resource 'nonsense': cannot tell which transport it needs"),
        (["info", "emulator://?preset=nope"], "unknown preset 'nope'"),
        (["info", "emulator://?write_noise=loud"], "write_noise"),
        (["info", "--config", "/nonexistent/board.toml"], "cannot read board config"),
        (["map", IDEAL, "--v-read", "0.9"], "v_read = 0.9 V is outside the limit [-0.5, 0.5] V"),
        (["map", IDEAL, "--out", "map.txt"], "use a .npy, .csv, .nc file name"),
    ],
)
def test_bad_input_is_one_clear_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == EXIT_ERROR
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_config_errors_name_every_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "board.toml"
    config.write_text('timeout = -1\ncolour = "red"\n[limits]\nv_row = { min = 3.0, max = -3.0 }\n')
    assert main(["info", "--config", str(config)]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1  # one line, every field in it
    for field in ("timeout", "colour", "limits.v_row", "limits.v_col"):
        assert f" {field}: " in err


def test_limits_beyond_the_firmware_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "board.json"
    limits = {name: {"min": -1.0, "max": 1.0} for name in ("v_row", "v_col", "v_read", "pulse_width", "i_col")}
    limits["v_gate"] = {"min": 0.0, "max": 9.0}
    config.write_text(json.dumps({"resource": IDEAL, "limits": limits}))
    assert main(["info", "--config", str(config)]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "v_gate" in err and "beyond the firmware's absolute limits" in err


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("timeout = nan\n", "timeout"),
        ("timeout = inf\n", "timeout"),
        ('framing = "sometimes"\n', "framing"),
        ("[limits]\nv_row = { min = nan, max = 3.0 }\n", "limits.v_row.min"),
        ("[limits]\nv_gate = { min = 0.0, max = inf }\n", "limits.v_gate.max"),
        ('resource = ["a", "b"]\n', "resource"),
    ],
)  # fmt: skip
def test_hostile_board_config_values_are_named(
    text: str, field: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "board.toml"
    config.write_text(text)
    assert main(["info", "--config", str(config)]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert f" {field}: " in err
    assert "Traceback" not in err
