"""A shorted device that read noise makes look responsive is still taken for shorted, and the
initial programming never asks a device for more than a cell may hold (regression: a twin with
16 uS write noise stopped with ``g_target[84, 49] = 1.24 mS is outside [0, 1.2 mS]``)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest

from drivers import Board, open_board
from hil.array_backend import ArrayBackend
from hil.mapping import auto_place, resolve_placement
from hil.training.config import TrainConfig
from hil.training.run import Hardware, program_weights, split_defects
from hil.updates import GateCodedConfig, GateCodedUpdate
from protocols.calibration import GateCalibration, fit_lines

FloatArray = npt.NDArray[np.float64]
IDEAL_16x8 = "emulator://?preset=ideal&seed=1&rows=16&cols=8&line_resistance=0&read_noise=0"
GATES = np.linspace(0.6, 2.5, 6)
SHORTED = (3, 2)


def calibration_with_a_noisy_short(shape: tuple[int, int]) -> GateCalibration:
    """Working cells on G = 100 uS/V v + 120 uS; one shorted cell at about 1.24 mS whose reads
    rise by read noise alone, enough for a slope that passes the responsiveness test."""
    g = 100e-6 * GATES[:, None, None] + 120e-6 + np.zeros((GATES.size, *shape))
    g[:, SHORTED[0], SHORTED[1]] = 1.22e-3 + np.array([0.0, 5e-6, 0.0, 20e-6, 30e-6, 40e-6])
    k, c, residual = fit_lines(GATES, g)
    return GateCalibration(k=k, c=c, residual=residual, v_gate_window=(float(GATES[0]), float(GATES[-1])),
                           mask=np.ones(shape, dtype=bool), v_gates=GATES, g_measured=g)  # fmt: skip


def test_a_shorted_device_with_a_noise_slope_is_stuck_high() -> None:
    calibration = calibration_with_a_noisy_short((16, 8))
    assert calibration.responsive[SHORTED]  # the case at issue: its slope passes for a response
    stuck_low, stuck_high = split_defects(calibration)
    assert stuck_high[SHORTED] and stuck_high.sum() == 1
    assert not stuck_low.any()


@pytest.fixture
def board() -> Iterator[Board]:
    with open_board(IDEAL_16x8) as opened:
        yield opened


def test_initial_programming_holds_targets_to_the_cell_limit(board: Board) -> None:
    # The calibration's fit at the short says it reaches 1.2 mS and more; the programming must
    # ask it for no more than the board's cell limit (before the fix: LimitError, nothing written).
    shapes = {"a": (4, 3)}
    boards = {"board0": board.shape}
    placement = resolve_placement(auto_place(shapes, boards), shapes, boards)
    backend = ArrayBackend({"board0": board}, placement)
    calibration = calibration_with_a_noisy_short(board.shape)
    assert calibration.reach()[0][SHORTED] > board.limits.g_cell_max
    assert placement.used_mask("board0")[SHORTED]
    hardware = Hardware(backend, GateCodedUpdate(GateCodedConfig()), {"board0": calibration})
    pulses = program_weights(TrainConfig(), hardware, {"a": np.full((4, 3), 0.3)}, tolerance=4e-6)
    assert pulses > 0
    assert backend.conductance["board0"].max() <= board.limits.g_cell_max
