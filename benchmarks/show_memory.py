"""Peak memory of ``hil show`` on a 100,000-cycle endurance run file.

A real endurance run of a few cycles (8 x 8 cells, both states read after every cycle) on the
embedded emulator gives the file its layout, attributes and options; its series are then grown to
``--cycles`` rows of synthetic readings (ON about 200 uS, OFF about 20 uS, 2 % noise: what a
100,000-cycle run would hold, without the hours it takes). Each command then runs in a process of
its own, and its peak resident memory (``ru_maxrss``) is read from a parent that waited for it
alone. Measured: the interpreter with ``hil.cli`` imported (the floor), ``hil show --no-plot``,
``hil show`` (with its plot), and the same interpreter reading the whole file into memory
(``read_run``, what ``hil show`` did before it read lazily). POSIX only (``resource``). The last
line of stdout is one JSON object.

    .venv/bin/python benchmarks/show_memory.py --out-dir /tmp/show-memory
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

from hil.cli import main
from hil.run_compaction import closed_options

EMULATOR = "emulator://?preset=umass-ta-hfo2&seed=1"
BLOCK = 10_000  # rows written at a time: the benchmark itself stays small
PEAK = ("import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, done.returncode)")  # fmt: skip


def _regrow(data: h5py.Group, name: str, rows: int, fill: object) -> None:
    """Replace series ``name`` by ``rows`` rows, written ``BLOCK`` at a time by ``fill(start, stop)``."""
    old = data[name]
    attrs, tail, dtype = dict(old.attrs), old.shape[1:], old.dtype
    del data[name]
    grown = data.create_dataset(name, shape=(rows, *tail), maxshape=(None, *tail), dtype=dtype,
                                **closed_options(tail, dtype, rows=True))  # fmt: skip
    grown.attrs.update(attrs)
    for start in range(0, rows, BLOCK):
        stop = min(rows, start + BLOCK)
        grown[start:stop] = fill(start, stop)  # type: ignore[operator]


def make_file(out_dir: Path, cycles: int) -> Path:
    """An endurance run file of ``cycles`` cycles, every one read (see the module's docstring)."""
    path = out_dir / f"endurance-{cycles}.h5"
    path.unlink(missing_ok=True)
    argv = ["characterize", "endurance", EMULATOR, "--nrows", "8", "--ncols", "8", "--max-cycles", "5",
            "--read-every", "1", "--window-min", "0", "--out", str(path)]  # fmt: skip
    if main(argv):
        raise SystemExit("the template endurance run failed")
    rng = np.random.default_rng(1)
    with h5py.File(path, "r+") as f:
        data = f["data"]
        cells = data["endurance/g_on"].shape[1]

        def level(mean: float) -> object:
            return lambda start, stop: (mean * (1 + 0.02 * rng.standard_normal((stop - start, cells)))).astype(
                np.float32)  # fmt: skip

        _regrow(data, "endurance/cycle", cycles, lambda start, stop: np.arange(start + 1, stop + 1))
        _regrow(data, "endurance/g_on", cycles, level(200e-6))
        _regrow(data, "endurance/g_off", cycles, level(20e-6))
        journal_columns = data["endurance/journal"].shape[1]
        _regrow(data, "endurance/journal", cycles, lambda start, stop: np.column_stack(
            [np.arange(start + 1, stop + 1)] + [np.arange(start + 1, stop + 1)] * (journal_columns - 1)))  # fmt: skip
        data["endurance"].attrs["cycles_done"] = cycles
    return path


def peak_rss_mb(command: list[str]) -> float:
    """Peak resident memory of ``command``, MB, from a parent that waits for it alone."""
    out = subprocess.run([sys.executable, "-c", PEAK, *command], capture_output=True, text=True, check=True)
    kilobytes, status = out.stdout.split()[-2:]
    if status != "0":
        raise SystemExit(f"{command} failed with status {status}")
    return round(int(kilobytes) / 1024, 1)


def measure(out_dir: Path, cycles: int) -> dict[str, object]:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = make_file(out_dir, cycles)
    with h5py.File(path, "r") as f:
        whole = sum(d.size * d.dtype.itemsize for d in f["data/endurance"].values() if isinstance(d, h5py.Dataset))
    python = [sys.executable]
    figures: dict[str, object] = {
        "cycles": cycles, "file_mb": round(os.path.getsize(path) / 1e6, 1),
        "datasets_in_memory_mb": round(whole / 1e6, 1),
        "import_hil_cli_mb": peak_rss_mb([*python, "-c", "import hil.cli"]),
        "show_no_plot_mb": peak_rss_mb([*python, "-m", "hil.cli", "show", str(path), "--no-plot"]),
        "show_with_plot_mb": peak_rss_mb([*python, "-m", "hil.cli", "show", str(path), "--plot",
                                          str(out_dir / "show.png")]),
        "cli_and_whole_file_mb": peak_rss_mb([*python, "-c", f"import hil.cli; hil.cli.read_run({str(path)!r})"]),
    }  # fmt: skip
    for name, value in figures.items():
        print(f"{name}: {value}", flush=True)
    return figures


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--cycles", type=int, default=100_000, help="endurance cycles, each read")
    args = parser.parse_args()
    print(json.dumps(measure(args.out_dir, args.cycles)))


if __name__ == "__main__":
    cli()
