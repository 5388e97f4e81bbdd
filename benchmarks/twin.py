"""How well a fitted twin predicts a chip's in-situ training accuracy, against the nearest preset.

For each of three emulated chips far from the presets (a narrow conductance window with an early
saturation, high write noise, many defects with bad lines and unformed cells): characterize it
once through the Board API (the ``hil characterize all`` suite, in process, 128 x 64), fit a twin
(with the chip's cell map: its defect positions and its devices' own k and c), then train the
same small network in situ on the chip, on the twin and on the nearest preset, over several
training seeds.

Paired: training seed ``s`` (data order and initial weights) is the same on every board, so the
seed-to-seed spread of accuracy, which is much larger than the 1 point to resolve, cancels in the
difference ``accuracy(board, s) - accuracy(chip, s)``. A board's prediction error is the mean of
those paired differences, given with its standard error. The chip is one emulator seed (its
cells and fresh state) with a noise seed of its own for each training seed: a physical chip meets
fresh write, read and drift noise in every run. The twin and the preset get another emulator seed
for each training seed (the twin cannot know the chip's future noise). A run's accuracy is the
mean of its last ``--eval-points`` test evaluations (one every tenth of the run), which smooths
the update-to-update jitter of the last one.

``--kinds`` adds ``population`` (a twin fitted without the cell map: any chip with the same figures),
to show what the cell map adds, and controls: ``oracle`` and ``oracle-map`` (the chip's true
parameters, without and with its true cells) and ``frozen-chip`` (the chip with one noise future
for every run, as this benchmark's chip was until session 7: every run's calibration then met the
same noise, a share of the chip's accuracy that no number of training seeds averages out).
Ablations find which fit carries a bias: ``twin-true-PARAMETER`` is the twin file with that one
figure replaced by the chip's true value, ``twin-true-cells`` with the chip's true cell map,
``twin-true-defects`` with the true defects and stuck levels but the fitted lines.

Also measured: the pulse cost and emulator time of the twin suite on the ``umass-ta-hfo2`` 128 x 64
chip (what ``hil characterize all`` spends).

    nice -n 10 python benchmarks/twin.py --folder runs/twin-bench   # 3 chips x 2 boards + the shared preset,
        # 16 seeds, 300 updates: 112 runs of about 14 s of CPU each; under load, the machine's share
    python benchmarks/twin.py --summarize runs/twin-bench       # the tables of what completed so far
    python benchmarks/twin.py --quick      # a smoke run: few updates, 2 seeds
    python benchmarks/twin.py --fit-only   # each chip's fitted parameters against its true ones (half a minute)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
import time
import tomllib
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import tomli_w

from drivers import open_board
from hil import run_layout as layout
from hil.storage import RunFile, RunFileError, read_run
from hil.training.config import TrainConfig
from hil.training.run import run_training
from hil.twin.fit import fit_twin, read_twin_parameters, write_twin
from hil.twin.suite_runner import plan, run_suite_in_memory
from mock_hardware.array_model import CrossbarArray
from mock_hardware.device_params import preset as device_preset
from mock_hardware.emulator import parse_emulator_url

CHIP_SEED = 101
TWIN_SEED = 7
CHIP_NOISE_SEED = 1000  # the chip's noise seed for training seed s: this plus s
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
KINDS = ("chip", "twin", "population", "preset", "oracle", "oracle-map", "frozen-chip")
# Ablations: the twin with ONE fitted figure replaced by the chip's true value
# (``twin-true-set_slope``), or its cell map by the chip's true cells (``twin-true-cells``) or by the
# true defects with the fitted k and c (``twin-true-defects``): which fit carries a bias.
ABLATION = "twin-true-"
ABLATION_LABEL = rf"{ABLATION}[a-z_]+"
# A run file's name: ``{chip}-{kind}-{training seed}.h5``.
RUN_LABEL = re.compile(rf"(?P<chip>{'|'.join(CHIPS)})-(?P<kind>{'|'.join(KINDS)}|{ABLATION_LABEL})-(?P<seed>[0-9]+)")
# Controls, not predictions a user could make: the chip's own true parameters run as a twin (another
# emulator seed per training seed, as a twin's runs), without (``oracle``) and with (``oracle-map``)
# the chip's true cell map (its defect positions, stuck levels and every device's k and c); and
# ``frozen-chip``: the chip with its emulator seed's one noise future in every run.
TRAINING = {
    "dataset": "digits",
    "network": {"input_shape": [8, 8], "n_classes": 10, "layers": [
        {"type": "flatten"}, {"type": "dense", "out": 16, "activation": "relu"}, {"type": "dense", "out": 10}]},
    "batch_size": 50, "optimizer": {"name": "sgd", "lr": 0.1},
    # Pinned, not inherited from the default model's settings: the figures in docs/benchmarks.md were
    # measured with these, and a change of a model's defaults must not move them silently.
    "vmm_readback": True, "gate_coded": {"dvg_min": 0.015},
}  # fmt: skip


def chip_resource(name: str, seed: int | str | None = None) -> str:
    """The chip's resource; another ``seed`` draws another chip of the same true parameters."""
    fields = {"rows": 128, "cols": 64, **CHIPS[name]}
    seed = CHIP_SEED if seed is None else seed
    return f"emulator://?preset=umass-ta-hfo2&seed={seed}&" + "&".join(f"{k}={v}" for k, v in fields.items())


def true_cell_map(name: str, chip_seed: int, path: Path) -> Path:
    """The chip's true cells as a cell map: what a perfect characterization would have found."""
    preset_name, seed, overrides = parse_emulator_url(chip_resource(name, chip_seed))
    cells = CrossbarArray(device_preset(preset_name, **overrides), seed=seed).cells
    stuck = cells.stuck
    arrays = {"stuck_low": cells.stuck_low, "stuck_high": cells.stuck_high, "unformed": cells.unformed,
              "set_slope": cells.set_slope, "set_intercept": cells.set_intercept,
              "g_stuck": np.where(stuck, cells.g_stuck, np.nan)}  # fmt: skip
    with path.open("wb") as out:
        np.savez_compressed(out, **arrays)  # type: ignore[arg-type]
    return path


def resource_for(template: str, seed: int) -> str:
    """A board's resource for training seed ``seed``: its emulator seed (and the chip's noise seed) filled in."""
    return template.replace("{seed}", str(TWIN_SEED + seed)).replace("{noise}", str(CHIP_NOISE_SEED + seed))


def kind_argument(text: str) -> str:
    """A ``--kinds`` entry: one of :data:`KINDS` or an ablation ``twin-true-NAME``."""
    if text in KINDS[1:] or re.fullmatch(ABLATION_LABEL, text):
        return text
    raise argparse.ArgumentTypeError(f"kind {text!r}: one of {', '.join(KINDS[1:])} or {ABLATION}PARAMETER, "
                                     f"{ABLATION}cells, {ABLATION}defects")  # fmt: skip


DEFECT_ARRAYS = ("stuck_low", "stuck_high", "unformed", "g_stuck")


def ablated_twin(twin_path: Path, replaced: str, true: dict[str, Any], true_map: Path) -> Path:
    """The twin file with ``replaced`` taken from the chip's truth: a parameter's true value, the
    chip's true cell map (``cells``), or its true defect positions and stuck levels in the fitted
    map (``defects``). Written beside the twin (``{chip}-twin-true-{replaced}.toml``)."""
    document = tomllib.loads(twin_path.read_text(encoding="utf-8"))
    parameters = document["parameters"]
    out = twin_path.with_name(f"{twin_path.stem}-{ABLATION}{replaced}.toml")
    if replaced == "cells":
        parameters["cell_map"] = true_map.name
    elif replaced == "defects":
        with np.load(twin_path.parent / parameters["cell_map"]) as fitted, np.load(true_map) as truth:
            arrays = {name: truth[name] if name in DEFECT_ARRAYS else fitted[name] for name in fitted.files}
        map_path = out.with_suffix(".cells.npz")
        with map_path.open("wb") as handle:
            np.savez_compressed(handle, **arrays)
        parameters["cell_map"] = map_path.name
    elif replaced in parameters and replaced in true:
        parameters[replaced] = true[replaced]
    else:
        raise ValueError(f"{ABLATION}{replaced}: not a parameter the twin file fits ({', '.join(sorted(parameters))})")
    out.write_text(tomli_w.dumps(document), encoding="utf-8")
    return out


def nearest_preset(fitted: dict[str, Any]) -> str:
    """The preset whose key figures are closest to the fitted ones (sum of relative differences)."""

    def distance(figures: dict[str, float]) -> float:
        return float(sum(abs(figures[k] - fitted[k]) / max(abs(fitted[k]), abs(figures[k]), 1e-12) for k in figures))

    return str(min(PRESET_FIGURES, key=lambda name: distance(PRESET_FIGURES[name])))


def train_once(
    resource: str, seed: int, updates: int, folder: str, label: str, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The run's learning curve ``[[update, test accuracy], ...]``, or why it failed (a limit hit,
    say: counted apart)."""
    start = time.perf_counter()
    try:
        evaluations = _train(resource, seed, updates, folder, label, overrides or {})
    except Exception as exc:  # a failed run is a finding, not the end of the benchmark
        print(f"{label} seed {seed} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return {"failed": f"{type(exc).__name__}: {exc}", "seconds": time.perf_counter() - start}
    return {"curve": [[int(u), float(a)] for u, a, _ in evaluations], "seconds": time.perf_counter() - start}


def training_override(text: str) -> tuple[str, Any]:
    """``FIELD=JSON`` -> (field, value)."""
    name, _, value = text.partition("=")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        raise argparse.ArgumentTypeError(f"{text!r}: the value after '=' is not JSON") from None


def accuracy_of(run: dict[str, Any] | None, figure: str, eval_points: int) -> float:
    """A run's accuracy as ``figure`` says: ``end`` (mean of the last ``eval_points`` evaluations,
    smoothing the last one's jitter) or ``early`` (mean over the first 40 % of the run: how fast it
    learns). NaN for a failed or missing run."""
    if run is None or "curve" not in run:
        return math.nan
    curve = np.asarray(run["curve"], dtype=np.float64)
    if figure == "end":
        return float(curve[-eval_points:, 1].mean())
    early = curve[curve[:, 0] <= 0.4 * curve[-1, 0], 1]
    return float(early.mean()) if early.size else math.nan


def _train(
    resource: str, seed: int, updates: int, folder: str, label: str, overrides: dict[str, Any]
) -> list[tuple[int, float, float]]:
    every = max(updates // 10, 1)
    # A file left by a run killed part-way is started over (completed ones were kept by the caller).
    config = TrainConfig.model_validate({**TRAINING, **overrides, "seed": seed, "updates": updates, "eval_every": every,
                                         "boards": {"board0": resource}})  # fmt: skip
    run = RunFile(Path(folder) / f"{label}-{seed}.h5", procedure="train", config=config.model_dump(mode="json"),
                  show_progress=False, overwrite=True)  # fmt: skip
    with run:
        return list(run_training(config, run).evaluations)


def paired(board: list[float], chip: list[float]) -> dict[str, float]:
    """Mean and standard error of ``board - chip`` over the seeds where both ran, in points."""
    differences = [100 * (b - c) for b, c in zip(board, chip, strict=True) if math.isfinite(b) and math.isfinite(c)]
    n = len(differences)
    mean = float(np.mean(differences)) if n else math.nan
    error = float(np.std(differences, ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return {"mean_difference_points": mean, "standard_error_points": error, "pairs": n,
            "sd_of_differences_points": float(np.std(differences, ddof=1)) if n > 1 else math.nan}  # fmt: skip


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
    parser.add_argument("--quick", action="store_true", help="few updates, two seeds (a smoke run)")
    parser.add_argument("--seeds", type=int, default=16, help="training seeds (paired on every board)")
    parser.add_argument("--first-seed", type=int, default=0, help="run seeds from this one on (a second process "
                        "on the same folder takes the later seeds; --summarize then tables them all)")  # fmt: skip
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--eval-points", type=int, default=3, help="last evaluations averaged into a run's accuracy")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--set", metavar="FIELD=JSON", action="append", default=[], type=training_override,
                        help="a training config field changed on every board, e.g. vmm_readback=false (a control: "
                        "use another folder)")  # fmt: skip
    parser.add_argument("--chips", nargs="+", choices=sorted(CHIPS), default=list(CHIPS))
    parser.add_argument("--chip-seed", type=int, default=CHIP_SEED, help="the chip's emulator seed (another "
                        "draw of the same true parameters: use another folder)")  # fmt: skip
    parser.add_argument("--kinds", nargs="+", type=kind_argument, default=["twin", "preset"],
                        help=f"boards compared with the chip: {', '.join(KINDS[1:])}, or an ablation "
                        f"{ABLATION}PARAMETER (the twin with that figure's true value), {ABLATION}cells, "
                        f"{ABLATION}defects")  # fmt: skip
    parser.add_argument("--folder", type=Path, help="where the run files go; run again on the same folder, "
                        "completed runs are kept (default: a new temporary folder)")  # fmt: skip
    parser.add_argument("--summarize", metavar="FOLDER", type=Path,
                        help="only summarize the completed runs in a benchmark's folder")  # fmt: skip
    parser.add_argument("--fit-only", action="store_true",
                        help="only fit each chip and compare the fit with its true parameters")  # fmt: skip
    args = parser.parse_args()
    if args.summarize:
        return summarize_folder(args.summarize, args.eval_points, args.chips)
    if args.fit_only:
        return compare_fits(args.chips)
    seeds = 2 if args.quick else args.seeds
    updates = 10 if args.quick else args.updates
    kinds = ["chip", *args.kinds]
    folder = str(args.folder) if args.folder else tempfile.mkdtemp(prefix="twin-bench-")
    Path(folder).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    cost = suite_cost("emulator://?preset=umass-ta-hfo2&seed=1")
    cost.pop("runs")
    print(
        f"twin suite on umass-ta-hfo2 128x64: {cost['pulses']:,} pulses ({cost['pulses_per_cell']:.0f} per cell; "
        f"budget at most {cost['budget_at_most']:,}), {cost['seconds']:.1f} s on the emulator",
        flush=True,
    )

    boards: dict[str, dict[str, str]] = {}
    fit_seconds = {}
    chips = args.chips
    for name in chips:
        start = time.perf_counter()
        path = Path(folder) / f"{name}.toml"
        if not path.exists():  # a folder run again keeps the twin its runs were made with
            write_twin(fit_twin(suite_cost(chip_resource(name, args.chip_seed))["runs"]), path)
        population = population_twin(path)
        fit_seconds[name] = time.perf_counter() - start
        preset = nearest_preset(read_twin_parameters(path)[0])
        true_map = true_cell_map(name, args.chip_seed, Path(folder) / f"{name}.true-cells.npz")
        boards[name] = {
            # The chip's own noise seeds (never a twin's): fresh noise in each run, as on a chip.
            "chip": chip_resource(name, args.chip_seed) + "&noise_seed={noise}",
            # The twin and the preset predict with their own noise: an emulator seed per training seed.
            "twin": f"emulator://?params={path}&seed={{seed}}",
            "population": f"emulator://?params={population}&seed={{seed}}",
            "preset": f"emulator://?preset={preset}&seed={{seed}}&rows=128&cols=64",
            "preset_name": preset,
            "oracle": chip_resource(name, "{seed}"),
            "oracle-map": chip_resource(name, "{seed}") + f"&cell_map={true_map}",
            "frozen-chip": chip_resource(name, args.chip_seed),
        }
        true = true_parameters(chip_resource(name, args.chip_seed))
        for kind in (kind for kind in args.kinds if kind.startswith(ABLATION)):
            ablated = ablated_twin(path, kind[len(ABLATION) :], true, true_map)
            boards[name][kind] = f"emulator://?params={ablated}&seed={{seed}}"
        print(f"{name}: characterized and fitted in {fit_seconds[name]:.1f} s; nearest preset {preset}", flush=True)

    # Seeds outermost: a run stopped early still has whole pairs.
    jobs = [(name, kind, seed) for seed in range(args.first_seed, seeds) for name in chips for kind in kinds]
    done = completed_runs(Path(folder), updates)
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        # The same board and seed is the same run (the nearest preset is often one preset for every chip).
        submitted: dict[tuple[str, int], Future[dict[str, Any]]] = {}
        for name, kind, seed in jobs:
            resource = resource_for(boards[name][kind], seed)
            if (resource, seed) not in submitted and (resource, seed) not in done:
                submitted[(resource, seed)] = pool.submit(train_once, resource, seed, updates, folder, f"{name}-{kind}",
                                                          dict(args.set))  # fmt: skip
        finished = {key: future.result() for key, future in submitted.items()} | done
        runs = {(name, kind, seed): finished[(resource_for(boards[name][kind], seed), seed)]
                for name, kind, seed in jobs}  # fmt: skip

    results = summarize(runs, chips, kinds, seeds, {n: boards[n]["preset_name"] for n in chips}, args.eval_points)
    for name in chips:
        results[name]["fit_seconds"] = fit_seconds[name]
    seconds = time.perf_counter() - started
    return report(results, {"seeds": seeds, "updates": updates, "eval_points": args.eval_points, "kinds": kinds,
                            "seconds": seconds, "suite_128x64": cost, "quick": args.quick})  # fmt: skip


FIGURES = {"end": "end of run (mean of the last evaluations)", "early": "early (mean over the first 40 % of the run)"}


def summarize(
    runs: dict[tuple[str, str, int], dict[str, Any]], chips: list[str], kinds: list[str], seeds: int,
    presets: dict[str, str], eval_points: int,
) -> dict[str, Any]:  # fmt: skip
    """Per chip and figure: every board's accuracies by seed and, against the chip, the paired
    differences. Prints a table per figure; a run missing from ``runs`` counts as failed."""
    results: dict[str, Any] = {}
    for name in chips:
        got = {(kind, s): runs.get((name, kind, s)) for kind in kinds for s in range(seeds)}
        failed = {k: [(got[(k, s)] or {"failed": "not run"}).get("failed") for s in range(seeds)
                      if "curve" not in (got[(k, s)] or {})] for k in kinds}  # fmt: skip
        curves = {k: [(got[(k, s)] or {}).get("curve") for s in range(seeds)] for k in kinds}
        results[name] = {"nearest_preset": presets.get(name, ""), "failed_runs": failed, "curves": curves}
        for figure in FIGURES:
            accuracy = {k: [accuracy_of(got[(k, s)], figure, eval_points) for s in range(seeds)] for k in kinds}
            entry: dict[str, Any] = {"accuracy": accuracy}
            for kind in kinds[1:]:
                ran = [a for a in accuracy[kind] if math.isfinite(a)]
                entry[kind] = paired(accuracy[kind], accuracy["chip"]) | {
                    "mean_accuracy": float(np.mean(ran)) if ran else math.nan}  # fmt: skip
            results[name][figure] = entry
        results[name]["curve_errors"] = {kind: curve_errors(curves[kind], curves["chip"]) for kind in kinds[1:]}
    header = " | ".join(f"{kind} predicts | {kind} error (+- se)" for kind in kinds[1:])
    for figure, title in FIGURES.items():
        print(f"\n{title}, {seeds} paired seeds\n\n| chip | chip accuracy (sd) | {header} |")
        print("|---|---|" + "---|---|" * (len(kinds) - 1))
        for name in chips:
            entry = results[name][figure]
            chip = np.asarray(entry["accuracy"]["chip"])
            cells = [f"{100 * np.nanmean(chip):.2f} % ({100 * np.nanstd(chip, ddof=1):.1f})"]
            for kind in kinds[1:]:
                pair = entry[kind]
                if not pair["pairs"]:  # not run for this chip
                    cells += ["-", "-"]
                    continue
                difference, error = pair["mean_difference_points"], pair["standard_error_points"]
                cells += [f"{100 * pair['mean_accuracy']:.2f} %", f"{difference:+.2f} (+- {error:.2f})"]
            print(f"| {name} | " + " | ".join(cells) + " |")
    print_curves(results, chips, kinds)
    return results


CURVE_KINDS = ("twin", "preset")  # the curve tables printed (the JSON has every kind's)


def curve_errors(board: list[Any], chip: list[Any]) -> dict[str, Any]:
    """A board's paired error at each evaluation point, from the stored curves.

    ``board[s]`` and ``chip[s]`` are training seed ``s``'s curves ``[[update, accuracy], ...]``
    (``None`` for a run missing or failed). A seed counts at an update where both of its runs
    have an evaluation there: runs are paired by seed and update, never by position. Per update:
    the mean of ``board - chip`` in points, its standard error and the pairs; for the whole curve,
    the mean over updates of the mean error's magnitude and the update where it is largest.
    """
    differences: dict[int, list[float]] = {}
    for board_curve, chip_curve in zip(board, chip, strict=True):
        if board_curve is None or chip_curve is None:
            continue
        at = {int(update): float(accuracy) for update, accuracy in chip_curve}
        for update, accuracy in board_curve:
            if int(update) in at:
                differences.setdefault(int(update), []).append(100 * (float(accuracy) - at[int(update)]))
    points = []
    for update in sorted(differences):
        values = np.asarray(differences[update])
        error = float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else math.nan
        points.append({"update": update, "mean_difference_points": float(values.mean()),
                       "standard_error_points": error, "pairs": int(values.size)})  # fmt: skip
    if not points:
        return {"points": [], "mean_abs_difference_points": math.nan, "noise_floor_points": math.nan, "worst": None}
    worst = max(points, key=lambda p: abs(p["mean_difference_points"]))
    mean_abs = float(np.mean([abs(p["mean_difference_points"]) for p in points]))
    # What the mean |error| would be for a board without any error, from the seeds' scatter alone:
    # E|N(0, se)| = se sqrt(2 / pi).
    floor = float(np.nanmean([p["standard_error_points"] for p in points]) * math.sqrt(2 / math.pi))
    return {"points": points, "mean_abs_difference_points": mean_abs, "noise_floor_points": floor, "worst": worst}


def print_curves(results: dict[str, Any], chips: list[str], kinds: list[str]) -> None:
    """Per chip, the paired error of the twin and the preset at every evaluation point."""
    shown = [kind for kind in CURVE_KINDS if kind in kinds]
    for name in chips:
        curves = results[name]["curve_errors"]
        shown_here = [kind for kind in shown if curves[kind]["points"]]
        if not shown_here:
            continue
        header = " | ".join(f"{kind} error (+- se)" for kind in shown_here)
        print(f"\n{name}: paired error per evaluation point (points)\n\n| update | pairs | {header} |")
        print("|---|---|" + "---|" * len(shown_here))
        by_update = {kind: {p["update"]: p for p in curves[kind]["points"]} for kind in shown_here}
        for update in sorted(set().union(*by_update.values())):
            cells = []
            for kind in shown_here:
                point = by_update[kind].get(update)
                cells.append(
                    "-"
                    if point is None
                    else f"{point['mean_difference_points']:+.2f} (+- {point['standard_error_points']:.2f})"
                )
            pairs = max(by_update[kind][update]["pairs"] for kind in shown_here if update in by_update[kind])
            print(f"| {update} | {pairs} | " + " | ".join(cells) + " |")
        whole = []
        for kind in shown_here:
            worst = curves[kind]["worst"]
            whole.append(f"{kind}: mean |error| {curves[kind]['mean_abs_difference_points']:.2f} (noise floor "
                         f"{curves[kind]['noise_floor_points']:.2f}), worst "
                         f"{worst['mean_difference_points']:+.2f} (+- {worst['standard_error_points']:.2f}) "
                         f"at update {worst['update']}")  # fmt: skip
        print("\nwhole curve: " + "; ".join(whole))


def report(results: dict[str, Any], extra: dict[str, Any]) -> int:
    """The JSON line; exit status 1 if no twin prediction could be made."""
    errors = [abs(r["end"]["twin"]["mean_difference_points"]) for r in results.values() if "twin" in r["end"]]
    worst_twin = max(errors, default=math.nan)
    print(json.dumps({"benchmark": "twin", **extra, "chips": results, "worst_twin_error_points": worst_twin,
                      "cpus": os.cpu_count()}))  # fmt: skip
    return 0 if math.isfinite(worst_twin) else 1


def true_parameters(resource: str) -> dict[str, Any]:
    """The parameters an emulator resource string draws its chip from, as the fit reports them."""
    name, _, overrides = parse_emulator_url(resource)
    true = device_preset(name, **overrides).model_dump()
    # The fit measures c's spread as one absolute figure: the relative and absolute parts combined.
    true["set_intercept_spread_abs"] = math.hypot(true["set_intercept"] * true["set_intercept_spread"],
                                                  true["set_intercept_spread_abs"])  # fmt: skip
    true["set_intercept_spread"] = 0.0
    return true


# Not compared: the array's size, and c's relative spread (folded into the absolute one).
SHAPE_AND_FOLDED = ("rows", "cols", "set_intercept_spread")


def compare_fits(chips: list[str]) -> int:
    """Each chip's fitted parameters against the ones it was drawn with, relative error per parameter."""
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name in chips:
        true = true_parameters(chip_resource(name))
        fitted = fit_twin(suite_cost(chip_resource(name))["runs"], cell_map=False).parameters
        rows = {}
        print(f"\n{name}\n\n| parameter | true | fitted | error |\n|---|---|---|---|")
        for parameter, value in fitted.items():
            expected = true.get(parameter)
            if isinstance(value, list) or not isinstance(expected, int | float) or parameter in SHAPE_AND_FOLDED:
                continue
            relative = (value - expected) / abs(expected) if expected else math.nan
            rows[parameter] = {"true": float(expected), "fitted": float(value), "relative_error": relative}
            error = f"{100 * relative:+.1f} %" if expected else f"{value:.3g} (true 0)"
            print(f"| {parameter} | {expected:.4g} | {value:.4g} | {error} |")
        results[name] = rows
    print(json.dumps({"benchmark": "twin-fit", "chips": results}))
    return 0


def population_twin(path: Path) -> Path:
    """The twin file without its cell map: a twin of any chip with the same figures."""
    document = tomllib.loads(path.read_text(encoding="utf-8"))
    document["parameters"].pop("cell_map", None)
    document.get("sources", {}).pop("cell_map", None)
    population = path.with_name(f"{path.stem}-population.toml")
    population.write_text(tomli_w.dumps(document), encoding="utf-8")
    return population


def completed_runs(folder: Path, updates: int) -> dict[tuple[str, int], dict[str, Any]]:
    """The completed training runs of ``updates`` updates in ``folder``, by (resource, seed)."""
    runs = {}
    for path in sorted(folder.glob("*.h5")):
        data = read_run(path)
        config = data.config
        if data.procedure != "train" or layout.status(data) != layout.COMPLETED or config.get("updates") != updates:
            continue
        evaluations = data.datasets[layout.EVALUATIONS]
        runs[(str(config["boards"]["board0"]), int(config["seed"]))] = {"curve": evaluations[:, :2].tolist()}
    return runs


def summarize_folder(folder: Path, eval_points: int, only: list[str]) -> int:
    """The tables and JSON of the completed runs in a benchmark's folder (of a run stopped early)."""
    runs: dict[tuple[str, str, int], dict[str, Any]] = {}
    preset_runs: dict[tuple[str, int], dict[str, Any]] = {}  # by (preset, seed): one run serves every chip
    for path in sorted(folder.glob("*.h5")):
        label = RUN_LABEL.fullmatch(path.stem)
        if label is None:
            continue
        chip, kind, seed = label["chip"], label["kind"], label["seed"]
        try:
            data = read_run(path)
        except RunFileError:  # a run still being written (its file locked): not completed
            continue
        if layout.status(data) != layout.COMPLETED or chip not in CHIPS:
            continue
        run = {"curve": data.datasets[layout.EVALUATIONS][:, :2].tolist()}
        runs[(chip, kind, int(seed))] = run
        if kind == "preset":
            preset_runs[(str(data.config["boards"]["board0"]).split("preset=")[1].split("&")[0], int(seed))] = run
    presets = {chip: nearest_preset(read_twin_parameters(folder / f"{chip}.toml")[0]) for chip in CHIPS
               if (folder / f"{chip}.toml").exists()}  # fmt: skip
    for (preset, preset_seed), preset_run in preset_runs.items():
        for name in (name for name, nearest in presets.items() if nearest == preset):
            runs.setdefault((name, "preset", preset_seed), preset_run)
    chips = [name for name in CHIPS if any(key[0] == name for key in runs) and name in only]
    ablations = sorted({key[1] for key in runs if key[1].startswith(ABLATION)})
    kinds = ["chip", *(kind for kind in [*KINDS[1:], *ablations] if any(key[1] == kind for key in runs))]
    # A control (the oracles) may have been run for some chips only.
    chip_kinds = {c: [k for k in kinds if any(key[:2] == (c, k) for key in runs)] for c in chips}
    # Only whole seeds, from 0 up to the first that some board of some chip has not completed
    # (processes started with --first-seed fill the later seeds at the same time).
    seeds = 0
    while chips and all((c, k, seeds) in runs for c in chips for k in chip_kinds[c]):
        seeds += 1
    results = summarize(runs, chips, kinds, seeds, presets, eval_points)
    return report(results, {"seeds": seeds, "eval_points": eval_points, "kinds": kinds, "folder": str(folder),
                            "runs_completed": len(runs)})  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
