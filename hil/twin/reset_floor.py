"""The RESET floor a twin needs: ``g_min`` such that the twin's yield-map RESET lands where the chip's did.

The yield map measures where one RESET pulse of its amplitude (1.8 V by default) leaves the
working cells. That level is not ``g_min`` (the floor a RESET reaches with infinite overdrive):
the device model's floor at a finite amplitude sits ``(g_max - g_min) e^(-overdrive / scale)``
above it (about 2 uS on the UMass preset), with parameters no procedure measures. Taken for
``g_min`` as it stands, the twin's floor would land that much higher again (11 % on a chip
whose floor is 20 uS). The correction is measured, not computed: the same yield map runs on a
small emulated board with the twin's parameters (noise and defects off), and its floor's excess
over the ``g_min`` it was given is subtracted. The excess hardly depends on ``g_min`` itself (its
slope is the factor ``e^(-overdrive / scale)``, 0.25 % at 1.8 V), so one pass is enough.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import numpy as np

from drivers import open_board
from protocols.characterization.figures import read_figures
from protocols.characterization.yield_map import measure_yield_map
from protocols.recording import MemoryRecorder

# The simulated board: enough cells that its mean floor is known to well under 0.1 uS.
SIZE = 32
# For the floor's spread: 4,096 cells know a relative spread to 1.1 %.
SPREAD_SIZE = 64
# Fields of the twin the simulation does not take: the array's own size and cells, and what
# only scatters the floor (noise) or removes cells from its mean (defects).
LEFT_OUT = frozenset({
    "rows", "cols", "cell_map", "bad_rows", "bad_cols", "write_noise", "read_noise",
    "stuck_low_fraction", "stuck_high_fraction", "unformed_fraction",
})  # fmt: skip
# Yield-map options that place it on the chip: the simulation covers its whole small board.
REGION_OPTIONS = frozenset({"row0", "col0", "nrows", "ncols"})


def _simulated_yield_map(
    parameters: Mapping[str, Any], preset: str, yield_options: Mapping[str, Any], size: int
) -> MemoryRecorder:
    fields = {name: value for name, value in parameters.items() if name not in LEFT_OUT and not isinstance(value, list)}
    query = urlencode({"preset": preset, "seed": 0, "rows": size, "cols": size, "write_noise": 0.0,
                       "read_noise": 0.0, **fields})  # fmt: skip
    options = {name: value for name, value in yield_options.items() if name not in REGION_OPTIONS}
    recorder = MemoryRecorder()
    with open_board(f"emulator://?{query}") as board:
        measure_yield_map(board, recorder, **options)
    return recorder


def reset_floor_excess(parameters: Mapping[str, Any], preset: str, yield_options: Mapping[str, Any]) -> float:
    """How far above ``parameters["g_min"]`` the yield map's RESET leaves a working cell, S, on an
    emulated board with these parameters (the rest from ``preset``); NaN when it finds no working cell."""
    recorder = _simulated_yield_map(parameters, preset, yield_options, SIZE)
    floor = read_figures(recorder.attrs.get("yield", {})).get("g_reset")
    if floor is None or not math.isfinite(floor.value):
        return math.nan
    return floor.value - float(parameters["g_min"])


# A RESET amplitude whose floor has no excess left (e^-14 of g_max on the Ta/HfO2 preset, e^-8 on
# the TaOx/HfOx one): the floor is each cell's own g_min.
FULL_RESET_AMPLITUDE = 3.0


def _floor_relative_spread(parameters: Mapping[str, Any], preset: str, reset_options: Mapping[str, Any]) -> float:
    recorder = _simulated_yield_map(parameters, preset, reset_options, SPREAD_SIZE)
    g_reset, classes = recorder.datasets.get("yield/g_reset"), recorder.datasets.get("yield/class")
    if g_reset is None or classes is None:
        return math.nan
    floor = np.asarray(g_reset)[np.asarray(classes) == 0]
    if floor.size < 3 or not floor.mean() > 0:
        return math.nan
    return float(floor.std(ddof=1) / floor.mean())


def d2d_from_floor_spread(
    measured: float, parameters: Mapping[str, Any], preset: str, reset_options: Mapping[str, Any]
) -> float:
    """``d2d_spread`` whose RESET floor has the relative spread ``measured`` on the twin.

    The floor a RESET leaves is ``g_min + (g_max - g_min) e^(-(V - V_th) / scale)``, each cell with
    its own ``g_min``, ``g_max`` and ``V_th`` drawn with the relative spread ``d2d_spread``. Where
    the excess is a small part of the floor (2 uS of 100 on the Ta/HfO2 preset) the floor's
    relative spread is ``d2d_spread``; where it is a large part (1.4 uS of 6 to 20 on the TaOx/
    HfOx preset, whose ``V_th`` spread moves it by 18 %), it is not: 16 % off on a 5.8 uS floor.
    As for the excess, the relation is measured, not computed: on a noise-free emulated board with
    the twin's parameters and ``d2d_spread = measured``, the floor's relative spread at the
    step's RESET over its spread at a RESET that leaves no excess (the same cells: each one's own
    ``g_min``, so the board's own sampling of the spread cancels) is what the excess multiplies
    the spread by, and ``measured`` is divided by it. ``measured`` itself when the simulation
    finds no floor.
    """
    if not measured > 0:
        return measured
    twin = {**parameters, "d2d_spread": measured}
    at_step = _floor_relative_spread(twin, preset, reset_options)
    full = _floor_relative_spread(twin, preset, {**reset_options, "reset_amplitude": FULL_RESET_AMPLITUDE})
    factor = at_step / full
    return measured / factor if math.isfinite(factor) and factor > 0 else measured


def g_min_from_reset_floor(
    measured_floor: float, parameters: Mapping[str, Any], preset: str, yield_attrs: Mapping[str, Any]
) -> float:
    """``g_min`` whose floor at the yield map's RESET is ``measured_floor`` on the twin; the
    measured floor itself if the simulation finds no excess to take off or would leave none."""
    options = json.loads(str(yield_attrs.get("options", "{}")))
    excess = reset_floor_excess({**parameters, "g_min": measured_floor}, preset, options)
    corrected = measured_floor - excess
    return corrected if math.isfinite(corrected) and 0 < corrected <= measured_floor else measured_floor
