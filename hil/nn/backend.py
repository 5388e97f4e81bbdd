"""Where a layer's weight product is computed: the array (a hardware backend) or exact arithmetic.

The network never multiplies by its own weights. Every weighted layer asks a backend for
``x @ W[layer]`` (one call per layer per batch; one per time step for a ConvLSTM) and, in the
backward pass, for the effective weights to propagate gradients with. On a chip those are the
conductances read back after the last update, so training adapts to what the hardware did.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


@runtime_checkable
class MatmulBackend(Protocol):
    """Computes the weight products of named layers."""

    def matmul(self, layer: str, x: FloatArray) -> FloatArray:
        """x (n, fan_in) -> (n, fan_out): x @ W[layer] as the hardware (or exact arithmetic) computes it."""
        ...

    def weights(self, layer: str) -> FloatArray:
        """(fan_in, fan_out): the effective weights for the backward pass (on hardware: the conductances read back)."""
        ...


@runtime_checkable
class EvaluationAware(Protocol):
    """A backend that learns from the products it computes (a hardware backend's column gains)
    and must not learn from an evaluation: what training does may not depend on when it is
    evaluated."""

    def evaluation(self) -> AbstractContextManager[None]:
        """While inside, products are computed as usual but leave no trace in the backend."""
        ...


class ExactBackend:
    """Plain float arithmetic on a dict of weight matrices: the software baseline and the tests.

    The dict is kept by reference, so a training loop that updates its arrays (or replaces entries)
    is seen by the next call.
    """

    def __init__(self, weights: dict[str, FloatArray]) -> None:
        self.weights_by_layer = weights

    def _get(self, layer: str) -> FloatArray:
        try:
            return self.weights_by_layer[layer]
        except KeyError:
            known = ", ".join(self.weights_by_layer) or "none"
            raise KeyError(f"no weights for layer {layer!r} (known: {known})") from None

    def matmul(self, layer: str, x: FloatArray) -> FloatArray:
        """x @ W[layer] in float arithmetic."""
        w = self._get(layer)
        if x.ndim != 2 or x.shape[1] != w.shape[0]:
            raise ValueError(f"layer {layer!r}: input of shape {x.shape} does not fit weights of shape {w.shape}")
        return np.asarray(x @ w, dtype=np.float64)

    def weights(self, layer: str) -> FloatArray:
        """The weight matrix itself."""
        return self._get(layer)
