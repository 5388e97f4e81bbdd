"""A trained CNN's accuracy over one day of simulated drift, without and with each compensation.

Trains the Wang 2019 CNN in situ once (its paper's budget, on the ``umass-ta-hfo2`` chip 1, in
process), then for each drift level and each compensation: serves the same chip as a separate
process (``python -m mock_hardware serve``, so its state lasts across sessions) with the drift
scaled, writes the trained conductances back onto it (``hil evaluate --refresh``: the devices are
freshly programmed at t = 0, as after training), and follows it for a day with ``hil evaluate
--every 2h --for 1d`` and the compensation:

- ``none``: inference only;
- ``column-gains``: each output column's gain against a probe batch at t = 0 (no pulse);
- ``refresh``: devices more than 8 uS from the trained conductances written back (pulses);
- ``both``;
- ``reference-cells``: 4 spare devices per used column written to known levels at t = 0 and read
  at each point, their drift line divided out of the outputs (pulses once, reads every point).

Drift levels: the preset's additive HfOx law scaled (``--drift-scales``), and, with the preset's
law, a drift common to every device that scales it (``--drift-exponents``: ``G0 (1 + t)^-nu``, as
in phase-change memory), where reference cells have something to measure.

Drift levels: the preset's (the HfOx fit: -0.09 uS per unit of ln t, spread 0.088 uS) and that
scaled by 10 and 50 (Yao 2020 lost 1.9 points in 2 hours, far more than the HfOx fit predicts).
Prints a Markdown table, then one JSON object as the last line.

    python benchmarks/drift.py            # 1,200 training updates, 3 drift levels x 4 compensations
    python benchmarks/drift.py --quick    # a smoke run: 60 updates, one drift level
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from served import serve_tcp

from hil.lifecycle.evaluate import Compensation, EvaluationPoint, evaluate_run
from hil.storage import RunFile, read_run
from hil.training.config import TrainConfig
from hil.training.run import run_training
from mock_hardware.device_params import preset

PRESET = "umass-ta-hfo2"
CHIP_SEED = 1
HOUR, DAY = 3600.0, 86400.0
REFRESH_TOLERANCE = 8e-6  # S: above the read noise (about 1 % of 300 uS), below what moves an answer
COMPENSATIONS = {
    "none": Compensation(),
    "column-gains": Compensation(column_gains=True),
    "refresh": Compensation(refresh_tolerance=REFRESH_TOLERANCE),
    "both": Compensation(refresh_tolerance=REFRESH_TOLERANCE, column_gains=True),
    "reference-cells": Compensation(reference_cells=4),
}
REPORTED_HOURS = (0, 2, 6, 12, 24)


def train(folder: Path, updates: int) -> Path:
    config = TrainConfig.model_validate(
        {"model": "cnn", "updates": updates, "boards": {"board0": f"emulator://?preset={PRESET}&seed={CHIP_SEED}"}}
    )
    path = folder / "cnn.h5"
    with RunFile(path, procedure="train", config=config.model_dump(mode="json"), show_progress=False) as run:
        run_training(config, run)
    return path


def serve(drift_scale: float, exponent: float) -> tuple[subprocess.Popen[bytes], str]:
    """The training's chip as a separate process, its drift scaled (and a common multiplicative drift
    of ``exponent`` added); the process and its resource."""
    params = preset(PRESET)
    mean, spread = params.drift_mean * drift_scale, params.drift_spread * drift_scale
    return serve_tcp(PRESET, CHIP_SEED, "--set", f"drift_mean={mean!r}", "--set", f"drift_spread={spread!r}",
                     "--set", f"drift_exponent={exponent!r}")  # fmt: skip


def follow(
    run: Path, folder: Path, drift_scale: float, name: str, every: float, exponent: float = 0.0
) -> dict[str, Any]:
    process, resource = serve(drift_scale, exponent)
    try:
        tag = f"{drift_scale:g}-{exponent:g}-{name}"
        rewrite = evaluate_run(run, folder / f"rewrite-{tag}.h5", board=resource, show_progress=False,
                               compensation=Compensation(refresh_tolerance=REFRESH_TOLERANCE))  # fmt: skip
        started = time.perf_counter()
        points = evaluate_run(run, folder / f"day-{tag}.h5", board=resource, every=every, duration=DAY,
                              compensation=COMPENSATIONS[name], show_progress=False)  # fmt: skip
        seconds = time.perf_counter() - started
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=30)
    return {
        "drift_scale": drift_scale, "drift_exponent": exponent, "compensation": name,
        "rewrite_pulses": rewrite[0].refresh_pulses, "reference_pulses": sum(p.reference_pulses for p in points),
        "reference_reads": sum(p.reference_reads for p in points),
        "accuracy_after_rewrite": rewrite[0].accuracy, "points": [vars(p) for p in points],
        "refresh_pulses": sum(p.refresh_pulses for p in points),
        "probe_round_trips": sum(p.probe_round_trips for p in points), "seconds": seconds,
    }  # fmt: skip


def at_hour(points: list[dict[str, Any]], hour: float) -> EvaluationPoint | None:
    for p in points:
        if abs(p["seconds"] - hour * HOUR) < 1:
            return EvaluationPoint(**p)
    return None


def markdown(results: list[dict[str, Any]], trained: float) -> str:
    hours = " | ".join(f"{h} h" for h in REPORTED_HOURS)
    lines = [f"trained in situ: {100 * trained:.2f} %", "",
             f"| drift | compensation | {hours} | median drift at 24 h | refresh pulses | probe VMM round trips "
             "| reference pulses / reads |",
             "|---|---|" + "---|" * len(REPORTED_HOURS) + "---|---|---|---|"]  # fmt: skip
    for r in results:
        cells = []
        for h in REPORTED_HOURS:
            p = at_hour(r["points"], h)
            cells.append(f"{100 * p.accuracy:.2f} %" if p else "-")
        last = EvaluationPoint(**r["points"][-1])
        drift = f"x{r['drift_scale']:g}" + (f", nu {r['drift_exponent']:g}" if r.get("drift_exponent") else "")
        lines.append(f"| {drift} | {r['compensation']} | {' | '.join(cells)} | "
                     f"{last.drift_median * 1e6:.2f} uS | {r['refresh_pulses']:,} | "
                     f"{r['probe_round_trips']:,} | {r.get('reference_pulses', 0):,} / "
                     f"{r.get('reference_reads', 0):,} |")  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=1200, help="training updates (default: the paper's 1,200)")
    parser.add_argument("--drift-scales", type=float, nargs="+", default=[1.0, 10.0, 50.0])
    parser.add_argument("--every-hours", type=float, default=2.0)
    parser.add_argument("--compensations", nargs="+", default=list(COMPENSATIONS), choices=list(COMPENSATIONS))
    parser.add_argument(
        "--drift-exponents",
        type=float,
        nargs="*",
        default=[0.05],
        help="common multiplicative drifts (nu of G0 (1 + t)^-nu), each with the preset's law",
    )
    parser.add_argument(
        "--exponent-compensations",
        nargs="+",
        default=["none", "column-gains", "reference-cells"],
        choices=list(COMPENSATIONS),
        help="the compensations tried on those drifts",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 60 updates, drift x50, every 6 h")
    args = parser.parse_args()
    if args.quick:
        args.updates, args.drift_scales, args.every_hours, args.drift_exponents = 60, [50.0], 6.0, [0.05]
    started = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        run = train(folder, args.updates)
        trained = float(read_run(run).datasets["train/eval"][-1, 1])
        print(f"trained: {100 * trained:.2f} % after {args.updates} updates ({time.perf_counter() - started:.0f} s)",
              flush=True)  # fmt: skip
        scenarios = [(scale, 0.0, name) for scale in args.drift_scales for name in args.compensations]
        scenarios += [(1.0, nu, name) for nu in args.drift_exponents for name in args.exponent_compensations]
        for scale, exponent, name in scenarios:
            result = follow(run, folder, scale, name, args.every_hours * HOUR, exponent)
            results.append(result)
            last = result["points"][-1]
            print(f"drift x{scale:g} nu {exponent:g} {name:>15}: {100 * result['points'][0]['accuracy']:.2f} % -> "
                  f"{100 * last['accuracy']:.2f} % after a day, {result['refresh_pulses']:,} refresh pulses "
                  f"({result['seconds']:.0f} s)", flush=True)  # fmt: skip
    print()
    print(markdown(results, trained))
    print(json.dumps({
        "benchmark": "drift", "preset": PRESET, "chip_seed": CHIP_SEED, "updates": args.updates,
        "trained_accuracy": trained, "refresh_tolerance": REFRESH_TOLERANCE, "every_s": args.every_hours * HOUR,
        "results": results, "elapsed_s": time.perf_counter() - started,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
