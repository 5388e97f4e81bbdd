"""The twin's drift figures: on the devices behind the wires, and on the yield map's working cells."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hil.storage import RunData
from hil.twin.drift_refit import drift_refit
from protocols.characterization.retention import drift_figures
from protocols.characterization.wire_resistance import series_segments
from protocols.characterization.yield_map import CellClass

SHAPE = (64, 32)
R_SEGMENT = 1.0  # ohm: a read at 300 uS far from the drivers loses about 6 % of a drift


def runs(shorted_working: bool) -> tuple[dict[str, RunData], np.ndarray, np.ndarray, np.ndarray]:
    """Noise-free retention reads of every cell through the wires, and a yield map (cell (0, 0) shorted)."""
    rng = np.random.default_rng(3)
    cells = np.argwhere(np.ones(SHAPE, dtype=bool))
    rate = -1e-7 + 5e-8 * rng.standard_normal(len(cells))
    g0 = 300e-6 * (1 + 0.1 * rng.standard_normal(len(cells)))
    rate[0], g0[0] = 0.0, 1e-3  # a shorted cell does not drift
    time = np.geomspace(1.0, 1e5, 21)
    g_device = g0 + np.outer(np.log1p(time), rate)
    series = R_SEGMENT * series_segments(*SHAPE)[cells[:, 0], cells[:, 1]]
    g_read = 1.0 / (1.0 / g_device + series)
    working = np.ones(len(cells), dtype=bool)
    working[0] = shorted_working  # its SET read rose above its RESET read by the read noise's luck
    classes = np.full(SHAPE, CellClass.NORMAL, dtype=np.int8)
    classes[0, 0] = CellClass.STUCK_HIGH
    retention = RunData(Path("<retention>"), {"procedure": "retention"},
                        {"retention/g": g_read, "retention/time": time, "retention/cells": cells,
                         "retention/working": working}, {"retention": {}})  # fmt: skip
    yield_map = RunData(Path("<yield>"), {"procedure": "yield-map"}, {"yield/class": classes}, {"yield": {}})
    return {"retention": retention, "yield-map": yield_map}, rate, time, g_read


def test_the_drift_is_fitted_on_the_devices_not_the_reads() -> None:
    chosen, rate, time, g_read = runs(shorted_working=False)
    on_reads = drift_figures(time, g_read[:, 1:], 1.0)["drift_mean"].value
    assert on_reads > 1.03 * rate[1:].mean()  # the wires take more than 3 % off the drift (it is negative)
    refit = {r.parameter: r.value.value for r in drift_refit(chosen, R_SEGMENT, SHAPE)}
    assert refit["drift_mean"] == pytest.approx(rate[1:].mean(), rel=1e-3)
    assert refit["drift_spread"] == pytest.approx(rate[1:].std(ddof=1), rel=1e-3)


def test_a_cell_the_yield_map_found_shorted_is_left_out_of_the_drift() -> None:
    chosen, rate, _, _ = runs(shorted_working=True)
    refit = {r.parameter: r.value.value for r in drift_refit(chosen, R_SEGMENT, SHAPE)}
    assert refit["drift_mean"] == pytest.approx(rate[1:].mean(), rel=1e-3)
    # Without the yield map, the retention step's own working mask keeps it (and its zero drift).
    del chosen["yield-map"]
    refit = {r.parameter: r.value.value for r in drift_refit(chosen, R_SEGMENT, SHAPE)}
    assert refit["drift_mean"] == pytest.approx(rate.mean(), rel=1e-3)
    assert refit["drift_mean"] != pytest.approx(rate[1:].mean(), rel=1e-4)
