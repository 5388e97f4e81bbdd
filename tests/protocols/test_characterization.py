"""Characterization procedures on the in-process emulated board: data, physics, bad input, Ctrl-C.

The emulator's true state (stuck cells, drift parameters) is read through the in-process
endpoint only here, to check what the procedures infer from reads alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from drivers import Board, LimitError, open_board
from protocols.characterization import (
    CLASS_NAMES,
    CellClass,
    measure_endurance,
    measure_iv_sweep,
    measure_pulse_response,
    measure_read_disturb,
    measure_retention,
    measure_yield_map,
)
from protocols.characterization.gate_calibration import measure_gate_calibration
from protocols.characterization.iv_sweep import triangle
from protocols.characterization.retention import read_times
from protocols.recording import Attr, MemoryRecorder

UMASS = "emulator://?preset=umass-ta-hfo2&seed=1"
OpenBoard = Callable[..., Board]


@pytest.fixture
def open_emulator() -> Iterator[OpenBoard]:
    """``open_emulator(rows=16, cols=8, preset=..., **overrides)``: an in-process board, closed at teardown."""
    boards: list[Board] = []

    def open_(rows: int = 16, cols: int = 8, resource: str = UMASS, **overrides: object) -> Board:
        query = "".join(f"&{key}={value}" for key, value in {"rows": rows, "cols": cols, **overrides}.items())
        board = open_board(resource + query)
        boards.append(board)
        return board

    yield open_
    for board in boards:
        board.close()


def firmware(board: Board) -> Any:
    return board._transport._endpoint.firmware  # type: ignore[attr-defined]


def truth(board: Board) -> Any:
    """The emulated array behind an in-process board (the state a chip never shows)."""
    return firmware(board).array


def commands(board: Board) -> int:
    return int(firmware(board).commands_served)


# Small, fast options per procedure (shared by the interrupt and bad-input tests).
SMALL: dict[str, tuple[Callable[..., object], dict[str, Any]]] = {
    "yield-map": (measure_yield_map, {}),
    "iv-sweep": (measure_iv_sweep, {"cells": [(1, 1), (2, 3)], "cycles": 2}),
    "gate-calibration": (measure_gate_calibration, {"n_gates": 4}),
    "pulse-response": (measure_pulse_response, {"n_pulses": 5, "nrows": 4}),
    "endurance": (measure_endurance, {"max_cycles": 30, "read_every": 5}),
    "retention": (measure_retention, {"program": "set", "t_last": 100.0, "points_per_decade": 2}),
    "read-disturb": (measure_read_disturb, {"n_reads": 50, "record_every": 10}),
}


# ---------------------------------------------------------------------------------- yield map


def test_yield_map_recovers_the_emulators_stuck_fractions(open_emulator: OpenBoard) -> None:
    board = open_emulator(32, 32)
    array = truth(board)
    recorder = MemoryRecorder()
    before = commands(board)
    result = measure_yield_map(board, recorder)
    assert commands(board) - before == 5  # read, SET batch, read, RESET batch, read

    for name in ("g_initial", "g_set", "g_reset", "class"):
        assert recorder.datasets[f"yield/{name}"].shape == (32, 32)
    for name in ("g_initial", "g_set", "g_reset"):
        assert recorder.attrs[f"yield/{name}"]["unit"] == "S"
    classes = recorder.datasets["yield/class"]
    assert classes.dtype == np.int8
    assert recorder.attrs["yield/class"]["class_names"] == ",".join(CLASS_NAMES)
    attrs = recorder.attrs["yield"]
    assert attrs["n_cells"] == 1024
    assert sum(int(attrs[f"count_{name}"]) for name in CLASS_NAMES) == 1024
    assert attrs["yield_fraction"] == pytest.approx(result.yield_fraction)

    stuck_low, stuck_high = array.stuck_low, array.stuck_high
    assert abs(float(attrs["fraction_stuck_low"]) - stuck_low.mean()) < 0.02
    assert abs(float(attrs["fraction_stuck_high"]) - stuck_high.mean()) < 0.02
    assert attrs["fraction_unformed"] == 0.0
    # Cell by cell, not just in total.
    expected = np.where(stuck_low, CellClass.STUCK_LOW, np.where(stuck_high, CellClass.STUCK_HIGH, CellClass.NORMAL))
    assert (classes == expected).mean() > 0.99


def test_yield_map_finds_unformed_cells(open_emulator: OpenBoard) -> None:
    board = open_emulator(16, 16, start_formed="false")
    array = truth(board)
    result = measure_yield_map(board, MemoryRecorder())
    stuck = array.stuck_low | array.stuck_high
    # A SET pulse cannot form a virgin cell: every working cell is still unformed, and is seen so.
    assert (result.classes[~stuck] == CellClass.UNFORMED).all()
    assert result.counts["normal"] == 0


def test_yield_map_read_only_changes_nothing(open_emulator: OpenBoard) -> None:
    board = open_emulator(32, 32)
    array = truth(board)
    before, g_before = commands(board), array.conductance
    recorder = MemoryRecorder()
    result = measure_yield_map(board, recorder, destructive=False)
    assert commands(board) - before == 1
    maps = {"yield/g_initial", "yield/class", "yield/row_defect_rate", "yield/col_defect_rate"}
    assert set(recorder.datasets) == maps
    assert np.allclose(array.conductance, g_before, rtol=0, atol=1e-8)
    assert result.counts["stuck_low"] == array.stuck_low.sum()
    assert result.counts["stuck_high"] == array.stuck_high.sum()


def test_yield_map_region(open_emulator: OpenBoard) -> None:
    board = open_emulator(16, 8)
    recorder = MemoryRecorder()
    measure_yield_map(board, recorder, row0=4, col0=2, nrows=3)
    assert recorder.datasets["yield/class"].shape == (3, 6)
    assert recorder.attrs["yield"]["row0"] == 4


# ---------------------------------------------------------------------------------- I-V sweep


def test_triangle_waveform() -> None:
    v = triangle(1.0, 0.5, 0.25)
    assert np.allclose(v, [0, 0.25, 0.5, 0.75, 1.0, 0.75, 0.5, 0.25, 0, -0.25, -0.5, -0.25, 0])


def test_iv_sweep_records_each_cycle_and_shows_hysteresis(open_emulator: OpenBoard) -> None:
    board = open_emulator()
    array = truth(board)
    working = np.argwhere(~(array.stuck_low | array.stuck_high))[:2]
    cells = [(int(r), int(c)) for r, c in working]
    recorder = MemoryRecorder()
    before = commands(board)
    result = measure_iv_sweep(board, recorder, cells=cells, cycles=3, v_step=0.1)
    assert commands(board) - before == 2 * 3 * 2  # a SET-gate and a RESET-gate part per cycle

    voltage = recorder.datasets["iv/voltage"]
    npts = len(triangle(2.0, 1.8, 0.1))
    assert voltage.shape == (npts,)
    assert recorder.datasets["iv/current"].shape == (6, npts)
    assert recorder.attrs["iv/voltage"]["unit"] == "V"
    assert recorder.attrs["iv/current"]["unit"] == "A"
    sweeps = recorder.datasets["iv/sweep"].tolist()
    assert sweeps == [[*cell, cycle] for cell in cells for cycle in range(3)]
    assert result.current.shape == (2, 3, npts)
    # Current follows the sign of the voltage.
    assert (np.sign(result.current) * np.sign(voltage) >= 0).all()

    up, top, bottom = 5, int(np.argmax(voltage)), int(np.argmin(voltage))  # +0.5 V on the way up
    down = top + int(np.argmin(np.abs(voltage[top:bottom] - 0.5)))  # +0.5 V on the way down
    neg_down = top + int(np.argmin(np.abs(voltage[top:bottom] + 0.5)))
    neg_back = bottom + int(np.argmin(np.abs(voltage[bottom:] + 0.5)))
    assert voltage[up] == pytest.approx(0.5) and voltage[down] == pytest.approx(0.5)
    for cell in result.current:
        for cycle in cell[1:]:  # from the second cycle on, each starts from the RESET state
            assert cycle[down] > 1.3 * cycle[up]  # SET raised the conductance
            assert abs(cycle[neg_back]) < 0.8 * abs(cycle[neg_down])  # RESET lowered it
    # The gate caps the SET current: a plateau at the compliance current.
    positive = result.current[:, :, voltage > 0]
    assert np.isclose(positive.max(axis=-1), positive.max(), rtol=0.02).all()


# ---------------------------------------------------------------------------------- pulse response


def test_pulse_response_rises_then_falls(open_emulator: OpenBoard) -> None:
    board = open_emulator(16, 8)
    array = truth(board)
    recorder = MemoryRecorder()
    n = 10
    before = commands(board)
    measure_pulse_response(board, recorder, n_pulses=n, nrows=8)
    # One preparing RESET, then one map read plus one batch per step.
    assert commands(board) - before == 1 + (2 * n + 1) + 2 * n

    g = recorder.datasets["pulse_response/g"]
    assert g.shape == (2 * n + 1, 64)
    assert recorder.datasets["pulse_response/pulse"].tolist() == list(range(2 * n + 1))
    assert recorder.datasets["pulse_response/cells"].shape == (64, 2)
    assert recorder.attrs["pulse_response/g"]["unit"] == "S"
    assert recorder.attrs["pulse_response"]["n_set"] == n

    working = ~(array.stuck_low | array.stuck_high)[:8].ravel()
    mean = g[:, working].mean(axis=1)
    assert mean[n] > mean[0] + 50e-6  # SET pulses raise G ...
    assert (np.diff(mean[: n + 1]) > 0).all()  # ... step by step (identical, partial pulses)
    assert mean[2 * n] < mean[n] - 50e-6  # RESET pulses lower it
    assert (np.diff(mean[n:]) < 0).sum() >= n - 2
    # Stuck cells do not respond: they move by read noise (1 %) only.
    stuck = g[:, ~working]
    assert (np.ptp(stuck, axis=0) / stuck.mean(axis=0) < 0.06).all()


def test_pulse_response_on_listed_cells(open_emulator: OpenBoard) -> None:
    board = open_emulator(16, 8)
    recorder = MemoryRecorder()
    result = measure_pulse_response(board, recorder, cells=[(5, 1), (2, 6), (2, 2)], n_pulses=2)
    assert recorder.datasets["pulse_response/cells"].tolist() == [[2, 2], [2, 6], [5, 1]]  # row-major
    assert recorder.datasets["pulse_response/g"].shape == (5, 3)
    assert result.g.shape == (5, 3)


# ---------------------------------------------------------------------------------- endurance


def test_endurance_stops_cells_whose_window_is_closed(open_emulator: OpenBoard) -> None:
    board = open_emulator(8, 8)
    array = truth(board)
    stuck = (array.stuck_low | array.stuck_high).ravel()
    assert stuck.any() and not stuck.all()
    recorder = MemoryRecorder()
    measure_endurance(board, recorder, max_cycles=40, read_every=10)
    cycle = recorder.datasets["endurance/cycle"]
    assert cycle.tolist() == [1, 10, 20, 30, 40]
    g_on, g_off = recorder.datasets["endurance/g_on"], recorder.datasets["endurance/g_off"]
    assert g_on.shape == g_off.shape == (5, 64)
    assert recorder.attrs["endurance/g_on"]["unit"] == "S"
    failed = recorder.datasets["endurance/failed_cycle"]
    # Stuck cells have no window: stopped at the first read, and recorded as NaN after it.
    assert (failed[stuck] == 1).all()
    assert (failed[~stuck] == -1).all()
    assert np.isnan(g_on[1:, stuck]).all() and np.isfinite(g_on[:, ~stuck]).all()
    assert (g_on[:, ~stuck] - g_off[:, ~stuck] > 50e-6).all()
    assert recorder.attrs["endurance"]["n_failed"] == stuck.sum()
    assert recorder.attrs["endurance"]["cycles_done"] == 40


def test_endurance_ends_when_every_cell_has_stopped(open_emulator: OpenBoard) -> None:
    board = open_emulator(8, 8)
    array = truth(board)
    stuck_cells = [(int(r), int(c)) for r, c in np.argwhere(array.stuck_low | array.stuck_high)]
    recorder = MemoryRecorder()
    before = commands(board)
    result = measure_endurance(board, recorder, cells=stuck_cells, max_cycles=1000)
    assert commands(board) - before == 4  # one cycle: SET, read, RESET, read
    assert recorder.attrs["endurance"]["cycles_done"] == 1
    assert (result.failed_cycle == 1).all()


# ---------------------------------------------------------------------------------- retention


def test_read_times_are_log_spaced() -> None:
    times = read_times(1.0, 1e4, 4)
    assert len(times) == 17 and times[0] == 1.0 and times[-1] == pytest.approx(1e4)
    assert np.allclose(np.diff(np.log10(times)), 0.25)


def test_retention_drift_follows_the_log_law(open_emulator: OpenBoard) -> None:
    board = open_emulator(32, 32)
    array = truth(board)
    recorder = MemoryRecorder()
    result = measure_retention(board, recorder, program="set", t_first=10.0, t_last=1e4, reads_per_point=16)
    time = recorder.datasets["retention/time"]
    assert time.shape == (13,)
    assert recorder.datasets["retention/g"].shape == (13, 1024)
    assert recorder.attrs["retention/time"]["unit"] == "s"
    assert recorder.attrs["retention/g"]["unit"] == "S"
    # Times come from the board's (simulated) clock and land on the log-spaced schedule.
    assert np.allclose(time, read_times(10.0, 1e4, 4), rtol=1e-3)

    # Stuck cells do not drift and are left out of the fit: the working cells drift by drift_mean
    # per e-fold of time on average.
    working = ~(array.stuck_low | array.stuck_high).ravel()
    assert result.working is not None and np.array_equal(result.working, working)
    slope = recorder.attrs["retention"]["drift_slope"]
    assert slope == result.drift_slope
    assert slope == pytest.approx(array.params.drift_mean, rel=0.15)
    assert result.figures["drift_mean"].value == pytest.approx(array.params.drift_mean, rel=0.15)
    mean = result.g[:, working].mean(axis=1)
    fitted = recorder.attrs["retention"]["drift_intercept"] + slope * np.log(time)
    residual = mean - fitted
    assert np.abs(residual).max() < 0.2 * abs(slope * np.log(time[-1] / time[0]))  # a straight line in ln t


def test_retention_without_programming_leaves_cells_alone(open_emulator: OpenBoard) -> None:
    board = open_emulator(8, 8, drift_mean=0, drift_spread=0)
    array = truth(board)
    g_before = array.conductance
    recorder = MemoryRecorder()
    measure_retention(board, recorder, t_first=1.0, t_last=10.0)
    assert np.array_equal(array.conductance, g_before)
    assert recorder.datasets["retention/time"][-1] == pytest.approx(10.0, rel=1e-3)


# ---------------------------------------------------------------------------------- read disturb


def test_read_disturb_at_read_voltage_is_small(open_emulator: OpenBoard) -> None:
    board = open_emulator(8, 8)
    recorder = MemoryRecorder()
    before = commands(board)
    result = measure_read_disturb(board, recorder, n_reads=2000, record_every=100)
    assert commands(board) - before == 2000  # one map read per read, nothing else
    assert recorder.datasets["read_disturb/reads"].tolist() == list(range(100, 2001, 100))
    assert recorder.datasets["read_disturb/g_mean"].shape == (20, 64)
    assert recorder.datasets["read_disturb/g_std"].shape == (20, 64)
    assert recorder.attrs["read_disturb/g_mean"]["unit"] == "S"
    attrs = recorder.attrs["read_disturb"]
    assert attrs["reads_done"] == 2000
    assert attrs["max_drift"] == result.max_drift
    assert float(attrs["max_relative_drift"]) < 0.01
    assert abs(float(attrs["mean_drift"])) < 0.5e-6
    # The spread within a block is the read noise (1 % of G).
    std = recorder.datasets["read_disturb/g_std"]
    g = recorder.datasets["read_disturb/g_mean"]
    assert np.median(std / g) == pytest.approx(0.01, rel=0.3)


def test_read_disturb_can_keep_every_read_and_a_partial_last_block(open_emulator: OpenBoard) -> None:
    board = open_emulator(8, 8)
    recorder = MemoryRecorder()
    measure_read_disturb(board, recorder, cells=[(0, 0), (3, 4)], n_reads=25, record_every=10, record_all=True)
    assert recorder.datasets["read_disturb/g"].shape == (25, 2)
    assert recorder.datasets["read_disturb/reads"].tolist() == [10, 20, 25]
    assert np.allclose(recorder.datasets["read_disturb/g_mean"][-1], recorder.datasets["read_disturb/g"][20:].mean(0))


# ---------------------------------------------------------------------------------- bad input


BAD_INPUT: list[tuple[str, dict[str, Any], type[Exception]]] = [
    ("yield-map", {"set_amplitude": 9.0}, LimitError),
    ("yield-map", {"reset_gate": 6.0}, LimitError),
    ("yield-map", {"v_read": 0.6}, LimitError),
    ("yield-map", {"v_read": 0.0}, ValueError),
    ("yield-map", {"row0": 16}, LimitError),
    ("yield-map", {"nrows": 17}, LimitError),
    ("yield-map", {"g_stuck_low_max": 1e-3}, ValidationError),
    ("yield-map", {"colour": "red"}, ValidationError),
    ("iv-sweep", {"cells": [(0, 0), (16, 0)]}, LimitError),
    ("iv-sweep", {"v_reset_max": 4.5}, LimitError),
    ("iv-sweep", {"width": 1.0}, LimitError),
    ("gate-calibration", {"v_gate_max": 6.0}, LimitError),
    ("pulse-response", {"cells": [(0, 0), (3, 8)]}, LimitError),
    ("pulse-response", {"prepare_amplitude": 5.0}, LimitError),
    ("pulse-response", {"n_pulses": 0}, ValidationError),
    ("endurance", {"reset_amplitude": 4.5}, LimitError),
    ("endurance", {"v_read": -0.7}, LimitError),
    ("retention", {"program": "set", "set_gate": -1.0}, LimitError),
    ("retention", {"t_first": 100.0, "t_last": 10.0}, ValidationError),
    ("retention", {"program": "form"}, ValidationError),
    ("read-disturb", {"v_read": 0.51}, LimitError),
    ("read-disturb", {"ncols": 9}, LimitError),
]


@pytest.mark.parametrize(("name", "options", "error"), BAD_INPUT)
def test_bad_options_fail_before_anything_is_sent(
    open_emulator: OpenBoard, name: str, options: dict[str, Any], error: type[Exception]
) -> None:
    board = open_emulator()
    array = truth(board)
    measure, small = SMALL[name]
    before, g_before = commands(board), array.conductance
    recorder = MemoryRecorder()
    with pytest.raises(error):
        measure(board, recorder, **{**small, **options})
    assert commands(board) == before
    assert np.array_equal(array.conductance, g_before)
    assert recorder.datasets == {}


# ---------------------------------------------------------------------------------- Ctrl-C


class InterruptingRecorder(MemoryRecorder):
    """Raises KeyboardInterrupt from its ``calls``-th progress report, as Ctrl-C would."""

    def __init__(self, calls: int = 3) -> None:
        super().__init__()
        self.calls_left = calls

    def progress(self, advance: int = 0, total: int | None = None, **status: Attr) -> None:
        super().progress(advance, total, **status)
        self.calls_left -= 1
        if self.calls_left == 0:
            raise KeyboardInterrupt


# What must be in the recorder after the 3rd progress report, for each procedure.
KEPT: dict[str, dict[str, tuple[int, ...]]] = {
    "yield-map": {"yield/g_initial": (16, 8), "yield/g_set": (16, 8)},
    "iv-sweep": {"iv/current": (3, 153), "iv/sweep": (3, 3)},
    "gate-calibration": {"calibration/g": (2, 16, 8), "calibration/v_gate": (2,)},
    "pulse-response": {"pulse_response/g": (3, 32), "pulse_response/pulse": (3,)},
    "endurance": {"endurance/g_on": (1, 128), "endurance/cycle": (1,)},
    "retention": {"retention/g": (3, 128), "retention/time": (3,)},
    "read-disturb": {"read_disturb/g_mean": (3, 128), "read_disturb/reads": (3,)},
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_interrupt_keeps_what_was_recorded(open_emulator: OpenBoard, name: str) -> None:
    board = open_emulator()
    measure, small = SMALL[name]
    recorder = InterruptingRecorder(calls=3)
    with pytest.raises(KeyboardInterrupt):
        measure(board, recorder, **small)
    for dataset, shape in KEPT[name].items():
        assert recorder.datasets[dataset].shape == shape, dataset
    # The board is still usable (the caller idles it and closes the file).
    board.idle()
    assert board.read_map().shape == (16, 8)
