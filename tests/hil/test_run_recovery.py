"""A run file whose last flush a kill cut short (the superblock's end of allocation not yet raised
over what the flushed metadata points to) is read again, with what it had committed."""

from __future__ import annotations

import struct
from pathlib import Path

import h5py
import numpy as np
import pytest

from hil.run_data import open_run
from hil.run_recovery import raise_end_of_allocation
from hil.storage import RunFile, read_run

EOA_AT = 40  # the version-0 superblock h5py writes


def _recorded_eoa(path: Path) -> int:
    with path.open("rb") as f:
        f.seek(EOA_AT)
        return int(struct.unpack("<Q", f.read(8))[0])


def _killed_run(path: Path, steps: int, data_only: bool = False) -> int:
    """A run file left as a writer killed between a step's metadata and its superblock leaves it:
    ``steps`` steps flushed (the last creates a dataset: new space), then the superblock's EOA put
    back to where the last step began, as if the last flush's superblock never reached the disk
    (``data_only``: to where a series' last chunk begins, every header inside). Returns the last
    step committed."""
    run = RunFile(path, procedure="train", config={}, flush_interval=0.0, show_progress=False)
    run.require_group("train")
    rng = np.random.default_rng(1)
    eoa_before_last = 0
    for step in range(steps):
        eoa_before_last = _recorded_eoa(path)
        run.write(f"state/{step}/weights", rng.normal(size=(64, 54)))
        run.append("journal", np.array([step, rng.normal()]))
        run.append("g", rng.normal(size=1024))
        run.flush()
        run.set_attrs("train", completed_updates=step)
        run.flush()
    if data_only:
        series = run._file["data/g"].id
        eoa_before_last = max(series.get_chunk_info(i).byte_offset for i in range(series.get_num_chunks()))
    run._file.close()  # no orderly close (it would compact the file): the process is gone
    with path.open("r+b") as f:
        f.seek(EOA_AT)
        f.write(struct.pack("<Q", eoa_before_last))
    return steps - 1


def test_a_cut_flush_is_recovered_with_everything_it_committed(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    committed = _killed_run(path, steps=6)
    with pytest.raises((OSError, KeyError), match="addr overflow"), h5py.File(path, "r") as f:
        f["data/state"][str(committed)]["weights"][...]  # what HDF5 makes of it unaided
    run = read_run(path)
    assert run.attrs["train"]["completed_updates"] == committed
    np.testing.assert_array_equal(run.datasets["journal"][:, 0], np.arange(committed + 1))
    assert _recorded_eoa(path) == path.stat().st_size
    resumed = RunFile.reopen(path, show_progress=False)  # and a resume writes on
    resumed.append("journal", np.array([committed + 1, 0.0]))
    resumed.close()
    assert len(read_run(path).datasets["journal"]) == committed + 2


def test_only_a_superblock_behind_the_files_end_is_touched(tmp_path: Path) -> None:
    plain = tmp_path / "plain.h5"
    with RunFile(plain, procedure="train", config={}, show_progress=False) as run:
        run.write("x", np.arange(10.0))
    before = plain.read_bytes()
    assert not raise_end_of_allocation(plain)  # EOA at the file's end already
    assert plain.read_bytes() == before
    other = tmp_path / "other.h5"
    other.write_bytes(b"not an HDF5 file at all, but long enough to have a superblock's bytes" * 2)
    assert not raise_end_of_allocation(other)
    assert other.read_bytes() == b"not an HDF5 file at all, but long enough to have a superblock's bytes" * 2


def test_a_cut_flush_opens_as_a_tree_too(tmp_path: Path) -> None:
    """``hil.open_run`` (xarray) on the same file: made readable first, then opened."""
    path = tmp_path / "run.h5"
    committed = _killed_run(path, steps=4)
    tree = open_run(path)
    assert tree.attrs["procedure"] == "train"
    assert tree["state"][str(committed)]["weights"].values.shape == (64, 54)


def test_a_cut_flush_read_lazily_reads_its_data_later(tmp_path: Path) -> None:
    """``hil show`` reads lazily: the data it reads after the file's structure must be readable too."""
    path = tmp_path / "run.h5"
    committed = _killed_run(path, steps=5, data_only=True)
    run = read_run(path, lazy=True)
    assert run.datasets[f"state/{committed}/weights"].shape == (64, 54)
    assert run.datasets["g"].shape == (committed + 1, 1024)  # its last chunk lay past the recorded end
