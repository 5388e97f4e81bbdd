"""hil.nn: shapes and weight counts, gradients by finite differences, one backend call per layer per batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hil.nn import (
    ARCHITECTURES,
    ConvLSTM2D,
    ConvLSTMSpec,
    ConvSpec,
    DenseSpec,
    ExactBackend,
    FlattenSpec,
    FloatArray,
    MaxPoolSpec,
    Network,
    NetworkSpec,
    NetworkSpecError,
    UnknownArchitectureError,
    accuracy,
    cnn_wang2019,
    cnn_yao2020,
    convlstm_wang2019,
    get_architecture,
    load_network_spec,
    mlp_li2018,
    softmax,
    softmax_cross_entropy,
)
from hil.nn.layers import Layer, build_layers, sigmoid


class RecordingBackend(ExactBackend):
    """Exact arithmetic that remembers every call (layer, input shape)."""

    def __init__(self, weights: dict[str, FloatArray]) -> None:
        super().__init__(weights)
        self.matmul_calls: list[tuple[str, tuple[int, ...]]] = []
        self.weight_calls: list[str] = []

    def matmul(self, layer: str, x: FloatArray) -> FloatArray:
        self.matmul_calls.append((layer, x.shape))
        return super().matmul(layer, x)

    def weights(self, layer: str) -> FloatArray:
        self.weight_calls.append(layer)
        return super().weights(layer)


def _data(spec: NetworkSpec, n: int, rng: np.random.Generator) -> tuple[FloatArray, np.ndarray[Any, Any]]:
    x = rng.normal(size=(n, *spec.input_shape))
    return x, rng.integers(0, spec.n_classes, size=n)


def _loss(net: Network, weights: dict[str, FloatArray], x: FloatArray, y: np.ndarray[Any, Any]) -> float:
    return softmax_cross_entropy(net.forward(x, ExactBackend(weights), train=False), y)[0]


def _check_gradients(spec: NetworkSpec, n: int = 3, checks: int = 40, seed: int = 0, eps: float = 1e-6) -> None:
    """Backprop against central differences of the cross-entropy, on a random subset of each layer's weights."""
    rng = np.random.default_rng(seed)
    net = Network(spec)
    weights = net.init_weights(rng)
    x, y = _data(spec, n, rng)
    backend = ExactBackend(weights)
    _, dlogits = softmax_cross_entropy(net.forward(x, backend), y)
    grads = net.backward(dlogits, backend)
    assert list(grads) == list(spec.weight_shapes())
    for name, w in weights.items():
        assert grads[name].shape == w.shape
        picks = rng.choice(w.size, size=min(checks, w.size), replace=False)
        numeric = np.empty(len(picks))
        for k, flat in enumerate(picks):
            orig = w.flat[flat]
            w.flat[flat] = orig + eps
            plus = _loss(net, weights, x, y)
            w.flat[flat] = orig - eps
            minus = _loss(net, weights, x, y)
            w.flat[flat] = orig
            numeric[k] = (plus - minus) / (2 * eps)
        analytic = grads[name].flat[picks]
        assert np.linalg.norm(analytic) > 1e-8, f"{name}: gradient vanished, the check would prove nothing"
        rel = np.linalg.norm(numeric - analytic) / (np.linalg.norm(numeric) + np.linalg.norm(analytic))
        assert rel < 1e-5, f"{name}: relative error {rel:.2e}"


# ---------------------------------------------------------------------------------------------
# architectures and weight counts


@pytest.mark.parametrize(
    ("factory", "counts", "total"),
    [
        (mlp_li2018, {"dense1": 3456, "dense2": 540}, 3996),
        (cnn_wang2019, {"conv1": 135, "conv2": 240, "dense1": 640}, 1015),
        (convlstm_wang2019, {"convlstm1": 580, "dense1": 270}, 850),
        (cnn_yao2020, {"conv1": 72, "conv2": 864, "dense1": 1920}, 2856),
    ],
)
def test_papers_weight_counts(factory: Any, counts: dict[str, int], total: int) -> None:
    spec = factory()
    assert spec.weight_counts() == counts
    assert spec.n_weights == total


def test_paper_shapes() -> None:
    assert cnn_wang2019().weight_shapes() == {"conv1": (9, 15), "conv2": (60, 4), "dense1": (64, 10)}
    assert convlstm_wang2019().weight_shapes() == {"convlstm1": (9 + 20, 20), "dense1": (45, 6)}
    yao = [s.output_shape for s in cnn_yao2020().layer_shapes()]
    assert yao == [(26, 26, 8), (8, 8, 8), (8, 8, 12), (4, 4, 12), (192,), (10,)]
    lstm = convlstm_wang2019().layer_shapes()[0]
    assert (lstm.input_shape, lstm.output_shape, lstm.fan_in, lstm.fan_out) == ((3, 8, 8, 1), (6, 6, 5), 29, 20)


def test_registry_by_name_and_unknown_name_lists_known() -> None:
    assert set(ARCHITECTURES) == {"mlp", "cnn", "convlstm", "yao-hybrid"}
    assert get_architecture("yao-hybrid") == cnn_yao2020()
    with pytest.raises(UnknownArchitectureError, match=r"'lenet'.*cnn, convlstm, mlp, yao-hybrid"):
        get_architecture("lenet")


def test_docs_tables_match_the_code() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "networks.md").read_text(encoding="utf-8")
    for name in ARCHITECTURES:
        assert get_architecture(name).summary() in doc, f"docs/networks.md: the {name} table is out of date"


def test_spec_round_trips_through_plain_data() -> None:
    for factory in ARCHITECTURES.values():
        spec = factory()
        assert load_network_spec(spec.model_dump(mode="json")) == spec


# ---------------------------------------------------------------------------------------------
# spec errors


def _spec(input_shape: tuple[int, ...], layers: list[dict[str, Any]], n_classes: int = 3) -> NetworkSpec:
    return load_network_spec({"input_shape": list(input_shape), "layers": layers, "n_classes": n_classes})


def test_pool_larger_than_input_names_the_layer() -> None:
    layers: list[dict[str, Any]] = [
        {"type": "conv", "kernels": 2, "size": 3, "padding": "valid"},
        {"type": "maxpool", "size": 8},
    ]
    with pytest.raises(NetworkSpecError, match=r"layers\[1\] \(maxpool\): pool 8x8 is larger than its 6x6 input"):
        _spec((8, 8), [*layers, {"type": "flatten"}, {"type": "dense", "out": 3}])


def test_last_layer_must_give_n_classes() -> None:
    layers: list[dict[str, Any]] = [
        {"type": "flatten"},
        {"type": "dense", "out": 5, "activation": "relu"},
        {"type": "dense", "out": 4},
    ]
    with pytest.raises(
        NetworkSpecError, match=r"layers\[2\] \(dense\): .*3 outputs \(n_classes\), but it ends with 4 values"
    ):
        _spec((4, 4), layers, n_classes=3)


@pytest.mark.parametrize(
    ("input_shape", "layers", "message"),
    [
        ((4, 4), [{"type": "dense", "out": 3}], r"layers\[0\] \(dense\): needs a flat input .* flatten"),
        ((4, 4), [{"type": "conv", "kernels": 2, "size": 5, "padding": "valid"}], r"layers\[0\] \(conv\): kernel 5x5"),
        ((16,), [{"type": "maxpool", "size": 2}], r"layers\[0\] \(maxpool\): needs an image"),
        (
            (4, 4),
            [{"type": "flatten"}, {"type": "convlstm", "hidden": 2, "input_size": 3, "recurrent_size": 2}],
            r"layers\[1\] \(convlstm\): a ConvLSTM must be the first layer",
        ),
        (
            (4, 4),
            [{"type": "flatten"}, {"type": "dense", "out": 4, "name": "x"}, {"type": "dense", "out": 3, "name": "x"}],
            r"layers\[2\] \(dense\): weight name 'x' is used twice",
        ),
        ((2, 3, 4, 5, 6), [{"type": "flatten"}], r"input_shape"),
    ],
)
def test_shape_errors_name_layer_and_problem(
    input_shape: tuple[int, ...], layers: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(NetworkSpecError, match=message):
        _spec(input_shape, layers)


def test_config_errors_carry_field_paths() -> None:
    data = {
        "input_shape": [8, 8],
        "n_classes": 10,
        "layers": [
            {"type": "conv", "kernels": 0, "size": [3, 3], "stride": 2},
            {"type": "pool", "size": 2},
            {"type": "dense", "out": 10, "activation": "softplus"},
        ],
    }
    with pytest.raises(NetworkSpecError) as info:
        load_network_spec(data, source="train.toml [network]")
    text = str(info.value)
    assert text.startswith("train.toml [network] has errors:")
    assert "layers.0.conv.kernels" in text
    assert "layers.0.conv.stride: Extra inputs are not permitted" in text
    assert "layers.1: " in text and "'pool'" in text
    assert "layers.2.dense.activation" in text
    with pytest.raises(NetworkSpecError, match="must be a table"):
        load_network_spec([1, 2])  # type: ignore[arg-type]


def test_integer_size_means_square_and_names_can_be_chosen() -> None:
    spec = _spec(
        (6, 6),
        [{"type": "maxpool", "size": 2}, {"type": "flatten"}, {"type": "dense", "out": 3, "name": "readout"}],
    )
    assert spec.layers[0] == MaxPoolSpec(size=(2, 2))
    assert spec.weight_shapes() == {"readout": (9, 3)}


# ---------------------------------------------------------------------------------------------
# gradients of every layer kind and every architecture


LAYER_KIND_SPECS = {
    "dense-tanh-sigmoid": NetworkSpec(
        input_shape=(7,),
        layers=(
            DenseSpec(out=6, activation="tanh"),
            DenseSpec(out=5, activation="sigmoid"),
            DenseSpec(out=5, activation="relu"),
            DenseSpec(out=3),
        ),
        n_classes=3,
    ),
    "conv-same-valid-even-multichannel": NetworkSpec(
        input_shape=(7, 6, 2),
        layers=(
            ConvSpec(kernels=3, size=(3, 3), padding="same", activation="tanh"),
            ConvSpec(kernels=4, size=(2, 2), padding="same", activation="relu"),
            ConvSpec(kernels=2, size=(3, 2), padding="valid", activation="sigmoid"),
            ConvSpec(kernels=2, size=(2, 3), padding="same", activation="linear"),
            FlattenSpec(),
            DenseSpec(out=3),
        ),
        n_classes=3,
    ),
    "maxpool-divisible-and-not": NetworkSpec(
        input_shape=(9, 7),
        layers=(
            ConvSpec(kernels=3, size=(2, 2), padding="same", activation="tanh"),
            MaxPoolSpec(size=(2, 3)),  # 9x7 -> 4x2: the last row and column are dropped
            ConvSpec(kernels=2, size=(2, 2), padding="same", activation="linear"),
            MaxPoolSpec(size=(2, 2)),
            FlattenSpec(),
            DenseSpec(out=3),
        ),
        n_classes=3,
    ),
    "convlstm-valid": NetworkSpec(
        input_shape=(4, 6, 5, 2),
        layers=(
            ConvLSTMSpec(hidden=3, input_size=(3, 2), recurrent_size=(2, 2), padding="valid"),
            FlattenSpec(),
            DenseSpec(out=3),
        ),
        n_classes=3,
    ),
    "convlstm-same-odd-recurrent": NetworkSpec(
        input_shape=(3, 5, 5),
        layers=(
            ConvLSTMSpec(hidden=2, input_size=(2, 2), recurrent_size=(3, 3), padding="same"),
            MaxPoolSpec(size=(2, 2)),
            FlattenSpec(),
            DenseSpec(out=3),
        ),
        n_classes=3,
    ),
}


@pytest.mark.parametrize("name", list(LAYER_KIND_SPECS))
def test_gradients_per_layer_kind(name: str) -> None:
    _check_gradients(LAYER_KIND_SPECS[name])


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_gradients_of_each_architecture(name: str) -> None:
    _check_gradients(get_architecture(name), n=2, checks=25)


def _layer(spec: NetworkSpec, index: int) -> Layer:
    return build_layers(spec)[index]


@pytest.mark.parametrize(
    ("name", "index"),
    [("conv-same-valid-even-multichannel", 1), ("maxpool-divisible-and-not", 1), ("convlstm-valid", 0)],
)
def test_input_gradients_by_finite_differences(name: str, index: int) -> None:
    """dL/dx of a single layer (the ConvLSTM's too, although in a network it is never needed)."""
    spec = LAYER_KIND_SPECS[name]
    rng = np.random.default_rng(1)
    layer = _layer(spec, index)
    weights = {layer.name: rng.normal(scale=0.5, size=layer.weight_shape)} if layer.name else {}
    backend = ExactBackend(weights)
    x = rng.normal(size=(2, *layer.input_shape))
    probe = rng.normal(size=(2, *layer.output_shape))  # L = sum(probe * y), so dL/dy = probe
    layer.forward(x, backend)
    dx, _ = layer.backward(probe, backend)
    assert dx is not None and dx.shape == x.shape
    eps = 1e-6
    picks = rng.choice(x.size, size=30, replace=False)
    numeric = []
    for flat in picks:
        xp, xm = x.copy(), x.copy()
        xp.flat[flat] += eps
        xm.flat[flat] -= eps
        lp = float(np.sum(probe * layer.forward(xp, backend, train=False)))
        lm = float(np.sum(probe * layer.forward(xm, backend, train=False)))
        numeric.append((lp - lm) / (2 * eps))
    analytic = dx.flat[picks]
    rel = np.linalg.norm(np.array(numeric) - analytic) / (np.linalg.norm(numeric) + np.linalg.norm(analytic))
    assert rel < 1e-5


# ---------------------------------------------------------------------------------------------
# forward against naive references (layouts and padding conventions)


def _naive_conv(x: FloatArray, kernel: FloatArray, pad_h: tuple[int, int], pad_w: tuple[int, int]) -> FloatArray:
    """Loop-per-position convolution; kernel (kh, kw, C, K)."""
    kh, kw, _, k = kernel.shape
    xp = np.pad(x, ((0, 0), pad_h, pad_w, (0, 0)))
    ho, wo = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
    out = np.zeros((x.shape[0], ho, wo, k))
    for r in range(ho):
        for c in range(wo):
            out[:, r, c, :] = np.einsum("nijc,ijck->nk", xp[:, r : r + kh, c : c + kw, :], kernel)
    return out


def test_conv_matches_naive_convolution_and_pads_even_kernels_after() -> None:
    spec = LAYER_KIND_SPECS["conv-same-valid-even-multichannel"]
    rng = np.random.default_rng(2)
    net = Network(spec)
    weights = net.init_weights(rng)
    x = rng.normal(size=(3, 7, 6, 2))
    layers = net.layers
    y1 = layers[0].forward(x, ExactBackend(weights))
    np.testing.assert_allclose(y1, np.tanh(_naive_conv(x, weights["conv1"].reshape(3, 3, 2, 3), (1, 1), (1, 1))))
    y2 = layers[1].forward(y1, ExactBackend(weights))  # 2x2 'same': pad (0, 1) on each axis
    expected = np.maximum(_naive_conv(y1, weights["conv2"].reshape(2, 2, 3, 4), (0, 1), (0, 1)), 0)
    np.testing.assert_allclose(y2, expected)


def test_convlstm_matches_the_equations() -> None:
    spec = LAYER_KIND_SPECS["convlstm-valid"]
    rng = np.random.default_rng(3)
    layer = _layer(spec, 0)
    assert isinstance(layer, ConvLSTM2D)
    w = rng.normal(scale=0.5, size=layer.weight_shape)
    x = rng.normal(size=(2, 4, 6, 5, 2))
    hid = 3
    w_x = w[: 3 * 2 * 2].reshape(3, 2, 2, 4 * hid)
    w_h = w[3 * 2 * 2 :].reshape(2, 2, hid, 4 * hid)
    h = np.zeros((2, 4, 4, hid))
    c = np.zeros_like(h)
    for t in range(4):
        z = _naive_conv(x[:, t], w_x, (0, 0), (0, 0)) + _naive_conv(h, w_h, (0, 1), (0, 1))
        i, f, g, o = sigmoid(z[..., :3]), sigmoid(z[..., 3:6]), np.tanh(z[..., 6:9]), sigmoid(z[..., 9:])
        c = f * c + i * g
        h = o * np.tanh(c)
    np.testing.assert_allclose(layer.forward(x, ExactBackend({"convlstm1": w})), h)


# ---------------------------------------------------------------------------------------------
# the backend contract


def test_conv_batch_is_one_matmul_call() -> None:
    spec = cnn_wang2019()
    net = Network(spec)
    backend = RecordingBackend(net.init_weights(np.random.default_rng(0)))
    x = np.random.default_rng(1).random((100, 8, 8))
    logits = net.forward(x, backend)
    assert logits.shape == (100, 10)
    assert backend.matmul_calls == [("conv1", (6400, 9)), ("conv2", (6400, 60)), ("dense1", (100, 64))]
    net.backward(softmax_cross_entropy(logits, np.zeros(100, dtype=int))[1], backend)
    assert len(backend.matmul_calls) == 3  # the backward pass never runs the array
    assert sorted(backend.weight_calls) == ["conv2", "dense1"]  # conv1's dL/dx is not needed


def test_yao_batch_is_one_matmul_call_per_layer() -> None:
    net = Network(cnn_yao2020())
    backend = RecordingBackend(net.init_weights(np.random.default_rng(0)))
    net.forward(np.zeros((5, 28, 28, 1)), backend)
    assert backend.matmul_calls == [("conv1", (5 * 26 * 26, 9)), ("conv2", (5 * 64, 72)), ("dense1", (5, 192))]


def test_convlstm_is_one_matmul_call_per_time_step() -> None:
    net = Network(convlstm_wang2019())
    backend = RecordingBackend(net.init_weights(np.random.default_rng(0)))
    logits = net.forward(np.random.default_rng(1).random((50, 3, 8, 8)), backend)
    assert backend.matmul_calls == [("convlstm1", (50 * 36, 29))] * 3 + [("dense1", (50, 45))]
    net.backward(softmax_cross_entropy(logits, np.zeros(50, dtype=int))[1], backend)
    assert backend.weight_calls.count("convlstm1") == 1


def test_backward_uses_the_backends_weights() -> None:
    """On a chip the backward pass uses the conductances read back, not what the host believes."""
    spec = NetworkSpec(input_shape=(4,), layers=(DenseSpec(out=5), DenseSpec(out=3)), n_classes=3)
    net = Network(spec)
    rng = np.random.default_rng(4)
    forward_w = net.init_weights(rng)
    read_back = {name: w + rng.normal(scale=0.1, size=w.shape) for name, w in forward_w.items()}

    class Drifted(ExactBackend):
        def weights(self, layer: str) -> FloatArray:
            return read_back[layer]

    backend = Drifted(forward_w)
    x = rng.normal(size=(6, 4))
    d = rng.normal(size=(6, 3))
    net.forward(x, backend)
    grads = net.backward(d, backend)
    np.testing.assert_allclose(grads["dense1"], x.T @ (d @ read_back["dense2"].T))
    np.testing.assert_allclose(grads["dense2"], (x @ forward_w["dense1"]).T @ d)


def test_backend_result_of_wrong_shape_is_an_error() -> None:
    class Broken(ExactBackend):
        def matmul(self, layer: str, x: FloatArray) -> FloatArray:
            return super().matmul(layer, x)[:, :-1]

    net = Network(mlp_li2018())
    with pytest.raises(ValueError, match=r"backend matmul for 'dense1' returned \(2, 53\), expected \(2, 54\)"):
        net.forward(np.zeros((2, 8, 8)), Broken(net.init_weights(np.random.default_rng(0))))


# ---------------------------------------------------------------------------------------------
# network plumbing


def test_inputs_with_or_without_channel_axis() -> None:
    net = Network(cnn_wang2019())
    backend = ExactBackend(net.init_weights(np.random.default_rng(0)))
    x = np.random.default_rng(1).random((4, 8, 8))
    np.testing.assert_allclose(net.forward(x, backend), net.forward(x[..., None], backend))
    with pytest.raises(ValueError, match=r"input of shape \(4, 64\) does not fit the network: expected \(n, 8, 8\)"):
        net.forward(x.reshape(4, 64), backend)
    assert net.predict(x, backend).shape == (4,)


def test_backward_needs_a_training_forward() -> None:
    net = Network(mlp_li2018())
    backend = ExactBackend(net.init_weights(np.random.default_rng(0)))
    with pytest.raises(RuntimeError, match="forward"):
        net.backward(np.zeros((2, 10)), backend)
    net.forward(np.zeros((2, 8, 8)), backend, train=False)
    with pytest.raises(RuntimeError, match="forward"):
        net.backward(np.zeros((2, 10)), backend)


def test_init_weights_shapes_and_limits() -> None:
    net = Network(cnn_wang2019())
    weights = net.init_weights(np.random.default_rng(0), scale=0.5)
    net.check_weights(weights)
    assert np.abs(weights["conv1"]).max() <= 0.5 * np.sqrt(6 / 9)  # He: conv1 is ReLU
    assert np.abs(weights["conv2"]).max() <= 0.5 * np.sqrt(6 / (60 + 4))  # Glorot: conv2 is linear
    weights["dense1"] = weights["dense1"][:-1]
    del weights["conv1"]
    with pytest.raises(ValueError, match=r"missing 'conv1'.*'dense1' has shape \(63, 10\), expected \(64, 10\)"):
        net.check_weights(weights)
    with pytest.raises(KeyError, match=r"no weights for layer 'conv1' \(known: conv2, dense1\)"):
        net.forward(np.zeros((1, 8, 8)), ExactBackend(weights))


# ---------------------------------------------------------------------------------------------
# loss


def test_cross_entropy_value_gradient_and_stability() -> None:
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(4, 3))
    y = np.array([0, 2, 1, 2])
    loss, d = softmax_cross_entropy(logits, y)
    p = softmax(logits)
    assert loss == pytest.approx(-np.mean(np.log(p[np.arange(4), y])))
    np.testing.assert_allclose(d, (p - np.eye(3)[y]) / 4)
    big_loss, big_d = softmax_cross_entropy(np.array([[1e4, -1e4, 0.0]]), np.array([1]))
    assert big_loss == pytest.approx(2e4) and np.all(np.isfinite(big_d))
    assert accuracy(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 0])) == 0.5
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.2"):
        softmax_cross_entropy(logits, np.array([0, 1, 2, 3]))


# ---------------------------------------------------------------------------------------------
# training sanity


def _separable_digits(n: int, rng: np.random.Generator) -> tuple[FloatArray, np.ndarray[Any, Any]]:
    """Four 8x8 prototype patterns plus noise: a tiny problem any of the networks should learn."""
    prototypes = rng.random((4, 8, 8))
    y = rng.integers(0, 4, size=n)
    return prototypes[y] + 0.3 * rng.normal(size=(n, 8, 8)), y


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_sgd_reduces_the_loss(model: str) -> None:
    rng = np.random.default_rng(6)
    net = Network(get_architecture(model))
    weights = net.init_weights(rng)
    backend = ExactBackend(weights)
    x, y = _separable_digits(400, rng)
    initial, _ = softmax_cross_entropy(net.forward(x, backend, train=False), y)
    for step in range(80):
        batch = slice((step % 8) * 50, (step % 8 + 1) * 50)
        _, d = softmax_cross_entropy(net.forward(x[batch], backend), y[batch])
        for name, g in net.backward(d, backend).items():
            weights[name] -= 0.1 * g  # in place: the backend sees the update
    logits = net.forward(x, backend, train=False)
    final, _ = softmax_cross_entropy(logits, y)
    assert final < 0.3 * initial
    assert accuracy(logits, y) > 0.9
