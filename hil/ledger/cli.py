"""``hil chip SERIAL``: a chip's life from its ledger, in text and a picture."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from hil.ledger.store import ChipHistory, ChipLedger, LedgerError, chip_key, ledger_dir

US = 1e6


def describe_chip(history: ChipHistory, cell: tuple[int, int] | None = None) -> str:
    total = history.total_pulses
    lines = [f"chip {history.serial}: {history.identity}", f"  {'array':>14}: {history.shape[0]} x {history.shape[1]}"]
    kinds = ", ".join(f"{kind} {int(counts.sum()):,}" for kind, counts in sorted(history.pulses.items()))
    lines.append(f"  {'pulses':>14}: {int(total.sum()):,} ({kinds or 'none'})")
    if total.size and total.any():
        row, col = np.unravel_index(int(np.argmax(total)), total.shape)
        lines.append(f"  {'most worn':>14}: cell ({row}, {col}) with {int(total[row, col]):,} pulses; "
                     f"median {float(np.median(total)):.0f} per device")  # fmt: skip
    for name, dated in (("conductance", history.conductance), ("defects", history.defects),
                        ("calibration", history.calibration)):  # fmt: skip
        if dated is not None:
            lines.append(f"  {name:>14}: measured {dated.measured_utc} by {dated.run}")
    if len(history.yield_history):
        first, last, count = history.yield_history[0, 1], history.yield_history[-1, 1], len(history.yield_history)
        lines.append(f"  {'yield':>14}: {100 * last:.1f} % working (first {100 * first:.1f} %, {count} measurement(s))")
    if cell is not None:
        lines += _cell_lines(history, cell)
    lines.append(f"  {len(history.runs)} run(s):")
    for run in history.runs:
        lines.append(f"    {run['recorded_utc']}  {run['procedure']:<16} {run['pulses']:>10,} pulses  {run['run']}")
    return "\n".join(lines)


def _cell_lines(history: ChipHistory, cell: tuple[int, int]) -> list[str]:
    row, col = cell
    if not (0 <= row < history.shape[0] and 0 <= col < history.shape[1]):
        raise LedgerError(f"cell ({row}, {col}) is outside the {history.shape[0]} x {history.shape[1]} array")
    kinds = ", ".join(f"{kind} {int(counts[row, col]):,}" for kind, counts in sorted(history.pulses.items()))
    lines = [f"  {'cell':>14}: ({row}, {col}): {int(history.total_pulses[row, col]):,} pulses ({kinds or 'none'})"]
    if history.conductance is not None:
        lines.append(f"  {'':>14}  G = {US * float(history.conductance.arrays['g'][row, col]):.2f} uS")
    if history.calibration is not None:
        arrays = history.calibration.arrays
        low, high = (float(v) for v in arrays["v_gate_window"])
        k, c = float(arrays["k"][row, col]), float(arrays["c"][row, col])
        lines.append(f"  {'':>14}  window {US * (k * low + c):.1f} .. {US * (k * high + c):.1f} uS "
                     f"(gates {low:g} .. {high:g} V)")  # fmt: skip
    if history.defects is not None:
        names = str(history.defects.attrs.get("class_names", "")).split(",")
        code = int(history.defects.arrays["class"][row, col])
        lines.append(f"  {'':>14}  class {names[code] if code < len(names) else code}")
    return lines


def plot_chip(history: ChipHistory, figure: Figure) -> None:
    """Wear map, yield over time, latest conductance map and defect classes."""
    (wear, yields), (conductance, defects) = figure.subplots(2, 2)
    image = wear.imshow(history.total_pulses, interpolation="nearest", cmap="magma")
    figure.colorbar(image, ax=wear, label="pulses")
    wear.set(title="wear: pulses per device", xlabel="column", ylabel="row")
    if len(history.yield_history):
        times = [datetime.fromtimestamp(t, UTC) for t in history.yield_history[:, 0]]
        yields.plot(times, 100 * history.yield_history[:, 1], "o-")
        figure.autofmt_xdate()
    yields.set(title="yield over time", ylabel="working devices (%)", ylim=(0, 100))
    for ax, dated, title in ((conductance, history.conductance, "conductance"), (defects, history.defects, "defects")):
        if dated is None:
            ax.set_title(f"{title}: never measured")
            ax.set_axis_off()
            continue
        if title == "conductance":
            image = ax.imshow(US * dated.arrays["g"], interpolation="nearest")
            figure.colorbar(image, ax=ax, label="G (uS)")
        else:
            names = str(dated.attrs.get("class_names", "")).split(",")
            image = ax.imshow(dated.arrays["class"], interpolation="nearest", cmap="tab10", vmin=0, vmax=9)
            ax.set_xlabel(", ".join(f"{i}: {n}" for i, n in enumerate(names)))
        ax.set(title=f"{title} ({dated.measured_utc[:10]})", ylabel="row")
        if title == "conductance":
            ax.set_xlabel("column")
    figure.suptitle(f"chip {history.serial}: {int(history.total_pulses.sum()):,} pulses in {len(history.runs)} runs")


def cmd_chip(args: argparse.Namespace) -> int:
    directory = Path(args.ledger) if args.ledger else ledger_dir()
    if directory is None:
        raise LedgerError("the chip ledger is switched off (MEMRISTOR_HIL_LEDGER=off); name one with --ledger DIR")
    history = ChipLedger(directory, args.serial).read()
    print(describe_chip(history, args.cell))
    if not args.no_plot:
        out = Path(args.plot) if args.plot else Path(f"{chip_key(history.serial)}.png")
        figure = Figure(figsize=(10, 8), layout="constrained")
        plot_chip(history, figure)
        figure.savefig(out, dpi=100)
        print(f"plot: {out}")
    return 0


def _cell(text: str) -> tuple[int, int]:
    try:
        row, col = (int(part) for part in text.replace("(", "").replace(")", "").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a cell ROW,COL (e.g. 3,7)") from None
    return row, col


def register(commands: Any) -> None:
    text = "a chip's life from its ledger: pulses per device, defects, calibration, runs, yield over time"
    chip = commands.add_parser("chip", help=text, description=text)
    chip.add_argument("serial", metavar="SERIAL", help="the chip's serial number, as its board reports it (SN-0001)")
    chip.add_argument("--cell", type=_cell, metavar="ROW,COL", help="also the history of one device")
    chip.add_argument("--ledger", metavar="DIR", help="directory of the ledgers (default: $MEMRISTOR_HIL_LEDGER "
                      "or ~/.memristor-hil/chips)")  # fmt: skip
    chip.add_argument("--plot", metavar="FILE.png", help="where to draw the picture (default: SERIAL.png)")
    chip.add_argument("--no-plot", action="store_true", help="only print")
    chip.set_defaults(handler=cmd_chip)
