"""The HDF5 run file: layout, appends, attributes, and surviving a killed writer."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from hil.run_layout import FORMAT_NAME, FORMAT_VERSION
from hil.storage import RunFile, RunFileError, read_run


def _run_file(path: Path, **kwargs: object) -> RunFile:
    return RunFile(path, procedure="test", config={"answer": 42}, show_progress=False, **kwargs)  # type: ignore[arg-type]


def test_layout_is_versioned_and_carries_config(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    with _run_file(path, resource="emulator://", board_identity="EMU") as run:
        run.write("map/g", np.ones((3, 2)), unit="S")
    with h5py.File(path) as f:
        assert f.attrs["format"] == FORMAT_NAME
        assert f.attrs["format_version"] == FORMAT_VERSION
        assert f.attrs["status"] == "completed"
        assert f["data/map/g"].attrs["unit"] == "S"
    data = read_run(path)
    assert data.config == {"answer": 42}
    assert data.root["board_identity"] == "EMU"
    np.testing.assert_array_equal(data.datasets["map/g"], np.ones((3, 2)))


def test_append_grows_along_first_axis_and_keeps_pending_attrs(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    with _run_file(path) as run:
        run.set_attrs("series/g", unit="S")  # before the dataset exists
        for k in range(5):
            run.append("series/g", np.full(4, float(k)))
        run.set_attrs("", cells=4)
    data = read_run(path)
    assert data.datasets["series/g"].shape == (5, 4)
    np.testing.assert_array_equal(data.datasets["series/g"][:, 0], np.arange(5.0))
    assert data.attrs["series/g"]["unit"] == "S"
    assert data.attrs[""]["cells"] == 4


def test_append_of_a_different_shape_is_refused(tmp_path: Path) -> None:
    with _run_file(tmp_path / "run.h5") as run:
        run.append("x", np.zeros(3))
        with pytest.raises(RunFileError, match="shape"):
            run.append("x", np.zeros(4))


def test_interrupted_and_failed_runs_say_so(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), _run_file(tmp_path / "a.h5") as run:
        run.append("x", [1.0])
        raise KeyboardInterrupt
    with pytest.raises(RuntimeError), _run_file(tmp_path / "b.h5") as run:
        raise RuntimeError("link lost")
    assert read_run(tmp_path / "a.h5").root["status"] == "interrupted"
    assert read_run(tmp_path / "a.h5").datasets["x"].shape == (1, 1)
    assert read_run(tmp_path / "b.h5").root["status"] == "failed: RuntimeError: link lost"


def test_existing_file_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    path.write_bytes(b"precious")
    with pytest.raises(RunFileError, match="exists"):
        _run_file(path)
    assert path.read_bytes() == b"precious"


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such file"), (b"not hdf5 at all", "not a readable HDF5 file"), ("foreign", "not a memristor-hil")],
)
def test_unreadable_files_are_clear_errors(tmp_path: Path, content: bytes | str | None, message: str) -> None:
    path = tmp_path / "x.h5"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "foreign":
        with h5py.File(path, "w") as f:
            f["x"] = 1
    with pytest.raises(RunFileError, match=message):
        read_run(path)


WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from hil.storage import RunFile
    run = RunFile(sys.argv[1], procedure="killed", config={}, show_progress=False, flush_interval=0.0)
    k = 0
    while True:
        run.append("series/g", np.full(64, float(k)))
        k += 1
        if k % 50 == 0:
            print(k, flush=True)
    """
)


def _kill_when(source: str, path: Path, steps: int) -> int:
    """Run a writer (``source``, given ``path``) until it reports ``steps`` done, SIGKILL it; what it reported."""
    writer = subprocess.Popen([sys.executable, "-c", source, str(path)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    reported = 0
    while reported < steps:
        reported = int(writer.stdout.readline())
    writer.send_signal(signal.SIGKILL)
    writer.wait(10)
    return reported


def test_a_killed_writer_leaves_a_readable_file(tmp_path: Path) -> None:
    """SIGKILL mid-run: the file opens and holds every row flushed before the kill."""
    path = tmp_path / "killed.h5"
    reported = _kill_when(WRITER, path, 500)
    data = read_run(path)
    assert data.root["status"] == "running"  # it never got to say otherwise
    rows = data.datasets["series/g"]
    assert rows.shape[0] >= reported
    np.testing.assert_array_equal(rows[:, 0], np.arange(rows.shape[0], dtype=float))


def test_group_attributes_set_before_the_group_exists_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    with _run_file(path) as run:
        run.set_attrs("calibration", v_gate_window="0.7-1.6")  # a group, before any of its datasets
        run.set_attrs("summary", cells=8)  # a group that never gets a dataset
        run.write("calibration/k", np.ones(3), unit="S/V")
    data = read_run(path)
    assert data.attrs["calibration"]["v_gate_window"] == "0.7-1.6"
    assert data.attrs["calibration/k"]["unit"] == "S/V"
    assert data.attrs["summary"]["cells"] == 8


def test_attributes_rewritten_only_when_changed_yet_always_stored(tmp_path: Path) -> None:
    # set_attrs skips scalars already on disk with the same value (each flush rewrites a link's
    # counters); what it skips must really be there, what changed must be written.
    path = tmp_path / "run.h5"
    with _run_file(path) as run:
        run.require_group("link/b")
        run.set_attrs("link/b", pulses=1, framed=True, name="b")
        run.set_attrs("link/b", pulses=1, framed=True, name="b")
        run.set_attrs("link/b", pulses=2, framed=1, name="b")  # a new value, and a new type
        run.write("cp/w", np.zeros(3), unit="S")
        run.write("cp/w", np.zeros(4))  # another shape: the dataset is made anew, without attributes
        run.write("cp/w", np.ones(4), unit="S")  # so the same unit must be written again
        run.write("cp/w", np.full(4, 2.0))  # in place
    data = read_run(path)
    assert data.attrs["link/b"] == {"pulses": 2, "framed": 1, "name": "b"}
    assert not isinstance(data.attrs["link/b"]["framed"], bool)
    assert data.attrs["cp/w"] == {"unit": "S"}
    np.testing.assert_array_equal(data.datasets["cp/w"], np.full(4, 2.0))


LOOP_WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from hil.storage import RunFile
    # as the training loop journals an update: a journal row, the state in the slot the last one did
    # not use, counts rewritten at every flush (often unchanged), then the slot named last
    run = RunFile(sys.argv[1], procedure="killed", config={}, show_progress=False, flush_interval=1e9)
    run.require_group("train")
    k = 0
    while True:
        run.append("journal", np.array([k, 0.5 * k]))
        slot = "ab"[k % 2]
        run.write(f"state/{slot}", np.full(64, float(k)))
        run.write("counts", np.full(8, k // 3))
        run.flush()
        run.set_attrs("train", completed=k + 1, state=slot, loss=0.25 * k)
        run.write("counts", np.full(8, k // 3))
        run.flush()
        k += 1
        if k % 50 == 0:
            print(k, flush=True)
    """
)


def test_a_killed_loop_loses_at_most_the_update_in_flight(tmp_path: Path) -> None:
    """SIGKILL of a writer journaling as the training loop does (rows appended, checkpoints and
    counters rewritten in place, attributes updated in place): the update the file names as
    completed is whole on disk, and nothing of a later one is taken for it."""
    path = tmp_path / "killed.h5"
    reported = _kill_when(LOOP_WRITER, path, 300)
    data = read_run(path)
    train = data.attrs["train"]
    completed = train["completed"]
    assert completed >= reported
    last = completed - 1
    assert train["loss"] == 0.25 * last and train["state"] == "ab"[last % 2]
    journal = data.datasets["journal"]
    assert completed <= journal.shape[0] <= completed + 1  # the row of the update in flight, at most
    np.testing.assert_array_equal(journal[:, 0], np.arange(journal.shape[0], dtype=float))
    np.testing.assert_array_equal(data.datasets[f"state/{train['state']}"], np.full(64, float(last)))
    assert data.datasets["counts"][0] in (last // 3, completed // 3)


def test_rewrites_in_place_store_what_was_last_written(tmp_path: Path) -> None:
    # An identical rewrite is skipped, numbers are rewritten in place: what the file holds must be
    # the last value written either way, with the type it was given.
    path = tmp_path / "run.h5"
    with _run_file(path) as run:
        run.write("w", np.zeros(5))
        run.write("w", np.ones(5))
        run.write("w", np.zeros(5))  # back to the first value: must be written again
        counts = np.zeros(3, np.int32)  # stored as it is: the file keeps no copy of its own
        run.write("c", counts)
        run.write("c", counts)  # in place (and kept to compare with)
        counts[1] = 7  # the caller's array changes after the write: the next write must see it
        run.write("c", counts)
        run.write("narrow", np.full(2, 0.5))  # stored float32 (exact)
        run.write("narrow", np.full(2, 0.1))  # not exact in float32: stored anew as float64
        run.require_group("g")
        run.set_attrs("g", n=1, x=1.5, flag=True, name="a")
        run.set_attrs("g", n=2, x=2.5, flag=False, name="b")
        run.set_attrs("g", n=3.5, x=np.float32(0.25))  # another type: written anew
    data = read_run(path)
    np.testing.assert_array_equal(data.datasets["w"], np.zeros(5))
    np.testing.assert_array_equal(data.datasets["c"], [0, 7, 0])
    np.testing.assert_array_equal(data.datasets["narrow"], np.full(2, 0.1))
    assert data.attrs["g"] == {"n": 3.5, "x": 0.25, "flag": False, "name": "b"}
    assert isinstance(data.attrs["g"]["flag"], bool) and isinstance(data.attrs["g"]["n"], float)


def test_rewrites_and_appends_after_truncation_and_widening_store_what_was_given(tmp_path: Path) -> None:
    # The writer keeps what it last wrote (values, stored type, a series' row count) to skip HDF5's
    # questions: every path that changes a dataset behind that must still leave the file right.
    path = tmp_path / "run.h5"
    nan = np.array([np.nan, 0.0, 1.0])
    with _run_file(path) as run:
        run.write("scalar", np.array(1.0))
        run.write("scalar", np.array(2.0))
        run.write("nan", nan)
        run.write("nan", nan.copy())  # the same bytes: nothing to write
        run.write("zero", np.zeros(2))
        run.write("zero", -np.zeros(2))  # equal as numbers, not as bytes: written
        run.write("mask", np.array([True, False]))
        run.write("mask", np.array([False, False]))
        run.write("bytes", np.arange(3, dtype=np.uint8))  # 3 bytes: compared byte by byte
        run.write("bytes", np.array([0, 1, 9], dtype=np.uint8))
        run.write("fortran", np.asfortranarray(np.arange(6.0).reshape(2, 3)))
        run.write("fortran", np.asfortranarray(np.arange(6.0).reshape(2, 3) + 1))
        run.write("typed", np.arange(3, dtype=np.int64))
        run.write("typed", np.arange(3, dtype=np.float64) + 0.5)  # floats where ints were: stored anew
        for i in range(5):
            run.append("series", np.array([float(i), 0.5]))
        run.truncate("series", 2)
        run.append("series", np.array([7.0, 0.5]))
        run.append("series", np.array([8.0, 0.1]))  # not exact in float32: the series is widened
        run.append("series", np.array([9.0, 0.2]))
        run.write("grown", np.zeros(2))
        run.write("grown", np.ones(3))  # another shape: a new dataset
        run.write("was_group/x", np.zeros(2))
        run.write("was_group", np.arange(2.0))  # a dataset where a group was: replaces it
        with pytest.raises(TypeError):  # not into the deleted group, whose handle the writer kept
            run.write("was_group/y", np.zeros(2))
        run.set_attrs("late/group", unit="S")  # before it exists: kept until it does
        run.write("late/group/deeper", np.zeros(1))
    data = read_run(path)
    assert float(data.datasets["scalar"]) == 2.0
    np.testing.assert_array_equal(data.datasets["nan"], nan)
    assert np.signbit(data.datasets["zero"]).all()
    np.testing.assert_array_equal(data.datasets["mask"], [False, False])
    np.testing.assert_array_equal(data.datasets["bytes"], [0, 1, 9])
    np.testing.assert_array_equal(data.datasets["fortran"], np.arange(6.0).reshape(2, 3) + 1)
    np.testing.assert_array_equal(data.datasets["typed"], [0.5, 1.5, 2.5])
    np.testing.assert_array_equal(data.datasets["series"], [[0, 0.5], [1, 0.5], [7, 0.5], [8, 0.1], [9, 0.2]])
    np.testing.assert_array_equal(data.datasets["grown"], np.ones(3))
    np.testing.assert_array_equal(data.datasets["was_group"], [0.0, 1.0])
    assert "was_group/x" not in data.datasets and data.attrs["late/group"] == {"unit": "S"}


def test_a_directory_given_for_a_run_file_is_named_as_one(tmp_path: Path) -> None:
    import hil

    for read in (read_run, hil.open_run):
        with pytest.raises(RunFileError, match=r"is a directory, not a run file"):  # was: "no such file"
            read(tmp_path)
        with pytest.raises(RunFileError, match="no such file"):
            read(tmp_path / "missing.h5")
