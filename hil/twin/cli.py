"""``hil characterize all``, ``hil twin fit`` and ``hil twin check``: parsing and reporting only."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hil.config import EMBEDDED_EMULATOR, BoardConfig, ConfigError, load_board_config
from hil.storage import RunFileError, read_run
from hil.twin.cell_map import map_changes, map_path_for, read_cell_map
from hil.twin.check import compare, comparison_table
from hil.twin.fit import BASE_PRESET, fit_twin, read_twin_parameters, read_twin_preset, write_twin
from hil.twin.suite_runner import budget_table, check_plan, plan, run_suite


def _step_option(text: str) -> tuple[str, str, Any]:
    step, dot, rest = text.partition(".")
    name, eq, value = rest.partition("=")
    if not dot or not eq or not step or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not STEP.FIELD=VALUE (e.g. retention.t_last=1e5)")
    try:
        parsed: Any = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return step, name, parsed


def _overrides(items: list[tuple[str, str, Any]]) -> dict[str, dict[str, Any]]:
    overrides: dict[str, dict[str, Any]] = {}
    for step, name, value in items:
        overrides.setdefault(step, {})[name] = value
    return overrides


def _confirmed(yes: bool, question: str) -> bool:
    """``--yes``, or a 'y' typed at a terminal; with no terminal to ask on, a refusal (an error)."""
    if yes:
        return True
    if sys.stdin is None or not sys.stdin.isatty():
        raise ConfigError("no terminal to confirm the pulse budget on: pass --yes to spend it")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def _run_suite_on(args: argparse.Namespace, out_dir: Path) -> list[Any]:
    """Plan the suite on the board, show its budget, ask, then run it; the runs (None if declined)."""
    config = load_board_config(args.config) if args.config else BoardConfig()
    overrides = _overrides(args.set)
    with config.open(args.resource) as board:
        steps = plan(board.shape, overrides, out_dir)
        rows, cols = board.shape
        print(f"twin characterization of {board.identity} ({rows} x {cols}) -> {out_dir}/")
        print(budget_table(steps, board.shape))
        check_plan(board, steps)  # before asking: a plan the board would refuse halfway is refused now
        if all(s.state == "done" for s in steps):
            print("every step is done already")
        elif not _confirmed(args.yes, "spend these pulses on the chip?"):
            print("nothing was done")
            return []
        return run_suite(board, out_dir, overrides, config)


def cmd_characterize_all(args: argparse.Namespace) -> int:
    runs = _run_suite_on(args, Path(args.out_dir))
    if not runs:
        return 1
    print(f"done; fit a twin with: hil twin fit {args.out_dir}/*.h5 --out chip.toml")
    return 0


def cmd_twin_fit(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise RunFileError(f"{out} exists; choose another name or pass --overwrite (nothing was written)")
    files = list({Path(path).resolve(): path for path in args.files}.values())  # a file named twice is read once
    twin = fit_twin([read_run(path) for path in files], preset=args.preset, cell_map=not args.population_only)
    write_twin(twin, out)
    width = max(len(name) for name in twin.parameters)
    for name, value in twin.parameters.items():
        source = twin.sources.get(name)
        where = f"  ({source.procedure}: {source.figure}, +- {source.uncertainty:.2g})" if source else ""
        shown = value if isinstance(value, list | int) else f"{value:.4g}"
        print(f"{name:>{width}} = {shown}{where}")
    if twin.cell_map:
        print(f"{'cell_map':>{width}} = {map_path_for(out).name}  (this chip's cells: "
              f"{', '.join(sorted(twin.cell_map))})")  # fmt: skip
    for path in twin.left_out:
        print(f"left out: {path} (an earlier run of a procedure measured again later)")
    print(f"wrote {out}: serve it with python -m mock_hardware serve --params {out}, "
          f"or open emulator://?params={out}")  # fmt: skip
    return 0


def cmd_twin_check(args: argparse.Namespace) -> int:
    parameters, sources = read_twin_parameters(args.twin)
    runs = _run_suite_on(args, Path(args.out_dir))
    if not runs:
        return 1
    # Fitted on the twin's own base preset: what no procedure measures (g_max, the RESET law)
    # enters g_min and d2d_spread (hil/twin/reset_floor.py), as it did when the twin was fitted.
    measured = fit_twin(runs, preset=read_twin_preset(args.twin))
    rows = compare(parameters, sources, measured)
    print(comparison_table(rows))
    differing = [r.parameter for r in rows if not r.agrees]
    print(f"{len(rows) - len(differing)} of {len(rows)} parameters agree" +
          (f"; differ: {', '.join(differing)}" if differing else ""))  # fmt: skip
    if parameters.get("cell_map") and measured.cell_map:
        for line in map_changes(read_cell_map(Path(args.twin).parent / str(parameters["cell_map"])), measured.cell_map):
            print(line)
    return 0


def _suite_arguments(sub: argparse.ArgumentParser, default_dir: str | None) -> None:
    sub.add_argument("resource", nargs="?", help=f"board resource string (default: {EMBEDDED_EMULATOR})")
    sub.add_argument("--config", metavar="FILE", help="board config (TOML or JSON): resource, timeout, limits")
    sub.add_argument("--out-dir", required=default_dir is None, default=default_dir, metavar="DIR",
                     help="folder of the run files, one per step; run again to resume")  # fmt: skip
    sub.add_argument("--yes", action="store_true", help="spend the pulse budget without asking")
    sub.add_argument("--set", action="append", default=[], type=_step_option, metavar="STEP.FIELD=VALUE",
                     help="a step's option, e.g. retention.t_last=1e5; repeatable")  # fmt: skip


def register_characterize_all(procedures: Any) -> None:
    """``hil characterize all``: a subcommand beside the single procedures."""
    sub: argparse.ArgumentParser = procedures.add_parser(
        "all", help="every procedure a twin needs, with the pulse budget shown and confirmed first",
        description="Run forming, yield-map, gate-calibration, write-noise, wire-resistance and retention on one "
        "board, one run file each in --out-dir; run again on the same folder to resume.",
    )  # fmt: skip
    _suite_arguments(sub, None)
    sub.set_defaults(handler=cmd_characterize_all)


def register(commands: Any) -> None:
    """``hil twin fit`` and ``hil twin check``."""
    twin = commands.add_parser("twin", help="a chip's digital twin: fit emulator parameters, check a board")
    actions = twin.add_subparsers(dest="twin_command", required=True, metavar="ACTION")
    fit = actions.add_parser("fit", help="fit every emulator parameter from characterization files",
                             description="Fit the emulator's parameters from characterization run files "
                             "(hil characterize all) into a TOML parameter file.")  # fmt: skip
    fit.add_argument("files", nargs="+", metavar="FILE.h5")
    fit.add_argument("--out", required=True, metavar="chip.toml", help="parameter file to write")
    fit.add_argument("--preset", default=BASE_PRESET, metavar="NAME", help="base preset for what is not measured "
                     "(default: %(default)s)")  # fmt: skip
    fit.add_argument("--overwrite", action="store_true", help="replace an existing parameter file")
    fit.add_argument("--population-only", action="store_true", help="no cell map: a twin of any chip with "
                     "these figures, not of this chip's own cells")  # fmt: skip
    fit.set_defaults(handler=cmd_twin_fit)
    check = actions.add_parser("check", help="characterize a board again and compare it with a twin",
                               description="Characterize a board again and report, per parameter, the twin "
                               "against the measurement.")  # fmt: skip
    check.add_argument("twin", metavar="chip.toml")
    _suite_arguments(check, None)
    check.set_defaults(handler=cmd_twin_check)
