"""A network built from a :class:`NetworkSpec`: forward through a backend, backward on the host."""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from hil.nn.backend import FloatArray, MatmulBackend
from hil.nn.layers import Conv2D, Dense, Layer, build_layers
from hil.nn.spec import NetworkSpec

InitScheme = Literal["auto", "he", "glorot"]


class Network:
    """Layers of a spec; weights live in the backend (the array, or a dict for exact arithmetic)."""

    def __init__(self, spec: NetworkSpec) -> None:
        self.spec = spec
        self.layers: list[Layer] = build_layers(spec)
        self.weight_shapes: dict[str, tuple[int, int]] = spec.weight_shapes()
        self._input_shape = spec.canonical_input_shape()
        self._forward_done = False

    @property
    def weighted_layers(self) -> list[Layer]:
        """The layers with a weight matrix, in order."""
        return [layer for layer in self.layers if layer.name is not None]

    def init_weights(
        self, rng: np.random.Generator, scale: float = 1.0, scheme: InitScheme = "auto"
    ) -> dict[str, FloatArray]:
        """Uniform random weights by layer name.

        He uniform, limit ``scale * sqrt(6 / fan_in)``, for ReLU layers; Glorot uniform, limit
        ``scale * sqrt(6 / (fan_in + fan_out))``, for the others (linear, tanh, sigmoid, ConvLSTM)
        unless ``scheme`` picks one for all.
        """
        weights: dict[str, FloatArray] = {}
        for layer in self.weighted_layers:
            assert layer.name is not None
            he = scheme == "he" or (
                scheme == "auto" and isinstance(layer, Dense | Conv2D) and layer.activation == "relu"
            )
            limit = scale * np.sqrt(6.0 / (layer.fan_in if he else layer.fan_in + layer.fan_out))
            weights[layer.name] = rng.uniform(-limit, limit, size=(layer.fan_in, layer.fan_out))
        return weights

    def check_weights(self, weights: dict[str, FloatArray]) -> None:
        """Raise ValueError unless ``weights`` has exactly this network's names and shapes."""
        problems = [f"missing {name!r}" for name in self.weight_shapes if name not in weights]
        problems += [f"unknown {name!r}" for name in weights if name not in self.weight_shapes]
        problems += [
            f"{name!r} has shape {np.shape(w)}, expected {self.weight_shapes[name]}"
            for name, w in weights.items()
            if name in self.weight_shapes and np.shape(w) != self.weight_shapes[name]
        ]
        if problems:
            raise ValueError("weights do not fit the network: " + "; ".join(problems))

    def _canonical_input(self, x: npt.ArrayLike) -> FloatArray:
        """(n, *input_shape), with or without a single channel axis -> (n, *canonical shape)."""
        arr = np.asarray(x, dtype=np.float64)
        declared = tuple(self.spec.input_shape)
        if arr.ndim >= 1 and arr.shape[1:] in (declared, self._input_shape):
            return arr.reshape(arr.shape[0], *self._input_shape)
        raise ValueError(
            f"input of shape {arr.shape} does not fit the network: expected (n, {', '.join(map(str, declared))})"
        )

    def forward(self, x: npt.ArrayLike, backend: MatmulBackend, train: bool = True) -> FloatArray:
        """Logits (n, n_classes); with ``train`` every layer keeps what :meth:`backward` needs."""
        out = self._canonical_input(x)
        for layer in self.layers:
            out = layer.forward(out, backend, train)
        self._forward_done = train
        return out

    def backward(self, dlogits: FloatArray, backend: MatmulBackend) -> dict[str, FloatArray]:
        """Gradients dL/dW (fan_in, fan_out) by layer name, for the batch of the last training forward.

        Products with the weights use ``backend.weights()``: on a chip, the conductances read back.
        """
        if not self._forward_done:
            raise RuntimeError("backward needs a forward(train=True) on the same batch first")
        grads: dict[str, FloatArray] = {}
        d = np.asarray(dlogits, dtype=np.float64)
        for position in reversed(range(len(self.layers))):
            layer = self.layers[position]
            dx, dw = layer.backward(d, backend, need_dx=position > 0)  # nothing needs dL/d(input)
            if dw is not None:
                assert layer.name is not None
                grads[layer.name] = dw
            if dx is not None:
                d = dx
        return {name: grads[name] for name in self.weight_shapes}  # layer order

    def predict(self, x: npt.ArrayLike, backend: MatmulBackend) -> npt.NDArray[np.intp]:
        """Class index per sample."""
        return np.asarray(np.argmax(self.forward(x, backend, train=False), axis=1), dtype=np.intp)
