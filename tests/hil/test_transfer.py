"""Ex-situ transfer: what a VMM computes (VMM read-back), parking unused devices, correcting the
written weights on the effective ones, quantization."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest

from drivers import Board, open_board
from hil.array_backend import ArrayBackend
from hil.mapping import auto_place, resolve_placement
from hil.training.config import TrainConfig
from hil.training.run import Hardware, conductance_targets
from hil.transfer import TransferReport, park_unused, quantize, refine, write_targets
from hil.updates import GateCodedConfig, GateCodedUpdate
from protocols.calibration import calibrate_gate

FloatArray = npt.NDArray[np.float64]
# Thick wires on a small array: a VMM sees clearly less than the cells read one at a time.
WIRED = "emulator://?preset=ideal&seed=2&rows=32&cols=16&line_resistance=4&read_noise=0"
SHAPES = {"w": (12, 5)}


@pytest.fixture
def board() -> Iterator[Board]:
    with open_board(WIRED) as opened:
        yield opened


def backend_for(board: Board, vmm_readback: bool) -> ArrayBackend:
    shapes = {"board0": board.shape}
    placement = resolve_placement(auto_place(SHAPES, shapes), SHAPES, shapes)
    return ArrayBackend({"board0": board}, placement, column_gain=False, vmm_readback=vmm_readback)


def wanted() -> dict[str, FloatArray]:
    return {"w": np.random.default_rng(0).uniform(-0.6, 0.6, SHAPES["w"])}


def written(backend: ArrayBackend, tolerance: float = 2e-6) -> dict[str, tuple[FloatArray, npt.NDArray[np.bool_]]]:
    hardware = Hardware(backend, GateCodedUpdate(GateCodedConfig()), {})
    targets = conductance_targets(TrainConfig(), hardware, wanted())
    write_targets(backend, targets, {}, tolerance)
    backend.read_back()
    return targets


def vmm_error(backend: ArrayBackend) -> float:
    """Largest difference between the VMM's product and the product with the backend's weights,
    relative to the largest product."""
    x = np.random.default_rng(3).uniform(0, 1, (30, SHAPES["w"][0]))
    measured, expected = backend.matmul("w", x), x @ backend.weights("w")
    return float(np.abs(measured - expected).max() / np.abs(expected).max())


def test_the_vmm_read_back_gives_the_weights_the_vmm_computes(board: Board) -> None:
    mapped = backend_for(board, vmm_readback=False)
    written(mapped)
    assert vmm_error(mapped) > 0.05  # the wires: the map's weights are not what the VMM computes
    effective = backend_for(board, vmm_readback=True)
    effective.read_back()
    assert vmm_error(effective) < 0.01
    (tile,) = effective.placement.tiles["w"]
    assert (effective.attenuation(tile) < 0.97).all()  # each column sees less than its cells' difference


def test_refining_on_the_effective_weights_brings_them_to_the_wanted_ones(board: Board) -> None:
    backend = backend_for(board, vmm_readback=True)
    targets = written(backend)
    report = TransferReport()
    refine(backend, wanted(), targets, {}, 2e-6, rounds=2, report=report)
    first, last = report.weight_error_rms[0], report.weight_error_rms[-1]
    assert first > 0.05  # written to the map's targets, the VMM computes other weights
    assert last < first / 3 and last < 0.03
    assert report.pulses > 0
    assert np.sqrt(np.mean((backend.weights("w") - wanted()["w"]) ** 2)) == pytest.approx(last)


def test_parking_resets_only_the_working_devices_no_layer_uses(board: Board) -> None:
    backend = backend_for(board, vmm_readback=False)
    usable = np.ones(board.shape, dtype=bool)
    usable[:, 15] = False  # a line declared bad: never pulsed
    calibration = calibrate_gate(board, np.linspace(0.8, 2.2, 3), mask=usable)  # leaves every device SET high
    before = board.read_map()
    used = backend.placement.used_mask("board0")
    pulses = park_unused(backend, {"board0": calibration}, v_reset=1.8, v_gate_reset=5.0, width=1e-6)
    after = board.read_map()
    parked = usable & ~used & calibration.responsive
    assert pulses == int(parked.sum()) > 0
    assert (after[parked] < before[parked] - 50e-6).all()
    assert np.allclose(after[~parked], before[~parked], rtol=0.02)


def test_quantize_rounds_each_layer_to_its_levels() -> None:
    weights = {"a": np.array([[-0.8, -0.33, 0.0, 0.1, 0.8]]), "b": np.array([[0.0, 0.0]])}
    q = quantize(weights, 5)
    assert np.allclose(q["a"], [[-0.8, -0.4, 0.0, 0.0, 0.8]])
    assert np.array_equal(q["b"], weights["b"])
    assert 13 <= len(np.unique(quantize({"w": np.random.default_rng(0).normal(size=(40, 40))}, 15)["w"])) <= 15
    with pytest.raises(ValueError, match="at least 2"):
        quantize(weights, 1)
