"""The seed papers' networks as specs, and a registry by the names ``hil train --model`` takes.

Weight counts (no biases): MLP 3,996; Wang 2019 CNN 1,015; Wang 2019 ConvLSTM 850; Yao 2020 CNN
2,856. ``docs/networks.md`` has the layer tables and how the Yao 2020 shapes were read.
"""

from __future__ import annotations

from collections.abc import Callable

from hil.nn.spec import ConvLSTMSpec, ConvSpec, DenseSpec, FlattenSpec, MaxPoolSpec, NetworkSpec


class UnknownArchitectureError(ValueError):
    """A model name that is not in the registry; the message lists the known names."""


def mlp_li2018() -> NetworkSpec:
    """Li 2018: 8x8 input flattened, 64-54-10, ReLU hidden layer; 3,996 weights."""
    return NetworkSpec(
        input_shape=(8, 8),
        layers=(FlattenSpec(), DenseSpec(out=54, activation="relu"), DenseSpec(out=10, activation="linear")),
        n_classes=10,
    )


def cnn_wang2019() -> NetworkSpec:
    """Wang 2019 CNN: conv 15@3x3 same ReLU, conv 4@2x2x15 same linear, maxpool 2, dense 64->10; 1,015 weights."""
    return NetworkSpec(
        input_shape=(8, 8),
        layers=(
            ConvSpec(kernels=15, size=(3, 3), padding="same", activation="relu"),
            ConvSpec(kernels=4, size=(2, 2), padding="same", activation="linear"),
            MaxPoolSpec(size=(2, 2)),
            FlattenSpec(),
            DenseSpec(out=10, activation="linear"),
        ),
        n_classes=10,
    )


def convlstm_wang2019() -> NetworkSpec:
    """Wang 2019 ConvLSTM: 3 frames of 8x8, 5 hidden, 3x3 valid input / 2x2 recurrent kernels, maxpool 2, dense 45->6.

    580 + 270 = 850 weights.
    """
    return NetworkSpec(
        input_shape=(3, 8, 8),
        layers=(
            ConvLSTMSpec(hidden=5, input_size=(3, 3), recurrent_size=(2, 2), padding="valid"),
            MaxPoolSpec(size=(2, 2)),
            FlattenSpec(),
            DenseSpec(out=6, activation="linear"),
        ),
        n_classes=6,
    )


def cnn_yao2020() -> NetworkSpec:
    """Yao 2020 five-layer CNN (our shape reading): 28x28, conv 8@3x3 valid, pool 3, conv 12@3x3 same, pool 2, dense.

    26x26x8 -> 8x8x8 -> 8x8x12 -> 4x4x12 = 192 -> 10; 72 + 864 + 1,920 = 2,856 weights, the paper's count.
    """
    return NetworkSpec(
        input_shape=(28, 28),
        layers=(
            ConvSpec(kernels=8, size=(3, 3), padding="valid", activation="relu"),
            MaxPoolSpec(size=(3, 3)),
            ConvSpec(kernels=12, size=(3, 3), padding="same", activation="relu"),
            MaxPoolSpec(size=(2, 2)),
            FlattenSpec(),
            DenseSpec(out=10, activation="linear"),
        ),
        n_classes=10,
    )


ARCHITECTURES: dict[str, Callable[[], NetworkSpec]] = {
    "mlp": mlp_li2018,
    "cnn": cnn_wang2019,
    "convlstm": convlstm_wang2019,
    "yao-hybrid": cnn_yao2020,
}


def get_architecture(name: str) -> NetworkSpec:
    """The spec registered under ``name``; an unknown name is an error listing the known ones."""
    try:
        return ARCHITECTURES[name]()
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise UnknownArchitectureError(f"unknown model {name!r}; known models: {known}") from None
