"""Each model's training defaults: the settings of the paper it reproduces, in one table.

``hil train --model NAME`` trains with these unless told otherwise, ``hil train --help`` shows
them, and ``TrainConfig`` fills every field a run leaves out from here. The learning rates are per
optimizer, so ``--optimizer X`` without ``--lr`` gets this model's rate for X (never another
optimizer's). Tuning a default is a one-line change of :data:`MODEL_DEFAULTS`; ``docs/training.md``
("Each model's defaults") says where each number comes from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

UpdateRuleName = Literal["gate-coded", "write-verify"]

# A rate for every optimizer, for models whose paper names only one: SGD-family rates are in weight
# units per unit gradient, the adaptive ones in weight units per step.
_GENERIC_LR: dict[str, float] = {"sgd": 0.1, "momentum": 0.05, "rmsprop": 0.01, "adam": 0.01, "manhattan": 0.01}


@dataclass(frozen=True)
class TrainingDefaults:
    """What a model trains with when a run does not say otherwise."""

    paper: str
    dataset: str
    optimizer: str
    batch_size: int
    updates: int
    eval_every: int
    update: UpdateRuleName = "gate-coded"
    g_unit: float = 100e-6  # conductance per unit weight, S
    # per layer, a conductance per unit weight replacing g_unit, S (layers of small weights get more)
    layer_g_unit: MappingProxyType[str, float] = field(default_factory=lambda: MappingProxyType({}))
    # the forward correction and backward pass use each tile's weights as its VMM computes them (one
    # more round trip per tile per update): the wires' drop, not the devices' noise, slows in-situ learning
    vmm_readback: bool = False
    # gate-coded pending gate change that earns a pulse, V: each pulse re-draws a device's write error,
    # so fewer, larger pulses leave the network a steadier error to learn around (docs/training.md)
    dvg_min: float = 0.015
    # random initial weights corrected on what the VMMs compute (transfer.refine_initial): the wires make
    # the read map's weights another network, and with the read-back the trainer computes with the VMM's
    refine_initial: bool = False
    lr: MappingProxyType[str, float] = field(default_factory=lambda: MappingProxyType(dict(_GENERIC_LR)))

    def lr_for(self, optimizer: str) -> float:
        """This model's learning rate for ``optimizer``."""
        return self.lr[optimizer]

    def summary(self) -> str:
        """One line for ``--help``: optimizer, learning rate, batch, budget."""
        return (f"{self.paper}: {self.optimizer} lr {self.lr_for(self.optimizer):g}, batch {self.batch_size}, "
                f"{self.updates:,} updates, {self.update}{self._pulse_threshold()}"
                f"{', VMM read-back' if self.vmm_readback else ''}"
                f"{', initial weights corrected on the VMM' if self.refine_initial else ''}, "
                f"{self.g_unit * 1e6:g} uS per unit weight{self._layer_units()}, {self.dataset}")  # fmt: skip

    def _pulse_threshold(self) -> str:
        return f" (dvg_min {self.dvg_min:g} V)" if self.update == "gate-coded" else ""

    def _layer_units(self) -> str:
        return "".join(f" ({layer} {g * 1e6:g} uS)" for layer, g in self.layer_g_unit.items())


def _rates(**overrides: float) -> MappingProxyType[str, float]:
    return MappingProxyType(_GENERIC_LR | overrides)


MODEL_DEFAULTS: MappingProxyType[str, TrainingDefaults] = MappingProxyType({
    # Li 2018: SGD, batch 50, 1,600 updates (80,000 samples). lr 0.5, not the paper's 0.1: steps large against a
    # device's noise, and a faster float network too. Pulses only for pending changes of 0.03 V (a third of the
    # pulses). VMM read-back with the initial weights corrected on the VMM (session 8, round 2): the wires make
    # the network the VMM computes another than the read map's (centred logits' cosine 0.5 at the start), so
    # without them the MLP started 20 points behind float after 10 updates (5 with them). With the read-back
    # the weights are the VMM's, which sees about 0.6 of a pair's difference on these 128-row columns: 120 uS
    # per unit weight (60 for the output layer, whose weights reach 1.5) is the 200 (100) uS of map weight
    # the MLP used without it, the same range and noise per unit weight (docs/training.md, "Learning speed").
    "mlp": TrainingDefaults("Li 2018", "mnist8", "sgd", batch_size=50, updates=1600, eval_every=100,
                            g_unit=120e-6, layer_g_unit=MappingProxyType({"dense2": 60e-6}), dvg_min=0.03,
                            vmm_readback=True, refine_initial=True, lr=_rates(sgd=0.5)),
    # Wang 2019: RMSprop lr 0.01, batch 100, 2 epochs of 60,000 = 1,200 updates. Pulses for pending changes
    # of 0.03 V: RMSprop moves every weight every update, and each pulse re-draws the write error.
    "cnn": TrainingDefaults("Wang 2019", "mnist8", "rmsprop", batch_size=100, updates=1200, eval_every=100,
                            vmm_readback=True, dvg_min=0.03, lr=_rates(rmsprop=0.01)),
    # Wang 2019 ConvLSTM: RMSprop lr 0.01, batch 50 (budget not published: the CNN's 1,200).
    "convlstm": TrainingDefaults("Wang 2019", "mnist-sequences", "rmsprop", batch_size=50, updates=1200,
                                 eval_every=100, lr=_rates(rmsprop=0.01)),
    # Yao 2020: in-situ retraining batch 100 by threshold write-verify; the in-situ budget and
    # optimizer are not published (Adam lr 0.01 for 400 updates is what benchmarks/accuracy.py ran).
    "yao-hybrid": TrainingDefaults("Yao 2020", "mnist28", "adam", batch_size=100, updates=400, eval_every=100,
                                   update="write-verify", vmm_readback=True, lr=_rates(adam=0.01)),
})  # fmt: skip
"""Model name -> its paper's training settings (the names are those of ``ARCHITECTURES``)."""


def model_defaults(model: str) -> TrainingDefaults:
    """The defaults of ``model``; an unknown name is an error listing the known ones."""
    try:
        return MODEL_DEFAULTS[model]
    except KeyError:
        raise ValueError(f"unknown model {model!r}; known models: {', '.join(MODEL_DEFAULTS)}") from None
