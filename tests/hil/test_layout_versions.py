"""Run files of an older layout stay readable; the current layout stores data compressed, chunked and narrow."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from hil import run_layout as layout
from hil.cli import main
from hil.storage import RunFile, read_run
from protocols.recording import journaled_steps

OLD = Path(__file__).parent / "data" / "layout-1.1"


@pytest.mark.parametrize("name", ["train", "endurance", "yield-map"])
def test_a_file_of_layout_1_1_is_read_shown_and_plotted(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = shutil.copy(OLD / f"{name}.h5", tmp_path)
    run = read_run(path)
    assert run.root["format_version"] == "1.1" and run.root["status"] == "completed"
    assert main(["show", str(path), "--plot", str(tmp_path / "plot.png")]) == 0
    assert "format_version: 1.1" in capsys.readouterr().out and (tmp_path / "plot.png").is_file()
    if name == "train":
        assert layout.completed_updates(run) == 12 and layout.prepared(run)
        # before 1.5 ``pulses/<board>`` was rewritten with every update: the reader takes it as it is
        assert np.array_equal(layout.pulse_counts(run, "board0"), run.datasets["pulses/board0"])
        assert run.datasets[layout.JOURNAL].dtype == np.float64
    if name == "endurance":
        assert journaled_steps(run.datasets) == 40


def test_new_files_are_compressed_narrow_and_read_back_in_their_written_types(tmp_path: Path) -> None:
    path = tmp_path / "new.h5"
    measured = np.random.default_rng(0).random((64, 32)).astype(np.float32).astype(np.float64)  # as read from a board
    exact = np.random.default_rng(1).random((64, 32))  # a float64 that float32 would round
    with RunFile(path, procedure="test", config={}, show_progress=False) as run:
        run.write("map", measured)
        run.write("weights", exact)
        run.write("counts", np.arange(4096, dtype=np.int64).reshape(64, 64))
        for step in range(100):
            run.append("series/g", measured[step % 64])
        run.append("series/late", np.array([0.5]))
        run.append("series/late", np.array([0.1]))  # not exact in float32: the series is widened
    with h5py.File(path) as f:
        data = f["data"]
        assert data["map"].dtype == np.float32 and data["map"].compression == "gzip"
        assert data["weights"].dtype == np.float64
        assert data["counts"].dtype == np.int32
        assert data["series/g"].dtype == np.float32 and data["series/g"].chunks[1:] == (32,)
        assert data["series/late"].dtype == np.float64
        assert f.attrs["format_version"] == layout.FORMAT_VERSION == "1.5"
    run_data = read_run(path)
    np.testing.assert_array_equal(run_data.datasets["map"], measured)
    assert run_data.datasets["map"].dtype == np.float64 and run_data.datasets["counts"].dtype == np.int64
    np.testing.assert_array_equal(run_data.datasets["weights"], exact)
    np.testing.assert_array_equal(run_data.datasets["series/late"], [[0.5], [0.1]])
    assert "stored_from" not in run_data.attrs.get("map", {})
