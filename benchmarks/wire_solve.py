"""The wire network's exact solve on arrays of several sizes: block sweep against nested dissection.

For each size, the same random conductances (100 to 900 uS, 0.35 ohm segments) solved for 64
measured columns (an in-situ MLP's count) by the block sweep (``TransferSolver`` with dissection
off) and by nested dissection (``DissectionSolver``), alternated, CPU time of each call on one BLAS
thread; the largest relative difference between the two answers; and which method
``TransferSolver`` picks at that size. Prints a table, then one JSON object as the last line.

    python benchmarks/wire_solve.py                          # 128x64, 256x128, 512x256, 3 rounds
    python benchmarks/wire_solve.py --sizes 64x512 --rounds 2
    python benchmarks/wire_solve.py --variants --rounds 12   # the sweep's alternatives, 128 x 64

glibc's malloc thresholds are raised as ``hil`` raises them for a run (``--default-malloc``: not).

``--variants`` times, alternated on one array, the block sweep as the emulator runs it against
ways of making it cheaper that were measured and not kept (docs/benchmarks.md, issue 17's sixth
pass, part B), each with its largest relative difference from the sparse LU:

- ``direct``: the same LAPACK routines called through the function pointers scipy exports for
  Cython (``ctypes``, about 0.6 us a call against 2-3 us through scipy's wrappers): bit for bit;
- ``trsm``: each ``L_i^-1`` by a triangular solve on the identity instead of ``dtrtri``;
- ``float32``: the whole sweep in single precision (``s`` routines), before any iterative
  refinement: the floor of a mixed-precision solve's cost, and how far from 1e-6 it starts.
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

import ctypes
from typing import Any

import numpy as np
from scipy.linalg import blas, cython_blas, cython_lapack, lapack

from hil.allocator import retain_freed_memory
from mock_hardware.physics import line_resistance
from mock_hardware.physics.line_resistance import TransferSolver, effective_conductance
from mock_hardware.physics.wire_dissection import DissectionSolver

R_SEGMENT = 0.35


def timed_transfer(
    solver: TransferSolver | DissectionSolver, g: np.ndarray, columns: np.ndarray
) -> tuple[float, np.ndarray]:
    """CPU milliseconds of one solve, and its answer."""
    start = time.process_time()
    result = solver.transfer(g, columns)
    return 1e3 * (time.process_time() - start), result


class _TrsmSweep(TransferSolver):
    """The sweep with ``L_i^-1`` from ``dtrsm`` on the identity (17 us against ``dtrtri``'s 22 us on
    64 x 64, measured; rounding differs in the last bits)."""

    def _forward(self, blocks: Any, start: int, stop: int, schur: Any, out: Any) -> Any:
        identity = np.eye(self.cols, order="F")
        for i in range(start, stop):
            factor, info = lapack.dpotrf(schur, lower=1, clean=1, overwrite_a=1)
            assert info == 0
            inverse_factor = blas.dtrsm(1.0, factor, identity, lower=1)
            out[i - start] = inverse_factor.T
            if i + 1 < self.rows:
                schur = blas.dsyrk(-(self.g_wire**2), inverse_factor, beta=1.0, c=blocks[i + 1].T, trans=1, lower=1)
        return schur


class _Float32Sweep(TransferSolver):
    """The whole sweep (blocks, forward and back) in single precision, no refinement."""

    def _forward(self, blocks: Any, start: int, stop: int, schur: Any, out: Any) -> Any:
        schur = np.asfortranarray(schur, dtype=np.float32)
        for i in range(start, stop):
            factor, info = lapack.spotrf(schur, lower=1, clean=1, overwrite_a=1)
            assert info == 0
            inverse_factor, info = lapack.strtri(factor, lower=1, overwrite_c=1)
            out[i - start] = inverse_factor.T
            if i + 1 < self.rows:
                schur = blas.ssyrk(-(self.g_wire**2), inverse_factor, beta=1.0, c=blocks[i + 1].T, trans=1, lower=1)
        return schur

    def _sweep(self, blocks: Any, probes: Any, wanted: Any) -> Any:
        rows, cols = self.rows, self.cols
        blocks = blocks.astype(np.float32)
        stretch = np.empty((rows, cols, cols), dtype=np.float32)
        self._forward(blocks, 0, rows, np.array(blocks[0].T, order="F"), stretch)
        result = np.empty((rows, wanted.size), dtype=np.float32)
        w = np.zeros((cols, wanted.size), dtype=np.float32, order="F")
        w[wanted, np.arange(wanted.size)] = 1.0
        probes32 = probes.astype(np.float32)
        for i in reversed(range(rows)):
            w = blas.strmm(1.0, stretch[i].T, w, lower=1, overwrite_b=1)
            w = blas.strmm(self.g_wire, stretch[i].T, w, lower=1, trans_a=1, overwrite_b=1)
            np.matmul(probes32[i], w, out=result[i])
        return result.astype(np.float64) * self.g_end


def _routine(module: Any, name: str, nargs: int) -> Any:
    """A LAPACK/BLAS routine from scipy's Cython exports, callable with raw addresses."""
    capsule = module.__pyx_capi__[name]
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    return ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * nargs))(get_pointer(capsule, get_name(capsule)))


class _DirectSweep(TransferSolver):
    """The same calls as the emulator's sweep without scipy's wrappers (bit for bit)."""

    def __init__(self, rows: int, cols: int, r_segment: float) -> None:
        super().__init__(rows, cols, r_segment)
        self._potrf = _routine(cython_lapack, "dpotrf", 5)
        self._trtri = _routine(cython_lapack, "dtrtri", 6)
        self._syrk = _routine(cython_blas, "dsyrk", 10)
        self._trmm = _routine(cython_blas, "dtrmm", 11)
        self._kept: dict[str, Any] = {  # Fortran arguments go by address
            "L": ctypes.c_char(b"L"), "N": ctypes.c_char(b"N"), "T": ctypes.c_char(b"T"),
            "n": ctypes.c_int(cols), "info": ctypes.c_int(0), "one": ctypes.c_double(1.0),
            "coupling": ctypes.c_double(-(self.g_wire**2)), "g_wire": ctypes.c_double(self.g_wire),
        }  # fmt: skip
        self._at = {key: ctypes.addressof(value) for key, value in self._kept.items()}

    def _sweep(self, blocks: Any, probes: Any, wanted: Any) -> Any:
        rows, cols, at = self.rows, self.cols, self._at
        # The blocks' unread triangle to 0: the factors inherit it and dsyrk reads their whole square.
        blocks *= np.triu(np.ones((cols, cols)))
        stretch = np.empty((rows, cols, cols))
        schur = np.array(blocks[0].T, order="F")
        schur_at, stretch_at, size = schur.ctypes.data, stretch.ctypes.data, 8 * cols * cols
        for i in range(rows):
            np.copyto(stretch[i].T, schur)
            self._potrf(at["L"], at["n"], stretch_at + i * size, at["n"], at["info"])
            self._trtri(at["L"], at["N"], at["n"], stretch_at + i * size, at["n"], at["info"])
            assert self._kept["info"].value == 0
            if i + 1 < rows:
                np.copyto(schur, blocks[i + 1].T)
                self._syrk(at["L"], at["T"], at["n"], at["n"], at["coupling"], stretch_at + i * size, at["n"],
                           at["one"], schur_at, at["n"])  # fmt: skip
        result = np.empty((rows, wanted.size))
        w = np.zeros((cols, wanted.size), order="F")
        w[wanted, np.arange(wanted.size)] = 1.0
        width = ctypes.c_int(wanted.size)
        for i in reversed(range(rows)):
            for trans, alpha in (("N", "one"), ("T", "g_wire")):
                self._trmm(at["L"], at["L"], at[trans], at["N"], at["n"], ctypes.addressof(width), at[alpha],
                           stretch_at + i * size, at["n"], w.ctypes.data, at["n"])  # fmt: skip
            np.matmul(probes[i], w, out=result[i])
        return result * self.g_end


def variants(rows: int, cols: int, rounds: int, measured: int) -> dict[str, Any]:
    """CPU ms of each variant's solves (alternated) and its largest relative difference from the LU."""
    g = np.random.default_rng(1).uniform(100e-6, 900e-6, (rows, cols))
    columns = np.linspace(0, cols - 1, min(measured, cols)).astype(np.intp)
    exact = effective_conductance(g, R_SEGMENT, 1)[:, columns]
    line_resistance.DISSECTION_FROM, kept = np.inf, line_resistance.DISSECTION_FROM
    solvers = {
        "sweep": TransferSolver(rows, cols, R_SEGMENT), "direct": _DirectSweep(rows, cols, R_SEGMENT),
        "trsm": _TrsmSweep(rows, cols, R_SEGMENT), "float32": _Float32Sweep(rows, cols, R_SEGMENT),
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
            "cpu_ms": times[name], "median_over_sweep": round(float(np.median(times[name])) / base, 3),
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
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's malloc thresholds as they are (hil raises them)")  # fmt: skip
    args = parser.parse_args(argv)
    if not args.default_malloc:
        retain_freed_memory()  # as in a training run: freed blocks reused, not mapped again page by page
    load_before = os.getloadavg()
    if args.variants:
        rows, cols = (int(n) for n in (args.sizes if "," not in args.sizes else "128x64").split("x"))
        found = variants(rows, cols, args.rounds, args.measured)
        print("| variant | CPU ms | median / sweep | largest difference from LU | bit for bit |")
        print("|---|---|---:|---:|---|")
        for name, r in found.items():
            print(f"| {name} | {r['cpu_ms']} | {r['median_over_sweep']}x | "
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
