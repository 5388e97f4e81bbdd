"""Describing a run file in text, and re-drawing its plot from the stored data alone."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt
from matplotlib.figure import Figure

from hil.lifecycle.plots import plot_evaluation
from hil.plots import plot_training
from hil.procedure_registry import REGISTRY
from hil.procedures import Attrs, Datasets
from hil.run_layout import DATA_GROUP, EVALUATE, HEADER_KEYS, STORED_FROM, links, status
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


PLOT_ROWS = 20_000
"""A series of more rows is drawn from some of them (:func:`kept_rows`): a plot of 100,000 cycles
shows no more than one of 20,000, and drawing from every row held each series whole in memory."""
READ_ROWS = 8192
"""Rows read at a time while picking the kept ones (memory stays at one block per series)."""


def kept_rows(rows: int, budget: int = PLOT_ROWS) -> npt.NDArray[np.int64]:
    """The rows of a long series that are drawn: the first quarter of ``budget`` all (early cycles,
    spread out on a log axis), then every ``stride``-th, a power of two. Two series whose lengths
    differ by a torn last row keep the same rows, so they still line up row by row."""
    if rows <= budget:
        return np.arange(rows, dtype=np.int64)
    head = budget // 4
    stride = 1 << int(np.ceil(np.log2((rows - head) / (budget - head))))
    return np.concatenate([np.arange(head), np.arange(head + (-head) % stride, rows, stride)]).astype(np.int64)


class ThinnedDatasets(Mapping[str, np.ndarray[Any, Any]]):
    """A lazily read run file's datasets for drawing: a series longer than ``budget`` rows is read block
    by block and only its :func:`kept_rows` kept; ``thinned`` names those series and their lengths."""

    def __init__(self, lazy: LazyDatasets, budget: int = PLOT_ROWS) -> None:
        self.lazy, self.budget = lazy, budget
        self.thinned: dict[str, int] = {}

    def __getitem__(self, name: str) -> np.ndarray[Any, Any]:
        shape, _ = self.lazy.shapes[name]
        if not shape or shape[0] <= self.budget:
            return self.lazy[name]
        keep = kept_rows(shape[0], self.budget)
        with h5py.File(self.lazy.path, "r", locking=False) as f:
            dataset = f[DATA_GROUP][name]
            parts = []
            for start in range(0, shape[0], READ_ROWS):
                chosen = keep[(keep >= start) & (keep < start + READ_ROWS)] - start
                if chosen.size:
                    parts.append(dataset[start : start + READ_ROWS][chosen])
            widen = dataset.attrs.get(STORED_FROM)
        self.thinned[name] = shape[0]
        values = np.concatenate(parts)
        return values.astype(str(widen.decode() if isinstance(widen, bytes) else widen)) if widen else values

    def __contains__(self, name: object) -> bool:
        return name in self.lazy.shapes

    def __iter__(self) -> Iterator[str]:
        return iter(self.lazy.shapes)

    def __len__(self) -> int:
        return len(self.lazy.shapes)


def draw_run_plot(run: RunData, path: str | Path | None = None) -> Path:
    """Draw the run's plot with its procedure's plot function; PNG beside the file by default. A
    lazily read file's long series are drawn from some of their rows, and the figure says so."""
    plot = PLOTS.get(run.procedure)
    if plot is None:
        raise RunFileError(f"{run.path}: no plot is known for procedure {run.procedure!r}")
    out = Path(path) if path else run.path.with_suffix(".png")
    if out.is_dir():  # a folder: the plot goes in it, under the run's name
        out = out / run.path.with_suffix(".png").name
    elif not out.suffix:  # what matplotlib would write, and so what is reported
        out = out.with_suffix(".png")
    figure = Figure(figsize=(9, 6), layout="constrained")
    datasets = ThinnedDatasets(run.datasets) if isinstance(run.datasets, LazyDatasets) else run.datasets
    plot(datasets, run.attrs, figure)
    figure.suptitle(plot_title(run))
    if isinstance(datasets, ThinnedDatasets) and datasets.thinned:
        longest = max(datasets.thinned.values())
        # a figure-level label takes its own room in the layout: it never covers an axis label
        note = (f"series of up to {longest:,} rows drawn from {len(kept_rows(longest)):,} of them (the first "
                f"{PLOT_ROWS // 4:,}, then evenly spaced)")  # fmt: skip
        figure.supxlabel(note, fontsize="x-small", color="0.4", ha="right", x=0.99)
    figure.savefig(out, dpi=110)
    return out
