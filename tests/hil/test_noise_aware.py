"""Noise-aware software training: perturbed weights in training passes, clean ones in evaluations."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from hil.noise_aware import NoisyLearner, NoisyWeights, WeightNoise
from hil.training.config import TrainConfig


def test_training_products_see_fresh_errors_and_the_backward_pass_the_same_ones() -> None:
    w = {"dense1": np.ones((4, 3))}
    noisy = NoisyWeights(w, WeightNoise(sigma=0.1, drop=0.25), np.random.default_rng(0))
    x = np.eye(4)
    first, second = noisy.matmul("dense1", x), noisy.matmul("dense1", x)
    assert not np.allclose(first, second)  # drawn afresh on every pass
    np.testing.assert_allclose(noisy.weights("dense1"), second)  # the backward pass: the last draw
    many = np.stack([noisy.matmul("dense1", x) for _ in range(400)])
    assert abs((many == 0).mean() - 0.25) < 0.03  # a quarter of the weights dropped
    kept = many[many != 0]
    assert abs(kept.std() - 0.1) < 0.01 and abs(kept.mean() - 1.0) < 0.01
    with noisy.evaluation():
        np.testing.assert_array_equal(noisy.matmul("dense1", x), w["dense1"])
    np.testing.assert_array_equal(w["dense1"], np.ones((4, 3)))  # the clean weights are untouched


def test_the_learner_updates_the_clean_weights() -> None:
    w = {"dense1": np.zeros((2, 2))}
    learner = NoisyLearner(w, WeightNoise(sigma=0.5), seed=1, clip=0.3)
    learner.backend.matmul("dense1", np.ones((1, 2)))
    learner.apply({"dense1": np.full((2, 2), 1.0)})
    np.testing.assert_array_equal(w["dense1"], np.full((2, 2), 0.3))  # clipped, no noise in it


def test_the_hybrid_config_takes_the_noise_and_refuses_a_bad_one() -> None:
    config = TrainConfig.model_validate({"model": "yao-hybrid", "hybrid": {"pretrain_noise": {"sigma": 0.05}}})
    assert config.hybrid.pretrain_noise.active and not TrainConfig().hybrid.pretrain_noise.active
    with pytest.raises(ValidationError, match="drop"):
        TrainConfig.model_validate({"hybrid": {"pretrain_noise": {"drop": 1.0}}})
