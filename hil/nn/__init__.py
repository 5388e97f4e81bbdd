"""Neural networks for in-situ training: specs as data, forward through a backend, backward on the host.

>>> from hil.nn import ExactBackend, Network, get_architecture, softmax_cross_entropy
>>> net = Network(get_architecture("cnn"))
>>> backend = ExactBackend(net.init_weights(np.random.default_rng(0)))      # doctest: +SKIP
>>> loss, dlogits = softmax_cross_entropy(net.forward(x, backend), y)        # doctest: +SKIP
>>> grads = net.backward(dlogits, backend)                                  # doctest: +SKIP
"""

from hil.nn.architectures import (
    ARCHITECTURES,
    UnknownArchitectureError,
    cnn_wang2019,
    cnn_yao2020,
    convlstm_wang2019,
    get_architecture,
    mlp_li2018,
)
from hil.nn.backend import ExactBackend, FloatArray, MatmulBackend
from hil.nn.layers import Conv2D, ConvLSTM2D, Dense, Flatten, Layer, MaxPool2D, col2im, im2col
from hil.nn.loss import accuracy, softmax, softmax_cross_entropy
from hil.nn.network import Network
from hil.nn.spec import (
    Activation,
    ConvLSTMSpec,
    ConvSpec,
    DenseSpec,
    FlattenSpec,
    LayerShape,
    LayerSpec,
    MaxPoolSpec,
    NetworkSpec,
    NetworkSpecError,
    load_network_spec,
    same_padding,
)

__all__ = [
    "ARCHITECTURES",
    "Activation",
    "Conv2D",
    "ConvLSTM2D",
    "ConvLSTMSpec",
    "ConvSpec",
    "Dense",
    "DenseSpec",
    "ExactBackend",
    "Flatten",
    "FlattenSpec",
    "FloatArray",
    "Layer",
    "LayerShape",
    "LayerSpec",
    "MatmulBackend",
    "MaxPool2D",
    "MaxPoolSpec",
    "Network",
    "NetworkSpec",
    "NetworkSpecError",
    "UnknownArchitectureError",
    "accuracy",
    "cnn_wang2019",
    "cnn_yao2020",
    "col2im",
    "convlstm_wang2019",
    "get_architecture",
    "im2col",
    "load_network_spec",
    "mlp_li2018",
    "same_padding",
    "softmax",
    "softmax_cross_entropy",
]
