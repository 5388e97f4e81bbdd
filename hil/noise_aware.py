"""Software training that expects the array's errors (noise-aware pre-training for a transfer).

A network trained in exact arithmetic settles where small weight errors can cost a lot; written
on an array, each weight lands a few uS off (write noise, wire drop left after correction) and a
few percent of the pairs hold nothing (a defective device: the host prunes the pair to 0). Trained
with those errors drawn afresh on every forward pass (weights perturbed by Gaussian noise and a
random fraction dropped to 0), the network learns weights whose answers survive them, which is
what hardware-aware training does in Yao-like works (Joshi 2020, IBM aihwkit's ``noise``
training). The update is applied to the clean weights (the gradient is taken at the perturbed
ones); evaluations use the clean weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import numpy.typing as npt
from pydantic import ConfigDict, Field

from drivers.config_model import ConfigModel
from hil.nn.backend import MatmulBackend
from hil.training.loop import ExactLearner

FloatArray = npt.NDArray[np.float64]


class WeightNoise(ConfigModel):
    """The weight errors a noise-aware software training draws on every forward pass."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    sigma: float = Field(0.0, ge=0, le=10, description="Gaussian weight noise, in weight units (0: off)")
    drop: float = Field(0.0, ge=0, lt=1, description="fraction of weights set to 0 on each pass (defective pairs)")

    @property
    def active(self) -> bool:
        return self.sigma > 0 or self.drop > 0


class NoisyWeights:
    """Exact products with weights perturbed afresh on each forward product of a layer; the backward
    pass sees the same perturbed weights. Inside :meth:`evaluation`, the clean weights."""

    def __init__(self, weights: dict[str, FloatArray], noise: WeightNoise, rng: np.random.Generator) -> None:
        self.clean = weights
        self.noise = noise
        self.rng = rng
        self._drawn: dict[str, FloatArray] = {}
        self._evaluating = False

    def _draw(self, layer: str) -> FloatArray:
        w = self.clean[layer]
        noisy = w + self.noise.sigma * self.rng.standard_normal(w.shape) if self.noise.sigma > 0 else w
        if self.noise.drop > 0:
            noisy = np.where(self.rng.random(w.shape) < self.noise.drop, 0.0, noisy)
        return noisy

    def matmul(self, layer: str, x: FloatArray) -> FloatArray:
        if self._evaluating:
            return np.asarray(x @ self.clean[layer], dtype=np.float64)
        self._drawn[layer] = self._draw(layer)
        return np.asarray(x @ self._drawn[layer], dtype=np.float64)

    def weights(self, layer: str) -> FloatArray:
        return self._drawn.get(layer, self.clean[layer])

    @contextmanager
    def evaluation(self) -> Iterator[None]:
        """Products with the clean weights (what the software network is judged on)."""
        self._evaluating = True
        try:
            yield
        finally:
            self._evaluating = False


class NoisyLearner(ExactLearner):
    """An :class:`~hil.training.loop.ExactLearner` whose forward passes see perturbed weights."""

    def __init__(
        self, weights: dict[str, FloatArray], noise: WeightNoise, seed: int, clip: float | None = None
    ) -> None:
        super().__init__(weights, clip=clip)
        self._noisy = NoisyWeights(weights, noise, np.random.default_rng([seed, 0x5EED]))

    @property
    def backend(self) -> MatmulBackend:
        return self._noisy
