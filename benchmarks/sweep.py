"""Campaigns on Dask: throughput with 1 and 2 local workers, the scheduler's overhead per cell, peak
memory per worker, and one robustness result: in-situ accuracy against write noise for the
gate-coded and the write-verify update rules.

    python benchmarks/sweep.py                      # both parts (about 20 minutes on 2 shared cores)
    python benchmarks/sweep.py --skip-robustness    # throughput only (about 2 minutes)
    python benchmarks/sweep.py --skip-robustness --repeats 3   # 1 and 2 workers alternated 3 times
    python benchmarks/sweep.py --updates 100        # a smaller robustness budget

The robustness campaign is an ordinary campaign (``docs/examples/sweep-write-noise.toml`` is the
same one at its full budget); its figure is drawn by ``hil sweep show`` into the output folder and
copied to ``--figure``. Prints a summary, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from distributed import Client, LocalCluster

from hil.sweep.campaign import Campaign, parse_campaign
from hil.sweep.figures import draw_figures, summary
from hil.sweep.runner import run_campaign
from hil.sweep.table import load_results

# Small cells: the MLP, no calibration, a few updates (the cell's own time is then a few seconds,
# so the scheduler's share shows).
THROUGHPUT_CELLS: dict[str, Any] = {
    "name": "throughput", "kind": "train", "seeds": 8,
    "base": {"model": "mlp", "updates": 20, "batch_size": 20, "eval_every": 20, "calibrate": False,
             "optimizer": {"name": "sgd", "lr": 0.1}},
}  # fmt: skip
NOISE_VALUES = [0.0, 2e-6, 4e-6, 8e-6, 16e-6]


def robustness_campaign(updates: int, seeds: int) -> dict[str, Any]:
    return {
        "name": "write-noise", "kind": "train", "seeds": seeds, "emulator": "emulator://?preset=umass-ta-hfo2",
        "base": {"model": "mlp", "updates": updates, "batch_size": 20, "eval_every": max(1, updates // 4),
                 "optimizer": {"name": "sgd", "lr": 0.1}},
        "axes": {"update": ["gate-coded", "write-verify"], "emulator.write_noise": NOISE_VALUES},
    }  # fmt: skip


def _peak_rss_bytes() -> int:
    import resource  # Unix-only; a benchmark, not the host's import path

    scale = 1 if sys.platform == "darwin" else 1024
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale


def throughput(workers: int, folder: Path) -> dict[str, Any]:
    """Cells per hour on ``workers`` local worker processes (cluster start-up not counted)."""
    campaign = parse_campaign(THROUGHPUT_CELLS)
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:  # fmt: skip
        client.run(lambda: __import__("hil.sweep.cell"))  # imports on the workers, not timed
        started = time.perf_counter()
        report = run_campaign(campaign, folder, client=client, progress=False)
        wall = time.perf_counter() - started
        peaks = client.run(_peak_rss_bytes)
    frame, _ = load_results(folder)
    cell_seconds = frame["seconds"].to_numpy(dtype=float)
    return {
        "workers": workers, "cells": report.cells, "completed": report.completed, "wall_s": wall,
        "cells_per_hour": 3600 * report.completed / wall,
        "cell_seconds_mean": float(cell_seconds.mean()),
        # Time the workers spent outside their cells (scheduling, shipping, the table), per cell.
        "overhead_s_per_cell": (wall * workers - float(cell_seconds.sum())) / report.cells,
        "peak_worker_rss_mb": max(peaks.values()) / 2**20,
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=200, help="robustness cells' updates (default 200)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="workers of the robustness campaign")
    parser.add_argument("--skip-robustness", action="store_true")
    parser.add_argument("--repeats", type=int, default=1, help="alternate 1 and 2 workers this many times")
    parser.add_argument("--out", default="runs/bench-sweep", help="robustness campaign folder (kept)")
    parser.add_argument("--figure", default="docs/figures/sweep-write-noise.png", help="where to copy its figure")
    args = parser.parse_args()
    started = time.perf_counter()
    result: dict[str, Any] = {"benchmark": "sweep"}
    # Alternating 1 and 2 workers, so that load from other users of the machine falls on both alike.
    with tempfile.TemporaryDirectory() as scratch:
        runs = [throughput(n, Path(scratch) / f"r{r}w{n}") for r in range(args.repeats) for n in (1, 2)]
    result["throughput"] = runs
    ratios = [b["cells_per_hour"] / a["cells_per_hour"] for a, b in zip(runs[::2], runs[1::2], strict=True)]
    result["speedup_2_over_1"] = float(np.median(ratios))
    result["speedup_2_over_1_each"] = ratios
    for run in runs:
        print(f"{run['workers']} worker(s): {run['cells_per_hour']:.0f} cells/h, "
              f"cell {run['cell_seconds_mean']:.2f} s, "
              f"overhead {run['overhead_s_per_cell']:.2f} s/cell, peak worker RSS {run['peak_worker_rss_mb']:.0f} MB",
              flush=True)  # fmt: skip
    if not args.skip_robustness:
        campaign: Campaign = parse_campaign(robustness_campaign(args.updates, args.seeds))
        out = Path(args.out)
        began = time.perf_counter()
        report = run_campaign(campaign, out, workers=args.workers)
        frame, meta = load_results(out)
        paths = draw_figures(frame, meta["axes"], out / "figures")
        figure = Path(args.figure)
        figure.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(next(p for p in paths if "vs-emulator-write_noise" in p.name), figure)
        table = summary(frame, meta["axes"], "final_accuracy")
        print(table.to_string(index=False))
        result["robustness"] = {
            "preset": "umass-ta-hfo2", "model": "mlp", "updates": args.updates, "batch_size": 20, "seeds": args.seeds,
            "workers": args.workers, "cells": report.cells, "completed": report.completed, "failed": report.failed,
            "wall_s": time.perf_counter() - began, "figure": str(figure),
            "accuracy": [{"update": r["update"], "write_noise": r["emulator.write_noise"], "mean": r["mean"],
                          "std": 0.0 if np.isnan(r["std"]) else r["std"], "seeds": int(r["count"])}
                         for r in table.to_dict("records")],
        }  # fmt: skip
    result["elapsed_s"] = time.perf_counter() - started
    result["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
