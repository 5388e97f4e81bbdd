"""Characterize the emulated board as a technician would a chip, only through the Board API, and
compare what comes out with the device preset it was built from (issue 3's proof).

Every measurement here goes over the wire protocol (``open_board``); nothing reads the emulator's
true state. The procedures are plain functions so benchmarks/physics.py reports the same figures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest

from drivers import Board, open_board
from mock_hardware.device_params import preset

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

UMASS = preset("umass-ta-hfo2")
V_READ = 0.2
V_SET, V_RESET, V_GATE_RESET, WIDTH = 2.5, 1.8, 5.0, 1e-6
GATES = np.linspace(0.7, 1.6, 10)  # the MLP experiment's gate window
DAY = 86_400.0


def resource(seed: int, **fields: object) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"preset": "umass-ta-hfo2", "seed": seed, **fields}.items())
    return f"emulator://?{query}"


def reset_all(board: Board) -> None:
    board.apply_pulses("RESET", V_RESET, V_GATE_RESET, WIDTH)


def set_all(board: Board, v_gate: float | FloatArray) -> None:
    board.apply_pulses("SET", V_SET, v_gate, WIDTH)


def read_twice(board: Board) -> tuple[FloatArray, FloatArray]:
    """Two maps in a row: their mean, and half their difference (pure read noise)."""
    first, second = board.read_map(v_read=V_READ), board.read_map(v_read=V_READ)
    return (first + second) / 2, (first - second) / 2


def read_averaged(board: Board, reads: int) -> FloatArray:
    return np.asarray(np.mean([board.read_map(v_read=V_READ) for _ in range(reads)], axis=0))


# --- defects ---------------------------------------------------------------------------------


@dataclass
class YieldResult:
    stuck_low: BoolArray
    stuck_high: BoolArray

    @property
    def responsive(self) -> BoolArray:
        return np.asarray(~(self.stuck_low | self.stuck_high))


def classify_cells(board: Board) -> YieldResult:
    """Full RESET, read; SET at the top of the gate window, read: cells that did not move are stuck,
    low or high by where they sit."""
    reset_all(board)
    low = board.read_map(v_read=V_READ)
    set_all(board, GATES[-1])
    high = board.read_map(v_read=V_READ)
    stuck = (high - low) < 50e-6  # a healthy cell swings by well over 100 uS here
    middle = 500e-6
    return YieldResult(stuck & (high < middle), stuck & (high >= middle))


# --- gate-coded SET ----------------------------------------------------------------------------


@dataclass
class GateSweep:
    gates: FloatArray
    g: FloatArray  # (gates, rows, cols): mean of two reads after RESET + SET at each gate
    read_noise: FloatArray  # (gates, rows, cols): half the difference of the two reads
    responsive: BoolArray


def sweep_gates(board: Board, responsive: BoolArray) -> GateSweep:
    g, noise = [], []
    for v_gate in GATES:
        reset_all(board)
        set_all(board, float(v_gate))
        mean, half_diff = read_twice(board)
        g.append(mean)
        noise.append(half_diff)
    return GateSweep(GATES, np.array(g), np.array(noise), responsive)


def fit_array_line(sweep: GateSweep) -> tuple[float, float, float]:
    """Slope (S/V), intercept (S) and worst residual (S) of the array-mean G vs gate."""
    mean_g = sweep.g[:, sweep.responsive].mean(axis=1)
    slope, intercept = np.polyfit(sweep.gates, mean_g, 1)
    residual = mean_g - (slope * sweep.gates + intercept)
    return float(slope), float(intercept), float(np.abs(residual).max())


def slope_spread(sweep: GateSweep) -> float:
    """Device-to-device relative sigma of k: the spread of per-cell fitted slopes, less what the
    fits' own noise (write and read noise, from their residuals) adds to it."""
    g = sweep.g[:, sweep.responsive]  # (gates, cells)
    x = sweep.gates - sweep.gates.mean()
    sxx = float((x**2).sum())
    slopes = (x[:, None] * g).sum(axis=0) / sxx
    fitted = g.mean(axis=0) + slopes * x[:, None]
    residual_var = ((g - fitted) ** 2).sum(axis=0) / (len(x) - 2)
    true_var = slopes.var() - (residual_var / sxx).mean()
    return float(np.sqrt(true_var) / slopes.mean())


@dataclass
class WriteCycles:
    g: FloatArray  # (cycles, cells): mean of two reads after each RESET + SET
    read_noise: FloatArray  # (cycles, cells): half the difference of the two reads


def cycle_writes(board: Board, responsive: BoolArray, v_gate: float, cycles: int) -> WriteCycles:
    g, noise = [], []
    for _ in range(cycles):
        reset_all(board)
        set_all(board, v_gate)
        mean, half_diff = read_twice(board)
        g.append(mean[responsive])
        noise.append(half_diff[responsive])
    return WriteCycles(np.array(g), np.array(noise))


def write_noise(cycles: WriteCycles) -> float:
    """Cycle-to-cycle sigma of the programmed level, with the read noise taken out.

    The mean of two reads carries half the single-read variance, which equals the variance of
    half their difference.
    """
    total = cycles.g.var(axis=0, ddof=1).mean()
    reading = (cycles.read_noise**2).mean()
    return float(np.sqrt(total - reading))


def relative_read_noise(cycles: WriteCycles) -> float:
    # Half the difference of two reads has variance sigma_read^2 / 2.
    return float(np.sqrt(2 * ((cycles.read_noise / cycles.g) ** 2).mean()))


@dataclass
class Characterization:
    yields: YieldResult
    sweep: GateSweep
    cycles: WriteCycles


@pytest.fixture(scope="module")
def umass() -> Characterization:
    with open_board(resource(seed=1)) as board:
        assert board.shape == (UMASS.rows, UMASS.cols)
        yields = classify_cells(board)
        sweep = sweep_gates(board, yields.responsive)
        cycles = cycle_writes(board, yields.responsive, v_gate=1.2, cycles=12)
    return Characterization(yields, sweep, cycles)


def test_stuck_fractions_are_recovered_within_one_point(umass: Characterization) -> None:
    cells = UMASS.rows * UMASS.cols
    low = umass.yields.stuck_low.sum() / cells
    high = umass.yields.stuck_high.sum() / cells
    assert low == pytest.approx(UMASS.stuck_low_fraction, abs=0.01)
    assert high == pytest.approx(UMASS.stuck_high_fraction, abs=0.01)


def test_set_conductance_is_linear_in_gate_with_the_presets_slope_and_intercept(umass: Characterization) -> None:
    slope, intercept, worst_residual = fit_array_line(umass.sweep)
    assert slope == pytest.approx(UMASS.set_slope, rel=0.10)
    assert intercept == pytest.approx(UMASS.set_intercept, rel=0.10)
    assert worst_residual < 0.01 * intercept  # linear over the whole window


def test_device_to_device_spread_of_k_is_recovered(umass: Characterization) -> None:
    assert slope_spread(umass.sweep) == pytest.approx(UMASS.set_slope_spread, rel=0.20)


def test_write_noise_is_recovered(umass: Characterization) -> None:
    assert write_noise(umass.cycles) == pytest.approx(UMASS.write_noise, rel=0.20)


def test_read_noise_is_recovered(umass: Characterization) -> None:
    assert relative_read_noise(umass.cycles) == pytest.approx(UMASS.read_noise, rel=0.20)


# --- retention -------------------------------------------------------------------------------


@dataclass
class DriftRecord:
    elapsed: FloatArray  # s since programming
    mean_shift: FloatArray  # S, mean over responsive cells
    spread: FloatArray  # S, cell-to-cell sigma of the shift, read noise taken out


def measure_drift(board: Board, waits: list[float], reads: int = 8) -> DriftRecord:
    """Program every cell mid-window, then read (averaged) at growing times since programming."""
    yields = classify_cells(board)
    reset_all(board)
    set_all(board, 1.2)
    t_programmed = board.clock()
    maps = [np.array([board.read_map(v_read=V_READ) for _ in range(reads)])]
    elapsed = [board.clock() - t_programmed]
    for t in waits:
        board.idle_for(t - (board.clock() - t_programmed))
        elapsed.append(board.clock() - t_programmed)
        maps.append(np.array([board.read_map(v_read=V_READ) for _ in range(reads)]))
    cells = [m[:, yields.responsive] for m in maps]  # (reads, cells) each
    baseline = cells[0].mean(axis=0)
    # Read-noise variance of a mean of `reads` maps, per cell, from the scatter of the reads.
    noise_var = [c.var(axis=0, ddof=1).mean() / reads for c in cells]
    shifts = [c.mean(axis=0) - baseline for c in cells]
    spread = [np.sqrt(max(s.var() - noise_var[0] - v, 0.0)) for s, v in zip(shifts, noise_var, strict=True)]
    return DriftRecord(np.array(elapsed), np.array([s.mean() for s in shifts]), np.array(spread))


@pytest.fixture(scope="module")
def drift() -> DriftRecord:
    with open_board(resource(seed=2)) as board:
        return measure_drift(board, [10.0, 1e3, DAY])


def test_drift_follows_the_logarithmic_law(drift: DriftRecord) -> None:
    log_time = np.log1p(drift.elapsed[1:] / UMASS.drift_time_constant)
    slope, intercept = np.polyfit(log_time, drift.mean_shift[1:], 1)
    assert slope == pytest.approx(UMASS.drift_mean, rel=0.20)
    # A straight line in log time through (nearly) zero: no residual beyond measurement noise.
    assert abs(intercept) < 0.1e-6
    assert np.abs(drift.mean_shift[1:] - slope * log_time - intercept).max() < 0.05e-6


def test_drift_spread_grows_to_about_one_microsiemens_after_a_day(drift: DriftRecord) -> None:
    assert drift.spread[-1] == pytest.approx(1e-6, rel=0.25)
    assert drift.spread[1] < drift.spread[2] < drift.spread[3]


# --- read disturb ----------------------------------------------------------------------------


def test_ten_thousand_reads_at_0p2_volts_do_not_move_the_conductance() -> None:
    row, col, reads = 5, 7, 10_000
    with open_board(resource(seed=3)) as board:
        reset_all(board)
        set_all(board, 1.2)
        before = read_averaged(board, 8)
        hammered = np.array([board.read_cell(row, col, v_read=V_READ) for _ in range(reads)])
        after = read_averaged(board, 8)
    sigma = UMASS.read_noise * hammered.mean()
    first, last = hammered[:2000].mean(), hammered[-2000:].mean()
    assert abs(last - first) < 4 * sigma * np.sqrt(2 / 2000)
    # The hammered cell changed no more than the cells nobody touched (drift and read noise only).
    change = after - before
    others = np.delete(change.ravel(), row * change.shape[1] + col)
    assert abs(change[row, col] - np.median(others)) < 4 * others.std()


# --- wire resistance -------------------------------------------------------------------------


def dense_column_currents(g: FloatArray, r_segment: float, v_rows: FloatArray) -> FloatArray:
    """Column currents of the whole array with every row driven and every column at virtual
    ground, by dense nodal analysis: row drivers at column 0, TIAs below the last row, one
    segment of ``r_segment`` between neighbouring cells and at each line's end."""
    rows, cols = g.shape
    n = rows * cols
    u = np.arange(n).reshape(rows, cols)
    w = u + n
    gw = 1.0 / r_segment
    k = np.zeros((2 * n, 2 * n))

    def link(a: npt.NDArray[np.int64], b: npt.NDArray[np.int64], c: FloatArray | float) -> None:
        c = np.broadcast_to(c, a.shape).ravel()
        a, b = a.ravel(), b.ravel()
        np.add.at(k, (a, a), c)
        np.add.at(k, (b, b), c)
        np.add.at(k, (a, b), -c)
        np.add.at(k, (b, a), -c)

    link(u[:, :-1], u[:, 1:], gw)
    link(w[:-1, :], w[1:, :], gw)
    link(u, w, g)
    k[u[:, 0], u[:, 0]] += gw
    k[w[-1, :], w[-1, :]] += gw
    rhs = np.zeros((2 * n, v_rows.shape[0]))
    rhs[u[:, 0], :] = gw * v_rows.T
    x = np.linalg.solve(k, rhs)
    return np.asarray(x[w[-1, :], :].T * gw)


@dataclass
class LineEffect:
    measured: FloatArray  # (n, cols) column currents from the board
    ideal: FloatArray  # (n, cols) V @ G from the measured map
    predicted: FloatArray  # (n, cols) dense solve of the network with those cells


def measure_line_effect(board: Board, r_segment: float, nvec: int = 400) -> LineEffect:
    """Program a spread of conductances, map them, run a VMM batch, and predict its currents with
    a dense solve of the row and column lines."""
    rows, cols = board.shape
    rng = np.random.default_rng(0)
    reset_all(board)
    set_all(board, rng.uniform(0.7, 2.5, (rows, cols)))
    g_read = read_averaged(board, 8)
    # A cell read alone sees one series path: col + 1 row segments, rows - row column segments.
    r_series = r_segment * ((np.arange(cols) + 1)[None, :] + (rows - np.arange(rows))[:, None])
    g_cells = g_read / (1 - g_read * r_series)
    # Binary 0 / 0.2 V inputs (bit-serial style) keep every driven cell at the read voltage,
    # where the I-V curve is ohmic, so what remains is the wires.
    v = np.where(rng.random((nvec, rows)) < 0.5, V_READ, 0.0)
    v[0] = V_READ
    measured = board.vmm(v)
    return LineEffect(measured, v @ g_cells, dense_column_currents(g_cells, r_segment, v))


def test_line_resistance_bends_column_currents_as_a_dense_solve_predicts() -> None:
    with open_board(resource(seed=4, rows=48, cols=24)) as board:
        effect = measure_line_effect(board, UMASS.line_resistance)
    measured_shift = (effect.measured - effect.ideal).mean(axis=0)
    predicted_shift = (effect.predicted - effect.ideal).mean(axis=0)
    assert np.all(predicted_shift < 0)  # wires only ever lose current here
    assert np.all(np.sign(measured_shift) == np.sign(predicted_shift))
    np.testing.assert_allclose(measured_shift, predicted_shift, rtol=0.10)
    # ... and the effect is large enough that this means something (several percent).
    assert np.all(-predicted_shift > 0.03 * effect.ideal.mean(axis=0))
