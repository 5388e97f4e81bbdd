"""Weights trained elsewhere, as a ``.npz`` file: the layout ``hil deploy`` and ``initial_weights`` read.

One array per weighted layer, stored under the layer's name (``conv1``, ``conv2``, ``dense1``, ...,
numbered per kind in the network's order, as ``hil.nn`` names them), of shape ``(fan_in, fan_out)``
in weight units (one unit is ``g_unit`` of conductance difference, 100 uS by default):

- dense: ``(inputs, outputs)``, as ``x @ W`` (a PyTorch ``Linear.weight`` transposed; a Keras
  ``Dense`` kernel as it is);
- convolution: ``(kh * kw * channels, kernels)`` with rows ordered ``(kh, kw, channel)``, as a Keras
  ``Conv2D`` kernel ``(kh, kw, C, K)`` reshaped to ``(-1, K)`` (a PyTorch ``Conv2d.weight``
  ``(K, C, kh, kw)`` permuted to ``(kh, kw, C, K)`` first);
- flattening is channels-last ``(H, W, C)``, as Keras does (a PyTorch network that flattens
  ``(C, H, W)`` needs its dense rows reordered; docs/training.md shows how).

No biases: the seed papers' networks have none.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from hil.config import ConfigError
from hil.nn import ConvLSTMSpec, ConvSpec, DenseSpec, Network
from hil.nn.backend import FloatArray


def read_weights(path: str | Path, network: Network) -> dict[str, FloatArray]:
    """The weights in ``path`` for ``network``; a file that does not fit is one error naming the layer."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: np.asarray(archive[name]) for name in archive.files}
    except FileNotFoundError:
        raise ConfigError(f"weights file {path} does not exist") from None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"weights file {path} is not a .npz of arrays ({exc})") from None
    problems = [f"missing {name!r} {shape}" for name, shape in network.weight_shapes.items() if name not in arrays]
    problems += [f"unknown array {name!r} (the network's layers: {', '.join(network.weight_shapes)})"
                 for name in arrays if name not in network.weight_shapes]  # fmt: skip
    for name, array in arrays.items():
        expected = network.weight_shapes.get(name)
        if expected is None:
            continue
        if array.shape != expected:
            problems.append(f"{name!r} has shape {array.shape}, the network needs {expected} (fan_in, fan_out)")
        elif not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
            problems.append(f"{name!r} holds {array.dtype}, not real numbers")
        elif not np.isfinite(array).all():
            problems.append(f"{name!r} holds {int((~np.isfinite(array)).sum())} non-finite values")
    if problems:
        raise ConfigError(f"weights file {path} does not fit the network: {'; '.join(problems)}")
    return {name: arrays[name].astype(np.float64) for name in network.weight_shapes}


def scale_invariant(network: Network) -> bool:
    """Whether scaling any layer's weights by a positive factor leaves the class the network picks
    unchanged: no biases (none here), and only ReLU or linear activations between max-pools and
    flattening (a ConvLSTM's sigmoids and tanhs, or a tanh layer, are not)."""
    for layer in network.spec.layers:
        if isinstance(layer, ConvLSTMSpec):
            return False
        if isinstance(layer, DenseSpec | ConvSpec) and layer.activation not in ("relu", "linear"):
            return False
    return True


def fit_weights(
    weights: dict[str, FloatArray], network: Network, limit: float
) -> tuple[dict[str, FloatArray], dict[str, float]]:
    """Each layer scaled so its largest |w| is ``limit`` (what a device pair holds), when that leaves the
    network's answers unchanged (:func:`scale_invariant`); the weights unchanged otherwise. Filling the
    window also puts the weights as far above the write noise as the devices allow. The scale per layer."""
    if not scale_invariant(network):
        return weights, {layer: 1.0 for layer in weights}
    scales = {layer: limit / float(np.abs(w).max()) if np.abs(w).max() > 0 else 1.0 for layer, w in weights.items()}
    return {layer: w * scales[layer] for layer, w in weights.items()}, scales


def write_weights(path: str | Path, weights: dict[str, FloatArray]) -> Path:
    """Write ``weights`` in the layout :func:`read_weights` reads."""
    path = Path(path)
    arrays: dict[str, Any] = {name: np.asarray(w, dtype=np.float64) for name, w in weights.items()}
    np.savez(path, **arrays)
    return path
