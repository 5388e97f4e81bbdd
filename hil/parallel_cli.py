"""``hil parallel``: Yao 2020's parallel mode from the command line (the work is in hil/parallel.py).

Everything is checked before the run file exists: the config (``parallel.groups``,
``parallel.layers`` among the network's convolutions), the update rule (the copies live on an
array) and the whole run against its boards. The run file records the config with its
``parallel`` table; such a run is not resumable (``hil train --resume`` refuses it in one line).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from hil.config import EMBEDDED_EMULATOR, ConfigError
from hil.parallel import ParallelResult, check_replicable, check_retrained, run_parallel
from hil.training.config import MODEL_NAMES, TrainConfig, load_train_config
from hil.training.run import build_network
from hil.training.session import create_run, describe_resources, no_file_if_refused


def parallel_config(args: argparse.Namespace) -> TrainConfig:
    """The run's config (file, then flags) with its parallel mode, checked against the network."""
    overrides: dict[str, Any] = {}
    for name in ("model", "updates", "seed", "chip_seed", "batch_size", "eval_every", "retrain_layers"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.board:
        overrides["boards"] = {f"board{i}": resource for i, resource in enumerate(args.board)}
    if args.model is None and not args.config:
        overrides["model"] = "yao-hybrid"
    from_file = load_train_config(args.config or "", overrides).parallel
    table = from_file.model_dump() if from_file is not None else {}
    table |= {k: v for k, v in (("groups", args.groups), ("layers", args.layers)) if v is not None}
    config = load_train_config(args.config or "", overrides | {"parallel": table})
    if config.update_rule == "exact":
        raise ConfigError("update: parallel mode writes copies on an array; 'exact' has none")
    assert config.parallel is not None
    try:
        check_replicable(build_network(config), config.parallel.layers, config.parallel.groups)
        check_retrained(config.trained_layers, config.parallel.layers)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return config


def report(result: ParallelResult) -> str:
    """Each copy's and the copies' combined test accuracy, after the transfer and after retraining."""

    def percent(values: list[float]) -> str:
        return ", ".join(f"{100 * v:.2f} %" for v in values)

    transfer = (f"after the transfer: copies {percent(result.groups_after_transfer)}, together "
                f"{100 * result.combined_after_transfer:.2f} % ({result.transfer_pulses:,} pulses)")  # fmt: skip
    retrained = (f"after retraining: copies {percent(result.groups_after_retraining)}, together "
                 f"{100 * result.combined_after_retraining:.2f} % ({result.retraining_pulses:,} pulses)")  # fmt: skip
    return f"software {100 * result.software:.2f} %; {transfer}; {retrained}"


def cmd_parallel(args: argparse.Namespace) -> int:
    config = parallel_config(args)
    assert config.parallel is not None
    out = Path(args.out or f"runs/parallel-{config.model}-{time.strftime('%Y%m%d-%H%M%S')}.h5")
    run = create_run(config, out, args.overwrite, parallel=True)
    print(f"parallel mode: {', '.join(config.parallel.layers)} x {config.parallel.groups} on "
          f"{describe_resources(config)} -> {out}")  # fmt: skip
    with no_file_if_refused(run):  # refused once the boards are open (copies that do not fit): no file
        result = run_parallel(config, run, layers=config.parallel.layers, groups=config.parallel.groups)
    print(report(result))
    print(f"data in {out}")
    return 0


def register(commands: Any) -> None:
    """Add ``parallel`` to the ``hil`` command line."""
    parser = commands.add_parser(
        "parallel", help="Yao 2020's parallel mode: a convolution's kernels on several arrays, each one band",
        description="Pre-train in software, write each replicated convolution GROUPS times (each copy on its own "
        "devices or board), let each copy convolve one band of output rows, and retrain in situ (hybrid "
        "training); prints each copy's and the copies' combined test accuracy before and after.",
    )  # fmt: skip
    parser.add_argument("--model", choices=MODEL_NAMES, help="default: yao-hybrid (or the --config file's)")
    parser.add_argument("--config", metavar="FILE", help="training config (TOML or JSON), its [parallel] table too")
    parser.add_argument("--groups", type=int, metavar="N", help="copies of each replicated layer (default 3)")
    parser.add_argument("--layers", nargs="+", metavar="LAYER", help="the convolutions replicated (default: conv1)")
    parser.add_argument("--board", action="append", metavar="RESOURCE", help="a board (repeat for board1, "
                        f"board2, ...: the copies go where there is room; default: {EMBEDDED_EMULATOR})")  # fmt: skip
    parser.add_argument("--chip-seed", type=int, metavar="N", help="seeds the emulated chips of emulator:// boards")
    parser.add_argument("--seed", type=int, metavar="N", help="seeds the training order and weights (default 0)")
    parser.add_argument("--updates", type=int, metavar="N", help="in-situ retraining updates (default: the model's)")
    parser.add_argument("--batch-size", type=int, metavar="N", help="samples per update (default: the model's)")
    parser.add_argument("--retrain-layers", nargs="+", metavar="LAYER", help="the layers retrained in situ, none "
                        "of them replicated (default: the model's hybrid.retrain_layers, dense1)")  # fmt: skip
    parser.add_argument("--eval-every", type=int, metavar="N", help="updates between test evaluations")
    parser.add_argument("--out", metavar="FILE.h5", help="run file (default: runs/parallel-<model>-<time>.h5)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run file")
    parser.set_defaults(handler=cmd_parallel)
