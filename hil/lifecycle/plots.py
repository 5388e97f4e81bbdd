"""The plot of an evaluation file: accuracy and drift against time, with what the compensation cost."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from hil.procedures import Attrs, Datasets
from hil.run_layout import EVALUATION_POINTS

HOUR = 3600.0


def plot_evaluation(datasets: Datasets, attrs: Attrs, fig: Figure) -> None:
    points = datasets.get(EVALUATION_POINTS)
    if points is None or len(points) == 0:
        fig.text(0.5, 0.5, "no evaluation recorded", ha="center")
        return
    table = np.asarray(points, dtype=np.float64)
    hours = table[:, 0] / HOUR
    top, middle, bottom = fig.subplots(3, 1, sharex=True)
    top.plot(hours, 100 * table[:, 1], "o-")
    top.set_ylabel("test accuracy, %")
    middle.plot(hours, 1e6 * table[:, 3], "o-", color="tab:orange")
    middle.set_ylabel("median drift, uS")
    bottom.bar(hours, table[:, 5], width=0.6 * (hours[1] - hours[0]) if len(hours) > 1 else 0.5, color="tab:green")
    bottom.set_ylabel("refresh pulses")
    bottom.set_xlabel("time since the first evaluation, h")
