"""The plot of an evaluation file: accuracy and drift against time, with what the compensation cost."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from hil.procedures import Attrs, Datasets
from hil.run_layout import EVALUATION_POINTS

HOUR = 3600.0
REFERENCE_GAIN = 7  # column of evaluate/points (files before session 6 stop at 7 columns)


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
    if table.shape[1] > REFERENCE_GAIN and not np.allclose(table[:, REFERENCE_GAIN], 1.0):
        gain = middle.twinx()  # what the reference cells measured of the drift the devices share
        gain.plot(hours, table[:, REFERENCE_GAIN], "s--", color="tab:purple")
        gain.set_ylabel("reference gain")
    bottom.bar(hours, table[:, 5], width=0.6 * (hours[1] - hours[0]) if len(hours) > 1 else 0.5, color="tab:green")
    bottom.set_ylabel("refresh pulses")
    bottom.set_xlabel("time since the first evaluation, h")
