"""Run-file sizes: an endurance run and a training run, written by whichever code is on the path.

Runs ``hil characterize endurance`` on 8 x 8 cells and ``hil train --model cnn`` (calibration,
placement, initial programming, then in-situ updates) on the embedded emulator, and prints each
file's size. Run it on two checkouts to compare layouts (before: ``PYTHONPATH=<old tree>``); the
last line of stdout is one JSON object.

    .venv/bin/python benchmarks/run_files.py --out-dir /tmp/sizes            # about 2 min on 2 cores
    .venv/bin/python benchmarks/run_files.py --cycles 100 --updates 10 --out-dir /tmp/quick

A run file is written plain and compressed when it closes (``hil.run_compaction``); the time that
takes for a long endurance run is measured on a file of ``--compact-cycles`` rows of 64 cells.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import h5py
import numpy as np

from hil.cli import main
from hil.run_compaction import compact

EMULATOR = "emulator://?preset=umass-ta-hfo2&seed=1"


def _layout(path: Path) -> str:
    with h5py.File(path, "r") as f:
        return str(f.attrs.get("format_version", "?"))


def measure(out_dir: Path, cycles: int, updates: int) -> dict[str, object]:
    out_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, object] = {}
    jobs = {
        "endurance": ["characterize", "endurance", EMULATOR, "--nrows", "8", "--ncols", "8", "--max-cycles",
                      str(cycles), "--read-every", "1", "--window-min", "0"],
        "training": ["train", "--model", "cnn", "--updates", str(updates), "--eval-every", str(max(1, updates // 4)),
                     "--board", EMULATOR],
    }  # fmt: skip
    for name, argv in jobs.items():
        path = out_dir / f"{name}.h5"
        path.unlink(missing_ok=True)
        started = time.perf_counter()
        status = main([*argv, "--out", str(path)])
        if status:
            raise SystemExit(f"{name} failed with status {status}")
        size = os.path.getsize(path)
        figures[name] = {"bytes": size, "layout": _layout(path), "seconds": round(time.perf_counter() - started, 1)}
        print(f"{name}: {size / 1e6:.3f} MB (layout {_layout(path)})", flush=True)
    figures["cycles"], figures["updates"] = cycles, updates
    return figures


def compaction(out_dir: Path, cycles: int) -> dict[str, object]:
    """Seconds to compress a closed endurance-like file (two conductance series of 64 cells, float64)."""
    path = out_dir / "compaction.h5"
    path.unlink(missing_ok=True)
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as plain_file:  # as a live run leaves it: plain series
        for name, level in (("g_on", 50e-6), ("g_off", 5e-6)):
            plain_file.create_dataset(f"data/endurance/{name}", data=rng.normal(level, level / 10, (cycles, 64)),
                                      maxshape=(None, 64), chunks=(128, 64))  # fmt: skip
    plain = os.path.getsize(path)
    started = time.perf_counter()
    compact(path)
    seconds = time.perf_counter() - started
    compressed = os.path.getsize(path)
    print(f"compaction of {cycles} cycles: {plain / 1e6:.1f} MB -> {compressed / 1e6:.1f} MB in {seconds:.2f} s")
    return {"cycles": cycles, "plain_bytes": plain, "compressed_bytes": compressed, "seconds": round(seconds, 2)}


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--cycles", type=int, default=2000, help="endurance cycles (read after every one)")
    parser.add_argument("--updates", type=int, default=100, help="training updates (2 epochs of 50)")
    parser.add_argument("--compact-cycles", type=int, default=100_000, help="rows of the compaction measurement")
    args = parser.parse_args()
    figures = measure(args.out_dir, args.cycles, args.updates)
    figures["compaction"] = compaction(args.out_dir, args.compact_cycles)
    print(json.dumps(figures))


if __name__ == "__main__":
    cli()
