"""In-situ training accuracy of the four published networks on the emulated board.

For each network, on the embedded data and the realistic ``umass-ta-hfo2`` preset: the float
baseline (the same loop with the array replaced by exact arithmetic) and in-situ training over
several seeds (each seed is both the emulated chip and the training order), at the papers' update
budgets. Prints a Markdown table, then one JSON object as the last line.

    python benchmarks/accuracy.py                 # every network, 3 seeds (about 10 minutes on 2 cores)
    python benchmarks/accuracy.py --quick         # a smoke run: few updates, 1 seed
    python benchmarks/accuracy.py --models mlp cnn --seeds 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

# One BLAS thread per worker: the workers run side by side on the machine's cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from hil.storage import RunFile, read_run
from hil.training.config import TrainConfig
from hil.training.run import build_network, run_training

# The papers' budgets (shared/reference/device-parameters.md).
EXPERIMENTS: dict[str, dict[str, Any]] = {
    "mlp": {"updates": 1600, "batch_size": 50, "eval_every": 400, "optimizer": {"name": "sgd", "lr": 0.1}},
    "cnn": {"updates": 1200, "batch_size": 100, "eval_every": 300, "optimizer": {"name": "rmsprop", "lr": 0.01}},
    "convlstm": {"updates": 1200, "batch_size": 50, "eval_every": 300, "optimizer": {"name": "rmsprop", "lr": 0.01}},
    "yao-hybrid": {"updates": 400, "batch_size": 100, "eval_every": 100, "optimizer": {"name": "adam", "lr": 0.01},
                   "hybrid": {"pretrain_epochs": 5}},
}  # fmt: skip
PRESET = "umass-ta-hfo2"


def one_run(model: str, seed: int, exact: bool, quick: bool, folder: str) -> dict[str, Any]:
    settings = dict(EXPERIMENTS[model])
    if quick:
        settings |= {"updates": 40, "eval_every": 20}
        if model == "yao-hybrid":
            settings["hybrid"] = {"pretrain_epochs": 1}
    config = TrainConfig.model_validate(
        {"model": model, "seed": seed, "boards": {"board0": f"emulator://?preset={PRESET}&seed={seed}"},
         **({"update": "exact"} if exact else {}), **settings}
    )  # fmt: skip
    path = Path(folder) / f"{model}-{'baseline' if exact else 'insitu'}-{seed}.h5"
    run = RunFile(path, procedure="train", config=config.model_dump(mode="json"), show_progress=False)
    with run:
        result = run_training(config, run)
    saved = read_run(path)
    prepare = saved.attrs.get("prepare", {})
    pretrain = saved.datasets.get("pretrain/eval")
    n_train = len(saved.datasets["train/journal"])  # updates done
    samples_per_epoch = _train_size(config)
    return {
        "model": model, "seed": seed, "exact": exact,
        "accuracy": result.final_test_accuracy, "best_accuracy": result.best_test_accuracy,
        "updates": n_train, "pulses": result.pulses, "vmm_round_trips": result.vmm_round_trips,
        "devices": result.devices, "weights": build_network(config).spec.n_weights,
        "seconds": result.seconds,
        "seconds_per_epoch": result.seconds * samples_per_epoch / max(1, n_train * config.batch_size),
        "accuracy_after_transfer": prepare.get("accuracy_after_transfer"),
        "software_accuracy_before_transfer": float(pretrain[-1, 1]) if pretrain is not None else None,
    }  # fmt: skip


def _train_size(config: TrainConfig) -> int:
    from hil.training.run import load_data

    return len(load_data(config)[0])


def summarize(results: list[dict[str, Any]], models: list[str]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for model in models:
        base = [r for r in results if r["model"] == model and r["exact"]]
        insitu = [r for r in results if r["model"] == model and not r["exact"]]
        accuracies = np.array([r["accuracy"] for r in insitu])
        row = {
            "weights": insitu[0]["weights"], "devices": insitu[0]["devices"], "updates": insitu[0]["updates"],
            "baseline_accuracy": base[0]["accuracy"] if base else None,
            "insitu_accuracy_mean": float(accuracies.mean()), "insitu_accuracy_std": float(accuracies.std()),
            "insitu_accuracies": accuracies.tolist(),
            "gap_points": 100 * (base[0]["accuracy"] - accuracies.mean()) if base else None,
            "pulses_mean": float(np.mean([r["pulses"] for r in insitu])),
            "vmm_round_trips_mean": float(np.mean([r["vmm_round_trips"] for r in insitu])),
            "seconds_per_epoch_mean": float(np.mean([r["seconds_per_epoch"] for r in insitu])),
            "seconds_mean": float(np.mean([r["seconds"] for r in insitu])),
        }  # fmt: skip
        transfer = [r["accuracy_after_transfer"] for r in insitu if r["accuracy_after_transfer"] is not None]
        software = [r["software_accuracy_before_transfer"] for r in insitu if r["software_accuracy_before_transfer"]]
        if model == "yao-hybrid" and software:
            row["software_accuracy_mean"] = float(np.mean(software))
            row["after_transfer_accuracy_mean"] = float(np.mean(transfer))
        table[model] = row
    return table


def markdown(table: dict[str, Any], seeds: int) -> str:
    lines = [
        f"| network | weights | devices | updates | float baseline | in situ (mean of {seeds}) | gap (points) "
        "| pulses | VMM round trips | s / epoch |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model, r in table.items():
        base = f"{100 * r['baseline_accuracy']:.2f} %" if r["baseline_accuracy"] is not None else "-"
        gap = f"{r['gap_points']:.2f}" if r["gap_points"] is not None else "-"
        lines.append(
            f"| {model} | {r['weights']:,} | {r['devices']:,} | {r['updates']:,} | {base} "
            f"| {100 * r['insitu_accuracy_mean']:.2f} ± {100 * r['insitu_accuracy_std']:.2f} % | {gap} "
            f"| {r['pulses_mean']:,.0f} | {r['vmm_round_trips_mean']:,.0f} | {r['seconds_per_epoch_mean']:.1f} |"
        )
    for model, r in table.items():
        if "software_accuracy_mean" in r:
            lines.append(
                f"\n{model}: software {100 * r['software_accuracy_mean']:.2f} % -> after transfer "
                f"{100 * r['after_transfer_accuracy_mean']:.2f} % -> after in-situ retraining "
                f"{100 * r['insitu_accuracy_mean']:.2f} %"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(EXPERIMENTS), choices=list(EXPERIMENTS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--quick", action="store_true", help="a smoke run: few updates, 1 seed")
    args = parser.parse_args()
    seeds = 1 if args.quick else args.seeds
    jobs = [(m, s, False) for m in args.models for s in range(seeds)] + [(m, 0, True) for m in args.models]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder, ProcessPoolExecutor(args.workers) as pool:
        futures = [pool.submit(one_run, m, s, exact, args.quick, folder) for m, s, exact in jobs]
        results = []
        for future in futures:
            result = future.result()
            results.append(result)
            kind = "baseline" if result["exact"] else f"in situ seed {result['seed']}"
            print(f"{result['model']:>10} {kind:>16}: {100 * result['accuracy']:.2f} % "
                  f"({result['seconds']:.0f} s, {result['pulses']:,} pulses)", flush=True)  # fmt: skip
    table = summarize(results, args.models)
    print()
    print(markdown(table, seeds))
    print(json.dumps({
        "benchmark": "accuracy", "preset": PRESET, "seeds": seeds, "quick": args.quick, "networks": table,
        "runs": results, "elapsed_s": time.perf_counter() - started,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
