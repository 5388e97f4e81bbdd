"""How well a fitted twin predicts a chip's in-situ training accuracy, against the nearest preset.

For each of three emulated chips far from the presets (a narrow conductance window with an early
saturation, high write noise, many defects with bad lines and unformed cells): characterize it
once through the Board API (the ``hil characterize all`` suite, in process, 128 x 64), fit a twin,
then train the same small network in situ on the chip, on the twin and on the nearest preset,
over several training seeds. The twin's prediction error is ``|mean accuracy on the twin - mean
accuracy on the chip|``; the preset's is the same with the preset. The chip is one emulator seed
(its particular cells); the twin and the preset are drawn with another emulator seed for each
training seed, as a twin cannot know the chip's cells one by one (its bad lines are known by
position): they predict the accuracy of any chip with the fitted parameters.

Also measured: the pulse cost and emulator time of the twin suite on the ``umass-ta-hfo2`` 128 x 64
chip (what ``hil characterize all`` spends).

    python benchmarks/twin.py              # 3 chips x 3 boards x 5 seeds (about 20 minutes on 2 cores)
    python benchmarks/twin.py --quick      # a smoke run: few updates, 1 seed
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from drivers import open_board
from hil.storage import RunFile
from hil.training.config import TrainConfig
from hil.training.run import run_training
from hil.twin.fit import fit_twin, write_twin
from hil.twin.suite_runner import plan, run_suite_in_memory

CHIP_SEED = 101
TWIN_SEED = 7
CHIPS: dict[str, dict[str, Any]] = {
    "narrow-window": {"set_slope": 45e-6, "set_intercept": 45e-6, "g_min": 20e-6, "g_initial_mean": 60e-6,
                      "v_gate_saturation": 1.7, "v_gate_threshold": 0.6, "write_noise": 3e-6},
    "high-write-noise": {"write_noise": 16e-6, "read_noise": 0.02},
    "many-defects": {"stuck_low_fraction": 0.15, "stuck_high_fraction": 0.05, "unformed_fraction": 0.08,
                     "bad_rows": "10,77", "bad_cols": "20,41"},
}  # fmt: skip
# The presets a user would otherwise pick from, at the chip's size (what "nearest" is chosen among).
PRESET_FIGURES: dict[str, dict[str, float]] = {
    "umass-ta-hfo2": {"set_slope": 98e-6, "set_intercept": 120e-6, "write_noise": 4e-6,
                      "stuck_low_fraction": 0.09, "stuck_high_fraction": 0.02},
    "tsinghua-taox-hfox": {"set_slope": 30e-6, "set_intercept": -10e-6, "write_noise": 1e-6,
                           "stuck_low_fraction": 0.01, "stuck_high_fraction": 0.002},
}  # fmt: skip
TRAINING = {
    "dataset": "digits",
    "network": {"input_shape": [8, 8], "n_classes": 10, "layers": [
        {"type": "flatten"}, {"type": "dense", "out": 16, "activation": "relu"}, {"type": "dense", "out": 10}]},
    "batch_size": 50, "optimizer": {"name": "sgd", "lr": 0.1},
}  # fmt: skip


def chip_resource(name: str) -> str:
    fields = {"rows": 128, "cols": 64, **CHIPS[name]}
    return f"emulator://?preset=umass-ta-hfo2&seed={CHIP_SEED}&" + "&".join(f"{k}={v}" for k, v in fields.items())


def nearest_preset(fitted: dict[str, Any]) -> str:
    """The preset whose key figures are closest to the fitted ones (sum of relative differences)."""

    def distance(figures: dict[str, float]) -> float:
        return sum(abs(figures[k] - fitted[k]) / max(abs(fitted[k]), abs(figures[k]), 1e-12) for k in figures)

    return min(PRESET_FIGURES, key=lambda name: distance(PRESET_FIGURES[name]))


def train_once(resource: str, seed: int, updates: int, folder: str, label: str) -> float:
    """Final test accuracy; NaN if the run failed (a limit hit, say), counted apart."""
    try:
        return _train(resource, seed, updates, folder, label)
    except Exception as exc:  # a failed run is a finding, not the end of the benchmark
        print(f"{label} seed {seed} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return math.nan


def _train(resource: str, seed: int, updates: int, folder: str, label: str) -> float:
    config = TrainConfig.model_validate({**TRAINING, "seed": seed, "updates": updates, "eval_every": updates,
                                         "boards": {"board0": resource}})  # fmt: skip
    run = RunFile(Path(folder) / f"{label}-{seed}.h5", procedure="train", config=config.model_dump(mode="json"),
                  show_progress=False)  # fmt: skip
    with run:
        return float(run_training(config, run).final_test_accuracy)


def suite_cost(resource: str) -> dict[str, Any]:
    """Pulses and emulator time of the twin suite (what ``hil characterize all`` spends)."""
    with open_board(resource) as board:
        budget = sum(step.pulses for step in plan(board.shape))
        start, pulses0 = time.perf_counter(), board.pulses_applied
        runs = run_suite_in_memory(board)
        seconds = time.perf_counter() - start
        pulses = board.pulses_applied - pulses0
        cells = board.shape[0] * board.shape[1]
    return {"runs": runs, "pulses": pulses, "pulses_per_cell": pulses / cells, "budget_at_most": budget,
            "seconds": seconds}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few updates, one seed (a smoke run)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--updates", type=int, default=150)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chips", nargs="+", choices=sorted(CHIPS), default=list(CHIPS))
    args = parser.parse_args()
    seeds = 1 if args.quick else args.seeds
    updates = 10 if args.quick else args.updates
    folder = tempfile.mkdtemp(prefix="twin-bench-")

    cost = suite_cost("emulator://?preset=umass-ta-hfo2&seed=1")
    cost.pop("runs")
    print(f"twin suite on umass-ta-hfo2 128x64: {cost['pulses']:,} pulses ({cost['pulses_per_cell']:.0f} per cell; "
          f"budget at most {cost['budget_at_most']:,}), {cost['seconds']:.1f} s on the emulator", flush=True)

    boards: dict[str, dict[str, str]] = {}
    fit_seconds = {}
    chips = args.chips
    for name in chips:
        start = time.perf_counter()
        measured = suite_cost(chip_resource(name))
        twin = fit_twin(measured["runs"])
        path = write_twin(twin, Path(folder) / f"{name}.toml")
        fit_seconds[name] = time.perf_counter() - start
        preset = nearest_preset(twin.parameters)
        boards[name] = {
            "chip": chip_resource(name),
            # The twin and the preset predict for any chip with those parameters: each training
            # seed gets its own emulator seed (the chip is always the same one).
            "twin": f"emulator://?params={path}&seed={{seed}}",
            "preset": f"emulator://?preset={preset}&seed={{seed}}&rows=128&cols=64",
            "preset_name": preset,
        }
        print(f"{name}: characterized and fitted in {fit_seconds[name]:.1f} s; nearest preset {preset}", flush=True)

    jobs = [(name, kind, seed) for name in chips for kind in ("chip", "twin", "preset") for seed in range(seeds)]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = {
            job: pool.submit(train_once, boards[job[0]][job[1]].replace("{seed}", str(TWIN_SEED + job[2])), job[2],
                             updates, folder, f"{job[0]}-{job[1]}")
            for job in jobs
        }  # fmt: skip
        accuracy = {job: future.result() for job, future in futures.items()}

    results = {}
    print("\n| chip | nearest preset | chip accuracy | twin predicts | twin error | preset predicts | preset error |")
    print("|---|---|---|---|---|---|---|")
    for name in chips:
        mean = {kind: float(np.nanmean([accuracy[(name, kind, s)] for s in range(seeds)])) for kind in
                ("chip", "twin", "preset")}  # fmt: skip
        spread = {kind: float(np.nanstd([accuracy[(name, kind, s)] for s in range(seeds)])) for kind in mean}
        failed = {kind: sum(math.isnan(accuracy[(name, kind, s)]) for s in range(seeds)) for kind in mean}
        twin_error, preset_error = abs(mean["twin"] - mean["chip"]), abs(mean["preset"] - mean["chip"])
        results[name] = {"chip": mean["chip"], "twin": mean["twin"], "preset": mean["preset"],
                         "seed_spread": spread, "twin_error_points": 100 * twin_error,
                         "preset_error_points": 100 * preset_error, "failed_runs": failed,
                         "nearest_preset": boards[name]["preset_name"],
                         "fit_seconds": fit_seconds[name]}  # fmt: skip
        print(f"| {name} | {boards[name]['preset_name']} | {100 * mean['chip']:.2f} % | {100 * mean['twin']:.2f} % | "
              f"{100 * twin_error:.2f} | {100 * mean['preset']:.2f} % | {100 * preset_error:.2f} |")
    worst_twin = max(r["twin_error_points"] for r in results.values())
    print(json.dumps({"benchmark": "twin", "seeds": seeds, "updates": updates, "chips": results,
                      "worst_twin_error_points": worst_twin,
                      "mean_preset_error_points": float(np.mean([r["preset_error_points"] for r in results.values()])),
                      "suite_128x64": cost, "quick": args.quick, "cpus": os.cpu_count()}))  # fmt: skip
    return 0 if math.isfinite(worst_twin) else 1


if __name__ == "__main__":
    sys.exit(main())
