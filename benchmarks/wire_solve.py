"""The wire network's exact solve on arrays of several sizes: block sweep against nested dissection.

For each size, the same random conductances (100 to 900 uS, 0.35 ohm segments) solved for 64
measured columns (an in-situ MLP's count) by the block sweep (``TransferSolver`` with dissection
off) and by nested dissection (``DissectionSolver``), alternated, CPU time of each call on one BLAS
thread; the largest relative difference between the two answers; and which method
``TransferSolver`` picks at that size. Prints a table, then one JSON object as the last line.

    python benchmarks/wire_solve.py                          # 128x64, 256x128, 512x256, 3 rounds
    python benchmarks/wire_solve.py --sizes 64x512 --rounds 2
    python benchmarks/wire_solve.py --variants --rounds 12   # sweep, former sweep, dissection; 128 x 64
    python benchmarks/wire_solve.py --stages --rounds 5      # and the dissection's two stages apart

``--stages`` adds, per size, the CPU time of the dissection's batched stage (every tile reduced
onto its edges: linear in cells) and of its merged stage (the tiles merged pairwise up to the whole
array: the part that grows faster than the cells), each timed on its own after the alternated solves.

glibc's malloc thresholds are raised as ``hil`` raises them for a run (``--default-malloc``: not).

``--variants`` times, alternated on one array, the block sweep as the emulator runs it (each Schur
inverse by ``dpotrf`` + ``dpotri`` in place of its block, the next complement by an axpy, the back
substitution by one ``dsymm`` a row) against ``former``, the sweep as it was to session 10 (``dpotrf``,
``dtrtri`` and a ``dsyrk`` forward, two ``dtrmm`` a row back; kept here for the record), and nested
dissection at tiles of 32 (the default) and 64, each with its largest relative difference from the
sparse LU. (Session 8's variants, measured and not kept, are in docs/benchmarks.md, issue 17's
sixth pass, part B: scipy's Cython function pointers through ``ctypes``, ``dtrsm`` on the identity
for ``dtrtri``, the sweep in float32.)
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

from typing import Any

import numpy as np
from scipy.linalg import blas, lapack

from hil.allocator import retain_freed_memory
from mock_hardware.physics import line_resistance
from mock_hardware.physics.line_resistance import TransferSolver, effective_conductance
from mock_hardware.physics.threads import one_blas_thread
from mock_hardware.physics.wire_dissection import DissectionSolver

R_SEGMENT = 0.35


def timed_transfer(
    solver: TransferSolver | DissectionSolver, g: np.ndarray, columns: np.ndarray
) -> tuple[float, np.ndarray]:
    """CPU milliseconds of one solve, and its answer."""
    start = time.process_time()
    result = solver.transfer(g, columns)
    return 1e3 * (time.process_time() - start), result


class _FormerSweep(TransferSolver):
    """The sweep to session 10: ``L_i^-1`` by ``dpotrf`` and ``dtrtri``, ``S_(i+1)`` by a ``dsyrk``
    (rows x 5/3 cols^3 forward), the back substitution by two ``dtrmm`` a row (every factor kept)."""

    def _sweep(self, blocks: Any, probes: Any, wanted: Any) -> Any:
        rows, cols = self.rows, self.cols
        stretch = np.empty((rows, cols, cols))
        schur = np.array(blocks[0].T, order="F")
        for i in range(rows):
            factor, info = lapack.dpotrf(schur, lower=1, clean=1, overwrite_a=1)
            assert info == 0
            inverse_factor, info = lapack.dtrtri(factor, lower=1, overwrite_c=1)
            assert info == 0
            stretch[i] = inverse_factor.T
            if i + 1 < rows:
                schur = blas.dsyrk(-(self.g_wire**2), inverse_factor, beta=1.0, c=blocks[i + 1].T, trans=1, lower=1)
        result = np.empty((rows, wanted.size))
        w = np.zeros((cols, wanted.size), order="F")
        w[wanted, np.arange(wanted.size)] = 1.0
        for i in reversed(range(rows)):
            w = blas.dtrmm(1.0, stretch[i].T, w, lower=1, overwrite_b=1)
            w = blas.dtrmm(self.g_wire, stretch[i].T, w, lower=1, trans_a=1, overwrite_b=1)
            np.matmul(probes[i], w, out=result[i])
        return result * self.g_end


def stage_times(solver: DissectionSolver, g: np.ndarray, columns: np.ndarray, rounds: int) -> dict[str, list[float]]:
    """CPU milliseconds of the dissection's batched and merged stages, each call timed on its own."""
    wanted = np.unique(columns)
    times: dict[str, list[float]] = {"batched_cpu_ms": [], "merged_cpu_ms": []}
    with one_blas_thread():
        for _ in range(rounds):
            start = time.process_time()
            tiles = solver._batched_stage(g)
            middle = time.process_time()
            solver._merged_stage(tiles, wanted)
            end = time.process_time()
            times["batched_cpu_ms"].append(round(1e3 * (middle - start), 2))
            times["merged_cpu_ms"].append(round(1e3 * (end - middle), 2))
    return times


def variants(rows: int, cols: int, rounds: int, measured: int) -> dict[str, Any]:
    """CPU ms of each variant's solves (alternated) and its largest relative difference from the LU."""
    g = np.random.default_rng(1).uniform(100e-6, 900e-6, (rows, cols))
    columns = np.linspace(0, cols - 1, min(measured, cols)).astype(np.intp)
    exact = effective_conductance(g, R_SEGMENT, 1)[:, columns]
    line_resistance.DISSECTION_FROM, kept = np.inf, line_resistance.DISSECTION_FROM
    solvers: dict[str, TransferSolver | DissectionSolver] = {
        "sweep": TransferSolver(rows, cols, R_SEGMENT), "former": _FormerSweep(rows, cols, R_SEGMENT),
        "dissection": DissectionSolver(rows, cols, R_SEGMENT),
        "dissection64": DissectionSolver(rows, cols, R_SEGMENT, tile=64),
    }  # fmt: skip
    line_resistance.DISSECTION_FROM = kept
    times: dict[str, list[float]] = {name: [] for name in solvers}
    answers: dict[str, np.ndarray] = {}
    for solver in solvers.values():  # a first call is slower (imports, caches): not timed
        solver.transfer(g, columns)
    for _ in range(rounds):
        for name, solver in solvers.items():
            elapsed, answers[name] = timed_transfer(solver, g, columns)
            times[name].append(round(elapsed, 2))
    base = float(np.median(times["sweep"]))
    return {
        name: {
            "cpu_ms": times[name], "median_cpu_ms": round(float(np.median(times[name])), 2),
            "median_over_sweep": round(float(np.median(times[name])) / base, 3),
            "largest_relative_difference_from_lu": float(np.max(np.abs(answers[name][:, columns] / exact - 1))),
            "bit_for_bit_with_sweep": bool(np.array_equal(answers[name], answers["sweep"], equal_nan=True)),
        }
        for name in solvers
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="128x64,256x128,512x256", help="ROWSxCOLS,...")
    parser.add_argument("--rounds", type=int, default=3, help="alternated solves of each method per size")
    parser.add_argument("--measured", type=int, default=64, help="columns solved (default 64)")
    parser.add_argument("--variants", action="store_true", help="the sweep against its alternatives (one size)")
    parser.add_argument("--stages", action="store_true", help="also time the dissection's two stages apart")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's malloc thresholds as they are (hil raises them)")  # fmt: skip
    args = parser.parse_args(argv)
    if not args.default_malloc:
        retain_freed_memory()  # as in a training run: freed blocks reused, not mapped again page by page
    load_before = os.getloadavg()
    if args.variants:
        rows, cols = (int(n) for n in (args.sizes if "," not in args.sizes else "128x64").split("x"))
        found = variants(rows, cols, args.rounds, args.measured)
        print("| variant | CPU ms | median | median / sweep | largest difference from LU | bit for bit |")
        print("|---|---|---:|---:|---:|---|")
        for name, r in found.items():
            print(f"| {name} | {r['cpu_ms']} | {r['median_cpu_ms']} | {r['median_over_sweep']}x | "
                  f"{r['largest_relative_difference_from_lu']:.1e} | {r['bit_for_bit_with_sweep']} |")  # fmt: skip
        print(json.dumps({
            "variants": found, "rows": rows, "cols": cols, "measured_columns": min(args.measured, cols),
            "r_segment": R_SEGMENT, "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        }))  # fmt: skip
        return 0
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
        for solver in (sweep, dissection):  # a first call is slower (imports, compiled kernels' cache): not timed
            solver.transfer(g, columns)
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
        } | (stage_times(dissection, g, columns, args.rounds) if args.stages else {}))  # fmt: skip
    print("| array | sweep (CPU ms) | dissection (CPU ms) | sweep / dissection | largest difference | picked |")
    print("|---|---:|---:|---:|---:|---|")
    for r in results:
        print(f"| {r['rows']} x {r['cols']} | {r['sweep_cpu_ms']} | {r['dissection_cpu_ms']} | "
              f"{r['sweep_over_dissection']}x | {r['largest_relative_difference']:.1e} | {r['picked']} |")  # fmt: skip
    if args.stages:
        print("\n| array | batched stage (CPU ms) | merged stage (CPU ms) |\n|---|---|---|")
        for r in results:
            print(f"| {r['rows']} x {r['cols']} | {r['batched_cpu_ms']} | {r['merged_cpu_ms']} |")
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
