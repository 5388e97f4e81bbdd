"""Softmax cross-entropy and accuracy."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from hil.nn.backend import FloatArray


def softmax(logits: FloatArray) -> FloatArray:
    """Row-wise softmax; the row maximum is subtracted first so exp never overflows."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float64)


def softmax_cross_entropy(logits: FloatArray, labels: npt.ArrayLike) -> tuple[float, FloatArray]:
    """Mean cross-entropy of integer ``labels`` (n,) under softmax(logits) (n, k), and dL/dlogits.

    Uses log-sum-exp, so very confident wrong logits give a large finite loss rather than inf.
    """
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    n, k = logits.shape
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be {n} integers, got shape {y.shape} of {y.dtype}")
    if n and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"labels must lie in 0..{k - 1}, got {y.min()}..{y.max()}")
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=1))
    rows = np.arange(n)
    loss = float(np.mean(log_z - shifted[rows, y])) if n else 0.0
    dlogits = np.exp(shifted - log_z[:, None])
    dlogits[rows, y] -= 1.0
    return loss, dlogits / max(n, 1)


def accuracy(logits: FloatArray, labels: npt.ArrayLike) -> float:
    """Fraction of samples whose largest logit is the label's."""
    y = np.asarray(labels)
    return float(np.mean(np.argmax(logits, axis=1) == y)) if y.size else 0.0
