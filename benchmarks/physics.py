"""Cost and fidelity of the emulated array's physics. Prints one JSON object as its last line.

Speed: the array model (``CrossbarArray``) on its own, the part of the emulator that scales with
the array, against a bare numpy matmul of the same shapes, measured in the same run:

- a 1,000-vector VMM on 128x64 with every non-ideality on except line resistance (read noise,
  nonlinear I-V, drift, defects), then with line resistance on as well;
- the one-off sparse factorization line resistance costs after each programming event;
- how VMM and map costs grow from 128x64 to 1024x512 (exponent of time vs cells).

Fidelity: the technician's procedures of tests/test_emulator_characterization.py, run through
the Board API on the emulated umass-ta-hfo2 board, next to the preset's figures.

Usage: python benchmarks/physics.py [--large-lines] [--skip-characterization]
``--large-lines`` also times the line-network factorization at 1024x512 (about 100 s).
"""

from __future__ import annotations

import os

# One BLAS thread unless told otherwise (set before numpy loads BLAS): on a small shared machine
# a threaded matmul's timing swings tenfold with the neighbours' load, and the ratios below
# compare like with like anyway.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mock_hardware.array_model import CrossbarArray, PulseKind  # noqa: E402
from mock_hardware.device_params import preset  # noqa: E402

NVEC = 1000
SIZES = [(128, 64), (256, 128), (512, 256), (1024, 512)]


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    run()  # warm caches and allocator
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def programmed_array(rows: int, cols: int, **overrides: Any) -> CrossbarArray:
    array = CrossbarArray(preset("umass-ta-hfo2", rows=rows, cols=cols, **overrides), seed=1)
    shape = (rows, cols)
    gates = np.random.default_rng(0).uniform(0.7, 2.5, shape)
    array.apply_pulses(PulseKind.SET, 0, 0, np.full(shape, 2.5), gates, np.full(shape, 1e-6), np.ones(shape, bool))
    return array


def vmm_against_matmul(array: CrossbarArray, repeats: int = 200) -> dict[str, float]:
    """Interleaved timing of the emulator's VMM and bare matmuls on the same shapes.

    The firmware advances the clock once per command, so each VMM call here does too (drift
    then has to be recomputed, as in real use).
    """
    rows, cols = array.rows, array.cols
    v = np.random.default_rng(1).uniform(-0.2, 0.2, (NVEC, rows))
    g = array.conductance
    v32, g32 = v.astype(np.float32), g.astype(np.float32)

    def emulator() -> object:
        array.advance_time(50e-6)
        return array.vmm(v, 0, 0, cols)

    runs: dict[str, tuple[Callable[[], object], list[float]]] = {
        "emulator": (emulator, []),
        "matmul64": (lambda: v @ g, []),
        "matmul32": (lambda: v32 @ g32, []),
    }
    for run, _ in runs.values():
        for _ in range(10):
            run()
    for _ in range(repeats):
        for run, times in runs.values():
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
    med = {name: statistics.median(times) for name, (_, times) in runs.items()}
    return {
        "emulator_ms": med["emulator"] * 1e3,
        "bare_matmul_float64_ms": med["matmul64"] * 1e3,
        "bare_matmul_float32_ms": med["matmul32"] * 1e3,
        "ratio_to_float64_matmul": med["emulator"] / med["matmul64"],
        "ratio_to_float32_matmul": med["emulator"] / med["matmul32"],
    }


def line_factorization_seconds(rows: int, cols: int) -> float:
    array = programmed_array(rows, cols)  # the preset has line resistance on
    start = time.perf_counter()
    array.vmm(np.zeros((1, rows)), 0, 0, cols)  # the first VMM after programming factorizes
    return time.perf_counter() - start


def growth(large_lines: bool) -> dict[str, Any]:
    rows_out: list[dict[str, float]] = []
    for rows, cols in SIZES:
        plain = programmed_array(rows, cols, line_resistance=0.0)
        wired = programmed_array(rows, cols)
        v = np.random.default_rng(2).uniform(-0.2, 0.2, (NVEC, rows))
        repeats = 20 if rows <= 256 else 5

        def vmm(array: CrossbarArray = plain, v: np.ndarray = v) -> object:
            array.advance_time(50e-6)
            return array.vmm(v, 0, 0, array.cols)

        def read_map(array: CrossbarArray) -> Callable[[], object]:
            return lambda: array.read_conductance(0, 0, array.rows, array.cols, 0.2)

        entry = {
            "rows": rows,
            "cols": cols,
            "vmm_ms": median_seconds(vmm, repeats) * 1e3,
            "map_ms": median_seconds(read_map(plain), repeats) * 1e3,
            "map_lines_ms": median_seconds(read_map(wired), repeats) * 1e3,
        }
        for key in ("vmm_ms", "map_ms", "map_lines_ms"):
            per = NVEC * rows * cols if key == "vmm_ms" else rows * cols
            entry[key.replace("_ms", "_ns_per_cell")] = entry[key] * 1e6 / per
        if rows <= 512 or large_lines:
            entry["line_factorization_s"] = line_factorization_seconds(rows, cols)
        rows_out.append(entry)
        print(f"  {rows}x{cols}: {entry}", flush=True)
    cells = np.log([r["rows"] * r["cols"] for r in rows_out])

    def exponent(key: str) -> float:
        # Small arrays carry fixed per-call overheads; the slope between the two largest sizes
        # is the asymptotic growth.
        times = np.log([r[key] for r in rows_out])
        return float((times[-1] - times[-2]) / (cells[-1] - cells[-2]))

    # Per-cell costs stay flat up to 512x256; at 1024x512 the 4 MB state arrays outgrow the L2
    # cache and the (memory-bound) drift update and noise draw slow down per cell.
    return {
        "sizes": rows_out,
        "vmm_exponent_vs_cells": exponent("vmm_ms"),
        "map_exponent_vs_cells": exponent("map_ms"),
        "map_with_lines_exponent_vs_cells": exponent("map_lines_ms"),
    }


def characterization() -> dict[str, Any]:
    from drivers import open_board
    from tests import test_emulator_characterization as tech

    umass = tech.UMASS
    with open_board(tech.resource(seed=1)) as board:
        yields = tech.classify_cells(board)
        sweep = tech.sweep_gates(board, yields.responsive)
        cycles = tech.cycle_writes(board, yields.responsive, v_gate=1.2, cycles=12)
    slope, intercept, residual = tech.fit_array_line(sweep)
    with open_board(tech.resource(seed=2)) as board:
        drift = tech.measure_drift(board, [10.0, 1e3, tech.DAY])
    log_time = np.log1p(drift.elapsed[1:])
    drift_slope = float(np.polyfit(log_time, drift.mean_shift[1:], 1)[0])
    with open_board(tech.resource(seed=4, rows=48, cols=24)) as board:
        effect = tech.measure_line_effect(board, umass.line_resistance)
    measured = (effect.measured - effect.ideal).mean(axis=0)
    predicted = (effect.predicted - effect.ideal).mean(axis=0)
    cells = umass.rows * umass.cols
    return {
        "stuck_low_fraction": {"measured": float(yields.stuck_low.sum() / cells), "preset": umass.stuck_low_fraction},
        "stuck_high_fraction": {
            "measured": float(yields.stuck_high.sum() / cells),
            "preset": umass.stuck_high_fraction,
        },
        "set_slope_S_per_V": {"measured": slope, "preset": umass.set_slope},
        "set_intercept_S": {"measured": intercept, "preset": umass.set_intercept},
        "set_line_worst_residual_S": residual,
        "set_slope_spread": {"measured": tech.slope_spread(sweep), "preset": umass.set_slope_spread},
        "write_noise_S": {"measured": tech.write_noise(cycles), "preset": umass.write_noise},
        "read_noise_relative": {"measured": tech.relative_read_noise(cycles), "preset": umass.read_noise},
        "drift_S_per_ln_t": {"measured": drift_slope, "preset": umass.drift_mean},
        "drift_spread_after_a_day_S": {"measured": float(drift.spread[-1]), "reference": 1e-6},
        "line_effect_48x24": {
            "predicted_relative_shift_range": [
                float((predicted / effect.ideal.mean(axis=0)).min()),
                float((predicted / effect.ideal.mean(axis=0)).max()),
            ],
            "worst_mismatch_relative_to_prediction": float(np.abs(measured / predicted - 1).max()),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large-lines", action="store_true", help="time the 1024x512 line factorization too")
    parser.add_argument("--skip-characterization", action="store_true", help="speed only")
    args = parser.parse_args()

    result: dict[str, Any] = {
        "benchmark": "physics",
        "nvec": NVEC,
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
    }
    print("VMM 1000 x 128x64, all non-idealities but line resistance:", flush=True)
    result["vmm_128x64_no_lines"] = vmm_against_matmul(programmed_array(128, 64, line_resistance=0.0))
    print(f"  {result['vmm_128x64_no_lines']}", flush=True)
    print("VMM 1000 x 128x64 with line resistance (0.35 ohm/segment) as well:", flush=True)
    result["vmm_128x64_lines"] = vmm_against_matmul(programmed_array(128, 64))
    result["vmm_128x64_lines"]["factorization_ms"] = line_factorization_seconds(128, 64) * 1e3
    print(f"  {result['vmm_128x64_lines']}", flush=True)
    print("Growth with array size:", flush=True)
    result["growth"] = growth(args.large_lines)
    if not args.skip_characterization:
        print("Characterization through the Board API (umass-ta-hfo2):", flush=True)
        result["characterization"] = characterization()
        for name, value in result["characterization"].items():
            print(f"  {name}: {value}", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
