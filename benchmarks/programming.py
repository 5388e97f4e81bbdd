"""Programming benchmark: write-verify a random target map over the whole array.

On the emulated 128 x 64 board with the ``umass-ta-hfo2`` preset (or any board a resource string
names):

1. calibrate every cell's SET conductance against the gate voltage (``calibrate_gate``),
2. find the RESET floor of every cell (one deep RESET batch and one map read),
3. choose the usable window: from the 99th percentile of the RESET floors up to the 1st
   percentile of what a SET at the board's highest gate voltage reaches (from the calibration),
   within the 100-700 uS window the reference maps weights to,
4. draw targets uniformly over that window and write-verify them (``write_verify``, +-4 uS),
5. average 16 map reads afterwards to see how close converged cells really are once read noise
   is averaged away,
6. write-verify fresh targets on 8 x 8, 32 x 32 and whole-array regions (no calibration) to show
   that round trips follow iterations, not cells, and once more on the whole array without a
   calibration.

Progress lines go to stdout as it goes; the last line is one JSON object with every figure. A
benchmark, never a timed test.

    .venv/bin/python benchmarks/programming.py
    .venv/bin/python benchmarks/programming.py --seed 3 --tolerance 2e-6
    .venv/bin/python benchmarks/programming.py --resource TCPIP::127.0.0.1::5025::SOCKET
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from typing import Any

import numpy as np
from traffic import count_traffic

from drivers import Board, PulseKind, Region, open_board
from protocols.calibration import GateCalibration, calibrate_gate
from protocols.programming import CellOutcome, WriteVerifyResult, WriteVerifySettings, write_verify
from protocols.recording import Attr, DiscardingRecorder

PRESET = "umass-ta-hfo2"
REFERENCE_WINDOW = (100e-6, 700e-6)  # S: where the Li 2018 / Hu 2018 work maps weights
CALIBRATION_GATES = np.linspace(0.5, 5.0, 10)  # V: from the CNN code's lowest SET gate
SETTLE_READS = 16
SERIAL_BAUD = 115200
BITS_PER_SERIAL_BYTE = 10  # 8N1

Json = dict[str, Any]


class PrintRecorder(DiscardingRecorder):
    """A Recorder that keeps nothing and prints one line per progress report."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.done = 0
        self.total: int | None = None

    def progress(self, advance: int = 0, total: int | None = None, **status: Attr) -> None:
        self.done += advance
        self.total = total if total is not None else self.total
        if advance:
            shown = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in status.items())
            print(f"  {self.label} {self.done}/{self.total}: {shown}", flush=True)


def usable_window(
    board: Board, calibration: GateCalibration, settings: WriteVerifySettings, tolerance: float
) -> tuple[tuple[float, float], Json]:
    """The target window nearly every responsive cell reaches, and the figures behind it."""
    board.apply_pulses(PulseKind.RESET, settings.v_reset_max, settings.v_gate_reset, settings.width)
    floor = board.read_map(settings.v_read)
    responsive = calibration.responsive
    k, c = calibration.effective_fit()
    ceiling = k * board.limits.v_gate.max + c
    low = max(float(np.percentile(floor[responsive], 99)) + tolerance, REFERENCE_WINDOW[0])
    high = min(float(np.percentile(ceiling[responsive], 1)) - tolerance, REFERENCE_WINDOW[1])
    figures = {
        "reset_floor_median_S": float(np.median(floor[responsive])),
        "reset_floor_p99_S": float(np.percentile(floor[responsive], 99)),
        "set_ceiling_at_max_gate_median_S": float(np.median(ceiling[responsive])),
        "set_ceiling_at_max_gate_p1_S": float(np.percentile(ceiling[responsive], 1)),
        "max_gate_V": board.limits.v_gate.max,
    }
    return (low, high), figures


def summarize(result: WriteVerifyResult) -> Json:
    working = result.working
    pulses = result.pulses[working] if working.any() else np.zeros(1)
    stuck = result.outcome == CellOutcome.STUCK
    return {
        "cells": int(result.outcome.size),
        "working_cells": int(working.sum()),
        "stuck_cells": int(stuck.sum()),
        "gave_up_cells": result.count(CellOutcome.GAVE_UP),
        "converged_fraction_of_working": result.converged_fraction,
        "mean_pulses_per_working_cell": float(pulses.mean()),
        "p99_pulses_per_working_cell": float(np.percentile(pulses, 99)),
        "max_pulses_per_cell": int(result.pulses.max()),
        "mean_set_pulses_per_working_cell": float(result.set_pulses[working].mean()) if working.any() else 0.0,
        "mean_reset_pulses_per_working_cell": float(result.reset_pulses[working].mean()) if working.any() else 0.0,
        "mean_pulses_per_stuck_cell": float(result.pulses[stuck].mean()) if stuck.any() else 0.0,
        "iterations": result.iterations,
        "round_trips": result.round_trips,
        "reads": result.reads,
        "batches": result.batches,
        "round_trips_per_iteration": result.round_trips / max(1, result.iterations),
        "wall_time_s": result.wall_time,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resource", help=f"board to use (default: emulator://?preset={PRESET}&seed=SEED)")
    parser.add_argument("--seed", type=int, default=1, help="emulator seed and target seed (default 1)")
    parser.add_argument("--tolerance", type=float, default=4e-6, help="write-verify tolerance, S (default 4e-6)")
    parser.add_argument("--max-iterations", type=int, default=30, help="write-verify iteration cap (default 30)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    resource = args.resource or f"emulator://?preset={PRESET}&seed={args.seed}"
    settings = WriteVerifySettings()
    rng = np.random.default_rng(args.seed)
    summary: Json = {
        "benchmark": "programming", "resource": resource, "tolerance_S": args.tolerance,
        "python": platform.python_version(), "numpy": np.__version__, "machine": platform.machine(),
    }  # fmt: skip
    with open_board(resource) as board:
        summary["shape"] = list(board.shape)
        print(f"board {resource}: {board.shape[0]} x {board.shape[1]}", flush=True)

        started = time.perf_counter()
        calibration = calibrate_gate(board, CALIBRATION_GATES, recorder=PrintRecorder("calibration"))
        responsive = calibration.responsive
        summary["calibration"] = {
            "gates_V": [float(v) for v in CALIBRATION_GATES],
            "round_trips": 3 * len(CALIBRATION_GATES),
            "wall_time_s": time.perf_counter() - started,
            "responsive_fraction": float(responsive.mean()),
            "k_median_S_per_V": float(np.median(calibration.k[responsive])),
            "c_median_S": float(np.median(calibration.c[responsive])),
            "k_relative_spread": float(np.std(calibration.k[responsive]) / np.mean(calibration.k[responsive])),
            "residual_median_S": float(np.median(calibration.residual[responsive])),
        }
        print(f"calibration: {json.dumps(summary['calibration'])}", flush=True)

        window, window_figures = usable_window(board, calibration, settings, args.tolerance)
        summary["window_S"] = list(window)
        summary["window_figures"] = window_figures
        print(f"usable window {window[0] * 1e6:.1f} to {window[1] * 1e6:.1f} uS ({json.dumps(window_figures)})")

        target = rng.uniform(*window, board.shape)
        outcome: list[WriteVerifyResult] = []
        counter = count_traffic(board, lambda: outcome.append(write_verify(
            board, target, args.tolerance, args.max_iterations, calibration=calibration,
            recorder=PrintRecorder("write-verify"), settings=settings,
        )))  # fmt: skip
        result = outcome[0]
        summary.update(summarize(result))
        summary["commands_counted_at_transport"] = counter.round_trips
        summary["bytes_sent"] = counter.sent
        summary["bytes_received"] = counter.received
        # What the same traffic would take on a 115200-baud 8N1 serial link, bytes only.
        summary["serial_115200_estimate_s"] = (counter.sent + counter.received) * BITS_PER_SERIAL_BYTE / SERIAL_BAUD

        settled = np.mean([board.read_map(settings.v_read) for _ in range(SETTLE_READS)], axis=0)
        converged = result.outcome == CellOutcome.CONVERGED
        error = np.abs(settled - target)[converged]
        summary["settled_reads"] = SETTLE_READS
        summary["settled_within_tolerance"] = float(np.mean(error <= args.tolerance))
        summary["settled_within_2x_tolerance"] = float(np.mean(error <= 2 * args.tolerance))
        summary["settled_error_rms_S"] = float(np.sqrt(np.mean(error**2)))

        print("uncalibrated write-verify of fresh targets on the whole array:", flush=True)
        uncalibrated = write_verify(
            board, rng.uniform(*window, board.shape), args.tolerance, args.max_iterations, settings=settings,
            recorder=PrintRecorder("uncalibrated"),
        )  # fmt: skip
        summary["uncalibrated"] = summarize(uncalibrated)

        scaling = []
        for rows, cols in ((8, 8), (32, 32), board.shape):
            rows, cols = min(rows, board.shape[0]), min(cols, board.shape[1])
            region = Region(0, 0, rows, cols)
            scaled = write_verify(
                board, rng.uniform(*window, region.shape), args.tolerance, args.max_iterations, settings=settings
            )
            scaling.append({
                "shape": [rows, cols], "cells": rows * cols, "iterations": scaled.iterations,
                "round_trips": scaled.round_trips, "converged_fraction_of_working": scaled.converged_fraction,
                "wall_time_s": scaled.wall_time,
            })  # fmt: skip
            print(f"  scaling {rows} x {cols}: {scaled.iterations} iterations, {scaled.round_trips} round trips")
        summary["scaling"] = scaling

    summary["targets_met"] = {
        "converged_at_least_99_percent": summary["converged_fraction_of_working"] >= 0.99,
        "mean_pulses_at_most_8": summary["mean_pulses_per_working_cell"] <= 8,
        "round_trips_at_most_3_per_iteration_plus_1": result.round_trips <= 3 * result.iterations + 1,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
