"""Plots of the procedures a twin needs beyond the classic ones: forming, write noise, wires.

Same contract as :mod:`hil.plots`: drawn from the stored datasets and attributes alone.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from hil.plots import UA, US, _get, _no_data, _options
from hil.procedures import Attrs, Datasets


def plot_forming(datasets: Datasets, attrs: Attrs, fig: Figure) -> None:
    v_form = _get(datasets, "forming/v_form")
    unformed = datasets.get("forming/unformed_before")
    if unformed is None:
        _no_data(fig, "forming read")
        return
    ax_map, ax_hist = fig.subplots(1, 2)
    ax_map.imshow(np.asarray(unformed, dtype=float), cmap="Greys", aspect="auto", interpolation="nearest")
    ax_map.set_title(f"unformed before: {int(np.sum(unformed))} of {np.size(unformed)}")
    ax_map.set_xlabel("column")
    ax_map.set_ylabel("row")
    values = v_form[np.isfinite(v_form) & (v_form > 0)] if v_form is not None else np.zeros(0)
    if values.size:
        ax_hist.hist(values, bins=max(5, int(np.ptp(values) / 0.1) + 1), color="C0")
    ax_hist.set_xlabel("FORM amplitude that formed the cell (V)")
    ax_hist.set_ylabel("cells")


def plot_write_noise(datasets: Datasets, attrs: Attrs, fig: Figure) -> None:
    g_set = _get(datasets, "write_noise/g_set")
    if g_set is None:
        _no_data(fig, "write-noise cycle")
        return
    working = datasets.get("write_noise/working")
    level = g_set.mean(axis=1).reshape(g_set.shape[0], -1)
    if working is not None:
        level = level[:, np.asarray(working, dtype=bool).ravel()]
    ax_cycles, ax_hist = fig.subplots(1, 2)
    for i in range(min(5, level.shape[1])):
        ax_cycles.plot(level[:, i] * US, marker=".", lw=0.8)
    ax_cycles.set_xlabel("cycle")
    ax_cycles.set_ylabel("G after SET (uS)")
    ax_hist.hist(((level - level.mean(axis=0)) * US).ravel(), bins=40, color="C0")
    ax_hist.set_xlabel("G - cell's mean over cycles (uS)")
    ax_hist.set_ylabel("events")


def plot_wire_resistance(datasets: Datasets, attrs: Attrs, fig: Figure) -> None:
    i_vmm, i_model, g_read = (_get(datasets, f"wire_resistance/{n}") for n in ("i_vmm", "i_model", "g_read"))
    if i_vmm is None or g_read is None:
        _no_data(fig, "VMM")
        return
    v_read = float(_options(attrs, "wire_resistance").get("v_read", 0.2))
    ax = fig.add_subplot()
    columns = np.arange(i_vmm.size)
    ax.plot(columns, g_read.sum(axis=0) * v_read * UA, "o", label="sum of single-cell reads x v")
    ax.plot(columns, i_vmm * UA, "s", label="VMM, every row driven")
    if i_model is not None:
        ax.plot(columns, i_model * UA, "-", color="C3", label="line model at the fitted resistance")
    ax.set_xlabel("column")
    ax.set_ylabel("column current (uA)")
    ax.legend(fontsize="small")
