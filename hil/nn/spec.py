"""Network architectures as data: layer specs, shape propagation and weight shapes.

A :class:`NetworkSpec` is what a config file holds::

    {"input_shape": [8, 8], "n_classes": 10,
     "layers": [{"type": "conv", "kernels": 15, "size": [3, 3], "padding": "same", "activation": "relu"},
                {"type": "maxpool", "size": 2}, {"type": "flatten"},
                {"type": "dense", "out": 10}]}

Shapes inside the network are canonical: a vector ``(D,)``, an image ``(H, W, C)`` or a sequence
``(T, H, W, C)``. The declared ``input_shape`` may leave out a single channel: ``(H, W)`` is an
image; if the first layer is a ConvLSTM the input is a sequence, ``(T, H, W)`` or ``(T, H, W, C)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PositiveInt, ValidationError, model_validator

Activation = Literal["relu", "linear", "tanh", "sigmoid"]
Padding = Literal["same", "valid"]
Shape = tuple[int, ...]


class NetworkSpecError(ValueError):
    """A network spec that cannot be used; the message names every bad field or layer."""


def _pair(value: Any) -> Any:
    """Let a config write ``size = 2`` for ``size = [2, 2]``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    return value


Pair = Annotated[tuple[PositiveInt, PositiveInt], BeforeValidator(_pair)]
LayerName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DenseSpec(_Spec):
    """Fully connected layer: ``y = act(x @ W)``, W of shape ``(D, out)``; needs a flat input."""

    type: Literal["dense"] = "dense"
    out: PositiveInt
    activation: Activation = "linear"
    name: LayerName | None = Field(None, description="weight name; default dense1, dense2, ...")


class ConvSpec(_Spec):
    """2-D convolution, stride 1, ``kernels`` output channels; W of shape ``(kh*kw*C, kernels)``."""

    type: Literal["conv"] = "conv"
    kernels: PositiveInt
    size: Pair
    padding: Padding = "same"
    activation: Activation = "relu"
    name: LayerName | None = Field(None, description="weight name; default conv1, conv2, ...")


class MaxPoolSpec(_Spec):
    """Non-overlapping max pooling (stride = size); trailing rows/columns that do not fill a window are dropped."""

    type: Literal["maxpool"] = "maxpool"
    size: Pair


class FlattenSpec(_Spec):
    """Image ``(H, W, C)`` -> vector ``(H*W*C,)`` in row-major (H, W, C) order."""

    type: Literal["flatten"] = "flatten"


class ConvLSTMSpec(_Spec):
    """ConvLSTM over a sequence; output is the last hidden state ``(H', W', hidden)``.

    The input convolution uses ``padding``; the recurrent convolution is always 'same' so the hidden
    state keeps its size (an even kernel pads one more at the end: 2x2 pads (0, 1) on each axis).
    W is ``[W_x; W_h]`` of shape ``(kh*kw*C + rh*rw*hidden, 4*hidden)``, gate columns i, f, g, o.
    """

    type: Literal["convlstm"] = "convlstm"
    hidden: PositiveInt
    input_size: Pair
    recurrent_size: Pair
    padding: Padding = "valid"
    name: LayerName | None = Field(None, description="weight name; default convlstm1, ...")


LayerSpec = Annotated[DenseSpec | ConvSpec | MaxPoolSpec | FlattenSpec | ConvLSTMSpec, Field(discriminator="type")]
WeightedSpec = DenseSpec | ConvSpec | ConvLSTMSpec


@dataclass(frozen=True)
class LayerShape:
    """One layer after shape propagation: canonical input/output shapes and its weight matrix, if any."""

    index: int
    type: str
    name: str | None
    input_shape: Shape
    output_shape: Shape
    weight_shape: tuple[int, int] | None

    @property
    def fan_in(self) -> int:
        """Rows of the weight matrix (0 for a layer without weights)."""
        return self.weight_shape[0] if self.weight_shape else 0

    @property
    def fan_out(self) -> int:
        """Columns of the weight matrix (0 for a layer without weights)."""
        return self.weight_shape[1] if self.weight_shape else 0


def same_padding(k: int) -> tuple[int, int]:
    """'same' padding (before, after) for a kernel of size k; an even kernel pads one more after."""
    return (k - 1) // 2, k // 2


def conv_output_size(n: int, k: int, padding: str) -> int:
    """Output length of a stride-1 convolution along one axis."""
    return n if padding == "same" else n - k + 1


def _fmt(shape: Shape) -> str:
    return "x".join(str(s) for s in shape)


class NetworkSpec(_Spec):
    """A whole network: input shape, layers in order, number of classes (the last layer's output size)."""

    input_shape: tuple[PositiveInt, ...] = Field(min_length=1, max_length=4)
    layers: tuple[LayerSpec, ...] = Field(min_length=1)
    n_classes: int = Field(ge=2)

    @model_validator(mode="after")
    def _shapes_fit(self) -> NetworkSpec:
        self.layer_shapes()  # raises ValueError naming the layer that does not fit
        return self

    @property
    def is_sequence(self) -> bool:
        """True if the input is a sequence of frames (the first layer is a ConvLSTM)."""
        return isinstance(self.layers[0], ConvLSTMSpec)

    def canonical_input_shape(self) -> Shape:
        """The input shape with its channel axis made explicit: (D,), (H, W, C) or (T, H, W, C)."""
        shape = tuple(self.input_shape)
        if self.is_sequence:
            if len(shape) == 3:
                return (*shape, 1)
            if len(shape) == 4:
                return shape
            raise ValueError(f"input_shape {list(shape)}: a ConvLSTM network takes (T, H, W) or (T, H, W, C)")
        if len(shape) == 2:
            return (*shape, 1)
        if len(shape) in (1, 3):
            return shape
        raise ValueError(f"input_shape {list(shape)}: expected (D,), (H, W) or (H, W, C)")

    def layer_shapes(self) -> list[LayerShape]:
        """Propagate shapes through every layer; a layer that does not fit raises ValueError naming it."""
        shape = self.canonical_input_shape()
        counters: dict[str, int] = {}
        names: set[str] = set()
        result: list[LayerShape] = []
        for index, layer in enumerate(self.layers):
            where = f"layers[{index}] ({layer.type})"
            weight_shape: tuple[int, int] | None = None
            name: str | None = None
            if isinstance(layer, DenseSpec | ConvSpec | ConvLSTMSpec):
                counters[layer.type] = counters.get(layer.type, 0) + 1
                name = layer.name or f"{layer.type}{counters[layer.type]}"
                if name in names:
                    raise ValueError(f"{where}: weight name {name!r} is used twice")
                names.add(name)
            out, weight_shape = _propagate(layer, shape, index, where)
            result.append(LayerShape(index, layer.type, name, shape, out, weight_shape))
            shape = out
        if shape != (self.n_classes,):
            last = len(self.layers) - 1
            ends = f"{shape[0]} values" if len(shape) == 1 else f"shape {_fmt(shape)}"
            raise ValueError(
                f"layers[{last}] ({self.layers[last].type}): the network must end with {self.n_classes} outputs "
                f"(n_classes), but it ends with {ends}"
            )
        return result

    def weight_shapes(self) -> dict[str, tuple[int, int]]:
        """Weight matrix shape ``(fan_in, fan_out)`` of every weighted layer, by name, in layer order."""
        return {s.name: s.weight_shape for s in self.layer_shapes() if s.name is not None and s.weight_shape}

    def weight_counts(self) -> dict[str, int]:
        """Number of weights of every weighted layer, by name."""
        return {name: r * c for name, (r, c) in self.weight_shapes().items()}

    @property
    def n_weights(self) -> int:
        """Total number of weights (the papers' networks have no biases)."""
        return sum(self.weight_counts().values())

    def summary(self) -> str:
        """A Markdown table of the layers: kind, name, output shape, weight matrix and count."""
        table = [["#", "layer", "name", "output", "weights (fan_in x fan_out)", "count"], ["---"] * 6]
        table.append(["-", "input", "", _fmt(self.canonical_input_shape()), "", ""])
        for s, layer in zip(self.layer_shapes(), self.layers, strict=True):
            matrix = f"{s.fan_in} x {s.fan_out}" if s.weight_shape else ""
            count = f"{s.fan_in * s.fan_out:,}" if s.weight_shape else ""
            table.append([str(s.index), _describe(layer), s.name or "", _fmt(s.output_shape), matrix, count])
        table.append(["", "total", "", "", "", f"{self.n_weights:,}"])
        rows = ["|" + "|".join(f" {cell} " if cell else " " for cell in row) + "|" for row in table]
        return "\n".join(rows)


def _describe(layer: DenseSpec | ConvSpec | MaxPoolSpec | FlattenSpec | ConvLSTMSpec) -> str:
    if isinstance(layer, DenseSpec):
        return f"dense {layer.out}, {layer.activation}"
    if isinstance(layer, ConvSpec):
        return f"conv {layer.kernels}@{_fmt(layer.size)} {layer.padding}, {layer.activation}"
    if isinstance(layer, MaxPoolSpec):
        return f"maxpool {_fmt(layer.size)}"
    if isinstance(layer, FlattenSpec):
        return "flatten"
    return (
        f"convlstm {layer.hidden} hidden, input {_fmt(layer.input_size)} {layer.padding}, "
        f"recurrent {_fmt(layer.recurrent_size)} same"
    )


def _propagate(
    layer: DenseSpec | ConvSpec | MaxPoolSpec | FlattenSpec | ConvLSTMSpec, shape: Shape, index: int, where: str
) -> tuple[Shape, tuple[int, int] | None]:
    """Output shape and weight shape of one layer for an input of ``shape``; ValueError if it does not fit."""
    if isinstance(layer, ConvLSTMSpec):
        if index != 0:
            raise ValueError(f"{where}: a ConvLSTM must be the first layer (it consumes the input sequence)")
        _t, h, w, c = shape
        kh, kw = layer.input_size
        if layer.padding == "valid" and (kh > h or kw > w):
            raise ValueError(f"{where}: input kernel {kh}x{kw} is larger than the {h}x{w} frames")
        rh, rw = layer.recurrent_size
        out = (conv_output_size(h, kh, layer.padding), conv_output_size(w, kw, layer.padding), layer.hidden)
        return out, (kh * kw * c + rh * rw * layer.hidden, 4 * layer.hidden)
    if isinstance(layer, DenseSpec):
        if len(shape) != 1:
            raise ValueError(f"{where}: needs a flat input but gets {_fmt(shape)}; put a flatten layer before it")
        return (layer.out,), (shape[0], layer.out)
    if isinstance(layer, FlattenSpec):
        if len(shape) != 3:
            raise ValueError(f"{where}: needs an image input (H, W, C) but gets {_fmt(shape)}")
        return (math.prod(shape),), None
    if len(shape) != 3:
        raise ValueError(f"{where}: needs an image input (H, W, C) but gets {_fmt(shape)}")
    h, w, c = shape
    if isinstance(layer, ConvSpec):
        kh, kw = layer.size
        if layer.padding == "valid" and (kh > h or kw > w):
            raise ValueError(f"{where}: kernel {kh}x{kw} is larger than its {h}x{w} input ('valid' padding)")
        out = (conv_output_size(h, kh, layer.padding), conv_output_size(w, kw, layer.padding), layer.kernels)
        return out, (kh * kw * c, layer.kernels)
    ph, pw = layer.size
    if ph > h or pw > w:
        raise ValueError(f"{where}: pool {ph}x{pw} is larger than its {h}x{w} input")
    return (h // ph, w // pw, c), None


def validation_problems(error: ValidationError) -> str:
    """Every problem of a pydantic validation, one per line, with its field path."""
    lines = []
    for e in error.errors():
        path = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"  {path}: {msg}" if path else f"  {msg}")  # shape errors name their layer themselves
    return "\n".join(lines)


def load_network_spec(data: Mapping[str, Any], source: str = "network spec") -> NetworkSpec:
    """Build a :class:`NetworkSpec` from plain data (a config table); errors name each bad field path."""
    if not isinstance(data, Mapping):
        raise NetworkSpecError(f"{source} must be a table/object, got {type(data).__name__}")
    try:
        return NetworkSpec.model_validate(dict(data))
    except ValidationError as exc:
        raise NetworkSpecError(f"{source} has errors:\n{validation_problems(exc)}") from None
