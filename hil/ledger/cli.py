"""``hil chip SERIAL``: a chip's life from its ledger, in text and a picture."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from hil.ledger.facts import settled_history
from hil.ledger.store import ChipHistory, ChipLedger, LedgerError, chip_key, ledger_dir

US = 1e6


def describe_chip(history: ChipHistory, cell: tuple[int, int] | None = None) -> str:
    total = history.total_pulses
    lines = [f"chip {history.serial}: {history.identity}", f"  {'array':>14}: {history.shape[0]} x {history.shape[1]}"]
    kinds = ", ".join(f"{kind} {int(counts.sum()):,}" for kind, counts in sorted(history.pulses.items()))
    if history.unattributed_pulses:
        kinds += f"{', ' if kinds else ''}{history.unattributed_pulses:,} on no known device"
    lines.append(f"  {'pulses':>14}: {history.pulses_counted:,} ({kinds or 'none'})")
    if total.size and total.any():
        row, col = np.unravel_index(int(np.argmax(total)), total.shape)
        lines.append(f"  {'most worn':>14}: cell ({row}, {col}) with {int(total[row, col]):,} pulses; "
                     f"median {float(np.median(total)):.0f} per device")  # fmt: skip
    for name, dated in (("conductance", history.conductance), ("defects", history.defects),
                        ("calibration", history.calibration)):  # fmt: skip
        if dated is not None:
            lines.append(f"  {name:>14}: measured {dated.measured_utc} by {dated.run}")
    if len(history.calibrations) > 1:
        first, last = history.calibrations[0].measured_utc, history.calibrations[-1].measured_utc
        lines.append(f"  {'calibrations':>14}: {len(history.calibrations)}, {first} .. {last}")
    if len(history.yield_history):
        first, last, count = history.yield_history[0, 1], history.yield_history[-1, 1], len(history.yield_history)
        lines.append(f"  {'yield':>14}: {100 * last:.1f} % working (first {100 * first:.1f} %, {count} measurement(s))")
    if cell is not None:
        lines += _cell_lines(history, cell)
    lines.append(f"  {len(history.runs)} run(s):")
    for run in history.runs:
        ended = f"  ({run['status']})" if run.get("status") not in (None, "", "completed") else ""
        lines.append(f"    {run['recorded_utc']}  {run['procedure']:<16} {run['pulses']:>10,} pulses  "
                     f"{run['run']}{ended}")  # fmt: skip
    for session in history.open_sessions.values():
        lines.append(f"    {session.opened_utc}  {session.procedure:<16} {'open':>10}         {session.run} "
                     f"(still running, or killed: settled when the chip's ledger is next opened)")  # fmt: skip
    return "\n".join(lines)


def _cell_lines(history: ChipHistory, cell: tuple[int, int]) -> list[str]:
    row, col = cell
    if not (0 <= row < history.shape[0] and 0 <= col < history.shape[1]):
        raise LedgerError(f"cell ({row}, {col}) is outside the {history.shape[0]} x {history.shape[1]} array")
    kinds = ", ".join(f"{kind} {int(counts[row, col]):,}" for kind, counts in sorted(history.pulses.items()))
    lines = [f"  {'cell':>14}: ({row}, {col}): {int(history.total_pulses[row, col]):,} pulses ({kinds or 'none'})"]
    if history.conductance is not None:
        lines.append(f"  {'':>14}  G = {US * float(history.conductance.arrays['g'][row, col]):.2f} uS")
    for measured, g_low, g_high in history.window_history(cell):
        lines.append(f"  {'':>14}  window {US * g_low:.1f} .. {US * g_high:.1f} uS (calibrated {measured})")
    if history.defects is not None:
        names = str(history.defects.attrs.get("class_names", "")).split(",")
        code = int(history.defects.arrays["class"][row, col])
        lines.append(f"  {'':>14}  class {names[code] if code < len(names) else code}")
    return lines


def plot_windows(history: ChipHistory, ax: Any, cell: tuple[int, int] | None = None) -> None:
    """Each calibration's linear window (G at its low and high gate): the devices' median with the
    middle half shaded, and one device's when asked."""
    if not history.calibrations:
        ax.set_title("gate window: never calibrated")
        ax.set_axis_off()
        return
    times = [datetime.fromisoformat(d.measured_utc) for d in history.calibrations]
    for end, color in ((0, "tab:blue"), (1, "tab:red")):
        values = []
        for dated in history.calibrations:
            gate = float(dated.arrays["v_gate_window"][end])
            g = US * (np.asarray(dated.arrays["k"]) * gate + np.asarray(dated.arrays["c"]))
            values.append(np.nanpercentile(g, (25, 50, 75)))
        quartiles = np.array(values)
        label = ("low" if end == 0 else "high") + " gate, median of devices"
        ax.plot(times, quartiles[:, 1], "o-", color=color, label=label)
        ax.fill_between(times, quartiles[:, 0], quartiles[:, 2], color=color, alpha=0.2)
    if cell is not None:
        windows = history.window_history(cell)
        ax.plot(times, [US * w[1] for w in windows], "s--", color="tab:blue", label=f"cell {cell}")
        ax.plot(times, [US * w[2] for w in windows], "s--", color="tab:red")
    ax.set(title=f"gate window over {len(times)} calibration(s)", ylabel="G (uS)")
    ax.legend(fontsize="small")
    ax.tick_params(axis="x", labelrotation=30)


def plot_chip(history: ChipHistory, figure: Figure, cell: tuple[int, int] | None = None) -> None:
    """Wear map, yield over time, the gate window over time, latest conductance map and defect classes."""
    (wear, yields, windows), (conductance, defects, worn) = figure.subplots(2, 3)
    plot_windows(history, windows, cell)
    worn.hist(history.total_pulses.ravel(), bins=50, color="0.4")
    worn.set(title="wear: devices by pulses taken", xlabel="pulses", ylabel="devices", yscale="log")
    image = wear.imshow(history.total_pulses, interpolation="nearest", cmap="magma")
    figure.colorbar(image, ax=wear, label="pulses")
    wear.set(title="wear: pulses per device", xlabel="column", ylabel="row")
    if len(history.yield_history):
        times = [datetime.fromtimestamp(t, UTC) for t in history.yield_history[:, 0]]
        yields.plot(times, 100 * history.yield_history[:, 1], "o-")
        figure.autofmt_xdate()
    yields.set(title="yield over time", ylabel="working devices (%)", ylim=(0, 100))
    if not len(history.yield_history):
        yields.set_title("yield: never measured")
        yields.set_axis_off()
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
    history = settled_history(ChipLedger(directory, args.serial))
    print(describe_chip(history, args.cell))
    if not args.no_plot:
        out = Path(args.plot) if args.plot else Path(f"{chip_key(history.serial)}.png")
        figure = Figure(figsize=(15, 8), layout="constrained")
        plot_chip(history, figure, args.cell)
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
