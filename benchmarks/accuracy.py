"""In-situ training accuracy on the emulated board: the papers' experiments, learning curves,
Yao 2020's hybrid transfer and Yan 2020's optimizer comparison.

Everything runs on the embedded data and the realistic ``umass-ta-hfo2`` preset, each seed being
both the emulated chip and the training order; the float baseline is the same loop with the array
replaced by exact arithmetic (same initial weights, same samples). Each experiment prints a
Markdown table, then one JSON object as the last line.

    python benchmarks/accuracy.py                      # the papers' four networks, 3 seeds (about 10 min idle)
    python benchmarks/accuracy.py --quick              # a smoke run: few updates, 1 seed
    python benchmarks/accuracy.py --experiment curves  # MLP and CNN, float and in situ at 100 ... 1,600 updates
    python benchmarks/accuracy.py --experiment yao     # software -> after transfer -> after in-situ retraining
    python benchmarks/accuracy.py --experiment yao-parallel  # conv1 on three copies, each a band of positions
    python benchmarks/accuracy.py --experiment yan     # SGD, momentum, RMSprop, Adam on breast cancer and MNIST
    python benchmarks/accuracy.py --experiment yan --tasks mnist8 --optimizers rmsprop adam
    python benchmarks/accuracy.py --experiment curves --models mlp --seeds 1 --updates 400
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

# One BLAS thread per worker: the workers run side by side on the machine's cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from hil.nn.defaults import MODEL_DEFAULTS, model_defaults
from hil.parallel import run_parallel
from hil.storage import RunFile, read_run
from hil.training.config import TrainConfig
from hil.training.run import build_network, load_data, run_training

PRESET = "umass-ta-hfo2"
# What a benchmark run adds to a model's defaults: the Yao hybrid's longer software pre-training.
EXPERIMENT_EXTRAS: dict[str, dict[str, Any]] = {"yao-hybrid": {"hybrid": {"pretrain_epochs": 5}}}


def paper_settings(model: str) -> dict[str, Any]:
    """A network's settings as its paper's budget: optimizer, rate, batch, budget and conductance per unit
    weight read from ``MODEL_DEFAULTS`` (their one owner, docs/training.md "Each model's defaults"),
    evaluated four times along the run. Spelled out, so the JSON records what ran."""
    d = model_defaults(model)
    return {"updates": d.updates, "batch_size": d.batch_size, "eval_every": max(1, d.updates // 4),
            "optimizer": {"name": d.optimizer, "lr": d.lr_for(d.optimizer)}, "g_unit": d.g_unit,
            **({"layer_g_unit": dict(d.layer_g_unit)} if d.layer_g_unit else {}),
            **EXPERIMENT_EXTRAS.get(model, {})}  # fmt: skip


EXPERIMENTS: dict[str, dict[str, Any]] = {model: paper_settings(model) for model in MODEL_DEFAULTS}
CURVE_POINTS = (100, 200, 400, 800, 1600)
# Yan 2020's optimizers. The rates give plain SGD and momentum the same long-run step
# (lr / (1 - momentum)), and the adaptive ones the rate their papers use.
YAN_OPTIMIZERS: dict[str, dict[str, Any]] = {
    "sgd": {"name": "sgd", "lr": 0.3},
    "momentum": {"name": "momentum", "lr": 0.03, "momentum": 0.9},
    "rmsprop": {"name": "rmsprop", "lr": 0.01},
    "adam": {"name": "adam", "lr": 0.01},
}
WBC_NETWORK = {
    "input_shape": [30], "n_classes": 2,
    "layers": [{"type": "dense", "out": 20, "activation": "relu"}, {"type": "dense", "out": 2}],
}  # fmt: skip
# Yan's comparison as recorded (session 6): the MLP's update rule of that time, pinned so a rerun measures
# the optimizers against the same rule (session 8 gave the MLP a 0.03 V threshold, the VMM read-back and
# initial weights corrected on the VMM).
YAN_RULE: dict[str, Any] = {"gate_coded": {"dvg_min": 0.015}, "vmm_readback": False,
                            "transfer": {"refine_initial": False}}  # fmt: skip
YAN_TASKS: dict[str, dict[str, Any]] = {
    # a 64 x 32 array of the same preset holds the 30-20-2 network (60 rows, 22 columns)
    "breast-cancer": {"model": "mlp", "network": WBC_NETWORK, "dataset": "breast-cancer", "updates": 300,
                      "batch_size": 16, "eval_every": 10, "target": 0.95, "array": "&rows=64&cols=32",
                      "g_unit": 200e-6, **YAN_RULE},
    # one conductance per unit weight for every layer and optimizer (what the recorded figures used)
    "mnist8": {"model": "mlp", "updates": 800, "batch_size": 50, "eval_every": 50, "target": 0.85,
               "g_unit": 200e-6, **YAN_RULE},
}  # fmt: skip


def one_run(settings: dict[str, Any], seed: int, exact: bool, folder: str) -> dict[str, Any]:
    """Train once as ``settings`` (TrainConfig fields, and ``array``: the emulator's size) say; the run's figures."""
    settings = dict(settings)
    array = settings.pop("array", "")
    config = TrainConfig.model_validate(
        {"seed": seed, "boards": {"board0": f"emulator://?preset={PRESET}&seed={seed}{array}"},
         **({"update": "exact"} if exact else {}), **settings}
    )  # fmt: skip
    path = Path(folder) / f"{config.model}-{'baseline' if exact else 'insitu'}-{seed}-{time.monotonic_ns()}.h5"
    run = RunFile(path, procedure="train", config=config.model_dump(mode="json"), show_progress=False)
    with run:
        result = run_training(config, run)
    saved = read_run(path)
    prepare = saved.attrs.get("prepare", {})
    pretrain = saved.datasets.get("pretrain/eval")
    n_train = len(saved.datasets["train/journal"])  # updates done
    samples_per_epoch = len(load_data(config)[0])
    return {
        "model": config.model, "seed": seed, "exact": exact,
        "accuracy": result.final_test_accuracy, "best_accuracy": result.best_test_accuracy,
        "evaluations": [[u, a] for u, a, _ in result.evaluations],
        "updates": n_train, "pulses": result.pulses, "vmm_round_trips": result.vmm_round_trips,
        "devices": result.devices, "weights": build_network(config).spec.n_weights,
        "seconds": result.seconds,
        "seconds_per_epoch": result.seconds * samples_per_epoch / max(1, n_train * config.batch_size),
        "accuracy_after_transfer": prepare.get("accuracy_after_transfer"),
        "programming_pulses": prepare.get("programming_pulses"),
        "software_accuracy_before_transfer": float(pretrain[-1, 1]) if pretrain is not None else None,
    }  # fmt: skip


def run_all(jobs: list[tuple[str, dict[str, Any], int, bool]], workers: int) -> list[dict[str, Any]]:
    """Every (label, settings, seed, exact) job on a process pool; results tagged with their label."""
    results = []
    with tempfile.TemporaryDirectory() as folder, ProcessPoolExecutor(workers) as pool:
        futures = [(label, pool.submit(one_run, spec, seed, exact, folder)) for label, spec, seed, exact in jobs]
        for label, future in futures:
            result = future.result() | {"label": label}
            results.append(result)
            kind = "float" if result["exact"] else f"in situ seed {result['seed']}"
            # every evaluation of every run as it ends: a set cut short still leaves its curves
            curve = " ".join(f"{int(u)}:{100 * a:.1f}" for u, a in result["evaluations"])
            print(f"{label:>24} {kind:>16}: {100 * result['accuracy']:.2f} % "
                  f"({result['seconds']:.0f} s, {result['pulses']:,} pulses) [{curve}]", flush=True)  # fmt: skip
    return results


# --------------------------------------------------------------------------- the papers' table


def papers(args: argparse.Namespace) -> dict[str, Any]:
    models = args.models or list(EXPERIMENTS)
    jobs = []
    for model in models:
        settings = {"model": model, **EXPERIMENTS[model]}
        if args.quick:
            settings |= {"updates": 40, "eval_every": 20}
            if model == "yao-hybrid":
                settings["hybrid"] = {"pretrain_epochs": 1}
        jobs += [(model, settings, s, False) for s in range(args.seeds)] + [(model, settings, 0, True)]
    results = run_all(jobs, args.workers)
    table = {}
    for model in models:
        base = [r for r in results if r["label"] == model and r["exact"]]
        insitu = [r for r in results if r["label"] == model and not r["exact"]]
        accuracies = np.array([r["accuracy"] for r in insitu])
        table[model] = {
            "weights": insitu[0]["weights"], "devices": insitu[0]["devices"], "updates": insitu[0]["updates"],
            "baseline_accuracy": base[0]["accuracy"], "insitu_accuracy_mean": float(accuracies.mean()),
            "insitu_accuracy_std": float(accuracies.std()), "insitu_accuracies": accuracies.tolist(),
            "gap_points": 100 * (base[0]["accuracy"] - accuracies.mean()),
            "pulses_mean": float(np.mean([r["pulses"] for r in insitu])),
            "vmm_round_trips_mean": float(np.mean([r["vmm_round_trips"] for r in insitu])),
            "seconds_per_epoch_mean": float(np.mean([r["seconds_per_epoch"] for r in insitu])),
        }  # fmt: skip
    lines = [f"| network | weights | devices | updates | float baseline | in situ (mean of {args.seeds}) "
             "| gap (points) | pulses | VMM round trips | s / epoch |", "|---" * 10 + "|"]  # fmt: skip
    for model, r in table.items():
        lines.append(
            f"| {model} | {r['weights']:,} | {r['devices']:,} | {r['updates']:,} "
            f"| {100 * r['baseline_accuracy']:.2f} % "
            f"| {100 * r['insitu_accuracy_mean']:.2f} ± {100 * r['insitu_accuracy_std']:.2f} % | {r['gap_points']:.2f} "
            f"| {r['pulses_mean']:,.0f} | {r['vmm_round_trips_mean']:,.0f} | {r['seconds_per_epoch_mean']:.1f} |"
        )
    print("\n" + "\n".join(lines))
    return {"networks": table, "runs": results}


# --------------------------------------------------------------------------- learning curves


def curves(args: argparse.Namespace) -> dict[str, Any]:
    """Float and in-situ test accuracy at 100, 200, 400, 800 and 1,600 updates (one run each, evaluated
    at every point), per network and seed."""
    models = args.models or ["mlp", "cnn"]
    points = [p for p in CURVE_POINTS if p <= args.updates]
    chip = {} if args.chip_seed is None else {"chip_seed": args.chip_seed}  # else each seed is its own chip
    jobs = []
    for model in models:
        settings = {"model": model, **EXPERIMENTS[model], "updates": max(points), "eval_every": 100, **chip}
        jobs += [(model, settings, s, exact) for s in range(args.seeds) for exact in (True, False)]
    results = run_all(jobs, args.workers)
    table: dict[str, Any] = {}
    lines = ["| network | seed | " + " | ".join(f"{p:,}" for p in points) + " |", "|---|---|" + "---|" * len(points)]
    for model in models:
        rows = {}
        for seed in range(args.seeds):
            at = {exact: dict(next(r["evaluations"] for r in results if r["label"] == model and r["seed"] == seed
                                   and r["exact"] == exact)) for exact in (True, False)}  # fmt: skip
            row = {p: {"float": at[True][p], "in_situ": at[False][p], "gap": 100 * (at[True][p] - at[False][p])}
                   for p in points}  # fmt: skip
            rows[seed] = row
            cells = [f"{100 * v['float']:.1f} / {100 * v['in_situ']:.1f}" for v in row.values()]
            lines.append(f"| {model} | {seed} | " + " | ".join(cells) + " |")
        gaps = {p: np.array([rows[s][p]["gap"] for s in rows]) for p in points}
        mean_gap = {p: float(g.mean()) for p, g in gaps.items()}
        # the mean's standard error: how far another draw of as many seeds may put it
        stderr = {p: float(g.std(ddof=1) / np.sqrt(len(g))) if len(g) > 1 else float("nan") for p, g in gaps.items()}
        lines.append(f"| {model} | gap (mean ± s.e.) | "
                     + " | ".join(f"{mean_gap[p]:+.2f} ± {stderr[p]:.2f}" for p in points) + " |")  # fmt: skip
        table[model] = {"settings": EXPERIMENTS[model] | chip, "seeds": rows, "mean_gap_points": mean_gap,
                        "mean_gap_stderr_points": stderr,
                        "within_1_point": {p: mean_gap[p] <= 1.0 for p in points},
                        "worst_gap_points": max(max(r[p]["gap"] for p in points) for r in rows.values())}  # fmt: skip
    print("\nfloat / in situ test accuracy (%) after each number of updates; gap in points (float - in situ)")
    print("\n".join(lines))
    return {"curves": table, "runs": results}


# --------------------------------------------------------------------------- Yao 2020 hybrid


def yao(args: argparse.Namespace) -> dict[str, Any]:
    """Software, after transfer, after in-situ retraining of the dense layer, per seed; ``--updates``
    below the paper's 400 shortens the retraining."""
    settings = {"model": "yao-hybrid", **EXPERIMENTS["yao-hybrid"]}
    if args.updates < settings["updates"]:
        settings |= {"updates": args.updates, "eval_every": max(1, args.updates // 4)}
    if args.quick:
        settings |= {"updates": 40, "eval_every": 20, "hybrid": {"pretrain_epochs": 1}}
    results = run_all([("yao-hybrid", settings, s, False) for s in range(args.seeds)], args.workers)
    software = np.array([r["software_accuracy_before_transfer"] for r in results])
    transfer = np.array([r["accuracy_after_transfer"] for r in results])
    final = np.array([r["accuracy"] for r in results])
    lines = ["| seed | software | after transfer | after in-situ retraining | transfer loss (points) "
             "| transfer pulses | retraining pulses |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r, s, t, f in zip(results, software, transfer, final, strict=True):
        lines.append(f"| {r['seed']} | {100 * s:.2f} % | {100 * t:.2f} % | {100 * f:.2f} % | {100 * (s - t):.2f} "
                     f"| {r['programming_pulses']:,} | {r['pulses']:,} |")  # fmt: skip
    lines.append(f"| mean | {100 * software.mean():.2f} % | {100 * transfer.mean():.2f} % | {100 * final.mean():.2f} % "
                 f"| {100 * (software - transfer).mean():.2f} | | |")  # fmt: skip
    print("\n" + "\n".join(lines))
    summary = {"software_mean": float(software.mean()), "after_transfer_mean": float(transfer.mean()),
               "after_retraining_mean": float(final.mean()),
               "transfer_loss_points": float(100 * (software - transfer).mean()),
               "retrained_gap_points": float(100 * (software - final).mean())}  # fmt: skip
    return {"yao": summary, "runs": results}


def one_parallel_run(settings: dict[str, Any], seed: int, groups: int, folder: str) -> dict[str, Any]:
    """Yao 2020's parallel mode once: conv1 on ``groups`` copies, the first on board0, the others on
    a second chip (board1) as room allows; per-copy and combined accuracy before and after retraining."""
    config = TrainConfig.model_validate({
        "seed": seed, "boards": {"board0": f"emulator://?preset={PRESET}&seed={seed}",
                                 "board1": f"emulator://?preset={PRESET}&seed={seed + 1000}"}, **settings,
    })  # fmt: skip
    path = Path(folder) / f"parallel-{seed}-{time.monotonic_ns()}.h5"
    started = time.perf_counter()
    with RunFile(path, procedure="train", config=config.model_dump(mode="json"), show_progress=False) as run:
        result = run_parallel(config, run, layers=["conv1"], groups=groups)
    return {"seed": seed, "seconds": time.perf_counter() - started, **asdict(result)}


def yao_parallel(args: argparse.Namespace) -> dict[str, Any]:
    """Each copy alone and the copies together, after the transfer and after in-situ retraining of the
    dense layer with the copies sharing the positions (the paper: 93.86 -> 95.83 % for three groups)."""
    settings = {"model": "yao-hybrid", **EXPERIMENTS["yao-hybrid"]}
    if args.updates < settings["updates"]:
        settings |= {"updates": args.updates, "eval_every": max(1, args.updates // 4)}
    if args.quick:
        settings |= {"updates": 10, "eval_every": 10, "hybrid": {"pretrain_epochs": 1}}
    groups = 3
    with tempfile.TemporaryDirectory() as folder, ProcessPoolExecutor(args.workers) as pool:
        futures = [pool.submit(one_parallel_run, settings, s, groups, folder) for s in range(args.seeds)]
        results = [future.result() for future in futures]
    lines = ["| seed | software | " + " | ".join(f"copy {g}" for g in range(groups)) + " | combined | "
             "retrained: " + " | ".join(f"copy {g}" for g in range(groups)) + " | combined | transfer pulses "
             "| retraining pulses |", "|---" * (2 * groups + 6) + "|"]  # fmt: skip
    for r in results:
        cells = [*r["groups_after_transfer"], r["combined_after_transfer"], *r["groups_after_retraining"],
                 r["combined_after_retraining"]]  # fmt: skip
        lines.append(f"| {r['seed']} | {100 * r['software']:.2f} % | " + " | ".join(f"{100 * c:.2f} %" for c in cells)
                     + f" | {r['transfer_pulses']:,} | {r['retraining_pulses']:,} |")  # fmt: skip
    print("\n" + "\n".join(lines))
    mean = {key: float(np.mean([r[key] for r in results])) for key in
            ("software", "combined_after_transfer", "combined_after_retraining")}  # fmt: skip
    return {"yao_parallel": {"groups": groups, "updates": settings["updates"], **mean}, "runs": results}


# --------------------------------------------------------------------------- Yan 2020 optimizers


def first_reaching(evaluations: list[list[float]], target: float) -> int | None:
    return next((int(u) for u, a in evaluations if a >= target), None)


def yan(args: argparse.Namespace) -> dict[str, Any]:
    """Each optimizer in situ (and in float) on each task: updates to reach the task's target accuracy
    and final accuracy, over seeds."""
    jobs = []
    tasks = {task: YAN_TASKS[task] for task in (args.tasks or YAN_TASKS)}
    optimizers = args.optimizers or list(YAN_OPTIMIZERS)
    for task, spec in tasks.items():
        settings = {k: v for k, v in spec.items() if k != "target"}
        if args.quick:
            settings |= {"updates": 60, "eval_every": 20}
        for name in optimizers:
            optimizer = YAN_OPTIMIZERS[name]
            jobs += [(f"{task}/{name}", settings | {"optimizer": optimizer}, s, exact)
                     for s in range(args.seeds) for exact in (False, True)]  # fmt: skip
    results = run_all(jobs, args.workers)
    table: dict[str, Any] = {}
    lines = ["| task | optimizer | updates to target, in situ (float) | final accuracy, in situ (float) |",
             "|---|---|---|---|"]  # fmt: skip
    for task, spec in tasks.items():
        for name in optimizers:
            row: dict[str, Any] = {}
            for exact, kind in ((False, "in_situ"), (True, "float")):
                runs = [r for r in results if r["label"] == f"{task}/{name}" and r["exact"] == exact]
                reached = [first_reaching(r["evaluations"], spec["target"]) for r in runs]
                row[kind] = {
                    "updates_to_target": reached,
                    "updates_to_target_mean": float(np.mean([u for u in reached if u is not None]))
                    if any(u is not None for u in reached) else None,
                    "final_accuracy_mean": float(np.mean([r["accuracy"] for r in runs])),
                    "final_accuracy_std": float(np.std([r["accuracy"] for r in runs])),
                }  # fmt: skip
            table[f"{task}/{name}"] = row

            def reach(kind: str, row: dict[str, Any] = row) -> str:
                done = [u for u in row[kind]["updates_to_target"] if u is not None]
                mean = f"{np.mean(done):.0f}" if done else "never"
                return f"{mean} ({len(done)}/{len(row[kind]['updates_to_target'])})"

            lines.append(
                f"| {task} (target {100 * spec['target']:.0f} %) | {name} | {reach('in_situ')} / {reach('float')} "
                f"| {100 * row['in_situ']['final_accuracy_mean']:.2f} "
                f"± {100 * row['in_situ']['final_accuracy_std']:.2f} "
                f"/ {100 * row['float']['final_accuracy_mean']:.2f} % |"
            )
    print("\nupdates to target: mean over the seeds that reached it (how many did)")
    print("\n".join(lines))
    settings = {name: YAN_OPTIMIZERS[name] for name in optimizers}
    return {"optimizers": table, "optimizer_settings": settings, "tasks": tasks, "runs": results}


EXPERIMENT_RUNNERS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "papers": papers, "curves": curves, "yao": yao, "yao-parallel": yao_parallel, "yan": yan,
}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", choices=list(EXPERIMENT_RUNNERS), default="papers")
    parser.add_argument("--models", nargs="+", choices=list(EXPERIMENTS), help="networks (papers, curves)")
    parser.add_argument("--tasks", nargs="+", choices=list(YAN_TASKS), help="Yan's tasks (yan)")
    parser.add_argument("--optimizers", nargs="+", choices=list(YAN_OPTIMIZERS), help="Yan's optimizers (yan)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1: each the training order and the chip")
    parser.add_argument("--chip-seed", type=int, help="one emulated chip for every run (curves): to tell the chip "
                        "from the training order")  # fmt: skip
    parser.add_argument("--updates", type=int, default=max(CURVE_POINTS), help="last point of the curves")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--quick", action="store_true", help="a smoke run: few updates, 1 seed")
    args = parser.parse_args()
    if args.quick:
        args.seeds = 1
    started = time.perf_counter()
    figures = EXPERIMENT_RUNNERS[args.experiment](args)
    print(json.dumps({
        "benchmark": "accuracy", "experiment": args.experiment, "preset": PRESET, "seeds": args.seeds,
        "quick": args.quick, **figures, "elapsed_s": time.perf_counter() - started,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
