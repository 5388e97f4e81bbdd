"""Plots of the characterization procedures, drawn from their stored datasets and attributes alone.

Each ``plot_<x>(datasets, attrs, fig)`` draws on the (empty) :class:`~matplotlib.figure.Figure`
it is given and touches no pyplot state, so it works under any backend, in threads, and when
``hil show`` re-draws a file. Partial data (an interrupted run) is drawn as far as it goes.
Conductances are shown in uS, currents in uA.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from hil import run_layout as layout
from hil.procedures import Attrs, Datasets
from protocols.characterization.retention import fit_log_drift
from protocols.characterization.yield_map import CLASS_NAMES

FloatArray = npt.NDArray[np.float64]
US = 1e6  # S -> uS
UA = 1e6  # A -> uA
INDIVIDUAL_CELLS = 5  # cells drawn one by one beside the population statistics
CLASS_COLORS = ("#4c9a2a", "#1f4e9c", "#c0392b", "#7f7f7f")  # normal, stuck low, stuck high, unformed


def _get(datasets: Datasets, name: str) -> FloatArray | None:
    data = datasets.get(name)
    return None if data is None or data.size == 0 else np.asarray(data, dtype=np.float64)


def _options(attrs: Attrs, group: str) -> dict[str, Any]:
    text = attrs.get(group, {}).get("options")
    if not isinstance(text, str):
        return {}
    try:
        options = json.loads(text)
    except ValueError:
        return {}
    return options if isinstance(options, dict) else {}


def _no_data(fig: Figure, what: str) -> None:
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, f"no {what} recorded", ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def _cell_labels(datasets: Datasets, group: str, count: int) -> list[str]:
    cells = datasets.get(f"{group}/cells")
    if cells is None or len(cells) != count:
        return [f"cell {i}" for i in range(count)]
    return [f"({int(r)}, {int(c)})" for r, c in cells]


def _individuals(count: int) -> npt.NDArray[np.intp]:
    """Indices of a few cells spread over the selection."""
    return np.unique(np.linspace(0, count - 1, min(count, INDIVIDUAL_CELLS)).astype(np.intp))


def _map_image(ax: Axes, values: npt.ArrayLike, attrs: Attrs, group: str, **kwargs: Any) -> Any:
    """A map drawn in array coordinates: row and column indices on the axes (a region's offset
    included), row 0 at the top as on the chip's layout."""
    shown = np.asarray(values)
    row0, col0 = (int(attrs.get(group, {}).get(key, 0)) for key in ("row0", "col0"))
    extent = (col0 - 0.5, col0 + shown.shape[1] - 0.5, row0 + shown.shape[0] - 0.5, row0 - 0.5)
    image = ax.imshow(shown, interpolation="nearest", extent=extent, **kwargs)
    ax.set_xlabel("column")
    ax.set_ylabel("row")
    return image


def _band(ax: Axes, x: FloatArray, values: FloatArray, label: str, color: str | None = None) -> None:
    """Median over cells (axis 1) with the band between the quartiles.

    Quantiles, not mean and sigma: a few stuck cells (5 uS or 1 mS among 100 to 300 uS) would
    otherwise drag the line and swell the band past what the working cells do.
    """
    finite = np.isfinite(values).any(axis=1)
    x, values = x[finite], values[finite]
    if not len(x):
        return
    low, middle, high = np.nanpercentile(values, [25, 50, 75], axis=1)
    (line,) = ax.plot(x, middle, color=color, lw=2, label=f"{label}: median, quartiles")
    ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, lw=0)


# ---------------------------------------------------------------------------------- yield map


def plot_yield_map(datasets: Datasets, attrs: Attrs, fig: Figure) -> None:
    """Initial conductance map, class map, switching window map and conductance histograms."""
    g_initial = _get(datasets, "yield/g_initial")
    if g_initial is None:
        _no_data(fig, "conductance map")
        return
    g_set, g_reset = _get(datasets, "yield/g_set"), _get(datasets, "yield/g_reset")
    classes = datasets.get("yield/class")
    (ax_map, ax_class), (ax_window, ax_hist) = fig.subplots(2, 2)

    image = _map_image(ax_map, g_initial * US, attrs, "yield", cmap="viridis")
    fig.colorbar(image, ax=ax_map, label="G (uS)")
    ax_map.set_title("initial conductance")

    if classes is not None:
        cmap = ListedColormap(CLASS_COLORS)
        norm = BoundaryNorm(np.arange(len(CLASS_NAMES) + 1) - 0.5, cmap.N)
        _map_image(ax_class, classes, attrs, "yield", cmap=cmap, norm=norm)
        counts = np.bincount(np.asarray(classes, dtype=np.intp).ravel(), minlength=len(CLASS_NAMES))
        handles = [
            Patch(color=color, label=f"{name.replace('_', ' ')}: {count} ({count / classes.size:.1%})")
            for name, color, count in zip(CLASS_NAMES, CLASS_COLORS, counts, strict=False)
        ]
        ax_class.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1), fontsize="small")
        ax_class.set_title(f"yield {counts[0] / classes.size:.1%}")
    else:
        ax_class.set_axis_off()

    if g_set is not None and g_reset is not None:
        image = _map_image(ax_window, (g_set - g_reset) * US, attrs, "yield", cmap="magma")
        fig.colorbar(image, ax=ax_window, label="G_set - G_reset (uS)")
        ax_window.set_title("switching window")
    else:
        ax_window.text(0.5, 0.5, "non-destructive run:\nno switching window", ha="center", va="center")
        ax_window.set_axis_off()

    reads = [("initial", g_initial), ("after SET", g_set), ("after RESET", g_reset)]
    positive = np.concatenate([g[g > 0] for _, g in reads if g is not None])
    low, high = (positive.min(), positive.max()) if positive.size else (1e-7, 1e-3)
    bins = np.geomspace(low * US * 0.9, high * US * 1.1, 50)
    for label, g in reads:
        if g is not None:
            ax_hist.hist(g.ravel() * US, bins=bins, histtype="step", label=label)
    ax_hist.set_xscale("log")
    ax_hist.set_xlabel("G (uS)")
    ax_hist.set_ylabel("cells")
    ax_hist.legend(fontsize="small")


# ---------------------------------------------------------------------------------- I-V sweep


def plot_iv_sweep(datasets: Datasets, attrs: Attrs, fig: Figure) -> None:
    """Current against voltage for every recorded cycle: linear, and |I| on a log axis."""
    voltage, current = _get(datasets, "iv/voltage"), _get(datasets, "iv/current")
    if voltage is None or current is None:
        _no_data(fig, "I-V sweep")
        return
    current = current.reshape(-1, voltage.size)
    sweeps = datasets.get("iv/sweep")
    index = np.asarray(sweeps, dtype=np.int64) if sweeps is not None else np.zeros((len(current), 3), np.int64)
    ax_lin, ax_log = fig.subplots(1, 2)
    cells = sorted({(int(r), int(c)) for r, c, _ in index[: len(current)]})
    colors = [f"C{i % 10}" for i in range(len(cells))]
    for trace, (row, col, cycle) in zip(current, index, strict=False):
        color = colors[cells.index((int(row), int(col)))]
        label = f"({row}, {col})" if cycle == 0 else None
        alpha = 1.0 / (1 + 0.5 * int(cycle))  # later cycles fainter
        ax_lin.plot(voltage, trace * UA, color=color, alpha=alpha, lw=1, label=label)
        magnitude = np.abs(trace)
        ax_log.semilogy(voltage, np.where(magnitude > 0, magnitude, np.nan) * UA, color=color, alpha=alpha, lw=1)
    gate = _options(attrs, "iv").get("v_gate")
    ax_lin.set_title("I-V" + (f" (SET compliance gate {gate:g} V)" if isinstance(gate, float | int) else ""))
    for ax in (ax_lin, ax_log):
        ax.set_xlabel("V (V)")
        ax.axvline(0, color="0.8", lw=0.5)
    ax_lin.set_ylabel("I (uA)")
    ax_log.set_ylabel("|I| (uA)")
    ax_lin.legend(title="cell", fontsize="small")


# ---------------------------------------------------------------------------------- pulse response


def plot_pulse_response(datasets: Datasets, attrs: Attrs, fig: Figure) -> None:
    """Conductance against pulse number: the population's median and quartiles, and a few cells."""
    g = _get(datasets, "pulse_response/g")
    if g is None:
        _no_data(fig, "pulse response")
        return
    g = g.reshape(len(g), -1)
    pulses = _get(datasets, "pulse_response/pulse")
    x = pulses[: len(g)] if pulses is not None and len(pulses) >= len(g) else np.arange(len(g), dtype=np.float64)
    ax = fig.add_subplot()
    labels = _cell_labels(datasets, "pulse_response", g.shape[1])
    for i in _individuals(g.shape[1]):
        ax.plot(x, g[:, i] * US, lw=0.8, alpha=0.6, marker=".", ms=3, label=labels[i])
    _band(ax, x, g * US, "all cells", color="k")
    n_set = attrs.get("pulse_response", {}).get("n_set")
    if isinstance(n_set, int | np.integer):
        ax.axvline(int(n_set) + 0.5, color="0.5", ls="--", lw=1)
        ax.text(int(n_set) / 2, 1.01, "SET", transform=ax.get_xaxis_transform(), ha="center", va="bottom")
        ax.text(int(n_set) * 1.5, 1.01, "RESET", transform=ax.get_xaxis_transform(), ha="center", va="bottom")
    ax.set_xlabel("pulses applied")
    ax.set_ylabel("G (uS)")
    ax.legend(fontsize="small", ncols=2)


# ---------------------------------------------------------------------------------- endurance


def plot_endurance(datasets: Datasets, attrs: Attrs, fig: Figure) -> None:
    """ON and OFF conductances and the window against cycle, with the failure threshold."""
    cycle = _get(datasets, "endurance/cycle")
    g_on, g_off = _get(datasets, "endurance/g_on"), _get(datasets, "endurance/g_off")
    if cycle is None or g_on is None or g_off is None:
        _no_data(fig, "endurance read")
        return
    m = min(len(cycle), len(g_on), len(g_off))
    cycle, g_on, g_off = cycle[:m], g_on[:m].reshape(m, -1), g_off[:m].reshape(m, -1)
    window = g_on - g_off
    ax_levels, ax_window = fig.subplots(2, 1, sharex=True)
    _band(ax_levels, cycle, g_on * US, "ON", color="C3")
    _band(ax_levels, cycle, g_off * US, "OFF", color="C0")
    ax_levels.set_ylabel("G (uS)")
    ax_levels.legend(fontsize="small")
    labels = _cell_labels(datasets, "endurance", window.shape[1])
    for i in _individuals(window.shape[1]):
        ax_window.plot(cycle, window[:, i] * US, lw=0.8, alpha=0.6, label=labels[i])
    _band(ax_window, cycle, window * US, "all cells", color="k")
    # the user's window, or the one the run derived from the chip (``window_min`` null: automatic)
    threshold = _options(attrs, "endurance").get("window_min")
    if threshold is None:
        threshold = attrs.get("endurance", {}).get("window_min_used")
    if isinstance(threshold, float | int):
        ax_window.axhline(threshold * US, color="C3", ls="--", lw=1, label="stop below")
    failed = attrs.get("endurance", {}).get("n_failed")
    title = "window G_on - G_off" + (f": {failed} of {window.shape[1]} cells stopped" if failed is not None else "")
    ax_window.set_title(title, fontsize="medium")
    ax_window.set_xlabel("cycle")
    ax_window.set_ylabel("window (uS)")
    if cycle.max() / max(cycle.min(), 1) > 100:
        ax_window.set_xscale("log")
    ax_window.legend(fontsize="small", ncols=2)


# ---------------------------------------------------------------------------------- retention


def plot_retention(datasets: Datasets, attrs: Attrs, fig: Figure) -> None:
    """Conductance against log time, and the mean drift with its fitted slope per ln(t)."""
    time, g = _get(datasets, "retention/time"), _get(datasets, "retention/g")
    if time is None or g is None:
        _no_data(fig, "retention read")
        return
    m = min(len(time), len(g))
    time, g = time[:m], g[:m].reshape(m, -1)
    shown = time > 0  # a log axis has no place for t <= 0
    ax_g, ax_drift = fig.subplots(1, 2)
    labels = _cell_labels(datasets, "retention", g.shape[1])
    for i in _individuals(g.shape[1]):
        ax_g.semilogx(time[shown], g[shown, i] * US, marker=".", lw=0.8, label=labels[i])
    ax_g.set_xlabel("time after programming (s)")
    ax_g.set_ylabel("G (uS)")
    ax_g.legend(fontsize="small")
    mean = np.nanmean(g, axis=1)
    reference = mean[shown][0] if shown.any() else 0.0
    ax_drift.semilogx(time[shown], (mean[shown] - reference) * US, "o", color="k", label="mean over cells")
    slope, intercept = fit_log_drift(time, g)
    if np.isfinite(slope):
        t_fit = np.geomspace(time[shown].min(), time[shown].max(), 50)
        fitted = (intercept + slope * np.log(t_fit) - reference) * US
        ax_drift.semilogx(t_fit, fitted, color="C3", label=f"fit: {slope * US:+.3f} uS per ln(t)")
    ax_drift.set_xlabel("time after programming (s)")
    ax_drift.set_ylabel("mean G - first mean G (uS)")
    ax_drift.legend(fontsize="small")


# ---------------------------------------------------------------------------------- read disturb


def plot_read_disturb(datasets: Datasets, attrs: Attrs, fig: Figure) -> None:
    """Drift of the block-mean conductance against reads done: median, quartiles and worst cell."""
    reads, g_mean = _get(datasets, "read_disturb/reads"), _get(datasets, "read_disturb/g_mean")
    if reads is None or g_mean is None:
        _no_data(fig, "read-disturb block")
        return
    m = min(len(reads), len(g_mean))
    reads, g_mean = reads[:m], g_mean[:m].reshape(m, -1)
    drift = (g_mean - g_mean[0]) * US
    ax = fig.add_subplot()
    _band(ax, reads, drift, "drift")
    worst = np.abs(drift).max(axis=1)
    ax.plot(reads, worst, color="C3", lw=1, label="largest |drift| of any cell")
    ax.axhline(0, color="0.7", lw=0.5)
    floor = read_noise_floor(datasets, attrs)
    if floor is not None:
        ax.axhspan(-floor, floor, color="0.5", alpha=0.15, lw=0,
                   label=f"read-noise floor: +-{floor:.3g} uS (2 sigma of a block-mean difference)")  # fmt: skip
    v_read = _options(attrs, "read_disturb").get("v_read")
    at = f" at {v_read:g} V" if isinstance(v_read, float | int) else ""
    ax.set_title(f"read disturb{at}: max |drift| {worst.max():.3g} uS after {int(reads[-1])} reads", fontsize="medium")
    ax.set_xlabel("reads")
    ax.set_ylabel("G - first block's G (uS)")
    ax.legend(fontsize="small")


def read_noise_floor(datasets: Datasets, attrs: Attrs) -> float | None:
    """The drift read noise alone gives a typical cell, uS: two standard deviations of the difference
    of two block means (each the mean of ``record_every`` reads, median per-read sigma)."""
    g_std = _get(datasets, "read_disturb/g_std")
    block = _options(attrs, "read_disturb").get("record_every")
    if g_std is None or not isinstance(block, int) or block < 2:
        return None
    sigma = float(np.nanmedian(g_std.reshape(len(g_std), -1)[0])) * US  # the first block: before any disturb
    return 2.0 * sigma * float(np.sqrt(2.0 / block)) if np.isfinite(sigma) else None


# ---------------------------------------------------------------------------------- gate calibration


def plot_gate_calibration(datasets: Datasets, attrs: Attrs, fig: Figure) -> None:
    """SET conductance against gate voltage for a few cells with their fits, and the k and c maps."""
    v_gate, g = _get(datasets, "calibration/v_gate"), _get(datasets, "calibration/g")
    if v_gate is None or g is None:
        _no_data(fig, "gate calibration")
        return
    m = min(len(v_gate), len(g))
    region_cols = g.shape[-1] if g.ndim == 3 else 1
    row0, col0 = (int(attrs.get("calibration", {}).get(key, 0)) for key in ("row0", "col0"))
    v_gate, g = v_gate[:m], g[:m].reshape(m, -1)
    k, c = _get(datasets, "calibration/k"), _get(datasets, "calibration/c")
    (ax_curves, ax_hist), (ax_k, ax_c) = fig.subplots(2, 2)
    for n, i in enumerate(_individuals(g.shape[1])):
        color = f"C{n}"
        cell = f"cell ({row0 + i // region_cols}, {col0 + i % region_cols})"
        ax_curves.plot(v_gate, g[:, i] * US, "o", color=color, ms=3, label=cell)
        if k is not None and c is not None and np.isfinite(k.ravel()[i]):
            ax_curves.plot(v_gate, (k.ravel()[i] * v_gate + c.ravel()[i]) * US, color=color, lw=1)
    responsive = datasets.get("calibration/responsive")
    if responsive is not None and np.size(responsive) == g.shape[1] and not np.all(responsive):
        i = int(np.flatnonzero(~np.asarray(responsive, bool).ravel())[0])  # one defective cell, for contrast
        ax_curves.plot(v_gate, g[:, i] * US, "x--", color="C3", ms=4, lw=0.8,
                       label=f"cell ({row0 + i // region_cols}, {col0 + i % region_cols}), not responding")  # fmt: skip
    _band(ax_curves, v_gate, g * US, "all cells", color="k")
    ax_curves.set_xlabel("v_gate (V)")
    ax_curves.set_ylabel("G after SET (uS)")
    ax_curves.legend(fontsize="x-small", loc="upper left")
    if k is None or c is None:
        for ax in (ax_hist, ax_k, ax_c):
            ax.set_axis_off()
        return
    _k_histogram(ax_hist, datasets, k, row0, col0, region_cols)
    for ax, values, title in ((ax_k, k, "k (uS/V)"), (ax_c, c, "c (uS)")):
        image = _map_image(ax, values * US, attrs, "calibration")
        fig.colorbar(image, ax=ax)
        ax.set_title(title)


NAMED_CELLS = 4
"""Cells named by their indices where a plot points at a handful of them."""


def _cell_names(flat: npt.NDArray[np.intp], row0: int, col0: int, region_cols: int) -> str:
    names = ", ".join(f"({row0 + i // region_cols}, {col0 + i % region_cols})" for i in flat[:NAMED_CELLS])
    return names + (f" and {len(flat) - NAMED_CELLS} more" if len(flat) > NAMED_CELLS else "")


def _k_histogram(ax: Axes, datasets: Datasets, k: FloatArray, row0: int, col0: int, region_cols: int) -> None:
    """The slopes of the cells that respond to the gate, and apart from them the defective spike (the
    cells that do not, k near 0: stuck low or high), marked and named."""
    flat = k.ravel() * US
    stored = datasets.get("calibration/responsive")
    responsive = (np.asarray(stored, bool).ravel() if stored is not None and np.size(stored) == flat.size
                  else np.ones(flat.size, bool))  # fmt: skip
    finite = np.isfinite(flat)
    working, defective = flat[finite & responsive], np.flatnonzero(finite & ~responsive)
    values = flat[finite]
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    bins = [float(b) for b in np.linspace(low, high + 1e-12, 41)]  # one set of bins: the spike beside the rest
    ax.hist(working, bins=bins, color="C0", label=f"responding: {working.size} cells")
    if defective.size:
        names = _cell_names(defective, row0, col0, region_cols)
        counts, _, _ = ax.hist(flat[defective], bins=bins, color="C3",
                               label=f"not responding: {defective.size} cells,\n{names}")  # fmt: skip
        spike = float(np.median(flat[defective]))
        ax.axvline(spike, color="C3", ls="--", lw=1)
        ax.annotate(f"defective spike\n(k = {spike:.2g} uS/V)", xy=(spike, float(np.max(counts))), xytext=(8, 0),
                    textcoords="offset points", ha="left", va="top", fontsize="x-small", color="C3",
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8})  # fmt: skip
    ax.set_xlabel("k (uS/V)")
    ax.set_ylabel("cells")
    ax.set_yscale("log")
    ax.legend(fontsize="x-small", loc="center right")


def plot_training(datasets: Datasets, attrs: Attrs, fig: Figure) -> None:
    """Learning curves (loss, batch and test accuracy) and the conductance histograms per evaluation."""
    journal = datasets.get(layout.JOURNAL)
    evaluations = datasets.get(layout.EVALUATIONS)
    curves, accuracy, histogram = fig.subplots(1, 3)
    if journal is not None and len(journal):
        curves.plot(journal[:, 0], journal[:, 2], lw=0.6, color="tab:gray", label="batch loss")
        window = max(1, len(journal) // 50)
        smooth = np.convolve(journal[:, 2], np.ones(window) / window, mode="valid")
        curves.plot(journal[window - 1 :, 0], smooth, color="tab:blue", label=f"mean of {window}")
        curves.set(xlabel="update", ylabel="cross-entropy loss", yscale="log", title="loss")
        curves.legend(fontsize="small")
        accuracy.plot(journal[:, 0], 100 * journal[:, 3], lw=0.5, color="tab:gray", alpha=0.6, label="batch")
    if evaluations is not None and len(evaluations):
        accuracy.plot(evaluations[:, 0], 100 * evaluations[:, 1], "o-", color="tab:red", label="test")
    title = "accuracy"
    if evaluations is not None and len(evaluations):
        title = f"test accuracy: final {100 * evaluations[-1, 1]:.1f} %"
        accuracy.axhline(100 * evaluations[-1, 1], color="tab:red", lw=0.6, ls=":")
    baseline = float_baseline(datasets)
    if baseline is not None:
        accuracy.axhline(100 * baseline, color="tab:green", lw=1, ls="--",
                         label=f"float baseline: {100 * baseline:.1f} %")  # fmt: skip
        title += f"; float {100 * baseline:.1f} %"
    else:
        accuracy.text(0.02, 0.02, "no float baseline recorded\n(hil train --baseline trains one)",
                      transform=accuracy.transAxes, fontsize="x-small", color="0.4")  # fmt: skip
    transferred = attrs.get(layout.PREPARE, {}).get("accuracy_after_transfer")
    if isinstance(transferred, float | int) and not isinstance(transferred, bool):
        accuracy.plot([0], [100 * float(transferred)], "D", color="tab:purple",
                      label=f"before training: {100 * float(transferred):.1f} %")  # fmt: skip
    accuracy.set(xlabel="update", ylabel="accuracy (%)", ylim=(0, 100), title=title)
    if accuracy.lines:
        accuracy.legend(fontsize="x-small", loc="upper left")
    snapshots = layout.snapshot_boards(datasets)
    for board in snapshots:
        maps = datasets[layout.snapshots(board)]
        for index in sorted({0, len(maps) - 1}):
            label = f"{board}, end of epoch {index + 1}"
            histogram.hist(1e6 * maps[index].ravel(), bins=80, histtype="step", label=label)
    if not snapshots:  # a run shorter than an epoch: the map read after its last update
        for board in layout.final_boards(datasets):
            final = datasets[layout.final_conductance(board)]
            histogram.hist(1e6 * np.ravel(final), bins=80, histtype="step", label=f"{board}, after the last update")
    histogram.set(xlabel="G (uS)", ylabel="devices", yscale="log", title="conductance, whole array")
    if histogram.patches:
        histogram.legend(fontsize="x-small")


def float_baseline(datasets: Datasets) -> float | None:
    """The test accuracy of the same network in floating point, where the run trained one (the hybrid
    scheme's software phase, ``pretrain/eval``); None where it did not."""
    pretrain = datasets.get(layout.PRETRAIN_EVALUATIONS)
    if pretrain is None or not len(pretrain):
        return None
    return float(np.asarray(pretrain)[-1, 1])
