"""``hil``: the technician's command line.

    hil info [RESOURCE]              identity, array size, electronics and limits
    hil map [RESOURCE] [--out FILE]  full conductance map and its summary
    hil characterize NAME [RESOURCE] --out FILE.h5 [options]
                                     a characterization procedure, saved as HDF5 + PNG;
                                     hil characterize --resume FILE.h5 continues a killed one
    hil show FILE.h5                 what a run file holds; re-draws its plot
    hil train [--model M] [--board RESOURCE] [--config FILE] [--out FILE.h5]
                                     in-situ training; --resume FILE.h5 continues a killed run
    hil demo                         the main job on the embedded emulator

RESOURCE defaults to the embedded emulator (``emulator://?preset=umass-ta-hfo2&seed=1``) or to the
``resource`` of ``--config FILE``. Errors are one line naming what is wrong, exit status 2; Ctrl-C,
SIGTERM and SIGHUP idle the board, mark the run ``interrupted`` and exit 128 + the signal number.

The CLI parses and reports: what a run file holds, which resources are in-process and which
models and optimizers exist belong to the modules that own those facts.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from drivers import Board, BoardError, InvalidRequest, open_board
from drivers.conformance import cli as conformance_cli
from drivers.limits import limit_unit
from drivers.resources import is_in_process
from hil import allocator, interrupts, parallel_cli, procedure_registry, run_export, terminal
from hil.characterization_run import resume_point
from hil.config import EMBEDDED_EMULATOR, BoardConfig, ConfigError, load_board_config
from hil.datasets import DATASETS
from hil.figure_report import reporting
from hil.ledger import cli as ledger_cli
from hil.ledger.facts import LEDGER_REUSE, working_cells
from hil.lifecycle import cli as lifecycle_cli
from hil.link_record import record_link
from hil.map_summary import DEFAULT_WINDOW, save_map, summarize
from hil.optimizers import OPTIMIZER_NAMES
from hil.options import add_option_flags, parse_options
from hil.procedures import ProcedureSpec
from hil.run_layout import completed_updates
from hil.run_layout import status as run_status
from hil.run_report import describe_run, draw_run_plot
from hil.storage import (
    RunFile,
    RunFileError,
    check_same_board,
    read_resumable,
    read_run,
    run_state,
    software_version,
)
from hil.sweep.cli import register as register_sweep
from hil.training.config import MODEL_NAMES, load_train_config, models_help
from hil.training.run import PROCEDURE, preflight, resume_config
from hil.training.session import create_run, describe_resources, execute
from hil.twin import cli as twin_cli

EXIT_ERROR = 2


def _board_config(args: argparse.Namespace) -> BoardConfig:
    return load_board_config(args.config) if args.config else BoardConfig()


def _open(args: argparse.Namespace, config: BoardConfig | None = None) -> Board:
    config = config or _board_config(args)
    return config.open(args.resource)


def cmd_info(args: argparse.Namespace) -> int:
    with _open(args) as board:
        description = board.describe()
    if args.json:
        print(json.dumps(description, indent=2))
        return 0
    limits = description.pop("limits")
    description.pop("firmware_limits")
    for key, value in description.items():
        print(f"{key:>22}: {value}")
    print(f"{'limits':>22}:")
    assert isinstance(limits, dict)
    for name, limit in limits.items():
        unit = limit_unit(name)
        shown = f"[{limit['min']:g}, {limit['max']:g}] {unit}" if isinstance(limit, dict) else f"{limit:g} {unit}"
        print(f"{name:>22}  {shown}")
    return 0


def cmd_map(args: argparse.Namespace) -> int:
    low, high = args.window_min, args.window_max
    if not (math.isfinite(low) and math.isfinite(high) and 0 <= low < high):  # before the board is opened
        raise ConfigError(f"--window-min {low:g} S, --window-max {high:g} S: the window needs 0 <= min < max, "
                          "both finite (nothing was read)")  # fmt: skip
    with _open(args) as board:
        print(f"reading {board.shape[0]} x {board.shape[1]} cells of {board.identity} at {args.v_read:g} V ...")
        if args.out and Path(args.out).exists() and not args.overwrite:  # before the board is read
            raise RunFileError(f"{args.out} exists; choose another name or pass --overwrite (nothing was read)")
        conductance = board.read_map(v_read=args.v_read)
        read_at = datetime.now(UTC).isoformat(timespec="seconds")
    print(summarize(conductance, (args.window_min, args.window_max)))
    if args.out:
        about = {"v_read_V": args.v_read, "board": str(board.identity), "resource": board.resource,
                 "read_utc": read_at, "software_version": software_version()}  # fmt: skip
        print(f"wrote {save_map(args.out, conductance, about, args.overwrite)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job on the embedded emulator and data: in-situ training of the Wang 2019 CNN."""
    with open_board(EMBEDDED_EMULATOR) as board:
        print(f"{board.identity}: a {board.shape[0]} x {board.shape[1]} 1T1R array ({EMBEDDED_EMULATOR})")
        print(summarize(board.read_map()))
    argv = ["train", "--model", "cnn", "--out", args.out, "--overwrite"]
    if args.updates:
        argv += ["--updates", str(args.updates)]
    return cmd_train(build_parser().parse_args(argv))


def cmd_characterize(args: argparse.Namespace) -> int:
    if args.resume:
        if args.procedure:
            raise ConfigError("--resume takes the procedure, its options and the board from the file: no PROCEDURE")
        return _resume_characterization(args.resume, args.board, args.force_other_board)
    if args.board:
        raise ConfigError("--board is for --resume; a new run names its board as PROCEDURE RESOURCE")
    if not args.procedure:
        raise ConfigError("name a PROCEDURE to run (hil characterize --help lists them), or --resume FILE.h5")
    spec = procedure_registry.REGISTRY[args.procedure]
    options = parse_options(spec.options, args)
    config = _board_config(args)
    board = _open(args, config)
    try:
        if getattr(args, "working_cells", None) is not None:
            options = _working_cells_only(spec, options, board, args.working_cells)
        if getattr(args, "reuse_calibration", None) is not None:
            spec = replace(spec, run=reporting(LEDGER_REUSE[spec.name](args.reuse_calibration)))
        spec.check(board, options)  # before the run file: a refused run leaves an --overwrite target as it was
        run = RunFile(
            args.out,
            procedure=spec.name,
            # The resource the run used (a RESOURCE argument overrides the config's own).
            config={
                "options": options.model_dump(mode="json"),
                "board": config.model_dump(mode="json") | {"resource": board.resource},
            },
            resource=board.resource,
            board_identity=str(board.identity),
            overwrite=args.overwrite,
        )
    except BaseException:
        board.close()
        raise
    print(f"{spec.name} on {board.identity} -> {run.path}")
    return _measure(spec, board, run, options, fresh=True)


def _working_cells_only(spec: ProcedureSpec, options: BaseModel, board: Board, max_age: float) -> BaseModel:
    """The procedure's options with ``cells`` = the region's cells that the chip's latest defect map
    (from its ledger, younger than ``max_age`` s) calls normal."""
    if getattr(options, "cells", None):
        raise ConfigError("--working-cells chooses the cells itself: give it or --cells, not both")
    region = dict(options)
    rows, cols = board.shape
    row_end = region["row0"] + (region["nrows"] or rows - region["row0"])
    col_end = region["col0"] + (region["ncols"] or cols - region["col0"])
    cells = [(r, c) for r, c in working_cells(board, max_age)
             if region["row0"] <= r < row_end and region["col0"] <= c < col_end]  # fmt: skip
    print(f"{len(cells)} working cells of the region, from the defect map in the ledger of {board.identity.serial}")
    return spec.options.model_validate(region | {"cells": cells})


def _resume_characterization(path: str, resource: str | None, allow_other_board: bool) -> int:
    """Continue a killed characterization run in its own file, after its last journaled step."""
    point = resume_point(path, resource)
    if point.fresh_board:
        _warn_fresh_board()
    board = point.board.open(point.resource)
    try:
        check_same_board(point.previous, str(board.identity), allow_other_board)
        run = RunFile.reopen(path)
        if not point.completed_steps:  # a short procedure (no journal), or a long one killed before its first step
            run.clear()
    except BaseException:
        board.close()
        raise
    if point.completed_steps:
        print(f"resuming {path}: {point.spec.name} after step {point.completed_steps}")
    else:
        print(f"restarting {path}: {point.spec.name} from the beginning (no completed step was journaled)")
    return _measure(point.spec, board, run, point.options)


def _measure(spec: ProcedureSpec, board: Board, run: RunFile, options: BaseModel, fresh: bool = False) -> int:
    try:
        # The board is the inner context: it goes idle before the file is closed.
        with run, board, record_link({"board": board}, run):
            spec.run(board, run, **dict(options))
    except InvalidRequest:
        if fresh and not board.pulses_applied:  # refused before its first pulse: a run that never was
            run.path.unlink(missing_ok=True)
        raise
    finally:
        if run.path.exists():
            _report_run(run.path)
    return 0


def _warn_fresh_board() -> None:
    print("warning: an in-process emulator does not outlive its process; the resumed run reads back "
          "a fresh emulated array", file=sys.stderr)  # fmt: skip


def _report_run(path: Path) -> None:
    """Say how a run ended and draw its plot; a plot that fails must not hide the run's own error."""
    saved = read_run(path)
    try:
        plot: str = str(draw_run_plot(saved))
    except Exception as exc:
        plot = f"no plot ({type(exc).__name__}: {exc})"
    print(f"status {run_status(saved)}; data in {path}; {plot}", file=sys.stderr)


def cmd_train(args: argparse.Namespace) -> int:
    if args.resume:
        previous = read_resumable(args.resume, PROCEDURE)
        config = resume_config(args.resume, previous, args.updates)
        if any(is_in_process(b.resource) for b in config.board_configs.values()):
            _warn_fresh_board()
        check_same_board(previous, preflight(config, previous), args.force_other_board)  # before the file is touched
        run = RunFile.reopen(args.resume)
        run.replace_config(config.model_dump(mode="json"))
        print(f"resuming {args.resume} after update {completed_updates(previous)} of {config.updates}")
    else:
        config = load_train_config(args.config or "", _train_overrides(args))
        out = Path(args.out or f"runs/{config.model}-{time.strftime('%Y%m%d-%H%M%S')}.h5")
        run = create_run(config, out, args.overwrite)  # no file for a run its boards refuse
        previous = None
        print(f"training {config.model} ({config.update_rule}) on {describe_resources(config)} -> {out}")
    try:
        result = execute(config, run, previous, allow_other_board=args.force_other_board)
    finally:
        if run.path.exists():
            _report_run(run.path)
    name = "custom network" if config.network else config.model
    print(
        f"{name}: test accuracy {100 * result.final_test_accuracy:.2f} % "
        f"(best {100 * result.best_test_accuracy:.2f} %) after {result.updates_done} updates, "
        f"{result.pulses:,} pulses, {result.seconds:.0f} s ({config.update_rule}); data in {run.path}"
    )
    return 0


def _train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Config fields given on the command line."""
    overrides: dict[str, Any] = {}
    for name in ("model", "updates", "batch_size", "eval_every", "seed", "chip_seed", "dataset", "update"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.reuse_calibration is not None:
        overrides["calibration_max_age"] = args.reuse_calibration
    if args.baseline:
        overrides["update"] = "exact"
    if args.board:
        overrides["boards"] = {"board0": args.board}
    if args.mnist_dir:
        if args.dataset not in (None, "mnist-idx"):  # one option never silently replaces another
            raise ConfigError(f"--mnist-dir {args.mnist_dir} reads the mnist-idx dataset, but --dataset "
                              f"{args.dataset} names another: give one of them")  # fmt: skip
        overrides["dataset"] = "mnist-idx"
        overrides["dataset_options"] = {"directory": args.mnist_dir}
    if args.optimizer is not None or args.lr is not None:  # only what was given: the model fills the rest
        optimizer = {"name": args.optimizer} if args.optimizer is not None else {}
        overrides["optimizer"] = optimizer | ({"lr": args.lr} if args.lr is not None else {})
    return overrides


def cmd_show(args: argparse.Namespace) -> int:
    run = read_run(args.file, lazy=True)
    print(describe_run(run))
    state = run_state(run)
    if state != run_status(run):
        print(f"  {'state':>16}: {state}")
    if state in ("killed", "interrupted") or state.startswith("failed"):
        again = "hil train --resume" if run.procedure == PROCEDURE else "hil characterize --resume"
        print(f"  {'to continue':>16}: {again} {run.path}")
    if not args.no_plot:
        print(f"plot: {draw_run_plot(run, args.plot)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hil", description="Memristor crossbar hardware-in-the-loop platform")
    parser.add_argument("--verbose", "-v", action="count", default=0, help=VERBOSE_HELP)
    parser.add_argument("--version", action="version", version=f"%(prog)s {software_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    conformance_cli.register(commands)

    def board_command(name: str, handler: Callable[[argparse.Namespace], int], text: str) -> argparse.ArgumentParser:
        return board_command_on(commands, name, handler, text)

    info = board_command("info", cmd_info, "identity, array size, electronics and safety limits")
    info.add_argument("--json", action="store_true", help="print JSON")
    for name, handler, text in (("map", cmd_map, "read the full conductance map and summarize it"),):
        sub = board_command(name, handler, text)
        sub.add_argument("--v-read", type=float, default=0.2, metavar="V", help="read voltage, V (default 0.2)")
        sub.add_argument("--window-min", type=float, default=DEFAULT_WINDOW[0], metavar="S",
                         help="usable window low end, S")  # fmt: skip
        sub.add_argument("--window-max", type=float, default=DEFAULT_WINDOW[1], metavar="S",
                         help="usable window high end, S")  # fmt: skip
        sub.add_argument("--out", metavar="FILE", help="write the map, with its read voltage, board and time, to "
                         "FILE (.nc, .csv, or .npy with FILE.npy.json)")  # fmt: skip
        sub.add_argument("--overwrite", action="store_true", help="replace an existing FILE")
    characterize = commands.add_parser(
        "characterize", help="run a characterization procedure",
        description="Run a characterization procedure, or continue a killed one (--resume).",
    )  # fmt: skip
    characterize.add_argument("--resume", metavar="FILE.h5", help="continue a killed run in its file, after its "
                              "last journaled step (procedure, options and board from the file)")  # fmt: skip
    characterize.add_argument("--board", metavar="RESOURCE", help="with --resume: the board's resource, when "
                              "not the one the run used")  # fmt: skip
    characterize.add_argument("--force-other-board", action="store_true", help="with --resume: go on although "
                              "another chip answers than the one the run began on")  # fmt: skip
    characterize.set_defaults(handler=cmd_characterize, procedure=None)
    procedures = characterize.add_subparsers(dest="procedure", metavar="PROCEDURE")
    for spec in procedure_registry.REGISTRY.values():
        sub = board_command_on(procedures, spec.name, cmd_characterize, spec.summary)
        sub.add_argument("--out", required=True, metavar="FILE.h5", help="run file to write (HDF5)")
        sub.add_argument("--overwrite", action="store_true", help="replace an existing run file")
        add_option_flags(sub, spec.options)
        if "cells" in spec.options.model_fields:
            sub.add_argument("--working-cells", type=float, metavar="SECONDS", help="measure only the cells the "
                             "chip's defect map (its ledger's, at most SECONDS old) calls normal")  # fmt: skip
        if spec.name in LEDGER_REUSE:
            sub.add_argument("--reuse-calibration", type=float, metavar="SECONDS", help="take the chip's gate "
                             "calibration from its ledger when measured at most SECONDS ago with the same pulses "
                             "and gates, instead of measuring")  # fmt: skip
    twin_cli.register_characterize_all(procedures)

    demo = commands.add_parser("demo", help="the main job: in-situ training of the Wang 2019 CNN on the "
                               "embedded emulator and data")  # fmt: skip
    demo.add_argument("--out", default="runs/demo-cnn.h5", metavar="FILE.h5", help="run file (default: %(default)s)")
    demo.add_argument("--updates", type=int, metavar="N", help="weight updates (default: the paper's 1,200)")
    demo.set_defaults(handler=cmd_demo)

    train_cmd = commands.add_parser("train", help="in-situ training on the array",
                                    description="Train a network with its forward pass on the array.",
                                    epilog=models_help(),
                                    formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    train_cmd.add_argument("--model", choices=MODEL_NAMES, help="default: cnn; each model brings its paper's "
                           "optimizer, learning rate, batch and budget (below)")  # fmt: skip
    train_cmd.add_argument("--board", metavar="RESOURCE", help=f"board resource string (default: {EMBEDDED_EMULATOR})")
    train_cmd.add_argument("--config", metavar="FILE", help="training config (TOML or JSON); flags override it")
    train_cmd.add_argument("--out", metavar="FILE.h5", help="run file (default: runs/<model>-<time>.h5)")
    train_cmd.add_argument("--resume", metavar="FILE.h5", help="continue a run from its last completed update")
    train_cmd.add_argument("--overwrite", action="store_true", help="replace an existing run file")
    train_cmd.add_argument("--force-other-board", action="store_true", help="with --resume: go on although "
                           "another chip answers than the one the run began on")  # fmt: skip
    train_cmd.add_argument("--updates", type=int, metavar="N", help="weight updates (default: the model's); "
                           "with --resume: a new budget")  # fmt: skip
    train_cmd.add_argument("--batch-size", type=int, metavar="N", help="samples per update (default: the model's)")
    train_cmd.add_argument("--eval-every", type=int, metavar="N",
                           help="updates between test evaluations (default: the model's)")  # fmt: skip
    train_cmd.add_argument("--optimizer", choices=OPTIMIZER_NAMES, help="default: the model's; alone, it keeps "
                           "the model's learning rate for that optimizer")  # fmt: skip
    train_cmd.add_argument("--lr", type=float, metavar="X", help="learning rate (default: the model's for the "
                           "optimizer); alone, it keeps the model's optimizer")  # fmt: skip
    train_cmd.add_argument("--seed", type=int, metavar="N", help="seeds the training order and the initial "
                           "weights (default 0); not the emulated chip")  # fmt: skip
    train_cmd.add_argument("--chip-seed", type=int, metavar="N", help="seeds the emulated chip (defects, device "
                           "spread, noise) of emulator:// boards (default: the resource's seed; the embedded "
                           "emulator's is 1)")  # fmt: skip
    train_cmd.add_argument("--dataset", metavar="NAME", help=f"the data (default: the model's): {', '.join(DATASETS)}")
    train_cmd.add_argument("--mnist-dir", metavar="DIR", help="full MNIST from the IDX files in DIR")
    train_cmd.add_argument("--update", choices=["gate-coded", "write-verify", "exact"], help="update rule")
    train_cmd.add_argument("--reuse-calibration", type=float, metavar="SECONDS", help="take each chip's gate "
                           "calibration from its ledger when measured at most SECONDS ago (same pulse parameters)")
    train_cmd.add_argument("--baseline", action="store_true", help="the float software baseline (no array)")
    train_cmd.set_defaults(handler=cmd_train)

    show = commands.add_parser("show", help="what a run file holds; re-draws its plot")
    show.add_argument("file", metavar="FILE.h5")
    show.add_argument("--plot", metavar="FILE.png", help="where to draw the plot (default: beside the file)")
    show.add_argument("--no-plot", action="store_true", help="only print")
    show.set_defaults(handler=cmd_show)
    register_sweep(commands)
    twin_cli.register(commands)
    lifecycle_cli.register(commands)
    parallel_cli.register(commands)
    ledger_cli.register(commands)
    run_export.register(commands)
    _accept_global_options(commands)
    return parser


VERBOSE_HELP = "-v: progress messages, -vv: also every command on the wire (on the console and in the run's log)"


def _accept_global_options(commands: Any) -> None:
    """``-v`` after the subcommand too (``hil train -vv``), at every level of subcommands."""
    for sub in set(commands.choices.values()):
        if not any("--verbose" in action.option_strings for action in sub._actions):
            sub.add_argument("--verbose", "-v", action="count", default=argparse.SUPPRESS, help=VERBOSE_HELP)
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                _accept_global_options(action)


def board_command_on(
    commands: Any, name: str, handler: Callable[[argparse.Namespace], int], text: str
) -> argparse.ArgumentParser:
    """A subcommand that talks to a board: a RESOURCE argument and ``--config``."""
    sub: argparse.ArgumentParser = commands.add_parser(name, help=text, description=text)
    sub.add_argument("resource", nargs="?", help=f"board resource string (default: {EMBEDDED_EMULATOR})")
    sub.add_argument("--config", metavar="FILE", help="board config (TOML or JSON): resource, timeout, limits")
    sub.set_defaults(handler=handler)
    return sub


def _one_line(exc: BaseException) -> str:
    """An error as one line: a multi-line listing (every bad field) joined with '; '."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
    return lines[0] + (" " + "; ".join(lines[1:]) if len(lines) > 1 else "")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    terminal.configure_logging(args.verbose)
    interrupts.install()
    allocator.retain_freed_memory()
    try:
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except (BoardError, ConfigError, ValueError, OSError, ArithmeticError, RecursionError, MemoryError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except interrupts.Terminated as exc:
        print(f"interrupted by signal {exc.signum}: the board was put in its idle state", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("interrupted: the board was put in its idle state", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, but still no traceback in the technician's face
        print(f"error: unexpected {type(exc).__name__}: {_one_line(exc)} (please report; -vv logs more)",
              file=sys.stderr)  # fmt: skip
        logging.getLogger(__name__).debug("unexpected error", exc_info=True)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
