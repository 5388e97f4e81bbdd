"""A campaign: a base run config, the axes it is swept over, and the boards its cells run on.

A campaign file (TOML or JSON)::

    name = "write-noise"
    kind = "train"                                   # train | characterize | sequence
    emulator = "emulator://?preset=umass-ta-hfo2"    # each cell's emulated chip (seeded per cell)
    # pool = ["TCPIP::10.0.0.5::5025::SOCKET", ...]  # or: real boards, one cell on each at a time
    seeds = 3                                        # or a list: [0, 1, 2]

    [base]                                           # the run config every cell starts from
    model = "mlp"
    updates = 300

    [axes]                                           # dotted paths into base, or emulator.<parameter>
    update = ["gate-coded", "write-verify"]
    "emulator.write_noise" = { start = 0.0, stop = 8e-6, num = 5 }

Every cell is one ordinary run; its key is the hash of its resolved config (:mod:`hil.sweep.keys`).
"""

from __future__ import annotations

import copy
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlencode

from pydantic import ConfigDict, Field, ValidationError

from drivers.config_model import ConfigModel
from hil.config import BoardConfig, ConfigError, validation_problems
from hil.sweep.axes import MAX_CELLS, Axis, AxisValue, combinations, set_path
from hil.sweep.keys import cell_key

Kind = Literal["train", "characterize", "sequence"]
EMULATOR_AXIS = "emulator."
DEFAULT_EMULATOR = "emulator://?preset=umass-ta-hfo2"
POOL_PLACEHOLDER = "TCPIP::pool.invalid::0::SOCKET"
"""Stands for the pool board a cell will take, while its config is checked before the campaign starts."""


class Campaign(ConfigModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # It names a folder (runs/sweep-NAME): no separators, no '..', no control characters, and it
    # ends in neither a dot nor a space (Windows drops them: "a." and "a" would be one folder).
    name: str = Field("campaign", min_length=1, max_length=200,
                      pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9 ._+=,-]*[A-Za-z0-9_+=,-])?$")  # fmt: skip
    kind: Kind = Field("train", description="what each cell runs: training, a characterization, a pulse sequence")
    base: dict[str, Any] = Field(default_factory=dict, description="the run config every cell starts from")
    emulator: str | None = Field(None, description=f"emulated chip of every cell (default {DEFAULT_EMULATOR})")
    pool: list[str] | None = Field(None, min_length=1, description="real boards' resources, instead of emulators")
    board: dict[str, Any] = Field(default_factory=dict, description="board settings (timeout, framing, limits)")
    axes: dict[str, Axis] = Field(default_factory=dict)
    zip: list[list[str]] = Field(default_factory=list, description="axes that advance together")
    seeds: Annotated[list[int], Field(max_length=MAX_CELLS)] | Annotated[int, Field(ge=0, le=MAX_CELLS)] = Field(
        default_factory=lambda: [0], description="seeds, or how many (0, 1, ...)"
    )
    resume: Literal["auto", "journal", "restart"] = Field(
        "auto", description="an interrupted cell: continue from its journal, or start it over; auto: continue "
        "on a board that outlived the run, start over on an in-process emulator (it died with its worker)",
    )  # fmt: skip
    pool_wait: float = Field(3600.0, gt=0, description="longest a cell waits for a free pool board, s")

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


@dataclass(frozen=True)
class Cell:
    """One run of a campaign: its config without its board, and the board it runs on."""

    key: str
    kind: Kind
    config: dict[str, Any]
    """the run config (training config; procedure and options; or the sequence), board not included"""
    resource: str | None
    """the emulated board's resource; None: a board taken from the pool when the cell starts"""
    board: dict[str, Any] = field(default_factory=dict)
    """board settings other than the resource"""
    values: dict[str, AxisValue] = field(default_factory=dict)
    """each axis's value in this cell, by axis path"""
    seed: int = 0

    def run_config(self, resource: str) -> dict[str, Any]:
        """The full config of the run, on ``resource``."""
        board = {**self.board, "resource": resource}
        if self.kind == "train":
            return {**self.config, "boards": {"board0": board}}
        return {**self.config, "board": board}

    def describe(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.values.items())
        return f"cell {self.key} ({shown}{', ' if shown else ''}seed {self.seed})"


def emulator_resource(base: str, parameters: dict[str, AxisValue]) -> str:
    """``base`` with ``parameters`` set in its query, keys sorted so equal chips spell equal resources."""
    head, _, query_text = base.partition("?")  # not urlsplit: it drops the empty host of emulator://
    query = dict(parse_qsl(query_text))
    query.update({k: json.dumps(v) if isinstance(v, bool) else str(v) for k, v in parameters.items()})
    return f"{head}?{urlencode(sorted(query.items()))}"


def expand(campaign: Campaign) -> list[Cell]:
    """Every cell of the campaign, in file order (axes outermost first, seeds innermost)."""
    if campaign.pool is not None and campaign.emulator is not None:
        raise ConfigError("a campaign runs on emulators or on a pool of boards: give emulator or pool, not both")
    if campaign.kind == "train" and "boards" in campaign.base:
        raise ConfigError("base.boards: a campaign gives each cell its board (emulator or pool); remove boards")
    emulator_axes = [name for name in campaign.axes if name.startswith(EMULATOR_AXIS)]
    if campaign.pool is not None and emulator_axes:
        raise ConfigError(f"axes.{emulator_axes[0]}: a pool of real boards has no emulator parameters")
    try:
        combos = list(combinations(campaign.axes, campaign.zip))
    except ValueError as exc:
        raise ConfigError(f"axes: {exc}") from None
    if len(combos) * len(campaign.seed_list) > MAX_CELLS:  # before a cell is built
        raise ConfigError(f"seeds: {len(combos):,} combinations of the axes x {len(campaign.seed_list):,} seeds make "
                          f"{len(combos) * len(campaign.seed_list):,} cells; at most {MAX_CELLS:,}")  # fmt: skip
    cells = []
    for values in combos:
        for seed in campaign.seed_list:
            config = copy.deepcopy(campaign.base)
            chip: dict[str, AxisValue] = {"seed": seed}
            for path, value in values.items():
                if path.startswith(EMULATOR_AXIS):
                    chip[path[len(EMULATOR_AXIS) :]] = value
                else:
                    try:
                        set_path(config, path, value)
                    except ValueError as exc:
                        raise ConfigError(f"axes.{exc}") from None
            if campaign.kind == "train":
                config["seed"] = seed
            resource = None if campaign.pool else emulator_resource(campaign.emulator or DEFAULT_EMULATOR, chip)
            # The seed is in the key even where nothing else takes it (a characterization on a pool
            # board): then the seeds are repeats of the same measurement, each its own cell.
            key = cell_key({"kind": campaign.kind, "config": config, "resource": resource, "board": campaign.board,
                            "seed": seed})  # fmt: skip
            cells.append(Cell(key, campaign.kind, config, resource, dict(campaign.board), dict(values), seed))
    first: dict[str, Cell] = {}
    for cell in cells:
        # Two cells of one key are one run file, written by two workers at once (seeds = [1, 1] left
        # it unreadable: "wrong B-tree signature").
        if (earlier := first.setdefault(cell.key, cell)) is not cell:
            raise ConfigError(f"{cell.describe()} is the same run as {earlier.describe()}: a seed or an axis "
                              "value is given twice; give each once")  # fmt: skip
    return cells


def check_cells(cells: list[Cell]) -> None:
    """Validate every cell's run config before any cell runs; the first bad one names its field."""
    from hil.sweep.kinds import validate_run_config

    checked: set[str] = set()  # per call: the data files may have changed since an earlier campaign's
    for cell in cells:
        try:
            validate_run_config(cell.kind, cell.run_config(cell.resource or POOL_PLACEHOLDER), checked)
        except ConfigError as exc:
            raise ConfigError(f"{cell.describe()}: {exc}") from None


def parse_campaign(data: dict[str, Any], source: str = "<campaign>", folder: Path | None = None) -> Campaign:
    """A campaign from its file's data; ``base`` (or ``base.sequence``) may name a file beside it."""
    try:
        campaign = Campaign.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"campaign {source} has errors:\n{validation_problems(exc)}") from None
    folder = folder or Path.cwd()
    if isinstance(data.get("base"), str):
        raise ConfigError(f'campaign {source}: base must be a table; to use a file write base.file = "..."')
    base = dict(campaign.base)
    if "file" in base:
        base = {**_read_table(folder / str(base.pop("file"))), **base}
    if campaign.kind == "sequence" and isinstance(base.get("sequence"), str):
        base["sequence"] = _read_table(folder / base["sequence"])
    if unknown := sorted(set(campaign.board) - set(BoardConfig.model_fields)):
        raise ConfigError(f"campaign {source}: board.{unknown[0]} is not a board setting")
    if "resource" in campaign.board:
        raise ConfigError(f"campaign {source}: board.resource: name boards with emulator or pool")
    return campaign.model_copy(update={"base": base})


def _read_table(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path} is not valid: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table at the top level")
    return data


def load_campaign(path: str | Path) -> Campaign:
    """Read a campaign file (TOML, or JSON by its suffix); errors name the field."""
    path = Path(path)
    return parse_campaign(_read_table(path), str(path), path.parent)
