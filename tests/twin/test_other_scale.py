"""The twin on chips of another scale: the TaOx/HfOx platform's (floor 5-20 uS, windows 10-40 uS),
drawn by :func:`hil.twin.round_trip.draw_chip` with ``family="tsinghua"`` and fitted on its preset;
and the ``tsinghua-taox-hfox`` preset itself. (More chips: benchmarks/twin_round_trip.py --family
tsinghua.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from drivers import open_board
from hil.storage import RunData
from hil.twin.defects import reconciled_classes
from hil.twin.fit import fit_twin
from hil.twin.reset_floor import d2d_from_floor_spread
from hil.twin.round_trip import FAMILIES, draw_chip, round_trip
from hil.twin.suite_runner import run_suite_in_memory
from protocols.characterization.yield_map import CellClass, measure_yield_map
from protocols.recording import MemoryRecorder

CHIPS = 6
PRESET = "tsinghua-taox-hfox"


@pytest.mark.parametrize("chip", range(CHIPS))
def test_a_tsinghua_scale_chip_round_trips(chip: int) -> None:
    family = FAMILIES["tsinghua"]
    params = draw_chip(np.random.default_rng(7000 + chip), family.rows, family.cols, family="tsinghua")
    failures = round_trip(params, seed=chip, family="tsinghua").failures
    assert not failures, f"chip {chip}: " + "; ".join(failures)


def test_the_tsinghua_preset_is_fitted_with_its_negative_intercept_and_stuck_cells() -> None:
    # The preset's line G = 30 uS/V v - 10 uS at 50 ns pulses (6 % higher at the suite's 1 us),
    # and its stuck-low cells at 1 uS: under the 2 uS line a virgin cell is found by.
    resource = f"emulator://?preset={PRESET}&seed=3&rows=64&cols=16&stuck_low_fraction=0.05&bad_rows=7"
    with open_board(resource) as board:
        twin = fit_twin(run_suite_in_memory(board), preset=PRESET)
    p = twin.parameters
    gain = FAMILIES["tsinghua"].width_gain
    assert p["set_intercept"] < 0
    assert p["set_intercept"] == pytest.approx(-10e-6 * gain, rel=0.1)
    assert p["width_reference"] == 1e-6  # the line is the one measured at 1 us, not the preset's at 50 ns
    assert p["stuck_low_fraction"] == pytest.approx(0.05, abs=0.01)
    assert p["unformed_fraction"] == 0.0
    assert p["bad_rows"] == [7] and p["bad_cols"] == []
    assert p["g_stuck_low"] == pytest.approx(1e-6, rel=0.1)


def _runs(classes: np.ndarray, tried: np.ndarray, formed: np.ndarray, forming_origin: int = 0) -> dict[str, RunData]:
    yield_run = RunData(Path("<yield>"), {"procedure": "yield-map"}, {"yield/class": classes}, {"yield": {}})
    forming = RunData(Path("<forming>"), {"procedure": "forming"},
                      {"forming/unformed_before": tried, "forming/formed": formed},
                      {"forming": {"row0": forming_origin}})  # fmt: skip
    return {"yield-map": yield_run, "forming": forming}


def test_a_cell_the_yield_map_calls_unformed_that_forming_could_not_form_is_stuck_low() -> None:
    U, N, L = CellClass.UNFORMED, CellClass.NORMAL, CellClass.STUCK_LOW
    classes = np.array([[U, U, N, L]], dtype=np.int8)
    tried = np.array([[True, True, True, False]])  # all but the stuck cell at 5 uS read under the line
    formed = np.array([[False, False, True, False]])
    # Cell 0: under the line at the yield map and not formed by the ramp: stuck low. Cell 1 too. Cell 2:
    # formed (a virgin cell), now normal.
    found = reconciled_classes(_runs(classes, tried, formed))
    assert found is not None
    assert found[0].tolist() == [[L, L, N, L]] and found[1] == 2
    # A virgin cell forming formed, yet still unformed at the yield map, stays unformed.
    formed[0, 1] = True
    found = reconciled_classes(_runs(classes, tried, formed))
    assert found is not None and found[0].tolist() == [[L, U, N, L]]
    # A forming run over another region says nothing about these cells.
    found = reconciled_classes(_runs(classes, tried, formed, forming_origin=1))
    assert found is not None and found[0].tolist() == classes.tolist() and found[1] == 0


def test_d2d_spread_is_taken_from_the_floor_less_the_reset_excess_spread() -> None:
    # A 5.8 uS floor: the RESET at 1.8 V leaves 1.4 uS above it, with a spread of its own (each
    # cell's RESET threshold), so the floor's relative spread is 11 % above d2d_spread.
    truth, g_min = 0.05, 5.8e-6
    resource = (
        f"emulator://?preset={PRESET}&seed=11&rows=64&cols=64&write_noise=0&read_noise=0&g_min={g_min}"
        "&stuck_low_fraction=0&stuck_high_fraction=0"
    )
    recorder = MemoryRecorder()
    with open_board(resource) as board:
        measure_yield_map(board, recorder)
    floor = np.asarray(recorder.datasets["yield/g_reset"])[np.asarray(recorder.datasets["yield/class"]) == 0]
    assert floor.size == 64 * 64
    measured = float(floor.std(ddof=1) / floor.mean())
    assert measured > 1.06 * truth  # as the write-noise step measures it, before the correction
    assert d2d_from_floor_spread(measured, {"g_min": g_min}, PRESET, {}) == pytest.approx(truth, rel=0.03)
