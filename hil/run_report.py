"""Describing a run file in text, and re-drawing its plot from the stored data alone."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from hil.lifecycle.plots import plot_evaluation
from hil.plots import plot_training
from hil.procedure_registry import REGISTRY
from hil.procedures import Attrs, Datasets
from hil.run_layout import EVALUATE, HEADER_KEYS, links, status
from hil.storage import LazyDatasets, RunData, RunFileError

PlotFunction = Callable[[Datasets, Attrs, Figure], None]
# Every kind of run file and the function that draws it.
PLOTS: dict[str, PlotFunction] = {name: spec.plot for name, spec in REGISTRY.items()} | {"train": plot_training}
PLOTS[EVALUATE] = plot_evaluation


def describe_run(run: RunData) -> str:
    lines = [f"{run.path}"]
    lines += [f"  {key:>16}: {run.root[key]}" for key in HEADER_KEYS if key in run.root]
    for board, attrs in sorted(links(run).items()):
        unrecorded = int(attrs.get("pulses_unrecorded", 0))
        lost = f", {unrecorded:,} of them counted by the board after a kill" if unrecorded else ""
        lines.append(f"  {'pulses':>16}: {int(attrs.get('pulses_applied', 0)):,} on {board} "
                     f"in {int(attrs.get('sessions', 1))} session(s){lost}")  # fmt: skip
    options = run.config.get("options")
    if options:
        lines.append(f"  {'options':>16}: {options}")
    lines.append(f"  {len(run.datasets)} datasets:")
    for name in sorted(run.datasets):
        attrs = run.attrs.get(name, {})
        lines.append(_dataset_line(run, name, str(attrs.get("unit", ""))))
        extra = {k: v for k, v in attrs.items() if k != "unit"}
        if extra:
            lines.append(f"      {extra}")
    return "\n".join(lines)


MEDIAN_UP_TO = 1 << 22
"""Datasets of up to this many values are summarised with their median; larger ones (read chunk by
chunk from a lazily read file) with their extremes only."""


def _dataset_line(run: RunData, name: str, unit: str) -> str:
    datasets = run.datasets
    if isinstance(datasets, LazyDatasets):
        shape, dtype = datasets.shapes[name]
        if int(np.prod(shape, dtype=np.int64)) > MEDIAN_UP_TO:
            extremes = datasets.extremes(name)
            text = f"    {name}  {dtype} {shape}"
            if extremes is not None:
                text += f"  min {extremes[0]:.4g} max {extremes[1]:.4g} {unit}"
            return text.rstrip()
    data = datasets[name]
    text = f"    {name}  {data.dtype} {data.shape}"
    if data.size and np.issubdtype(data.dtype, np.number):
        finite = data[np.isfinite(data)] if np.issubdtype(data.dtype, np.floating) else data
        if finite.size:
            text += f"  min {finite.min():.4g} median {np.median(finite):.4g} max {finite.max():.4g} {unit}"
    return text.rstrip()


def plot_title(run: RunData) -> str:
    """What a reader of a paper expects above a figure: what ran (and which model), on which chip,
    when, and how it ended."""
    what = run.procedure
    if run.procedure == "train":
        config = run.config
        what = f"in-situ training of {config.get('model', '?') if not config.get('network') else 'a custom network'}"
    chips = re.findall(r"serial ([^,)]+)", str(run.root.get("board_identity", "")))
    on = f" on chip {', '.join(chips)}" if chips else ""
    when = str(run.root.get("created_utc", ""))[:16].replace("T", " ")
    return f"{what}{on}, {when} UTC ({status(run) or '?'}): {run.path.name}"


def draw_run_plot(run: RunData, path: str | Path | None = None) -> Path:
    """Draw the run's plot with its procedure's plot function; PNG beside the file by default."""
    plot = PLOTS.get(run.procedure)
    if plot is None:
        raise RunFileError(f"{run.path}: no plot is known for procedure {run.procedure!r}")
    out = Path(path) if path else run.path.with_suffix(".png")
    figure = Figure(figsize=(9, 6), layout="constrained")
    plot(run.datasets, run.attrs, figure)
    figure.suptitle(plot_title(run))
    figure.savefig(out, dpi=110)
    return out
