"""Run-file sizes: an endurance run and a training run, written by whichever code is on the path.

Runs ``hil characterize endurance`` on 8 x 8 cells and ``hil train --model cnn`` (calibration,
placement, initial programming, then in-situ updates) on the embedded emulator, and prints each
file's size. Run it on two checkouts to compare layouts (before: ``PYTHONPATH=<old tree>``); the
last line of stdout is one JSON object.

    .venv/bin/python benchmarks/run_files.py --out-dir /tmp/sizes            # about 2 min on 2 cores
    .venv/bin/python benchmarks/run_files.py --cycles 100 --updates 10 --out-dir /tmp/quick
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import h5py

from hil.cli import main

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


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--cycles", type=int, default=2000, help="endurance cycles (read after every one)")
    parser.add_argument("--updates", type=int, default=100, help="training updates (2 epochs of 50)")
    args = parser.parse_args()
    print(json.dumps(measure(args.out_dir, args.cycles, args.updates)))


if __name__ == "__main__":
    cli()
