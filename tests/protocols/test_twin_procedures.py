"""The procedures a twin is fitted from: each recovers what the emulated chip was built with."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from drivers import LimitError
from protocols.calibration import calibrate_gate, find_gate_window, fit_lines, population_fit, spread_uncertainty
from protocols.characterization.figures import read_figures
from protocols.characterization.forming import measure_forming
from protocols.characterization.gate_calibration import measure_gate_calibration
from protocols.characterization.retention import drift_figures, log_time_stamp, measure_retention
from protocols.characterization.suite import TWIN_SUITE, planned_reads, step_options
from protocols.characterization.wire_resistance import column_currents, measure_wire_resistance
from protocols.characterization.write_noise import measure_write_noise, noise_figures
from protocols.characterization.yield_map import (
    CellClass,
    YieldMapOptions,
    classify_switching,
    defect_figures,
    measure_yield_map,
)
from protocols.recording import MemoryRecorder
from tests.protocols.counting import CountingBoard


def test_find_gate_window_keeps_a_straight_line_whole() -> None:
    v = np.linspace(0.5, 2.5, 6)
    window = find_gate_window(v, 100e-6 * v + 120e-6)
    assert (window.first, window.last) == (0, 5)
    assert np.isnan(window.v_turn_on) and np.isnan(window.v_saturation)


def test_find_gate_window_finds_turn_on_and_saturation() -> None:
    v = np.round(np.arange(0.2, 3.01, 0.1), 10)
    line = 121e-6 * np.minimum(v, 1.83) + 60e-6
    curve = np.where(v < 0.55, 100e-6, np.maximum(line, 100e-6))
    window = find_gate_window(v, curve)
    assert v[window.first] == pytest.approx(0.6)
    assert v[window.last] == pytest.approx(1.8)
    assert window.v_turn_on == pytest.approx(0.55)
    assert window.v_saturation == pytest.approx(1.83, abs=1e-6)


def test_population_fit_takes_the_fit_noise_out_of_the_spread() -> None:
    rng = np.random.default_rng(0)
    v = np.linspace(0.5, 2.5, 12)
    k = 100e-6 * (1 + 0.03 * rng.standard_normal((60, 60)))
    c = 120e-6 + 5e-6 * rng.standard_normal((60, 60))
    g = k[None] * v[:, None, None] + c[None] + 8e-6 * rng.standard_normal((12, 60, 60))
    fit = population_fit(v, g, np.ones((60, 60), dtype=bool))
    raw_k, _, _ = fit_lines(v, g)
    assert raw_k.std() > 1.3 * float(k.std())  # the noise alone would inflate the spread
    assert fit.k_spread == pytest.approx(float(k.std()), rel=0.1)
    assert fit.k_mean == pytest.approx(float(k.mean()), rel=0.01)
    assert fit.c_spread == pytest.approx(float(c.std()), rel=0.1)


def test_population_spread_uncertainties_are_the_spreads_own_scatter() -> None:
    # Fit noise four times the devices' variance (a short gate range, a noisy read): the spread
    # is the difference of two large numbers, and its recorded uncertainty must say so. Over
    # repeated draws of the same population the errors in units of that uncertainty scatter by
    # about 1 (``sqrt(var / 2n)`` gave about 2.2: good fits read as 3-5 sigma off).
    rng = np.random.default_rng(11)
    v = np.linspace(0.5, 2.5, 12)
    k_spread, c_spread, noise = 2e-6, 3e-6, 8e-6
    pulls: dict[str, list[float]] = {"k": [], "c": []}
    for _ in range(200):
        k = 100e-6 + k_spread * rng.standard_normal((30, 30))
        c = 120e-6 + c_spread * rng.standard_normal((30, 30))
        g = k[None] * v[:, None, None] + c[None] + noise * rng.standard_normal((12, 30, 30))
        fit = population_fit(v, g, np.ones((30, 30), dtype=bool))
        pulls["k"].append((fit.k_spread - k_spread) / fit.k_spread_sigma)
        pulls["c"].append((fit.c_spread - c_spread) / fit.c_spread_sigma)
    for name, values in pulls.items():
        assert 0.75 < float(np.std(values)) < 1.33, name
        assert abs(float(np.mean(values))) < 0.4, name


def test_spread_uncertainty_is_finite_and_continuous_down_to_zero() -> None:
    var_sigma = 4e-12
    assert spread_uncertainty(0.0, var_sigma) == pytest.approx(2e-6)  # a spread fitted as 0: sqrt
    assert spread_uncertainty(1e-6, var_sigma) == pytest.approx(2e-6)  # where the two meet
    assert spread_uncertainty(1e-6 * (1 + 1e-9), var_sigma) == pytest.approx(2e-6)
    assert spread_uncertainty(10e-6, var_sigma) == pytest.approx(0.2e-6)  # the delta method
    assert spread_uncertainty(5e-6, 0.0) == 0.0


def _noise_maps(
    rng: np.random.Generator, write_noise: float, floor_spread: float, cycles: int = 12, side: int = 20
) -> tuple[np.ndarray, np.ndarray]:
    """RESET maps (cycles, side, side) and k = 2 reads after each SET, 2 % relative read noise."""
    floor = 6e-6 * (1 + floor_spread * rng.standard_normal((side, side)))
    g_reset = floor[None] + 2e-6 * rng.standard_normal((cycles, side, side))
    level = 100e-6 + 10e-6 * rng.standard_normal((side, side))
    landed = level + write_noise * rng.standard_normal((cycles, side, side))
    return g_reset, landed[:, None] * (1 + 0.02 * rng.standard_normal((cycles, 2, side, side)))


def test_write_noise_below_the_reads_resolution_gets_a_finite_uncertainty() -> None:
    # A chip without write noise: about half the fits come out as 0, and 0 +- 2e16 S (a delta
    # method divided by 1e-30) told the twin nothing; the bound is what the reads resolve.
    rng = np.random.default_rng(3)
    for _ in range(8):
        working, figures = noise_figures(*_noise_maps(rng, 0.0, 0.05), None)
        assert working.all()
        figure = figures["write_noise"]
        assert figure.value < 3 * figure.uncertainty < 3e-6, figure


def test_write_noise_and_floor_spread_uncertainties_are_their_own_scatter() -> None:
    # Write noise 1 uS under 2 uS-a-read noise: the recorded uncertainties must match the fits'
    # scatter over repeated draws (the old write-noise formula left out the read-noise estimate's
    # own scatter: pulls' sd 1.22).
    rng = np.random.default_rng(5)
    pulls: dict[str, list[float]] = {"write_noise": [], "g_reset_spread_relative": []}
    for _ in range(200):
        _, figures = noise_figures(*_noise_maps(rng, 1e-6, 0.05), None)
        for name, truth in (("write_noise", 1e-6), ("g_reset_spread_relative", 0.05)):
            pulls[name].append((figures[name].value - truth) / figures[name].uncertainty)
    for name, values in pulls.items():
        assert 0.8 < float(np.std(values)) < 1.15, (name, np.std(values))
        assert abs(float(np.mean(values))) < 0.3, (name, np.mean(values))


def test_drift_spread_uncertainty_is_its_own_scatter_and_finite_at_zero() -> None:
    rng = np.random.default_rng(7)
    t = np.geomspace(1.0, 1e4, 12)
    x = np.log1p(t)
    pulls = []
    for _ in range(200):
        nu = -0.1e-6 + 0.02e-6 * rng.standard_normal(400)  # fit noise 50x the devices' spread
        g = 50e-6 + np.outer(x, nu) + 1e-6 * rng.standard_normal((12, 400))
        figure = drift_figures(t, g, 1.0)["drift_spread"]
        pulls.append((figure.value - 0.02e-6) / figure.uncertainty)
    assert 0.8 < float(np.std(pulls)) < 1.2 and abs(float(np.mean(pulls))) < 0.4
    flat = drift_figures(t, 50e-6 + 1e-6 * rng.standard_normal((12, 400)), 1.0)["drift_spread"]
    assert 0 < flat.uncertainty < 1e-6 and flat.value < 3 * flat.uncertainty


def test_calibration_over_saturation_fits_only_the_linear_part(chip: Any) -> None:
    # The case the issue reported: a 0.3-2.5 V calibration on a chip saturating at 2 V.
    board = chip(set_slope=121e-6, set_intercept=60e-6, v_gate_saturation=2.0, v_gate_threshold=0.25, g_min=50e-6)
    gates = np.linspace(0.3, 2.5, 12)
    calibration = calibrate_gate(board, gates)
    k = float(np.median(calibration.k[calibration.responsive]))
    assert k == pytest.approx(121e-6, rel=0.03)
    low, high = calibration.v_gate_window
    assert low == pytest.approx(0.3) and 1.8 <= high <= 2.0
    every_point, _, _ = fit_lines(gates, calibration.g_measured)
    assert float(np.median(every_point[calibration.responsive])) < 0.93 * 121e-6  # what the window avoids


def test_gate_calibration_reports_population_figures(chip: Any) -> None:
    board = chip(set_intercept_spread=0.0, set_intercept_spread_abs=10e-6, v_gate_saturation=1.9)
    recorder = MemoryRecorder()
    result = measure_gate_calibration(board, recorder, repeats=2)
    figures = read_figures(recorder.attrs["calibration"])
    assert figures == result.figures
    assert figures["k"].value == pytest.approx(98e-6, rel=0.03)
    assert figures["k_spread_relative"].value == pytest.approx(0.15, rel=0.1)
    assert figures["c_spread"].value == pytest.approx(10e-6, rel=0.1)
    assert figures["v_saturation"].value == pytest.approx(1.9, abs=0.05)
    assert figures["v_turn_on"].value == pytest.approx(0.5, abs=0.05)
    assert any("saturation at 1.9" in note for note in result.notes)


def test_write_noise_separates_write_from_read_noise(chip: Any) -> None:
    board = chip(write_noise=9e-6, read_noise=0.02, stuck_low_fraction=0.1, stuck_high_fraction=0.05)
    recorder = MemoryRecorder()
    result = measure_write_noise(board, recorder, cycles=12, reads_after_set=3)
    assert result.figures["write_noise"].value == pytest.approx(9e-6, rel=0.08)
    assert result.figures["read_noise"].value == pytest.approx(0.02, rel=0.08)
    assert result.figures["g_reset_spread_relative"].value == pytest.approx(0.05, rel=0.2)
    # Stuck cells (which would only show read noise) are left out.
    assert 1 - result.working.mean() == pytest.approx(0.15, abs=0.01)
    assert recorder.datasets["write_noise/g_set"].shape == (12, 3, 32, 16)


def test_write_noise_reads_after_set_resolve_a_small_write_noise() -> None:
    # 1 uS of write noise under 6 uS of read noise (2 % of 300 uS): with two reads after each SET
    # the read noise is 18 of the 19 uS^2 the cycles scatter by; eight reads take it to 4.5.
    rng = np.random.default_rng(11)
    cycles, shape, write, read_sigma = 12, (64, 32), 1e-6, 6e-6

    def figures_with(reads: int) -> dict[str, Any]:
        g_reset = 100e-6 + 2e-6 * rng.standard_normal((cycles, *shape))
        landed = 300e-6 + write * rng.standard_normal((cycles, 1, *shape))
        g_set = landed + read_sigma * rng.standard_normal((cycles, reads, *shape))
        return noise_figures(g_reset, g_set, 20e-6)[1]

    two, eight = figures_with(2), figures_with(8)
    for figures in (two, eight):
        assert abs(figures["write_noise"].value - write) < 3 * figures["write_noise"].uncertainty
        assert figures["read_noise"].value == pytest.approx(0.02, rel=0.02)
    assert eight["write_noise"].uncertainty < 0.04 * write < two["write_noise"].uncertainty / 2


def test_write_noise_leaves_out_a_shorted_cell_whose_read_noise_looks_like_a_window() -> None:
    # Regression: under 2 % read noise a shorted cell (1 mS) sometimes shows a median "window"
    # above 20 uS; counted as working, its RESET level doubled the fitted floor spread (0.107
    # against 0.05 on a 128 x 64 chip with 16 uS write noise).
    rng = np.random.default_rng(4)
    cycles, shape = 12, (20, 30)
    floor = 100e-6 * (1 + 0.05 * rng.standard_normal(shape))
    g_reset = floor + 4e-6 * rng.standard_normal((cycles, *shape))
    g_set = (200e-6 + 4e-6 * rng.standard_normal((cycles, 1, *shape))) * np.ones((1, 2, 1, 1))
    g_reset[:, 0, 0] = 1e-3
    g_set[:, :, 0, 0] = 1e-3 + 30e-6  # the read noise's luck: a median window of 30 uS
    working, figures = noise_figures(g_reset, g_set, 20e-6)
    assert not working[0, 0] and working.sum() == working.size - 1
    assert figures["g_reset_spread_relative"].value == pytest.approx(0.05, rel=0.15)


def test_yield_map_takes_a_shorted_cell_whose_read_noise_looks_like_a_window_for_stuck_high() -> None:
    # Regression: 5 of the 164 shorted cells of a 128 x 64 chip under 2 % read noise were mapped
    # as working (their SET read 50 uS above their RESET read by the noise's luck).
    options = YieldMapOptions()
    g_initial = np.array([[150e-6, 1.0e-3]])
    g_set = np.array([[260e-6, 1.03e-3]])
    g_reset = np.array([[100e-6, 0.97e-3]])
    classes = classify_switching(g_initial, g_set, g_reset, options)
    assert classes.tolist() == [[CellClass.NORMAL, CellClass.STUCK_HIGH]]


def test_yield_map_takes_a_shorted_cell_the_wires_read_below_the_stuck_high_threshold_for_stuck_high() -> None:
    # Regression: a shorted cell 5 % below 1 mS read 771 uS behind 1-ohm wires; called stuck low,
    # it put the stuck-low level at 13.9 uS against 5 uS. The RESET leaves it far above the
    # switching cells' SET levels.
    options = YieldMapOptions()
    g_initial = np.array([[150e-6, 140e-6, 5e-6, 0.77e-3]])
    g_set = np.array([[260e-6, 300e-6, 5e-6, 0.771e-3]])
    g_reset = np.array([[100e-6, 110e-6, 5e-6, 0.752e-3]])
    classes = classify_switching(g_initial, g_set, g_reset, options)
    assert classes.tolist() == [[CellClass.NORMAL, CellClass.NORMAL, CellClass.STUCK_LOW, CellClass.STUCK_HIGH]]


def test_the_stuck_low_level_is_the_class_median_not_pulled_by_a_weak_working_cell(chip: Any) -> None:
    # A working cell whose window is under min_window is classed stuck low at its own level
    # (154 uS for a k of 18 uS/V): the mean of 104 stuck-low cells then read 6.4 uS against 5 uS.
    levels = np.concatenate([5e-6 * (1 + 0.05 * np.random.default_rng(2).standard_normal(40)), [154e-6]])
    classes = np.full((1, levels.size), CellClass.STUCK_LOW, dtype=np.int8)
    figures = defect_figures(classes, levels[None, :], None, 0, 0, (), ())
    assert figures["g_stuck_low"].value == pytest.approx(5e-6, rel=0.03)


def test_wire_model_without_wires_is_a_plain_product() -> None:
    g = np.random.default_rng(1).uniform(50e-6, 500e-6, (6, 4))
    v = np.full(6, 0.2)
    assert np.allclose(column_currents(g, 0.0, v), v @ g)
    assert np.all(column_currents(g, 1.0, v) < v @ g)  # wires only take current away
    assert np.allclose(column_currents(g, 1e-6, v), v @ g, rtol=1e-6)


@pytest.mark.parametrize("r_segment", [0.0, 0.2, 0.8])
def test_wire_resistance_recovers_the_segment_resistance(chip: Any, r_segment: float) -> None:
    board = chip(line_resistance=r_segment, stuck_high_fraction=0.03)
    result = measure_wire_resistance(board, MemoryRecorder())
    assert result.r_segment == pytest.approx(r_segment, rel=0.05, abs=0.01)


def test_wire_resistance_refuses_a_vmm_over_the_column_limit_before_any_pulse(chip: Any) -> None:
    board = chip(rows=128, cols=4)
    pulses = board.pulses_applied
    with pytest.raises(LimitError, match="all-rows VMM"):
        measure_wire_resistance(board, MemoryRecorder(), v_read=0.35)
    assert board.pulses_applied == pulses


def test_forming_counts_and_forms_the_virgin_cells(chip: Any) -> None:
    board = chip(unformed_fraction=0.2, stuck_low_fraction=0.1, v_form_threshold=3.2)
    recorder = MemoryRecorder()
    result = measure_forming(board, recorder)
    assert result.figures["fraction_unformed"].value == pytest.approx(0.2, abs=0.002)
    assert result.figures["fraction_formed_now"].value == 1.0
    assert result.figures["v_form_mean"].value == pytest.approx(3.2, rel=0.03)
    # Formed cells now conduct; stuck-low ones were never pulsed.
    g = board.read_map()
    assert np.all(g[result.unformed_before] > 50e-6)
    assert result.result is not None
    assert int(result.result.pulses.sum()) > 0
    assert np.all(result.result.pulses[~result.unformed_before] == 0)


def test_yield_map_reports_bad_lines_in_the_training_format(chip: Any) -> None:
    board = chip(bad_rows="3,20", bad_cols="5", stuck_low_fraction=0.1)
    recorder = MemoryRecorder()
    result = measure_yield_map(board, recorder)
    assert (result.bad_rows, result.bad_cols) == ((3, 20), (5,))
    assert recorder.attrs["yield"]["bad_lines"] == '{"rows": [3, 20], "cols": [5]}'
    assert recorder.datasets["yield/row_defect_rate"][3] == 1.0
    assert recorder.datasets["yield/col_defect_rate"][5] == 1.0
    # Fractions are of the cells off the bad lines.
    assert result.figures["fraction_stuck_low"].value == pytest.approx(0.1, abs=0.015)
    assert any('"rows": [3, 20]' in note for note in result.notes)


def test_retention_reprograms_every_working_cell_from_a_known_state(chip: Any) -> None:
    board = chip(drift_mean=-0.2e-6, drift_spread=0.0)
    # Cells already above the SET level: a SET alone (it never lowers G) would leave them there.
    board.apply_pulses("SET", 2.5, 3.0, 1e-6)
    recorder = MemoryRecorder()
    result = measure_retention(board, recorder, program="set", set_gate=1.0, t_first=1.0, t_last=1e3)
    assert result.working is not None
    first = result.g[0][result.working]
    assert np.median(first) == pytest.approx(98e-6 * 1.0 + 120e-6, rel=0.1)  # reprogrammed, not left high
    assert "retention/g_reset" in recorder.datasets
    # The drift clock restarted at the SET: the drift fits the law from there.
    assert result.figures["drift_mean"].value == pytest.approx(-0.2e-6, rel=0.1)


def test_a_point_of_slow_reads_is_stamped_where_the_log_law_averages_them() -> None:
    # 8 reads of 10 s each (64 map reads on a slow link) from 1 s on: the average of the drift law
    # over them is its value at the stamp; the reads' midpoint (41 s) sits late on the log scale.
    middles = [1.0 + 10.0 * i + 5.0 for i in range(8)]
    law = np.log1p(np.array(middles))  # G = a + nu ln(1 + t / t0), t0 = 1 s
    stamp = log_time_stamp(middles, 1.0)
    assert np.log1p(stamp) == pytest.approx(law.mean(), rel=1e-12)
    assert stamp < 0.8 * np.mean(middles)
    assert log_time_stamp([100.0, 100.0], 1.0) == pytest.approx(100.0)  # reads at one time: that time


@pytest.mark.parametrize("procedure", ["write-noise", "retention"])
def test_the_suite_budgets_the_map_reads_its_steps_take(chip: Any, procedure: str) -> None:
    # The budget shown before `hil characterize all` counts reads; these steps take many by default.
    step = next(s for s in TWIN_SUITE if s.procedure == procedure)
    options = step_options(step, {"retention": {"t_last": 100.0}}.get(procedure))
    board = chip(rows=8, cols=8)
    counting = CountingBoard(board)
    step.measure(board, MemoryRecorder(), **dict(options))
    assert counting.calls["read_map"] == planned_reads(step, options)
