"""The layers at run time: forward through a backend, backward in numpy.

Activations are ``(n, *shape)`` arrays in canonical layout: vectors ``(n, D)``, images
``(n, H, W, C)``, sequences ``(n, T, H, W, C)``. Convolutions are im2col: every output position of
every image in the batch is one row of the matrix handed to the backend, so a whole mini-batch is
one VMM round trip. Kernel rows are ordered (kh, kw, C), as Keras stores ``kernel.reshape(-1, K)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from hil.nn.backend import FloatArray, MatmulBackend
from hil.nn.spec import (
    Activation,
    ConvLSTMSpec,
    ConvSpec,
    DenseSpec,
    FlattenSpec,
    LayerShape,
    MaxPoolSpec,
    NetworkSpec,
    Shape,
    same_padding,
)

# ---------------------------------------------------------------------------------------------
# activations


def sigmoid(z: FloatArray) -> FloatArray:
    """Logistic function; the tanh form does not overflow for large |z|."""
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def activate(z: FloatArray, kind: Activation) -> FloatArray:
    """Apply an activation elementwise."""
    if kind == "relu":
        return np.maximum(z, 0.0)
    if kind == "tanh":
        return np.tanh(z)
    if kind == "sigmoid":
        return sigmoid(z)
    return z


def activation_backward(y: FloatArray, dy: FloatArray, kind: Activation) -> FloatArray:
    """dL/dz from dL/dy and the activation's output y (all four derivatives are functions of y)."""
    if kind == "relu":
        return dy * (y > 0.0)
    if kind == "tanh":
        return dy * (1.0 - y * y)
    if kind == "sigmoid":
        return dy * y * (1.0 - y)
    return dy


# ---------------------------------------------------------------------------------------------
# im2col


def pad_images(x: FloatArray, pad_h: tuple[int, int], pad_w: tuple[int, int]) -> FloatArray:
    """Zero-pad (n, H, W, C) images along H and W."""
    if pad_h == (0, 0) and pad_w == (0, 0):
        return x
    return np.pad(x, ((0, 0), pad_h, pad_w, (0, 0)))


def im2col(xp: FloatArray, kh: int, kw: int) -> FloatArray:
    """(n, Hp, Wp, C) padded images -> (n*Ho*Wo, kh*kw*C): one row per output position, (kh, kw, C) order."""
    n, hp, wp, c = xp.shape
    ho, wo = hp - kh + 1, wp - kw + 1
    windows = sliding_window_view(xp, (kh, kw), axis=(1, 2))  # (n, Ho, Wo, C, kh, kw), a view
    return np.ascontiguousarray(windows.transpose(0, 1, 2, 4, 5, 3)).reshape(n * ho * wo, kh * kw * c)


def col2im(cols: FloatArray, padded_shape: Shape, kh: int, kw: int) -> FloatArray:
    """Adjoint of :func:`im2col`: sum every row's entries back onto the padded images they came from."""
    n, hp, wp, c = padded_shape
    ho, wo = hp - kh + 1, wp - kw + 1
    blocks = cols.reshape(n, ho, wo, kh, kw, c)
    out = np.zeros((n, hp, wp, c), dtype=cols.dtype)
    # The loop runs over kernel offsets (at most kh*kw), each a whole-batch slice add; windows overlap,
    # so a single fancy-indexed assignment would drop contributions.
    for i in range(kh):
        for j in range(kw):
            out[:, i : i + ho, j : j + wo, :] += blocks[:, :, :, i, j, :]
    return out


def _crop(x: FloatArray, pad_h: tuple[int, int], pad_w: tuple[int, int]) -> FloatArray:
    """Undo :func:`pad_images`."""
    h, w = x.shape[1], x.shape[2]
    return x[:, pad_h[0] : h - pad_h[1], pad_w[0] : w - pad_w[1], :]


def _conv_padding(padding: str, kh: int, kw: int) -> tuple[tuple[int, int], tuple[int, int]]:
    if padding == "same":
        return same_padding(kh), same_padding(kw)
    return (0, 0), (0, 0)


# ---------------------------------------------------------------------------------------------
# layers


class Layer(ABC):
    """One layer; ``forward(train=True)`` keeps what ``backward`` needs."""

    def __init__(self, shape: LayerShape) -> None:
        self.index = shape.index
        self.input_shape = shape.input_shape
        self.output_shape = shape.output_shape
        self.name: str | None = shape.name
        self.weight_shape: tuple[int, int] | None = shape.weight_shape

    @property
    def fan_in(self) -> int:
        """Rows of the weight matrix (0 without weights)."""
        return self.weight_shape[0] if self.weight_shape else 0

    @property
    def fan_out(self) -> int:
        """Columns of the weight matrix (0 without weights)."""
        return self.weight_shape[1] if self.weight_shape else 0

    @abstractmethod
    def forward(self, x: FloatArray, backend: MatmulBackend, train: bool = True) -> FloatArray:
        """(n, *input_shape) -> (n, *output_shape)."""

    @abstractmethod
    def backward(
        self, dy: FloatArray, backend: MatmulBackend, need_dx: bool = True
    ) -> tuple[FloatArray | None, FloatArray | None]:
        """dL/dy -> (dL/dx or None if not needed, dL/dW or None for a layer without weights)."""

    def _missing_cache(self) -> RuntimeError:
        return RuntimeError(f"layer {self.index} ({type(self).__name__}): backward needs forward(train=True) first")

    def _weights(self, backend: MatmulBackend) -> FloatArray:
        """The backend's effective weights, checked against the layer's shape."""
        assert self.name is not None and self.weight_shape is not None
        w = np.asarray(backend.weights(self.name), dtype=np.float64)
        if w.shape != self.weight_shape:
            raise ValueError(f"backend weights for {self.name!r} have shape {w.shape}, expected {self.weight_shape}")
        return w

    def _matmul(self, backend: MatmulBackend, x: FloatArray) -> FloatArray:
        """One backend call, its result checked: a hardware backend that returns the wrong shape is a bug."""
        assert self.name is not None
        y = np.asarray(backend.matmul(self.name, x), dtype=np.float64)
        if y.shape != (x.shape[0], self.fan_out):
            raise ValueError(
                f"backend matmul for {self.name!r} returned {y.shape}, expected {(x.shape[0], self.fan_out)}"
            )
        return y


class Dense(Layer):
    """``y = act(x @ W)``."""

    def __init__(self, spec: DenseSpec, shape: LayerShape) -> None:
        super().__init__(shape)
        self.activation: Activation = spec.activation
        self._cache: tuple[FloatArray, FloatArray] | None = None

    def forward(self, x: FloatArray, backend: MatmulBackend, train: bool = True) -> FloatArray:
        y = activate(self._matmul(backend, x), self.activation)
        self._cache = (x, y) if train else None
        return y

    def backward(
        self, dy: FloatArray, backend: MatmulBackend, need_dx: bool = True
    ) -> tuple[FloatArray | None, FloatArray | None]:
        if self._cache is None:
            raise self._missing_cache()
        x, y = self._cache
        dz = activation_backward(y, dy, self.activation)
        dx = dz @ self._weights(backend).T if need_dx else None
        return dx, x.T @ dz


class Conv2D(Layer):
    """Stride-1 convolution as one im2col matmul over the whole batch."""

    def __init__(self, spec: ConvSpec, shape: LayerShape) -> None:
        super().__init__(shape)
        self.kh, self.kw = spec.size
        self.pad_h, self.pad_w = _conv_padding(spec.padding, self.kh, self.kw)
        self.activation: Activation = spec.activation
        self._cache: tuple[FloatArray, Shape, FloatArray] | None = None

    def forward(self, x: FloatArray, backend: MatmulBackend, train: bool = True) -> FloatArray:
        xp = pad_images(x, self.pad_h, self.pad_w)
        cols = im2col(xp, self.kh, self.kw)
        y = activate(self._matmul(backend, cols), self.activation)
        self._cache = (cols, xp.shape, y) if train else None
        return y.reshape(x.shape[0], *self.output_shape)

    def backward(
        self, dy: FloatArray, backend: MatmulBackend, need_dx: bool = True
    ) -> tuple[FloatArray | None, FloatArray | None]:
        if self._cache is None:
            raise self._missing_cache()
        cols, padded_shape, y = self._cache
        dz = activation_backward(y, dy.reshape(y.shape), self.activation)
        dw = cols.T @ dz
        if not need_dx:
            return None, dw
        dcols = dz @ self._weights(backend).T
        return _crop(col2im(dcols, padded_shape, self.kh, self.kw), self.pad_h, self.pad_w), dw


class MaxPool2D(Layer):
    """Non-overlapping max pooling; the gradient goes to the first maximum of each window."""

    def __init__(self, spec: MaxPoolSpec, shape: LayerShape) -> None:
        super().__init__(shape)
        self.ph, self.pw = spec.size
        self._cache: tuple[Shape, FloatArray] | None = None

    def _windows(self, x: FloatArray) -> FloatArray:
        """(n, H, W, C) -> (n, Ho, Wo, C, ph*pw), dropping rows/columns that do not fill a window."""
        n = x.shape[0]
        ho, wo, c = self.output_shape
        cropped = x[:, : ho * self.ph, : wo * self.pw, :]
        blocks = cropped.reshape(n, ho, self.ph, wo, self.pw, c).transpose(0, 1, 3, 5, 2, 4)
        return blocks.reshape(n, ho, wo, c, self.ph * self.pw)

    def forward(self, x: FloatArray, backend: MatmulBackend, train: bool = True) -> FloatArray:
        windows = self._windows(x)
        arg = np.argmax(windows, axis=-1)
        y = np.take_along_axis(windows, arg[..., None], axis=-1)[..., 0]
        self._cache = (x.shape, arg) if train else None
        return y

    def backward(
        self, dy: FloatArray, backend: MatmulBackend, need_dx: bool = True
    ) -> tuple[FloatArray | None, FloatArray | None]:
        if self._cache is None:
            raise self._missing_cache()
        if not need_dx:
            return None, None
        x_shape, arg = self._cache
        n = x_shape[0]
        ho, wo, c = self.output_shape
        # One-hot of the argmax routes each window's gradient to exactly one input (ties: the first).
        onehot = arg[..., None] == np.arange(self.ph * self.pw)
        dwin = onehot * dy[..., None]  # (n, Ho, Wo, C, ph*pw)
        blocks = dwin.reshape(n, ho, wo, c, self.ph, self.pw).transpose(0, 1, 4, 2, 5, 3)
        dx = np.zeros(x_shape, dtype=np.float64)
        dx[:, : ho * self.ph, : wo * self.pw, :] = blocks.reshape(n, ho * self.ph, wo * self.pw, c)
        return dx, None


class Flatten(Layer):
    """(n, H, W, C) -> (n, H*W*C), row-major."""

    def forward(self, x: FloatArray, backend: MatmulBackend, train: bool = True) -> FloatArray:
        return x.reshape(x.shape[0], -1)

    def backward(
        self, dy: FloatArray, backend: MatmulBackend, need_dx: bool = True
    ) -> tuple[FloatArray | None, FloatArray | None]:
        return (dy.reshape(dy.shape[0], *self.input_shape) if need_dx else None), None


class ConvLSTM2D(Layer):
    """ConvLSTM without biases or peepholes; output = last hidden state.

    Per time step t, with ``*`` the convolution and gates i, f, g, o in the columns of W = [W_x; W_h]::

        [z_i z_f z_g z_o] = x_t * W_x + h_{t-1} * W_h      (one matmul: [patch(x_t), patch(h_{t-1})] @ W)
        i, f, o = sigmoid(z_i, z_f, z_o);  g = tanh(z_g)
        c_t = f c_{t-1} + i g;             h_t = o tanh(c_t);      h_0 = c_0 = 0
    """

    def __init__(self, spec: ConvLSTMSpec, shape: LayerShape) -> None:
        super().__init__(shape)
        self.hidden = spec.hidden
        self.kh, self.kw = spec.input_size
        self.rh, self.rw = spec.recurrent_size
        self.pad_h, self.pad_w = _conv_padding(spec.padding, self.kh, self.kw)
        # The recurrent convolution is always 'same' so h keeps the output size.
        self.rpad_h, self.rpad_w = same_padding(self.rh), same_padding(self.rw)
        self.n_x = self.kh * self.kw * self.input_shape[3]
        self._cache: _LSTMCache | None = None

    def forward(self, x: FloatArray, backend: MatmulBackend, train: bool = True) -> FloatArray:
        n, steps = x.shape[0], x.shape[1]
        ho, wo, hid = self.output_shape
        rows = n * ho * wo
        # Input patches of every frame at once (time-major), then one matmul per step.
        frames = x.transpose(1, 0, 2, 3, 4).reshape(steps * n, *x.shape[2:])
        xp = pad_images(frames, self.pad_h, self.pad_w)
        x_cols = im2col(xp, self.kh, self.kw).reshape(steps, rows, self.n_x)
        h = np.zeros((rows, hid))
        c = np.zeros((rows, hid))
        cache = _LSTMCache(x_padded_shape=xp.shape)
        for t in range(steps):
            h_img = pad_images(h.reshape(n, ho, wo, hid), self.rpad_h, self.rpad_w)
            row = np.concatenate([x_cols[t], im2col(h_img, self.rh, self.rw)], axis=1)
            z = self._matmul(backend, row)
            i = sigmoid(z[:, :hid])
            f = sigmoid(z[:, hid : 2 * hid])
            g = np.tanh(z[:, 2 * hid : 3 * hid])
            o = sigmoid(z[:, 3 * hid :])
            c_prev = c
            c = f * c_prev + i * g
            tanh_c = np.tanh(c)
            h = o * tanh_c
            if train:
                cache.steps.append((row, i, f, g, o, c_prev, tanh_c))
        self._cache = cache if train else None
        return h.reshape(n, ho, wo, hid)

    def backward(
        self, dy: FloatArray, backend: MatmulBackend, need_dx: bool = True
    ) -> tuple[FloatArray | None, FloatArray | None]:
        if self._cache is None:
            raise self._missing_cache()
        n = dy.shape[0]
        ho, wo, hid = self.output_shape
        w = self._weights(backend)
        w_x_t, w_h_t = w[: self.n_x].T, w[self.n_x :].T
        dw = np.zeros_like(w)
        dh = dy.reshape(n * ho * wo, hid)
        dc = np.zeros_like(dh)
        steps = len(self._cache.steps)
        dx_cols = np.zeros((steps, n * ho * wo, self.n_x)) if need_dx else None
        h_padded = (n, ho + sum(self.rpad_h), wo + sum(self.rpad_w), hid)
        # Backpropagation through time: walk the steps backwards, carrying dL/dh and dL/dc.
        for t in reversed(range(steps)):
            row, i, f, g, o, c_prev, tanh_c = self._cache.steps[t]
            dc = dc + dh * o * (1.0 - tanh_c * tanh_c)
            dz = np.concatenate(
                [
                    dc * g * i * (1.0 - i),
                    dc * c_prev * f * (1.0 - f),
                    dc * i * (1.0 - g * g),
                    dh * tanh_c * o * (1.0 - o),
                ],
                axis=1,
            )
            dw += row.T @ dz
            if dx_cols is not None:
                dx_cols[t] = dz @ w_x_t
            dc = dc * f
            if t > 0:  # h_0 is a constant zero: nothing flows further back
                dh_img = col2im(dz @ w_h_t, h_padded, self.rh, self.rw)
                dh = _crop(dh_img, self.rpad_h, self.rpad_w).reshape(n * ho * wo, hid)
        if dx_cols is None:
            return None, dw
        padded = self._cache.x_padded_shape
        dframes = _crop(col2im(dx_cols.reshape(-1, self.n_x), padded, self.kh, self.kw), self.pad_h, self.pad_w)
        return dframes.reshape(steps, n, *self.input_shape[1:]).transpose(1, 0, 2, 3, 4), dw


class _LSTMCache:
    """What BPTT needs from each step: the matmul row, the gates, c_{t-1} and tanh(c_t)."""

    def __init__(self, x_padded_shape: Shape) -> None:
        self.x_padded_shape = x_padded_shape
        self.steps: list[tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]] = []


def build_layers(spec: NetworkSpec) -> list[Layer]:
    """The run-time layers of a spec, in order."""
    layers: list[Layer] = []
    for layer_spec, shape in zip(spec.layers, spec.layer_shapes(), strict=True):
        if isinstance(layer_spec, DenseSpec):
            layers.append(Dense(layer_spec, shape))
        elif isinstance(layer_spec, ConvSpec):
            layers.append(Conv2D(layer_spec, shape))
        elif isinstance(layer_spec, MaxPoolSpec):
            layers.append(MaxPool2D(layer_spec, shape))
        elif isinstance(layer_spec, FlattenSpec):
            layers.append(Flatten(shape))
        else:
            layers.append(ConvLSTM2D(layer_spec, shape))
    return layers
