"""What a training run is: the network, data, boards, placement, update rule and optimizer.

A run's config is stored whole in its HDF5 file, so ``hil train --resume FILE`` needs nothing
else. Every field has a default that reproduces the paper the model name refers to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, model_validator

from hil.config import EMBEDDED_EMULATOR, BoardConfig, ConfigError, read_config_file, validation_problems
from hil.mapping import BadLines, PlacementSpec
from hil.optimizers import MAX_LR, OptimizerConfig
from hil.updates import GateCodedConfig, WriteVerifyUpdateConfig

ModelName = Literal["mlp", "cnn", "convlstm", "yao-hybrid"]
MODEL_NAMES: tuple[str, ...] = get_args(ModelName)
"""Every model by name, as the command line offers them."""
MAX_UPDATES = 10_000_000
"""Most weight updates a run may ask for (the papers use 1,200 to 1,600; a chip wears out long before)."""
MAX_BOARDS = 64

# The dataset each paper's network was trained on, as the embedded default.
DEFAULT_DATASET: dict[str, str] = {
    "mlp": "mnist8",
    "cnn": "mnist8",
    "convlstm": "mnist-sequences",
    "yao-hybrid": "mnist28",
}


class HybridConfig(BaseModel):
    """Yao 2020 hybrid training: software pre-training, transfer, then in-situ retraining of some layers."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    pretrain_epochs: int = Field(3, ge=0, le=1000, description="software training epochs before transfer")
    pretrain_lr: float = Field(0.05, gt=0, le=MAX_LR, description="learning rate of the software pre-training (Adam)")
    weight_clip: float = Field(0.8, gt=0, le=1000, description="largest |weight| the software pre-training allows")
    retrain_layers: list[str] = Field(
        default_factory=lambda: ["dense1"], max_length=1000, description="layers trained in situ"
    )
    transfer_tolerance: float = Field(4e-6, gt=0, le=0.1, description="write-verify tolerance of the transfer, S")


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    model: ModelName = "cnn"
    network: dict[str, Any] | None = Field(None, description="a custom network spec; replaces the model's")
    dataset: str | None = Field(None, max_length=200, description="dataset name; default: the model's paper's")
    dataset_options: dict[str, Any] = Field(default_factory=dict)
    boards: dict[str, str | BoardConfig] = Field(
        default_factory=lambda: dict[str, str | BoardConfig](board0=EMBEDDED_EMULATOR),
        max_length=MAX_BOARDS,
        description="the boards by name: a resource string, or a table as in a board config "
        "(resource, timeout, framing, limits)",
    )
    placement: PlacementSpec | None = Field(None, description="where each layer goes; default: packed automatically")
    bad_lines: dict[str, BadLines] = Field(default_factory=dict, description="lines never to use, per board")
    layout: Literal["paired-rows", "row-blocks"] = "paired-rows"
    update: Literal["gate-coded", "write-verify", "exact"] | None = Field(
        None,
        description="how weight changes reach the array ('exact': the software baseline, no array); "
        "default: write-verify for yao-hybrid, gate-coded otherwise",
    )
    calibrate: StrictBool = Field(
        True, description="characterize the used devices first (per-device SET fit; finds defective devices)"
    )
    calibration_gates: int = Field(6, ge=2, le=64, description="gate voltages measured by the calibration")
    calibration_max_age: float | None = Field(
        None, ge=0, description="reuse the chip's gate calibration from its ledger when measured at most this many "
        "seconds ago with the same pulse parameters, s; default: always measure",
    )  # fmt: skip
    prune_defective: StrictBool = Field(True, description="cancel defective pairs' currents on the host (weight 0)")
    initial_tolerance: float = Field(4e-6, gt=0, le=0.1, description="write-verify tolerance of the initial weights, S")
    gate_coded: GateCodedConfig = Field(default_factory=GateCodedConfig)
    write_verify: WriteVerifyUpdateConfig = Field(default_factory=WriteVerifyUpdateConfig)
    hybrid: HybridConfig = Field(default_factory=HybridConfig)
    optimizer: OptimizerConfig = Field(default_factory=lambda: OptimizerConfig(name="rmsprop", lr=0.01))
    batch_size: int = Field(100, ge=1, le=65536, description="samples per weight update")
    updates: int = Field(1200, ge=1, le=MAX_UPDATES, description="weight updates (the papers: MLP 1,600, CNN 1,200)")
    eval_every: int = Field(100, ge=1, le=MAX_UPDATES, description="updates between test-set evaluations")
    init_scale: float = Field(1.0, gt=0, le=1000, description="multiplies the network's default initial weights")
    g_unit: float = Field(100e-6, gt=0, le=0.1, description="conductance per unit weight, S")
    v_input: float = Field(0.2, gt=0, le=100, description="largest row voltage of an input vector, V")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="the training order and the initial weights")

    @model_validator(mode="after")
    def _known_board_names(self) -> TrainConfig:
        for board in self.bad_lines:
            if board not in self.boards:
                raise ValueError(f"bad_lines names board {board!r}, not one of {sorted(self.boards)}")
        return self

    @property
    def board_configs(self) -> dict[str, BoardConfig]:
        return {name: b if isinstance(b, BoardConfig) else BoardConfig(resource=b) for name, b in self.boards.items()}

    @property
    def dataset_name(self) -> str:
        return self.dataset or DEFAULT_DATASET[self.model]

    @property
    def update_rule(self) -> str:
        return self.update or ("write-verify" if self.model == "yao-hybrid" else "gate-coded")


def load_train_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """A config file (TOML or JSON) with command-line overrides on top; errors name every field."""
    data: dict[str, Any] = read_config_file(path, "training config") if path else {}
    data.update(overrides or {})
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"training config has errors:\n{validation_problems(exc)}") from None
