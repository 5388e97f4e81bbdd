"""Run files for analysis: ``hil.open_run`` (lazy xarray), ``hil export``, and reading a live file."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import h5py
import numpy as np
import pandas as pd
import pytest
import xarray as xr

import hil
from hil import run_layout as layout
from hil.cli import main
from hil.storage import RunFile
from hil.training.loop import EVAL_COLUMNS, JOURNAL_COLUMNS

EPOCHS, UPDATES, SHAPE = 40, 400, (64, 32)
OLD_TRAINING = Path(__file__).parent / "data" / "layout-1.1" / "train.h5"


@pytest.fixture
def training_file(tmp_path: Path) -> Path:
    """A training run's file as the training loop lays it out: journal, evaluations, snapshots."""
    rng = np.random.default_rng(0)
    path = tmp_path / "run.h5"
    with RunFile(path, procedure="train", config={"model": "mlp"}, show_progress=False) as run:
        run.set_attrs(layout.JOURNAL, columns=JOURNAL_COLUMNS)
        run.set_attrs(layout.EVALUATIONS, columns=EVAL_COLUMNS)
        for update in range(UPDATES):
            loss = 2.3 * np.exp(-update / 100) + 0.05 * rng.random()
            run.append(layout.JOURNAL, np.array([update, update // 10, loss, 0.9, 100, 50, 0.01]))
            if (update + 1) % 100 == 0:
                run.append(layout.EVALUATIONS, np.array([update + 1, 0.5 + update / 1000, loss]))
            if (update + 1) % 10 == 0:  # board reads are float32
                g = rng.normal(50e-6 + update * 1e-7, 5e-6, SHAPE).astype(np.float32)
                run.append(layout.snapshots("board0"), g)
        run.set_attrs(layout.snapshots("board0"), unit="S")
    return path


@pytest.fixture
def elements_read() -> Iterator[list[int]]:
    """How many values each read of an HDF5 dataset returned."""
    counts: list[int] = []
    original = h5py.Dataset.__getitem__

    def counting(self: h5py.Dataset, selection: Any) -> Any:
        result = original(self, selection)
        counts.append(int(np.size(result)))
        return result

    with mock.patch.object(h5py.Dataset, "__getitem__", counting):
        yield counts


def test_a_notebook_computes_a_learning_curve_and_a_histogram_without_loading_whole_datasets(
    training_file: Path, elements_read: list[int]
) -> None:
    run = hil.open_run(training_file)
    assert run.attrs["procedure"] == "train" and run.attrs["format_version"] == layout.FORMAT_VERSION
    journal, snapshots = run["train/journal"], run["snapshots"]
    assert sum(elements_read) <= UPDATES + 4  # opening reads the index column of each table only
    assert snapshots["board0"].dims == ("epoch", "row", "col") and snapshots["board0"].attrs["units"] == "S"
    assert snapshots["board0"].shape == (EPOCHS, *SHAPE)

    elements_read.clear()
    curve = journal["loss"].rolling(update=50).mean().compute()
    assert curve.sizes["update"] == UPDATES and float(curve[-1]) < float(curve[60])
    assert sum(elements_read) <= 7 * UPDATES  # the journal only (it is one chunk)

    elements_read.clear()
    last = snapshots["board0"].isel(epoch=-1)
    counts, edges = np.histogram(last.values.ravel() * 1e6, bins=40)
    assert counts.sum() == SHAPE[0] * SHAPE[1] and 80 < edges[counts.argmax()] < 100
    assert 0 < sum(elements_read) < EPOCHS * SHAPE[0] * SHAPE[1] / 4  # a chunk of epochs, not the whole series
    assert last.coords["row"].values.tolist() == list(range(SHAPE[0]))

    evaluations = run["train/eval"].to_dataset()
    assert evaluations["test_accuracy"].values.tolist() == pytest.approx([0.599, 0.699, 0.799, 0.899])


def test_open_run_reads_a_layout_1_1_file() -> None:
    run = hil.open_run(OLD_TRAINING)
    assert run["train/journal"].sizes["update"] == 12
    assert run["prepare/calibration/board0"]["k"].dims == ("row", "col")


@pytest.mark.parametrize("kind", ["netcdf", "parquet", "csv"])
def test_export_writes_what_xarray_and_pandas_read_back(
    kind: str, training_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / f"out-{kind}"
    assert main(["export", str(training_file), "--to", kind, "--out", str(out)]) == 0
    expected = hil.open_run(training_file)["train/journal"]["loss"].values
    if kind == "netcdf":
        tree = xr.open_datatree(out, engine="h5netcdf")
        np.testing.assert_array_equal(tree["train/journal"]["loss"].values, expected)
        assert tree["snapshots"]["board0"].attrs["units"] == "S"
    else:
        read = pd.read_parquet if kind == "parquet" else pd.read_csv
        np.testing.assert_allclose(read(out / f"train.journal.{kind}")["loss"].to_numpy(), expected, rtol=1e-15)
        snapshots = read(out / f"snapshots.board0.{kind}")
        assert list(snapshots.columns) == ["epoch", "row", "col", "board0"] and len(snapshots) == EPOCHS * 64 * 32
    capsys.readouterr()
    assert main(["export", str(training_file), "--to", kind, "--out", str(out)]) == 2  # never replaced silently
    assert "exists" in capsys.readouterr().err


@pytest.mark.parametrize(("kind", "out", "message"), [
    ("netcdf", "run.h5", "is the run file itself"),  # was: at HDF5's mercy (it refused to truncate an open file)
    ("netcdf", "folder", "is a directory; netCDF is one file"),  # was: errno 21 from HDF5
    ("parquet", "file.txt", "is a file; parquet tables go in a directory"),  # was: [Errno 17] File exists
])  # fmt: skip
def test_export_over_the_run_a_folder_or_a_file_is_one_line_and_writes_nothing(
    kind: str, out: str, message: str, training_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "keep").write_text("mine")
    (tmp_path / "file.txt").write_text("mine")
    before = training_file.read_bytes()
    assert main(["export", str(training_file), "--to", kind, "--out", str(tmp_path / out), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err and "nothing was written" in err
    assert training_file.read_bytes() == before
    assert (tmp_path / "folder" / "keep").read_text() == (tmp_path / "file.txt").read_text() == "mine"


WRITER = textwrap.dedent("""
    import sys, numpy as np
    from hil.storage import RunFile
    run = RunFile(sys.argv[1], procedure="test", config={}, show_progress=False)
    for i in range(50):
        run.append("series/g", np.full(8, float(i)))
    run.flush()
    print("READY", flush=True)
    sys.stdin.read()  # hold the file open, its lock taken, until the test is done
    run.close()
""")


def test_a_run_being_written_can_be_shown_and_opened(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "live.h5"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == b"READY"
        assert main(["show", str(path), "--no-plot"]) == 0
        out = capsys.readouterr().out
        assert "status: running" in out and "series/g  float64 (50, 8)  min 0 median 24.5 max 49" in out
        assert hil.open_run(path)["series"]["g"].shape == (50, 8)
    finally:
        writer.communicate(b"", timeout=30)
    assert writer.returncode == 0
