"""In-situ learning speed: an update moves the weights the VMM computes by what the optimizer asked.

On a board with wire resistance a column's VMM sees only part of its pairs' conductance difference,
less far from the drivers and the TIA. Updates computed on the read map's weights then move the
weights the forward pass uses by less than asked, and unevenly: the in-situ CNN learned 4 to 6.5
points slower than float over its first 400 updates (docs/training.md, "Learning speed"). With
the VMM read-back the backward pass and the update's scale use the VMM's own weights.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from drivers import Board
from hil.nn.defaults import MODEL_DEFAULTS
from hil.training.config import TrainConfig
from hil.training.run import Hardware, conductance_targets, program_weights
from hil.transfer import write_targets
from hil.updates import GateCodedConfig, GateCodedUpdate
from tests.hil.test_transfer import SHAPES, backend_for, board  # the small board with thick wires

FloatArray = npt.NDArray[np.float64]
__all__ = ["board"]  # the fixture, shared with the transfer's tests


def vmm_weights(board: Board) -> FloatArray:
    """The weights the board's VMM computes now (a probe of one-hot inputs)."""
    probe = backend_for(board, vmm_readback=True)
    probe.read_back()
    return probe.weights("w").copy()


def moved_by_update(board: Board, vmm_readback: bool) -> tuple[FloatArray, FloatArray]:
    """Write weights, ask one gate-coded update; (asked change, change of the VMM's weights)."""
    backend = backend_for(board, vmm_readback)
    rule = GateCodedUpdate(GateCodedConfig())
    hardware = Hardware(backend, rule, {})
    rng = np.random.default_rng(0)
    targets = conductance_targets(TrainConfig(), hardware, {"w": rng.uniform(-0.5, 0.5, SHAPES["w"])})
    write_targets(backend, targets, {}, 2e-6)
    backend.read_back()
    rule.recall(backend)
    before = vmm_weights(board)
    asked = rng.choice([-0.3, 0.3], SHAPES["w"])
    rule.apply(backend, {"w": asked})
    return asked, vmm_weights(board) - before


def gain_of(asked: FloatArray, moved: FloatArray) -> float:
    """Least-squares factor between the change asked and the change the VMM computes."""
    return float((asked * moved).sum() / (asked * asked).sum())


def test_with_the_vmm_read_back_an_update_moves_the_vmms_weights_as_asked(board: Board) -> None:
    asked, moved = moved_by_update(board, vmm_readback=True)
    assert gain_of(asked, moved) == pytest.approx(1.0, abs=0.1)
    assert np.corrcoef(asked.ravel(), moved.ravel())[0, 1] > 0.95


def test_without_it_the_wires_take_part_of_every_step(board: Board) -> None:
    asked, moved = moved_by_update(board, vmm_readback=False)
    assert gain_of(asked, moved) < 0.9  # the check above fails on the read map's weights


def test_the_papers_cnn_and_yao_network_train_with_the_vmm_read_back_unless_told_otherwise() -> None:
    assert TrainConfig(model="cnn").uses_vmm_readback and TrainConfig(model="yao-hybrid").uses_vmm_readback
    assert not TrainConfig(model="cnn", vmm_readback=False).uses_vmm_readback
    for name, defaults in MODEL_DEFAULTS.items():
        assert TrainConfig(model=name).uses_vmm_readback == defaults.vmm_readback
        assert ("VMM read-back" in defaults.summary()) == defaults.vmm_readback


def initial_error(board: Board, refine_initial: bool) -> float:
    """Random initial weights programmed as a run does; rms error of the weights the VMM computes."""
    backend = backend_for(board, vmm_readback=True)
    init = {"w": np.random.default_rng(1).uniform(-0.5, 0.5, SHAPES["w"])}
    config = TrainConfig(transfer={"refine_initial": refine_initial})
    program_weights(config, Hardware(backend, GateCodedUpdate(GateCodedConfig()), {}), init, 2e-6)
    return float(np.sqrt(np.mean((vmm_weights(board) - init["w"]) ** 2)))


def test_refine_initial_starts_a_run_from_its_initial_weights_as_the_vmm_computes_them(board: Board) -> None:
    """Written to the read map's targets, the wires make the start another network (session 8: an
    effective error of 0.10 against initial weights of rms 0.18 on the MLP)."""
    assert initial_error(board, refine_initial=False) > 0.05
    assert initial_error(board, refine_initial=True) < 0.03


def test_the_mlp_corrects_its_initial_weights_on_the_vmm_unless_told_otherwise() -> None:
    for name, defaults in MODEL_DEFAULTS.items():
        assert TrainConfig(model=name).transfer.refine_initial == defaults.refine_initial
    assert TrainConfig(model="mlp").transfer.refine_initial and not TrainConfig(model="cnn").transfer.refine_initial
    assert not TrainConfig(model="mlp", transfer={"refine_initial": False}).transfer.refine_initial
    assert TrainConfig(model="mlp", transfer={"rounds": 3}).transfer.refine_initial  # field by field
    assert "initial weights corrected" in MODEL_DEFAULTS["mlp"].summary()
