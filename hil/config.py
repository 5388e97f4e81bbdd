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

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from drivers import Board, SafetyLimits, open_board

EMBEDDED_EMULATOR = "emulator://?preset=umass-ta-hfo2&seed=1"


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and every bad field."""


class BoardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    resource: str = Field(EMBEDDED_EMULATOR, description="resource string of the board")
    timeout: float = Field(10.0, gt=0, le=3600, description="longest silence tolerated on the link, s")
    visa_backend: str = Field("@py", description="pyvisa backend for VISA resources")
    framing: bool | None = Field(
        None, description="numbered, checksummed frames: true, false, or (default) whenever the firmware offers them"
    )
    limits: SafetyLimits | None = Field(None, description="host safety limits; default: the firmware's")

    def open(self, resource: str | None = None) -> Board:
        """Open this board (or ``resource`` with these settings); use it as a context manager."""
        return open_board(resource or self.resource, limits=self.limits, timeout=self.timeout,
                          visa_backend=self.visa_backend, framing=self.framing)  # fmt: skip


def validation_problems(error: ValidationError) -> str:
    """Every error of a pydantic validation, one per line, with its field path."""
    return "\n".join(f"  {'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in error.errors())


def load_board_config(path: str | Path) -> BoardConfig:
    """Read a TOML (``.toml``) or JSON file; every problem is reported with its field path."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read board config {path}: {exc.strerror or exc}") from None
    try:
        data: Any = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"board config {path} is not valid {path.suffix.lstrip('.') or 'TOML'}: {exc}") from None
    try:
        return BoardConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"board config {path} has errors:\n{validation_problems(exc)}") from None
