"""Optimizers that turn gradients into weight changes (Yan 2020: momentum and adaptive rates
speed up memristor training). Their state is plain arrays, so a run can checkpoint and resume.

Each rule is one small class in :data:`OPTIMIZER_RULES` (the registry the command line offers):
``change(g, state, steps)`` returns a layer's weight change and updates that layer's state slots
in place. :class:`Optimizer` holds the state of every layer and knows no rule by name.
"""

from __future__ import annotations

from typing import ClassVar, Literal, get_args

import numpy as np
import numpy.typing as npt
from pydantic import ConfigDict, Field

from drivers.config_model import ConfigModel

FloatArray = npt.NDArray[np.float64]
OptimizerName = Literal["sgd", "momentum", "rmsprop", "adam", "manhattan"]
OPTIMIZER_NAMES: tuple[str, ...] = get_args(OptimizerName)
"""Every optimizer, as the command line offers them."""
MAX_LR = 10.0
"""Largest learning rate accepted: a weight moving more than ten times its gradient per step is a typo."""


class OptimizerConfig(ConfigModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: OptimizerName = "sgd"
    lr: float = Field(0.1, gt=0, le=MAX_LR, description="learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="momentum coefficient (momentum)")
    rho: float = Field(0.9, ge=0, lt=1, description="decay of the squared-gradient average (rmsprop)")
    beta1: float = Field(0.9, ge=0, lt=1, description="first-moment decay (adam)")
    beta2: float = Field(0.999, ge=0, lt=1, description="second-moment decay (adam)")
    eps: float = Field(1e-8, gt=0, le=1.0, description="denominator floor (rmsprop, adam)")


State = dict[str, FloatArray]
"""One layer's slots by name (e.g. ``velocity``), each shaped like its gradient."""


class OptimizerRule:
    """How one optimizer turns a layer's gradient into its weight change."""

    slots: ClassVar[tuple[str, ...]] = ()
    """The state a layer keeps between steps (saved in checkpoints)."""

    def __init__(self, config: OptimizerConfig) -> None:
        self.config = config

    def change(self, g: FloatArray, state: State, steps: int) -> FloatArray:
        """The weight change for gradient ``g`` at step ``steps`` (1 for the first); updates ``state``."""
        raise NotImplementedError


class Sgd(OptimizerRule):
    def change(self, g: FloatArray, state: State, steps: int) -> FloatArray:
        return -self.config.lr * g


class Manhattan(OptimizerRule):
    """Only the sign of the gradient: one fixed step per weight (Manhattan-rule memristor training)."""

    def change(self, g: FloatArray, state: State, steps: int) -> FloatArray:
        return -self.config.lr * np.sign(g)


class Momentum(OptimizerRule):
    slots = ("velocity",)

    def change(self, g: FloatArray, state: State, steps: int) -> FloatArray:
        v = state["velocity"]
        v *= self.config.momentum
        v -= self.config.lr * g
        return v.copy()


class RmsProp(OptimizerRule):
    slots = ("square",)

    def change(self, g: FloatArray, state: State, steps: int) -> FloatArray:
        c = self.config
        s = state["square"]
        s *= c.rho
        s += (1 - c.rho) * g**2
        return -c.lr * g / (np.sqrt(s) + c.eps)


class Adam(OptimizerRule):
    slots = ("m", "v")

    def change(self, g: FloatArray, state: State, steps: int) -> FloatArray:
        c = self.config
        m, s = state["m"], state["v"]
        m *= c.beta1
        m += (1 - c.beta1) * g
        s *= c.beta2
        s += (1 - c.beta2) * g**2
        m_hat = m / (1 - c.beta1**steps)
        s_hat = s / (1 - c.beta2**steps)
        return -c.lr * m_hat / (np.sqrt(s_hat) + c.eps)


OPTIMIZER_RULES: dict[str, type[OptimizerRule]] = {
    "sgd": Sgd,
    "momentum": Momentum,
    "rmsprop": RmsProp,
    "adam": Adam,
    "manhattan": Manhattan,
}
"""Every optimizer by the name a config gives (the same names as :data:`OPTIMIZER_NAMES`)."""


class Optimizer:
    """``step(grads) -> delta``: the weight change for each layer's gradient."""

    def __init__(self, config: OptimizerConfig) -> None:
        self.config = config
        self.rule = OPTIMIZER_RULES[config.name](config)
        self.steps = 0
        self.state: dict[str, FloatArray] = {}  # "<slot>/<layer>" -> array

    def _layer_state(self, layer: str, like: FloatArray) -> State:
        return {slot: self.state.setdefault(f"{slot}/{layer}", np.zeros_like(like)) for slot in self.rule.slots}

    def step(self, grads: dict[str, FloatArray]) -> dict[str, FloatArray]:
        self.steps += 1
        return {layer: self.rule.change(g, self._layer_state(layer, g), self.steps) for layer, g in grads.items()}

    def state_arrays(self) -> dict[str, FloatArray]:
        return {"steps": np.array(self.steps, dtype=np.float64), **{k: v.copy() for k, v in self.state.items()}}

    def load_state_arrays(self, arrays: dict[str, FloatArray]) -> None:
        self.steps = int(arrays.get("steps", np.array(0.0)))
        self.state = {k: np.array(v, dtype=np.float64) for k, v in arrays.items() if k != "steps"}
