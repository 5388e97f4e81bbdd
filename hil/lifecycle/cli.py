"""``hil deploy`` and ``hil evaluate``: their arguments and reports (the work is in their modules)."""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path
from typing import Any

from hil.config import EMBEDDED_EMULATOR
from hil.lifecycle.deploy import deploy_config
from hil.lifecycle.evaluate import Compensation, evaluate_run
from hil.optimizers import OPTIMIZER_NAMES
from hil.run_report import draw_run_plot
from hil.storage import read_run
from hil.training.config import MODEL_NAMES
from hil.training.session import create_run, describe_resources, execute

_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-z]*)\s*")


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30min``, ``2h``, ``1d``, ``1h30m`` -> seconds."""
    total, position = 0.0, 0
    for match in _DURATION.finditer(text):
        if match.start() != position or match.group(2) not in {"", *_UNITS} or (match.group(2) == "" and total):
            break
        total += float(match.group(1)) * _UNITS.get(match.group(2), 1.0)
        position = match.end()
    if position != len(text) or position == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 90, 90s, 30min, 2h, 1d, 1h30m)")
    return total


def cmd_deploy(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    for name in ("batch_size", "seed", "chip_seed", "dataset", "retrain_layers"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.board:
        overrides["boards"] = {"board0": args.board}
    if args.tolerance is not None:
        overrides["initial_tolerance"] = args.tolerance
    if args.optimizer is not None or args.lr is not None:
        overrides["optimizer"] = ({"name": args.optimizer} if args.optimizer is not None else {}) | (
            {"lr": args.lr} if args.lr is not None else {}
        )
    config = deploy_config(args.weights, args.model, args.config, args.fine_tune, overrides, fit=not args.no_fit)
    out = Path(args.out or f"runs/deploy-{config.model}-{time.strftime('%Y%m%d-%H%M%S')}.h5")
    run = create_run(config, out, args.overwrite)
    print(f"deploying {args.weights} as {config.model} on {describe_resources(config)} -> {out}")
    result = execute(config, run)
    prepare = read_run(out).attrs.get("prepare", {})
    held = int(prepare.get("devices_held_at_reach", 0))
    reach = (f"; {held:,} of {int(prepare['devices_written']):,} devices asked past their calibrated reach, "
             "written at its end") if held else ""  # fmt: skip
    print(f"on the chip: test accuracy {100 * float(prepare['accuracy_after_transfer']):.2f} % after writing the "
          f"weights ({int(prepare['programming_pulses']):,} pulses{reach})")  # fmt: skip
    if config.updates:
        print(f"fine-tuned in situ ({', '.join(config.trained_layers or ['every layer'])}): test accuracy "
              f"{100 * result.final_test_accuracy:.2f} % after {result.updates_done} updates, "
              f"{result.pulses:,} pulses")  # fmt: skip
    print(f"data in {out}; follow it with: hil evaluate {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    run = Path(args.run)
    out = Path(args.out or run.with_name(f"{run.stem}-evaluate-{time.strftime('%Y%m%d-%H%M%S')}.h5"))
    compensation = Compensation(refresh_tolerance=args.refresh, column_gains=args.column_gains,
                                reference_cells=args.reference_cells, reference_fit=args.reference_fit)  # fmt: skip
    points = evaluate_run(run, out, every=args.every, duration=args.duration, compensation=compensation,
                          board=args.board, allow_other_board=args.force_other_board,
                          overwrite=args.overwrite)  # fmt: skip
    references = compensation.reference_cells > 0
    print(f"{'time':>12} {'accuracy':>9} {'drift':>9} {'refreshed':>9} {'pulses':>8}"
          + (f" {'ref. gain':>9}" if references else ""))  # fmt: skip
    for p in points:
        print(f"{_hours(p.seconds):>12} {100 * p.accuracy:8.2f}% {p.drift_median * 1e6:6.2f} uS "
              f"{p.devices_refreshed:>9,} {p.refresh_pulses + p.reference_pulses:>8,}"
              + (f" {p.reference_gain:9.4f}" if references else ""))  # fmt: skip
    total = sum(p.refresh_pulses for p in points)
    cost = f"refresh pulses {total:,}"
    if references:
        cost += (f"; reference cells: {sum(p.reference_pulses for p in points):,} pulses to write, "
                 f"{sum(p.reference_reads for p in points):,} reads")  # fmt: skip
    print(f"{len(points)} evaluations of {run}; {cost}; data in {out}; {draw_run_plot(read_run(out))}")
    return 0


def _hours(seconds: float) -> str:
    return f"{seconds:g} s" if seconds < 3600 else f"{seconds / 3600:g} h"


def register(commands: Any) -> None:
    """Add ``deploy`` and ``evaluate`` to the ``hil`` command line."""
    deploy = commands.add_parser(
        "deploy", help="program weights trained elsewhere onto the chip, evaluate, optionally fine-tune",
        description="Write a network's weights (a .npz, docs/training.md) onto the chip by write-verify, "
        "evaluate it there, and optionally fine-tune it in situ.",
    )  # fmt: skip
    deploy.add_argument("weights", metavar="WEIGHTS.npz", help="one (fan_in, fan_out) array per layer, by name")
    deploy.add_argument("--model", choices=MODEL_NAMES, help="the network the weights are for (default: cnn, or "
                        "the --config file's)")  # fmt: skip
    deploy.add_argument("--config", metavar="FILE", help="training config (TOML or JSON), e.g. a custom network")
    deploy.add_argument("--board", metavar="RESOURCE", help=f"board resource string (default: {EMBEDDED_EMULATOR})")
    deploy.add_argument("--chip-seed", type=int, metavar="N", help="seeds the emulated chip of emulator:// boards")
    deploy.add_argument("--out", metavar="FILE.h5", help="run file (default: runs/deploy-<model>-<time>.h5)")
    deploy.add_argument("--overwrite", action="store_true", help="replace an existing run file")
    deploy.add_argument("--tolerance", type=float, metavar="S", help="write-verify tolerance of the transfer, S "
                        "(default 4e-6)")  # fmt: skip
    deploy.add_argument("--no-fit", action="store_true", help="write the weights as they are (default: each layer "
                        "scaled to fill what the devices hold, where the network's answers do not change)")  # fmt: skip
    deploy.add_argument("--fine-tune", type=int, default=0, metavar="UPDATES", help="in-situ updates after the "
                        "transfer (default 0: evaluate only)")  # fmt: skip
    deploy.add_argument("--retrain-layers", nargs="+", metavar="LAYER", help="the layers fine-tuned (default: all)")
    deploy.add_argument("--optimizer", choices=OPTIMIZER_NAMES, help="fine-tuning optimizer (default: the model's)")
    deploy.add_argument("--lr", type=float, metavar="X", help="fine-tuning learning rate (default: the model's for "
                        "the optimizer)")  # fmt: skip
    deploy.add_argument("--batch-size", type=int, metavar="N", help="samples per fine-tuning update (default: "
                        "the model's)")  # fmt: skip
    deploy.add_argument("--seed", type=int, metavar="N", help="seeds the fine-tuning's sample order")
    deploy.add_argument("--dataset", metavar="NAME", help="the data to evaluate and fine-tune on (default: "
                        "the model's)")  # fmt: skip
    deploy.set_defaults(handler=cmd_deploy)

    evaluate = commands.add_parser(
        "evaluate", help="inference-only accuracy of a trained or deployed network on the chip, now or over time",
        description="Evaluate a training or deployment run's network on the chip as it is now (its placement "
        "and calibration from the file, the conductances read back); with --every and --for, again and again "
        "while the board idles (an emulator's simulated clock skips ahead).",
    )  # fmt: skip
    evaluate.add_argument("run", metavar="RUN.h5", help="a training or deployment run file")
    evaluate.add_argument("--board", metavar="RESOURCE", help="the board's resource, when not the one the run used")
    evaluate.add_argument("--force-other-board", action="store_true", help="go on although another chip answers "
                          "than the one the run used")  # fmt: skip
    evaluate.add_argument("--every", type=parse_duration, metavar="DURATION", help="time between evaluations "
                          "(90, 90s, 30min, 2h, 1d)")  # fmt: skip
    evaluate.add_argument("--for", dest="duration", type=parse_duration, metavar="DURATION",
                          help="how long to follow the network")  # fmt: skip
    evaluate.add_argument("--refresh", type=float, metavar="S", help="before each evaluation, write back "
                          "every device that drifted more than this many siemens (e.g. 4e-6) from the run's final "
                          "conductances (costs pulses; also rewrites a chip that lost the weights)")  # fmt: skip
    evaluate.add_argument("--column-gains", action="store_true", help="before each evaluation, recalibrate each "
                          "output column's gain against its response to a probe batch at the first evaluation "
                          "(no pulses; for drift that scales whole columns, docs/training.md)")  # fmt: skip
    evaluate.add_argument("--reference-cells", type=int, default=0, metavar="N", help="write N spare devices per "
                          "column the network uses to known levels at the first evaluation, read them at each, and "
                          "take the drift they share with the network out of its outputs (pulses once, N reads per "
                          "column per evaluation; for drift common to the devices, docs/training.md)")  # fmt: skip
    evaluate.add_argument("--reference-fit", choices=("board", "column"), default="board", help="one drift line per "
                          "array from all its references (default), or per column from that column's")  # fmt: skip
    evaluate.add_argument("--out", metavar="FILE.h5", help="where to record the evaluations (default: beside RUN)")
    evaluate.add_argument("--overwrite", action="store_true", help="replace an existing file")
    evaluate.set_defaults(handler=cmd_evaluate)
