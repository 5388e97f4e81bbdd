"""The wire network's exact solve on arrays of several sizes: block sweep against nested dissection.

For each size, the same random conductances (100 to 900 uS, 0.35 ohm segments) solved for 64
measured columns (an in-situ MLP's count) by the block sweep (``TransferSolver`` with dissection
off) and by nested dissection (``DissectionSolver``), alternated, CPU time of each call on one BLAS
thread; the largest relative difference between the two answers; and which method
``TransferSolver`` picks at that size. Prints a table, then one JSON object as the last line.

    python benchmarks/wire_solve.py                          # 128x64, 256x128, 512x256, 3 rounds
    python benchmarks/wire_solve.py --sizes 64x512 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from mock_hardware.physics import line_resistance
from mock_hardware.physics.line_resistance import TransferSolver
from mock_hardware.physics.wire_dissection import DissectionSolver

R_SEGMENT = 0.35


def timed_transfer(
    solver: TransferSolver | DissectionSolver, g: np.ndarray, columns: np.ndarray
) -> tuple[float, np.ndarray]:
    """CPU milliseconds of one solve, and its answer."""
    start = time.process_time()
    result = solver.transfer(g, columns)
    return 1e3 * (time.process_time() - start), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="128x64,256x128,512x256", help="ROWSxCOLS,...")
    parser.add_argument("--rounds", type=int, default=3, help="alternated solves of each method per size")
    parser.add_argument("--measured", type=int, default=64, help="columns solved (default 64)")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    results = []
    for size in args.sizes.split(","):
        rows, cols = (int(n) for n in size.split("x"))
        g = np.random.default_rng(1).uniform(100e-6, 900e-6, (rows, cols))
        columns = np.linspace(0, cols - 1, min(args.measured, cols)).astype(np.intp)
        picked = TransferSolver(rows, cols, R_SEGMENT).method
        line_resistance.DISSECTION_FROM, kept = np.inf, line_resistance.DISSECTION_FROM
        sweep = TransferSolver(rows, cols, R_SEGMENT)
        line_resistance.DISSECTION_FROM = kept
        dissection = DissectionSolver(rows, cols, R_SEGMENT)
        times: dict[str, list[float]] = {"sweep": [], "dissection": []}
        worst = 0.0
        for _ in range(args.rounds):
            t_sweep, by_sweep = timed_transfer(sweep, g, columns)
            t_dissection, by_dissection = timed_transfer(dissection, g, columns)
            times["sweep"].append(round(t_sweep, 1))
            times["dissection"].append(round(t_dissection, 1))
            worst = max(worst, float(np.max(np.abs(by_dissection[:, columns] / by_sweep[:, columns] - 1))))
        results.append({
            "rows": rows, "cols": cols, "measured_columns": len(columns), "picked": picked,
            "sweep_cpu_ms": times["sweep"], "dissection_cpu_ms": times["dissection"],
            "sweep_over_dissection": round(float(np.median(times["sweep"]) / np.median(times["dissection"])), 2),
            "largest_relative_difference": worst,
        })  # fmt: skip
    print("| array | sweep (CPU ms) | dissection (CPU ms) | sweep / dissection | largest difference | picked |")
    print("|---|---:|---:|---:|---:|---|")
    for r in results:
        print(f"| {r['rows']} x {r['cols']} | {r['sweep_cpu_ms']} | {r['dissection_cpu_ms']} | "
              f"{r['sweep_over_dissection']}x | {r['largest_relative_difference']:.1e} | {r['picked']} |")  # fmt: skip
    print(json.dumps({
        "sizes": results, "r_segment": R_SEGMENT,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"numpy {np.__version__}",
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
