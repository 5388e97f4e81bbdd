"""What a training run is: the network, data, boards, placement, update rule and optimizer.

A run's config is stored whole in its HDF5 file, so ``hil train --resume FILE`` needs nothing
else. Every field has a default that reproduces the paper the model name refers to: the fields a
run leaves out (optimizer and learning rate, batch, budget, dataset, update rule) come from the
model's row of :data:`hil.nn.defaults.MODEL_DEFAULTS`, one field at a time, so a field given alone
never changes another.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args
from urllib.parse import parse_qsl, urlencode

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from drivers.config_model import ConfigModel
from drivers.resources import is_in_process
from hil.config import EMBEDDED_EMULATOR, BoardConfig, ConfigError, read_config_file, validation_problems
from hil.mapping import BadLines, PlacementSpec
from hil.nn.defaults import MODEL_DEFAULTS, model_defaults
from hil.noise_aware import WeightNoise
from hil.optimizers import MAX_LR, OptimizerConfig
from hil.run_layout import layout_version
from hil.transfer import TransferConfig
from hil.updates import GateCodedConfig, WriteVerifyUpdateConfig

if TYPE_CHECKING:
    from hil.storage import RunData

ModelName = Literal["mlp", "cnn", "convlstm", "yao-hybrid"]
MODEL_NAMES: tuple[str, ...] = get_args(ModelName)
"""Every model by name, as the command line offers them."""
MAX_UPDATES = 10_000_000
"""Most weight updates a run may ask for (the papers use 1,200 to 1,600; a chip wears out long before)."""
MAX_BOARDS = 64
MAX_SEED = 2**32 - 1


class HybridConfig(ConfigModel):
    """Yao 2020 hybrid training: software pre-training, transfer, then in-situ retraining of some layers."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    pretrain_epochs: int = Field(5, ge=0, le=1000, description="software training epochs before transfer")
    pretrain_lr: float = Field(0.05, gt=0, le=MAX_LR, description="learning rate of the software pre-training (Adam)")
    weight_clip: float = Field(0.8, gt=0, le=1000, description="largest |weight| the software pre-training allows")
    pretrain_noise: WeightNoise = Field(
        default_factory=WeightNoise, description="weight errors the software pre-training draws on every forward "
        "pass (noise-aware training, hil/noise_aware.py); default: none",
    )  # fmt: skip
    retrain_layers: list[str] = Field(
        default_factory=lambda: ["dense1"], max_length=1000, description="layers trained in situ"
    )
    transfer_tolerance: float = Field(2e-6, gt=0, le=0.1, description="write-verify tolerance of the transfer, S")


class ParallelConfig(ConfigModel):
    """Yao 2020's parallel mode (hil/parallel.py, ``hil parallel``): convolutions written ``groups``
    times, each copy computing one band of output positions."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    groups: int = Field(3, ge=2, le=64, description="copies of each replicated layer")
    layers: list[str] = Field(
        default_factory=lambda: ["conv1"], min_length=1, max_length=64, description="the convolutions replicated"
    )


def _with_default(section: Any, field: str, value: Any) -> Any:
    """A sub-config (as given: a dict or a model) with ``field`` set to the model's ``value`` unless the
    run set it; anything else is left for the field's own check."""
    if isinstance(section, dict):
        return section if field in section else {**section, field: value}
    if isinstance(section, BaseModel) and field not in section.model_fields_set:
        return section.model_copy(update={field: value})
    return section


class TrainConfig(ConfigModel):
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
    parallel: ParallelConfig | None = Field(None, description="parallel mode (run by `hil parallel`); default: off")
    transfer: TransferConfig = Field(default_factory=TransferConfig)
    vmm_readback: StrictBool | None = Field(
        None,
        description="read each tile's effective weights by a VMM of one-hot inputs after every update (one more "
        "round trip per tile) for the forward correction, the backward pass and the update's scale; default: "
        "the model's (on for the CNN and the Yao network)",
    )
    initial_weights: str | None = Field(
        None, max_length=4096, description="a .npz of weights trained elsewhere to start from (docs/training.md, "
        "'Deploying weights trained elsewhere'); default: random (yao-hybrid: trained in software first)",
    )  # fmt: skip
    # optimizer, batch_size, updates and eval_every: the model's paper's when left out (_model_defaults)
    optimizer: OptimizerConfig = Field(
        default_factory=lambda: OptimizerConfig.model_validate(_optimizer_defaults("cnn", {}))
    )
    batch_size: int = Field(100, ge=1, le=65536, description="samples per weight update")
    updates: int = Field(
        1200,
        ge=0,
        le=MAX_UPDATES,
        description="weight updates (0, with initial_weights only: write the weights and evaluate them)",
    )
    eval_every: int = Field(100, ge=1, le=MAX_UPDATES, description="updates between test-set evaluations")
    fit_initial_weights: StrictBool = Field(
        False, description="scale each layer of initial_weights so its largest |weight| is what a device pair "
        "holds (only where that leaves the network's answers unchanged: bias-free ReLU or linear layers)",
    )  # fmt: skip
    retrain_layers: list[str] | None = Field(
        None, max_length=1000, description="the layers trained in situ; default: all "
        "(yao-hybrid: hybrid.retrain_layers)",
    )  # fmt: skip
    init_scale: float = Field(1.0, gt=0, le=1000, description="multiplies the network's default initial weights")
    g_unit: float = Field(100e-6, gt=0, le=0.1, description="conductance per unit weight, S (default: the model's)")
    layer_g_unit: dict[str, Annotated[float, Field(gt=0, le=0.1)]] = Field(
        default_factory=dict, max_length=1000,
        description="per layer, a conductance per unit weight replacing g_unit (S): more conductance per "
        "unit for a layer of small weights puts them further above the write and read noise",
    )  # fmt: skip
    v_input: float = Field(0.2, gt=0, le=100, description="largest row voltage of an input vector, V")
    seed: int = Field(
        0, ge=0, le=MAX_SEED, description="the training order and the initial weights "
        "(not the emulated chip: chip_seed)",
    )  # fmt: skip
    chip_seed: int | None = Field(
        None, ge=0, le=MAX_SEED, description="the emulated chip's realization (defects, device spread, noise) of "
        "every emulator:// board; default: the resource's own seed (the embedded emulator's is 1)",
    )  # fmt: skip

    @model_validator(mode="before")
    @classmethod
    def _model_defaults(cls, data: Any) -> Any:
        """Fill what the run leaves out from its model's paper, field by field."""
        if not isinstance(data, dict):
            return data
        model = data.get("model", "cnn")
        if not isinstance(model, str) or model not in MODEL_DEFAULTS:
            return data  # the model field's own check names it
        defaults = model_defaults(model)
        data = dict(data)
        if "g_unit" not in data and "layer_g_unit" not in data and data.get("network") is None:
            # the model's per-layer conductances go with its g_unit and its network: a run that sets
            # either conductance, or its own network, sets both
            data["layer_g_unit"] = dict(defaults.layer_g_unit)
        for name in ("batch_size", "updates", "eval_every", "g_unit"):
            data.setdefault(name, getattr(defaults, name))
        if data.get("vmm_readback") is None:
            # stored resolved, so a run file keeps what it trained with when the model's default changes
            data["vmm_readback"] = defaults.vmm_readback
        data["gate_coded"] = _with_default(data.get("gate_coded", {}), "dvg_min", defaults.dvg_min)
        data["transfer"] = _with_default(data.get("transfer", {}), "refine_initial", defaults.refine_initial)
        optimizer = data.get("optimizer", {})
        if isinstance(optimizer, dict):
            data["optimizer"] = _optimizer_defaults(model, optimizer)
        return data

    @field_validator("updates")
    @classmethod
    def _some_updates(cls, updates: int, info: ValidationInfo) -> int:
        if updates == 0 and info.data.get("initial_weights") is None:  # initial_weights is declared first
            raise ValueError("0 trains nothing: at least 1 (0 only deploys initial_weights)")
        return updates

    @model_validator(mode="after")
    def _known_board_names(self) -> TrainConfig:
        for board in self.bad_lines:
            if board not in self.boards:
                raise ValueError(f"bad_lines names board {board!r}, not one of {sorted(self.boards)}")
        if self.chip_seed is not None:
            for name, entry in self.boards.items():
                resource = entry.resource if isinstance(entry, BoardConfig) else entry
                if not is_in_process(resource):
                    raise ValueError(f"chip_seed = {self.chip_seed} seeds emulator:// boards only; board {name!r} "
                                     f"is {resource} (an emulator server takes its seed as "
                                     "'serve --seed N')")  # fmt: skip
        return self

    @property
    def board_configs(self) -> dict[str, BoardConfig]:
        configs = {n: b if isinstance(b, BoardConfig) else BoardConfig(resource=b) for n, b in self.boards.items()}
        if self.chip_seed is None:
            return configs
        return {name: c.model_copy(update={"resource": _with_seed(c.resource, self.chip_seed)})
                for name, c in configs.items()}  # fmt: skip

    @property
    def dataset_name(self) -> str:
        return self.dataset or model_defaults(self.model).dataset

    @property
    def uses_vmm_readback(self) -> bool:
        return self.vmm_readback if self.vmm_readback is not None else model_defaults(self.model).vmm_readback

    @property
    def update_rule(self) -> str:
        return self.update or model_defaults(self.model).update

    @property
    def weight_limit(self) -> float:
        """The largest |weight| a pair of nominal devices holds around the middle of the gate window."""
        g = self.gate_coded
        return g.set_slope * (g.v_gate_max - g.v_gate_min) / self.g_unit

    @property
    def trained_layers(self) -> list[str] | None:
        """The layers trained in situ (``None``: all of them)."""
        if self.retrain_layers is not None:
            return self.retrain_layers
        hybrid = self.model == "yao-hybrid" and self.update_rule != "exact"  # its baseline trains every layer
        return self.hybrid.retrain_layers if hybrid else None


def _optimizer_defaults(model: str, given: dict[str, Any]) -> dict[str, Any]:
    """An optimizer config with the model's optimizer if none is named, and the model's learning rate
    for that optimizer if none is given (an unknown name is left for the optimizer's own check)."""
    defaults = model_defaults(model)
    filled = {"name": defaults.optimizer} | given
    name = filled["name"]
    if "lr" not in filled and isinstance(name, str) and name in defaults.lr:
        filled["lr"] = defaults.lr_for(name)
    return filled


def _with_seed(resource: str, seed: int) -> str:
    """``emulator://?...`` with its ``seed`` parameter set to ``seed`` (added if absent)."""
    head, _, query = resource.partition("?")
    params = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "seed"]
    return f"{head}?{urlencode([*params, ('seed', str(seed))])}"


def load_train_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """A config file (TOML or JSON) with command-line overrides on top; errors name every field.

    An override replaces only the fields it names: ``--lr`` keeps the file's optimizer, and
    ``--mnist-dir`` the file's other ``dataset_options`` of the same dataset. Naming another
    optimizer without a learning rate drops the file's rate (it was for the other one), so the
    model's rate for the named optimizer applies.
    """
    data: dict[str, Any] = read_config_file(path, "training config") if path else {}
    file_dataset = data.get("dataset")
    for key, value in (overrides or {}).items():
        # --mnist-dir names the folder only: the file's other options (size = 28) stay, where they are the same
        # dataset's
        same_dataset = (overrides or {}).get("dataset", file_dataset) == file_dataset
        if key == "dataset_options" and isinstance(value, dict) and isinstance(data.get(key), dict) and same_dataset:
            value = data[key] | value
        if key == "optimizer" and isinstance(value, dict) and isinstance(data.get(key), dict):
            kept = dict(data[key])
            if "name" in value and value["name"] != kept.get("name") and "lr" not in value:
                kept.pop("lr", None)
            value = kept | value
        data[key] = value
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"training config has errors:\n{validation_problems(exc)}") from None


RESOLVED_READBACK_LAYOUT = (1, 4)
"""The first run-file layout whose training config stores ``vmm_readback`` resolved (true or false)."""


def _readback_before_1_4(model: str) -> bool:
    """What ``vmm_readback = null`` meant in a file written before layout 1.4: on for the Yao network
    only (the CNN's read-back default came later)."""
    return model == "yao-hybrid"


def stored_train_config(run: RunData, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """The training config a run file holds, as it meant when written, with ``overrides`` on top.

    A field left null meant "the model's default" of the software that wrote the file; where that
    default has changed since, the file's layout version says which meaning applies."""
    data = dict(run.config)
    if layout_version(run.root) < RESOLVED_READBACK_LAYOUT and data.get("vmm_readback") is None:
        data["vmm_readback"] = _readback_before_1_4(str(data.get("model", "cnn")))
    return load_train_config("", data | dict(overrides or {}))


def models_help() -> str:
    """Each model's defaults, for ``hil train --help``."""
    lines = ["each model's defaults (its paper's; flags and --config override them field by field):"]
    for name, defaults in MODEL_DEFAULTS.items():
        others = ", ".join(f"{opt} {lr:g}" for opt, lr in defaults.lr.items() if opt != defaults.optimizer)
        lines += [f"  {name:<11} {defaults.summary()}", f"  {'':<11} learning rate with --optimizer: {others}"]
    return "\n".join(lines)
