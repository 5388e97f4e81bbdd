"""The board config a technician keeps beside a chip: where it is, and what may reach it.

A TOML or JSON file::

    resource = "TCPIP::192.168.1.20::5025::SOCKET"
    timeout = 10.0
    framing = true                # optional; default: frames whenever the firmware offers them

    [limits]                      # optional; default: the firmware's absolute limits
    v_row = { min = -3.0, max = 3.0 }
    v_col = { min = -3.0, max = 3.0 }
    v_gate = { min = 0.0, max = 5.0 }
    v_read = { min = -0.3, max = 0.3 }
    pulse_width = { min = 1e-8, max = 1e-4 }
    i_col = { min = -0.02, max = 0.02 }
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, StrictBool, ValidationError

from drivers import Board, SafetyLimits, open_board
from drivers.config_model import ConfigModel
from drivers.messages import validation_message
from hil.terminal import TransferBar

EMBEDDED_EMULATOR = "emulator://?preset=umass-ta-hfo2&seed=1"
MAX_CONFIG_BYTES = 1024 * 1024
"""Largest config file read: a board or training config is a few hundred bytes."""
MAX_NESTING = 32
"""Deepest nesting of tables and lists in a config (the deepest real one is about 5)."""


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and every bad field."""


class BoardConfig(ConfigModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    resource: str = Field(EMBEDDED_EMULATOR, min_length=1, max_length=1024, description="resource string of the board")
    timeout: float = Field(10.0, gt=0, le=3600, description="longest silence tolerated on the link, s")
    visa_backend: str = Field("@py", max_length=200, description="pyvisa backend for VISA resources")
    framing: StrictBool | None = Field(
        None, description="numbered, checksummed frames: true, false, or (default) whenever the firmware offers them"
    )
    limits: SafetyLimits | None = Field(None, description="host safety limits; default: the firmware's")
    baud_rate: int | None = Field(None, ge=50, le=100_000_000, description="an ASRL resource's baud rate "
                                  "(serial:// resources state it in their URL)")  # fmt: skip
    link_rate: float | None = Field(None, gt=0, le=1e11, description="the link's speed, bytes/s, so that maps "
                                    "and batches are split into commands of at most a few seconds each with a bar "
                                    "that moves; default: a serial resource's baud rate / 10")  # fmt: skip

    def open(self, resource: str | None = None) -> Board:
        """Open this board (or ``resource`` with these settings); use it as a context manager."""
        board = open_board(resource or self.resource, limits=self.limits, timeout=self.timeout,
                           visa_backend=self.visa_backend, baud_rate=self.baud_rate, framing=self.framing,
                           link_rate=self.link_rate)  # fmt: skip
        if board.link_rate is not None:  # a slow link: long transfers are split, and show it
            board.progress = TransferBar(str(board.identity))
        return board


def validation_problems(error: ValidationError) -> str:
    """Every error of a pydantic validation, one per line, with its field path and the value given
    (a scalar's; a table's or list's would not fit on the line)."""
    lines = (f"  {'.'.join(map(str, e['loc'])) or '(top level)'}: {validation_message(e)}" for e in error.errors())
    return "\n".join(lines)


def nesting_depth(data: Any) -> int:
    """How deep tables and lists nest in parsed data (a scalar is 0), without recursion."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if depth > MAX_NESTING:
            break
        stack.extend((child, depth + 1) for child in children)
    return deepest


def parse_config_text(text: str, fmt: str, what: str) -> Any:
    """JSON or TOML text as data; too deep, malformed or huge-number input is a :class:`ConfigError`."""
    try:
        data: Any = json.loads(text) if fmt == "json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{what} is not valid {fmt.upper()}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{what} nests too deeply (at most {MAX_NESTING} levels)") from None
    except ValueError as exc:  # an integer of thousands of digits
        raise ConfigError(f"{what} is not valid {fmt.upper()}: {exc}") from None
    if nesting_depth(data) > MAX_NESTING:
        raise ConfigError(f"{what} nests too deeply (at most {MAX_NESTING} levels)")
    return data


def read_config_file(path: str | Path, what: str) -> Any:
    """A TOML (or ``.json``) config file as data, at most :data:`MAX_CONFIG_BYTES` long."""
    path = Path(path)
    try:
        with path.open("rb") as file:  # read no more than the cap: /dev/zero must not hang us
            raw = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{what} {path} is larger than {MAX_CONFIG_BYTES // 1024} KiB; is it the right file?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None
    fmt = "json" if path.suffix.lower() == ".json" else "toml"
    data = parse_config_text(text, fmt, f"{what} {path}")
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must hold a table of fields, not {type(data).__name__}")
    return data


def load_board_config(path: str | Path) -> BoardConfig:
    """Read a TOML (``.toml``) or JSON file; every problem is reported with its field path."""
    data = read_config_file(path, "board config")
    try:
        return BoardConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"board config {path} has errors:\n{validation_problems(exc)}") from None
