"""``hil sweep``: run a campaign, and draw its figures.

hil sweep SWEEP.toml [--workers N | --scheduler tcp://HOST:8786] [--out DIR]
hil sweep show DIR [--metric NAME]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from hil.config import ConfigError

SHOW = "show"


def cmd_sweep(args: argparse.Namespace) -> int:
    if args.campaign == SHOW:
        if not args.folder:
            raise ConfigError("hil sweep show DIR: name the campaign's output folder")
        return _show(Path(args.folder), args.metric)
    if args.folder:
        raise ConfigError(f"hil sweep takes one campaign file; {args.folder!r} is extra (did you mean --out?)")
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: at least 1")
    if args.workers is not None and args.scheduler:
        raise ConfigError("--workers starts a local cluster; with --scheduler the cluster's workers run the cells")
    from hil.sweep.campaign import load_campaign
    from hil.sweep.runner import run_campaign

    if not args.verbose:  # Dask's own INFO lines (workers starting, closing) are noise here
        logging.getLogger("distributed").setLevel(logging.WARNING)
    campaign = load_campaign(args.campaign)
    out = Path(args.out or f"runs/sweep-{campaign.name}")
    where = args.scheduler or f"a local cluster of {args.workers or 'one per core'} worker processes"
    print(f"campaign {campaign.name}: {campaign.kind} cells on {where} -> {out}")
    report = run_campaign(campaign, out, workers=args.workers, scheduler=args.scheduler)
    print(f"{report.cells} cells: {report.already_done} already done, {report.completed} completed, "
          f"{report.failed} failed ({report.seconds:.0f} s); table {out / 'results.parquet'} and .csv")  # fmt: skip
    for error in report.errors[:10]:
        print(f"  failed {error}")
    for resource, reason in report.pool_out.items():
        print(f"  board {resource} taken out of the pool: {reason}")
    return 0 if not report.failed else 1


def _show(folder: Path, metric: str) -> int:
    import pandas as pd

    from hil.sweep.figures import draw_figures, summary
    from hil.sweep.table import load_results

    frame, meta = load_results(folder)
    axes = [a for a in meta.get("axes", []) if a in frame.columns]
    counts = frame["status"].value_counts().to_dict()
    print(f"campaign {meta.get('name', folder.name)} ({meta.get('kind', '?')}): {len(frame)} of "
          f"{meta.get('cells', '?')} cells finished; " + ", ".join(f"{n} {s}" for s, n in counts.items()))  # fmt: skip
    if metric not in frame.columns:
        raise ConfigError(f"--metric {metric}: the table has {', '.join(map(str, frame.columns))}")
    with pd.option_context("display.width", 160, "display.max_rows", 200):
        print(summary(frame, axes, metric).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    for failed in frame[frame["status"] == "failed"].itertuples():
        print(f"  failed {failed.key}: {failed.error}")
    if (frame["status"] == "completed").any():
        for path in draw_figures(frame, axes, folder / "figures", metric):
            print(f"figure {path}")
    return 0


def register(commands: Any) -> None:
    """Add ``hil sweep`` to the CLI's subcommands."""
    sweep: argparse.ArgumentParser = commands.add_parser(
        "sweep", help="run a campaign of runs on Dask; 'hil sweep show DIR' draws its figures",
        description="Run every cell of a campaign (a base run config swept over axes and seeds) on a Dask "
        "cluster, or with 'show DIR' summarize a campaign's results and draw its figures.",
        usage="hil sweep SWEEP.toml [--workers N | --scheduler tcp://HOST:8786] [--out DIR]\n"
        "       hil sweep show DIR [--metric NAME]",
    )  # fmt: skip
    sweep.add_argument("campaign", metavar="SWEEP.toml", help="campaign file (TOML or JSON), or 'show'")
    sweep.add_argument("folder", nargs="?", metavar="DIR", help=argparse.SUPPRESS)
    sweep.add_argument("--workers", type=int, metavar="N", help="local worker processes (default: one per core)")
    sweep.add_argument("--scheduler", metavar="tcp://HOST:8786", help="run on an existing Dask cluster")
    sweep.add_argument("--out", metavar="DIR", help="folder of the run files and table (default runs/sweep-NAME)")
    sweep.add_argument("--metric", default="final_accuracy", metavar="NAME",
                       help="show: the column to draw (default %(default)s)")  # fmt: skip
    sweep.set_defaults(handler=cmd_sweep)
