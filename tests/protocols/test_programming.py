"""Gate-coded programming, write-verify and forming (protocols/programming.py, forming.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from drivers import Board, InvalidRequest, LimitError, open_board
from protocols.calibration import calibrate_gate
from protocols.forming import form_cells
from protocols.programming import CellOutcome, WriteVerifySettings, program_gate_coded, write_verify
from protocols.recording import MemoryRecorder
from tests.protocols.counting import CountingBoard

TOLERANCE = 4e-6
# Targets every working cell of the umass-ta-hfo2 preset reaches: above its RESET floor
# (g_min 100 uS, 5 % spread) and below its SET level at the 5.5 V gate limit (k spread 15 %).
WINDOW = (120e-6, 400e-6)
GATES = np.linspace(0.7, 4.5, 8)
REALISTIC = "emulator://?preset=umass-ta-hfo2&seed={seed}&rows={rows}&cols={cols}"


def targets(shape: tuple[int, int], seed: int = 0, window: tuple[float, float] = WINDOW) -> np.ndarray:
    return np.random.default_rng(seed).uniform(*window, shape)


@pytest.fixture
def quiet() -> Iterator[Board]:
    """A board whose reads are exact, so "unchanged" can be checked by comparing maps."""
    with open_board("emulator://?preset=umass-ta-hfo2&seed=3&rows=16&cols=8&read_noise=0&drift_spread=0"
                    "&drift_mean=0") as board:  # fmt: skip
        yield board


# ---------------------------------------------------------------------------- write-verify


@pytest.mark.parametrize("calibrated", [True, False])
def test_write_verify_converges_working_cells(calibrated: bool) -> None:
    with open_board(REALISTIC.format(seed=2, rows=64, cols=32)) as board:
        calibration = calibrate_gate(board, GATES) if calibrated else None
        target = targets(board.shape)
        recorder = MemoryRecorder()
        result = write_verify(board, target, TOLERANCE, calibration=calibration, recorder=recorder)
        settled = np.mean([board.read_map() for _ in range(16)], axis=0)
    working = result.working
    assert result.converged_fraction >= 0.99
    converged = result.outcome == CellOutcome.CONVERGED
    # Converged cells were within tolerance on the one read that judged them (read noise: 1 % of
    # G). Averaging 16 later reads removes most of that noise: nearly all are within 2x tolerance.
    assert np.mean(np.abs(settled - target)[converged] <= 2 * TOLERANCE) > 0.97
    assert result.pulses[working].mean() <= 8
    assert result.round_trips <= 3 * result.iterations + 1
    assert recorder.datasets["write_verify/g"].shape == (result.iterations + 1, 64, 32)
    assert recorder.status["converged"] == pytest.approx(result.converged_fraction)
    assert recorder.steps_done == result.iterations + 1
    np.testing.assert_array_equal(recorder.datasets["write_verify/outcome"], result.outcome)


def test_write_verify_full_array() -> None:
    with open_board("emulator://?preset=umass-ta-hfo2&seed=1") as board:
        calibration = calibrate_gate(board, GATES)
        counter = CountingBoard(board)
        result = write_verify(board, targets(board.shape, seed=5), TOLERANCE, calibration=calibration)
    assert result.g_final.shape == (128, 64)
    assert result.converged_fraction >= 0.99
    assert result.pulses[result.working].mean() <= 8
    # One map read plus at most one RESET and one SET batch per iteration, and nothing per cell.
    assert counter.calls["read_cell"] == counter.calls["pulse"] == 0
    assert counter.calls["read_map"] == result.reads == result.iterations + 1
    assert counter.calls["apply_pulses"] == result.batches <= 2 * result.iterations
    # About 11 % of the preset's cells are stuck (9 % low, 2 % high).
    assert 0.09 < result.count(CellOutcome.STUCK) / result.outcome.size < 0.13


def test_round_trips_grow_with_iterations_not_cells() -> None:
    round_trips = {}
    for size in (8, 64):
        with open_board(REALISTIC.format(seed=4, rows=64, cols=64)) as board:
            counter = CountingBoard(board)
            result = write_verify(board, targets((size, size), seed=size), TOLERANCE)
        assert counter.total == result.round_trips <= 3 * result.iterations + 1
        round_trips[size] = result.round_trips
    # 64 times the cells, the same order of round trips (the larger map only has more
    # stragglers to wait for, a few more iterations).
    assert round_trips[64] <= 3 * round_trips[8]


def test_stuck_cells_are_reported_and_left_alone() -> None:
    url = REALISTIC.format(seed=6, rows=32, cols=32) + "&stuck_low_fraction=0.15&stuck_high_fraction=0.1"
    with open_board(url) as board:
        first = board.read_map()
        settings = WriteVerifySettings()
        result = write_verify(board, targets(board.shape), TOLERANCE, max_iterations=40, settings=settings)
    stuck = result.outcome == CellOutcome.STUCK
    # Stuck cells sit at their defect level (about 5 uS or 1 mS) and never move.
    defect_level = (first < 20e-6) | (first > 800e-6)
    assert stuck.sum() >= 0.98 * defect_level.sum()
    assert np.all(defect_level[stuck])
    np.testing.assert_allclose(result.g_final[stuck], first[stuck], rtol=0.06)
    # Abandoned after a few attempts, not pulsed until the iteration cap.
    assert result.pulses[stuck].max() <= 4 * settings.stuck_after + 4
    assert result.converged_fraction >= 0.99


def test_unreachable_targets_give_up_early() -> None:
    with open_board(REALISTIC.format(seed=7, rows=8, cols=8) + "&stuck_low_fraction=0&stuck_high_fraction=0") as board:
        target = np.full(board.shape, 300e-6)
        target[0, :] = 1.1e-3  # beyond every cell's ceiling (g_max 900 uS) and the 5.5 V gate's reach
        result = write_verify(board, target, TOLERANCE, max_iterations=60)
    assert np.all(result.outcome[0] == CellOutcome.GAVE_UP)
    assert np.all(result.outcome[1:] == CellOutcome.CONVERGED)
    assert result.iterations < 60
    assert np.all(result.v_gate[0] == board.limits.v_gate.max)


def test_masked_out_cells_are_untouched(quiet: Board) -> None:
    before = quiet.read_map()
    mask = np.zeros(quiet.shape, dtype=bool)
    mask[:, ::2] = True
    target = np.where(mask, targets(quiet.shape), np.nan)  # masked-out targets may be anything
    result = write_verify(quiet, target, TOLERANCE, mask=mask)
    after = quiet.read_map()
    np.testing.assert_array_equal(after[~mask], before[~mask])
    assert np.all(result.outcome[~mask] == CellOutcome.UNTOUCHED)
    assert np.all(result.pulses[~mask] == 0)


def test_a_region_is_programmed_in_place(quiet: Board) -> None:
    before = quiet.read_map()
    target = targets((4, 3))
    result = write_verify(quiet, target, TOLERANCE, origin=(10, 4))
    after = quiet.read_map()
    inside = np.zeros(quiet.shape, dtype=bool)
    inside[10:14, 4:7] = True
    np.testing.assert_array_equal(after[~inside], before[~inside])
    working = result.working
    np.testing.assert_array_less(np.abs(after[inside].reshape(4, 3) - target)[working], TOLERANCE + 1e-12)


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (lambda t: t.__setitem__((2, 3), np.nan), InvalidRequest, r"g_target\[2, 3\] = nan"),
        (lambda t: t.__setitem__((5, 1), 2e-3), LimitError, r"g_target\[5, 1\] = 0\.002 S .*limit \[0, 0\.0012\]"),
        (lambda t: t.__setitem__((0, 7), -1e-4), LimitError, r"g_target\[0, 7\] = -0\.0001"),
    ],
)  # fmt: skip
def test_bad_targets_are_refused_before_any_pulse(quiet: Board, change: Any, error: type, message: str) -> None:
    target = targets(quiet.shape)
    change(target)
    before = quiet.read_map()
    counter = CountingBoard(quiet)
    with pytest.raises(error, match=message):
        write_verify(quiet, target, TOLERANCE)
    with pytest.raises(error, match=message):
        program_gate_coded(quiet, target, _flat_calibration(quiet))
    assert counter.calls["apply_pulses"] == counter.calls["pulse"] == 0
    np.testing.assert_array_equal(quiet.read_map(), before)


def test_wrong_shapes_and_settings_are_refused(quiet: Board) -> None:
    before = quiet.read_map()
    counter = CountingBoard(quiet)
    with pytest.raises(InvalidRequest, match=r"shape \(128,\); expected a \(rows, cols\) map"):
        write_verify(quiet, np.full(128, 300e-6), TOLERANCE)
    with pytest.raises(InvalidRequest, match=r"shape \(8, 16\) at origin \(0, 0\) does not fit the \(16, 8\) array"):
        write_verify(quiet, targets((8, 16)), TOLERANCE)
    with pytest.raises(InvalidRequest, match="does not fit"):
        write_verify(quiet, targets((8, 8)), TOLERANCE, origin=(10, 0))
    with pytest.raises(InvalidRequest, match=r"shape \(8, 8\); expected \(16, 8\)"):
        program_gate_coded(quiet, targets((8, 8)), _flat_calibration(quiet))
    with pytest.raises(InvalidRequest, match=r"mask has shape \(4, 4\)"):
        write_verify(quiet, targets(quiet.shape), TOLERANCE, mask=np.ones((4, 4), dtype=bool))
    with pytest.raises(InvalidRequest, match="tolerance"):
        write_verify(quiet, targets(quiet.shape), tolerance=0.0)
    with pytest.raises(LimitError, match="RESET amplitude"):
        write_verify(quiet, targets(quiet.shape), TOLERANCE, settings=WriteVerifySettings(v_reset_max=5.0))
    with pytest.raises(InvalidRequest, match="calibration covers"):
        write_verify(quiet, targets((8, 8)), TOLERANCE, calibration=_flat_calibration(quiet))
    assert counter.calls["apply_pulses"] == 0
    np.testing.assert_array_equal(quiet.read_map(), before)


def _flat_calibration(board: Board) -> Any:
    from protocols.calibration import GateCalibration

    shape = board.shape
    return GateCalibration(
        k=np.full(shape, 98e-6), c=np.full(shape, 120e-6), residual=np.zeros(shape), v_gate_window=(0.5, 5.0),
        mask=np.ones(shape, dtype=bool),
    )  # fmt: skip


# ---------------------------------------------------------------------------- gate-coded


@pytest.mark.parametrize("reset", ["needed", "always"])
def test_gate_coded_programming_is_exact_on_the_ideal_preset(reset: str) -> None:
    with open_board("emulator://?preset=ideal&seed=1&rows=16&cols=8&g_initial_mean=400e-6") as board:
        calibration = calibrate_gate(board, GATES)
        target = targets(board.shape, window=(200e-6, 500e-6))
        before = board.read_map()
        counter = CountingBoard(board)
        result = program_gate_coded(board, target, calibration, reset=reset)  # type: ignore[arg-type]
        commands = counter.total
        after = board.read_map()
    np.testing.assert_allclose(after, target, atol=0.2e-6)  # ADC quantization only
    assert result.round_trips == commands == (3 if reset == "needed" else 2)
    np.testing.assert_array_equal(result.reset, before > target if reset == "needed" else True)
    assert result.pulses == board.shape[0] * board.shape[1] + int(result.reset.sum())


def test_gate_coded_programming_is_within_write_noise() -> None:
    with open_board("emulator://?preset=ideal&seed=2&rows=32&cols=16&write_noise=4e-6") as board:
        calibration = calibrate_gate(board, GATES)
        target = targets(board.shape, window=(200e-6, 500e-6))
        program_gate_coded(board, target, calibration)
        error = board.read_map() - target
    # One programming event with 4 uS of write noise, after a calibration that had it too.
    assert np.abs(error).max() < 4 * 4e-6 * np.sqrt(2)
    assert 2e-6 < error.std() < 7e-6
    assert abs(error.mean()) < 1.5e-6


def test_gate_coded_programming_of_a_masked_subset(quiet: Board) -> None:
    calibration = calibrate_gate(quiet, GATES)
    before = quiet.read_map()
    mask = calibration.responsive.copy()
    mask[: quiet.shape[0] // 2] = False
    target = targets(quiet.shape, window=(250e-6, 350e-6))
    result = program_gate_coded(quiet, target, calibration, mask=mask)
    after = quiet.read_map()
    np.testing.assert_array_equal(after[~mask], before[~mask])
    assert np.isnan(result.v_gate[~mask]).all()
    # Realistic devices (write noise 4 uS, line resistance) without verification: within a few sigma.
    assert np.abs(after[mask] - target[mask]).max() < 25e-6


def test_gate_coded_refuses_unreachable_targets_unless_clipped(quiet: Board) -> None:
    calibration = calibrate_gate(quiet, GATES)
    target = np.full(quiet.shape, 300e-6)
    target[1, 2] = 1.0e-3
    counter = CountingBoard(quiet)
    with pytest.raises(LimitError, match=r"g_target\[1, 2\].*clip=True"):
        program_gate_coded(quiet, target, calibration, mask=calibration.responsive)
    assert counter.calls["apply_pulses"] == 0
    result = program_gate_coded(quiet, target, calibration, mask=calibration.responsive, clip=True)
    if calibration.responsive[1, 2]:
        assert result.v_gate[1, 2] == GATES[-1]


# ---------------------------------------------------------------------------- forming


def test_forming_ramps_until_each_cell_conducts_then_stops() -> None:
    url = "emulator://?preset=umass-ta-hfo2&seed=1&rows=16&cols=8&start_formed=false"
    with open_board(url) as board:
        virgin = board.read_map()
        recorder = MemoryRecorder()
        result = form_cells(board, v_start=2.0, v_stop=4.0, v_step=0.1, recorder=recorder)
        after = board.read_map()
    assert virgin[virgin < 800e-6].max() < 10e-6  # virgin cells (stuck-high ones aside) do not conduct
    newly = result.formed & (result.v_form > 0)
    assert newly.mean() > 0.85
    assert np.all(after[result.formed] > 10e-6)
    # Each cell got FORM pulses up to the step that formed it, and none after.
    steps_to_form = np.rint((result.v_form[newly] - 2.0) / 0.1).astype(int) + 1
    np.testing.assert_array_equal(result.pulses[newly], steps_to_form)
    # Cells that never conducted (stuck low) got the whole ramp; conducting ones got nothing.
    assert np.all(result.pulses[result.unformed] == 21)
    assert np.all(result.pulses[result.v_form == 0] == 0)
    assert result.round_trips == 1 + 2 * result.steps
    assert recorder.datasets["forming/g"].shape == (result.steps + 1, 16, 8)


def test_forming_a_formed_array_sends_no_pulse() -> None:
    with open_board("emulator://?preset=umass-ta-hfo2&seed=1&rows=16&cols=8&stuck_low_fraction=0") as board:
        counter = CountingBoard(board)
        result = form_cells(board)
    assert result.formed.all() and result.steps == 0 and result.pulses.sum() == 0
    assert counter.calls == {"read_map": 1, "apply_pulses": 0, "read_cell": 0, "pulse": 0}


def test_forming_refuses_a_ramp_beyond_the_limits(quiet: Board) -> None:
    counter = CountingBoard(quiet)
    with pytest.raises(LimitError, match="FORM amplitude"):
        form_cells(quiet, v_start=3.0, v_stop=4.5)
    with pytest.raises(InvalidRequest, match="v_step > 0"):
        form_cells(quiet, v_step=0.0)
    assert counter.total == 0
