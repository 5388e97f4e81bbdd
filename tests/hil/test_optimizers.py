"""Optimizers: each one descends a quadratic, and its state survives a checkpoint round trip."""

from __future__ import annotations

from typing import get_args

import numpy as np
import numpy.typing as npt
import pytest
from pydantic import ValidationError

from hil.optimizers import Optimizer, OptimizerConfig, OptimizerName

FloatArray = npt.NDArray[np.float64]
NAMES: tuple[OptimizerName, ...] = get_args(OptimizerName)
# Learning rates at which each rule descends the quadratic below within 200 steps.
LR: dict[str, float] = {"sgd": 0.1, "momentum": 0.05, "rmsprop": 0.02, "adam": 0.05, "manhattan": 0.01}


class Quadratic:
    """``f(W) = sum_l 0.5 * sum(a_l * (W_l - T_l)**2)`` over two layers, curvatures 0.3 to 3."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.curvature = {"dense1": rng.uniform(0.3, 3.0, (5, 4)), "dense2": rng.uniform(0.3, 3.0, (4, 2))}
        self.target = {layer: rng.normal(size=a.shape) for layer, a in self.curvature.items()}

    def start(self) -> dict[str, FloatArray]:
        return {layer: np.zeros_like(t) for layer, t in self.target.items()}

    def loss(self, w: dict[str, FloatArray]) -> float:
        return sum(float(0.5 * (a * (w[layer] - self.target[layer]) ** 2).sum()) for layer, a in self.curvature.items())

    def grads(self, w: dict[str, FloatArray]) -> dict[str, FloatArray]:
        return {layer: a * (w[layer] - self.target[layer]) for layer, a in self.curvature.items()}


def descend(optimizer: Optimizer, problem: Quadratic, w: dict[str, FloatArray], steps: int) -> list[float]:
    losses = [problem.loss(w)]
    for _ in range(steps):
        for layer, d in optimizer.step(problem.grads(w)).items():
            w[layer] += d
        losses.append(problem.loss(w))
    return losses


@pytest.mark.parametrize("name", NAMES)
def test_each_optimizer_descends_a_quadratic(name: OptimizerName) -> None:
    problem = Quadratic()
    optimizer = Optimizer(OptimizerConfig(name=name, lr=LR[name]))
    losses = descend(optimizer, problem, problem.start(), 200)
    assert losses[-1] < 0.05 * losses[0]
    assert losses[10] < losses[0]
    assert optimizer.steps == 200


def test_the_first_steps_follow_each_rule() -> None:
    g = {"w": np.array([[2.0, -0.5]])}
    assert np.allclose(Optimizer(OptimizerConfig(name="sgd", lr=0.1)).step(g)["w"], [[-0.2, 0.05]])
    assert np.allclose(Optimizer(OptimizerConfig(name="manhattan", lr=0.1)).step(g)["w"], [[-0.1, 0.1]])
    # Adam's bias-corrected first step has magnitude lr whatever the gradient's size.
    assert np.allclose(Optimizer(OptimizerConfig(name="adam", lr=0.1)).step(g)["w"], [[-0.1, 0.1]])
    momentum = Optimizer(OptimizerConfig(name="momentum", lr=0.1, momentum=0.5))
    momentum.step(g)
    assert np.allclose(momentum.step(g)["w"], [[-0.3, 0.075]])  # v = 0.5 * v - lr g, twice
    rmsprop = Optimizer(OptimizerConfig(name="rmsprop", lr=0.1, rho=0.75))
    assert np.allclose(rmsprop.step(g)["w"], [[-0.2, 0.2]], rtol=1e-6)  # g / sqrt(0.25 g^2)


def test_momentum_and_adaptive_rates_beat_plain_sgd_on_an_ill_conditioned_quadratic() -> None:
    """Yan 2020's point, at one learning rate: 100 steps of sgd leave the flat direction far from done."""
    curvature = {"w": np.array([[1.0, 0.01]])}
    target = {"w": np.array([[1.0, 1.0]])}

    def final_loss(name: OptimizerName) -> float:
        optimizer = Optimizer(OptimizerConfig(name=name, lr=0.5))
        w = {"w": np.zeros((1, 2))}
        for _ in range(100):
            w["w"] += optimizer.step({"w": curvature["w"] * (w["w"] - target["w"])})["w"]
        return float(0.5 * (curvature["w"] * (w["w"] - target["w"]) ** 2).sum())

    sgd = final_loss("sgd")
    assert final_loss("momentum") < 0.1 * sgd
    assert final_loss("adam") < 0.1 * sgd


@pytest.mark.parametrize("name", NAMES)
def test_state_round_trip_gives_identical_next_steps(name: OptimizerName) -> None:
    problem = Quadratic(seed=1)
    config = OptimizerConfig(name=name, lr=LR[name])
    original = Optimizer(config)
    w = problem.start()
    descend(original, problem, w, 7)

    restored = Optimizer(config)
    restored.load_state_arrays({k: np.array(v) for k, v in original.state_arrays().items()})
    assert restored.steps == 7
    w_restored = {layer: v.copy() for layer, v in w.items()}
    for _ in range(5):
        expected = original.step(problem.grads(w))
        got = restored.step(problem.grads(w_restored))
        assert expected.keys() == got.keys()
        for layer in expected:
            assert np.array_equal(got[layer], expected[layer])
            w[layer] += expected[layer]
            w_restored[layer] += got[layer]


def test_a_fresh_optimizer_differs_from_a_restored_one() -> None:
    """The round trip carries real state: without it Adam's and RMSprop's next step are different."""
    problem = Quadratic(seed=2)
    for name in ("momentum", "rmsprop", "adam"):
        config = OptimizerConfig(name=name, lr=0.05)
        trained = Optimizer(config)
        w = problem.start()
        descend(trained, problem, w, 5)
        g = problem.grads(w)
        restored = Optimizer(config)
        restored.load_state_arrays(trained.state_arrays())
        fresh = Optimizer(config).step(g)["dense1"]
        assert not np.allclose(restored.step(g)["dense1"], fresh), name


def test_state_arrays_are_plain_named_arrays() -> None:
    optimizer = Optimizer(OptimizerConfig(name="adam", lr=0.01))
    optimizer.step({"dense1": np.ones((2, 3)), "dense2": np.ones((3, 1))})
    state = optimizer.state_arrays()
    assert set(state) == {"steps", "m/dense1", "v/dense1", "m/dense2", "v/dense2"}
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float64 for v in state.values())
    assert float(state["steps"]) == 1.0


def test_a_checkpoint_in_memory_is_not_changed_by_later_steps() -> None:
    problem = Quadratic(seed=3)
    optimizer = Optimizer(OptimizerConfig(name="momentum", lr=0.05))
    w = problem.start()
    descend(optimizer, problem, w, 3)
    checkpoint = optimizer.state_arrays()
    saved = {k: v.copy() for k, v in checkpoint.items()}
    descend(optimizer, problem, w, 1)
    for key, value in saved.items():
        assert np.array_equal(checkpoint[key], value), key


def test_unknown_optimizer_and_bad_rates_are_refused() -> None:
    with pytest.raises(ValidationError, match="name"):
        OptimizerConfig.model_validate({"name": "lion"})
    with pytest.raises(ValidationError, match="lr"):
        OptimizerConfig(lr=0.0)
    with pytest.raises(ValidationError, match="momentum"):
        OptimizerConfig(momentum=1.0)


def test_the_registry_holds_every_optimizer_the_config_accepts() -> None:
    from hil.optimizers import OPTIMIZER_RULES, OptimizerRule

    assert set(OPTIMIZER_RULES) == set(NAMES)
    for name in NAMES:
        optimizer = Optimizer(OptimizerConfig(name=name))
        assert isinstance(optimizer.rule, OPTIMIZER_RULES[name]) and isinstance(optimizer.rule, OptimizerRule)
        optimizer.step({"w": np.ones((2, 2))})
        # a rule's declared slots are exactly the state it keeps (so a checkpoint holds all of it)
        assert sorted(optimizer.state) == sorted(f"{slot}/w" for slot in optimizer.rule.slots)
