"""The standard figures of a campaign: a metric against each axis (mean and spread across seeds, one
line per value of a second axis when there are two), and a heatmap for each pair of axes."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

MAX_LINES = 8
"""A second axis with more values than this is averaged over instead of drawn as lines."""
MAX_HEATMAPS = 6


def _label(metric: str) -> str:
    return metric.replace("_", " ")


def _file_part(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")


def _numeric(values: pd.Series) -> bool:
    return bool(pd.api.types.is_numeric_dtype(values)) and not pd.api.types.is_bool_dtype(values)


def summary(frame: pd.DataFrame, axes: list[str], metric: str) -> pd.DataFrame:
    """Mean, spread and count of ``metric`` over seeds, per combination of axis values (completed cells)."""
    done = frame[frame["status"] == "completed"]
    if not axes:
        return done[metric].agg(["mean", "std", "count"]).to_frame().T
    return done.groupby(axes, sort=True, dropna=False)[metric].agg(["mean", "std", "count"]).reset_index()


def metric_against_axis(frame: pd.DataFrame, axis: str, axes: list[str], metric: str, path: Path) -> Path:
    done = frame[frame["status"] == "completed"]
    others = [a for a in axes if a != axis]
    by = others[0] if len(others) == 1 and done[others[0]].nunique() <= MAX_LINES else None
    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    plot = figure.add_subplot()
    positions = sorted(done[axis].unique())
    numeric = _numeric(done[axis])

    def x_of(value: object) -> float:
        return float(value) if numeric else float(positions.index(value))  # type: ignore[arg-type]

    groups = done.groupby(by, sort=True) if by else [(None, done)]
    for value, rows in groups:
        stats = rows.groupby(axis, sort=True)[metric].agg(["mean", "std"]).fillna({"std": 0.0})
        xs = np.array([x_of(v) for v in stats.index])
        label = f"{by} = {value[0] if isinstance(value, tuple) else value}" if by else None
        line = plot.errorbar(xs, stats["mean"], yerr=stats["std"], marker="o", capsize=3, label=label)
        plot.scatter([x_of(v) for v in rows[axis]], rows[metric], s=10, alpha=0.35, color=line[0].get_color())
    if not numeric:
        plot.set_xticks(range(len(positions)), [str(p) for p in positions])
    plot.set_xlabel(axis)
    plot.set_ylabel(_label(metric))
    spread = "mean ± std over seeds" + ("" if by or not others else f", pooled over {', '.join(others)}")
    plot.set_title(f"{_label(metric)} against {axis}\n({spread}; dots: single cells)", fontsize=10)
    if by:
        plot.legend(fontsize=8)
    plot.grid(alpha=0.3)
    figure.savefig(path, dpi=110)
    return path


def heatmap(frame: pd.DataFrame, rows_axis: str, cols_axis: str, metric: str, path: Path) -> Path:
    done = frame[frame["status"] == "completed"]
    grid = done.pivot_table(index=rows_axis, columns=cols_axis, values=metric, aggfunc="mean")
    figure = Figure(figsize=(1.2 + 0.9 * max(3, grid.shape[1]), 1.4 + 0.6 * max(3, grid.shape[0])),
                    layout="constrained")  # fmt: skip
    plot = figure.add_subplot()
    image = plot.imshow(grid.to_numpy(dtype=float), aspect="auto", cmap="viridis")
    plot.set_xticks(range(grid.shape[1]), [f"{c:g}" if isinstance(c, float) else str(c) for c in grid.columns],
                    rotation=30)  # fmt: skip
    plot.set_yticks(range(grid.shape[0]), [f"{r:g}" if isinstance(r, float) else str(r) for r in grid.index])
    for (i, j), value in np.ndenumerate(grid.to_numpy(dtype=float)):
        if np.isfinite(value):
            plot.text(j, i, f"{value:.3g}", ha="center", va="center", fontsize=8, color="w")
    plot.set_xlabel(cols_axis)
    plot.set_ylabel(rows_axis)
    plot.set_title(f"{_label(metric)} (mean over seeds)", fontsize=10)
    figure.colorbar(image, ax=plot)
    figure.savefig(path, dpi=110)
    return path


def draw_figures(
    frame: pd.DataFrame, axes: list[str], folder: str | Path, metric: str = "final_accuracy"
) -> list[Path]:
    """Every standard figure of a campaign's table, as PNG files in ``folder``."""
    if metric not in frame.columns:
        raise ValueError(f"the table has no column {metric!r}; it has {', '.join(map(str, frame.columns))}")
    if not (frame["status"] == "completed").any():
        raise ValueError("no cell has completed yet: nothing to draw")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [metric_against_axis(frame, axis, axes, metric, folder / f"{metric}-vs-{_file_part(axis)}.png")
             for axis in axes]  # fmt: skip
    for a, b in itertools.islice(itertools.combinations(axes, 2), MAX_HEATMAPS):
        paths.append(heatmap(frame, a, b, metric, folder / f"{metric}-{_file_part(a)}-x-{_file_part(b)}.png"))
    return paths
