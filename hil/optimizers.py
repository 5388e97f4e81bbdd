"""Optimizers that turn gradients into weight changes (Yan 2020: momentum and adaptive rates
speed up memristor training). Their state is plain arrays, so a run can checkpoint and resume."""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

FloatArray = npt.NDArray[np.float64]
OptimizerName = Literal["sgd", "momentum", "rmsprop", "adam", "manhattan"]
OPTIMIZER_NAMES: tuple[str, ...] = get_args(OptimizerName)
"""Every optimizer, as the command line offers them."""
MAX_LR = 10.0
"""Largest learning rate accepted: a weight moving more than ten times its gradient per step is a typo."""


class OptimizerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: OptimizerName = "sgd"
    lr: float = Field(0.1, gt=0, le=MAX_LR, description="learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="momentum coefficient (momentum)")
    rho: float = Field(0.9, ge=0, lt=1, description="decay of the squared-gradient average (rmsprop)")
    beta1: float = Field(0.9, ge=0, lt=1, description="first-moment decay (adam)")
    beta2: float = Field(0.999, ge=0, lt=1, description="second-moment decay (adam)")
    eps: float = Field(1e-8, gt=0, le=1.0, description="denominator floor (rmsprop, adam)")


class Optimizer:
    """``step(grads) -> delta``: the weight change for each layer's gradient."""

    def __init__(self, config: OptimizerConfig) -> None:
        self.config = config
        self.steps = 0
        self.state: dict[str, FloatArray] = {}  # "<slot>/<layer>" -> array

    def _slot(self, slot: str, layer: str, like: FloatArray) -> FloatArray:
        return self.state.setdefault(f"{slot}/{layer}", np.zeros_like(like))

    def step(self, grads: dict[str, FloatArray]) -> dict[str, FloatArray]:
        c = self.config
        self.steps += 1
        delta = {}
        for layer, g in grads.items():
            if c.name == "sgd":
                d = -c.lr * g
            elif c.name == "manhattan":
                d = -c.lr * np.sign(g)
            elif c.name == "momentum":
                v = self._slot("velocity", layer, g)
                v *= c.momentum
                v -= c.lr * g
                d = v.copy()
            elif c.name == "rmsprop":
                s = self._slot("square", layer, g)
                s *= c.rho
                s += (1 - c.rho) * g**2
                d = -c.lr * g / (np.sqrt(s) + c.eps)
            else:  # adam
                m = self._slot("m", layer, g)
                s = self._slot("v", layer, g)
                m *= c.beta1
                m += (1 - c.beta1) * g
                s *= c.beta2
                s += (1 - c.beta2) * g**2
                m_hat = m / (1 - c.beta1**self.steps)
                s_hat = s / (1 - c.beta2**self.steps)
                d = -c.lr * m_hat / (np.sqrt(s_hat) + c.eps)
            delta[layer] = d
        return delta

    def state_arrays(self) -> dict[str, FloatArray]:
        return {"steps": np.array(self.steps, dtype=np.float64), **{k: v.copy() for k, v in self.state.items()}}

    def load_state_arrays(self, arrays: dict[str, FloatArray]) -> None:
        self.steps = int(arrays.get("steps", np.array(0.0)))
        self.state = {k: np.array(v, dtype=np.float64) for k, v in arrays.items() if k != "steps"}
