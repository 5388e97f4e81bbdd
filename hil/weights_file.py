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

ZIP_MAGIC = b"PK"  # a local file header (PK 3 4), or an empty zip's end record (PK 5 6)
NPY_MAGIC = b"\x93NUMPY"


def _member_header(archive: zipfile.ZipFile, member: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """The shape and dtype of one ``.npy`` member, read from its header (no data read)."""
    with archive.open(member) as stream:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
    return shape, dtype


def read_weights(path: str | Path, network: Network) -> dict[str, FloatArray]:
    """The weights in ``path`` for ``network``; a file that does not fit is one error naming the layer.

    Each array's shape and type are checked from its header before its data is read, so an
    unknown or oversized array in the file costs nothing; a single ``.npy`` array, or a file
    that is no zip at all, is named as what it is.
    """
    path = Path(path)
    try:
        with path.open("rb") as head:
            magic = head.read(len(NPY_MAGIC))
    except FileNotFoundError:
        raise ConfigError(f"weights file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"weights file {path} cannot be read ({exc.strerror or exc})") from None
    if magic.startswith(NPY_MAGIC):
        named = ", ".join(f"{n}=..." for n in network.weight_shapes)
        raise ConfigError(f"weights file {path} is one .npy array, not a .npz of named arrays: save one array "
                          f"per layer, np.savez(path, {named})")  # fmt: skip
    if not magic.startswith(ZIP_MAGIC):
        raise ConfigError(f"weights file {path} is not a .npz (a zip of .npy arrays, as np.savez writes): "
                          f"it starts with {magic[:4]!r}")  # fmt: skip
    problems: list[str] = []
    arrays: dict[str, FloatArray] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            members = {m.removesuffix(".npy"): m for m in archive.namelist()}
            problems += [f"missing {name!r} {shape}" for name, shape in network.weight_shapes.items()
                         if name not in members]  # fmt: skip
            problems += [f"unknown array {name!r} (the network's layers: {', '.join(network.weight_shapes)})"
                         for name in members if name not in network.weight_shapes]  # fmt: skip
            for name, expected in network.weight_shapes.items():
                if name not in members:
                    continue
                shape, dtype = _member_header(archive, members[name])
                if shape != expected:
                    problems.append(f"{name!r} has shape {shape}, the network needs {expected} (fan_in, fan_out)")
                elif not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
                    problems.append(f"{name!r} holds {dtype}, not real numbers")
                else:
                    with archive.open(members[name]) as stream:
                        array = np.lib.format.read_array(stream, allow_pickle=False)
                    with np.errstate(over="ignore"):  # a long double past 1.8e308 is inf as float64
                        values = np.asarray(array, dtype=np.float64)
                    if not np.isfinite(values).all():
                        problems.append(f"{name!r} holds {int((~np.isfinite(values)).sum())} non-finite values"
                                        " (as float64)")  # fmt: skip
                    arrays[name] = values
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"weights file {path} is not a .npz of arrays ({exc})") from None
    if problems:
        raise ConfigError(f"weights file {path} does not fit the network: {'; '.join(problems)}")
    return arrays


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
    for layer, scale in scales.items():
        if not np.isfinite(scale * float(np.abs(weights[layer]).max())):
            # |w| of 1e-320 (subnormal): limit / |w| overflows, and inf weights reached the placement
            # after the calibration's pulses.
            raise ConfigError(f"initial_weights: {layer!r} holds |w| up to {float(np.abs(weights[layer]).max()):.4g}, "
                              f"too small to scale to {limit:.4g} in float64; scale the weights up, or write "
                              "them as they are (hil deploy --no-fit); nothing was sent")  # fmt: skip
    return {layer: w * scales[layer] for layer, w in weights.items()}, scales


def write_weights(path: str | Path, weights: dict[str, FloatArray]) -> Path:
    """Write ``weights`` in the layout :func:`read_weights` reads."""
    path = Path(path)
    arrays: dict[str, Any] = {name: np.asarray(w, dtype=np.float64) for name, w in weights.items()}
    np.savez(path, **arrays)
    return path
