"""Device-parameter files: a chip's parameters (e.g. a twin fitted by ``hil twin fit``) in TOML.

::

    preset = "umass-ta-hfo2"      # the base for every field the file does not give
    [parameters]                  # DeviceParameters fields, SI units
    rows = 32
    set_slope = 1.21e-4
    bad_rows = [3]
    cell_map = "chip.cells.npz"   # per-cell values, relative to this file (physics/cell_map.py)
    [sources.set_slope]           # anything else (provenance) is ignored here
    file = "gate-calibration.h5"

``python -m mock_hardware serve --params chip.toml`` and ``emulator://?params=chip.toml`` load it;
fields given on the command line or in the resource string override the file's.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any


def _as_text(value: Any) -> str:
    """A TOML value as the text a resource string would carry (DeviceParameters coerces it back)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return ",".join(str(int(v)) for v in value)
    return repr(value) if isinstance(value, float) else str(value)


def load_params_file(path: str | Path) -> tuple[str | None, dict[str, str]]:
    """``(base preset or None, parameters as override strings)`` of a parameter file.

    A missing file, bad TOML or a ``parameters`` entry that is not a table is a ``ValueError``
    naming the file; the values themselves are validated by the device model when applied.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read parameter file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"parameter file {path} is not valid TOML: {exc}") from None
    parameters = data.get("parameters", {})
    if not isinstance(parameters, dict):
        raise ValueError(f"parameter file {path}: 'parameters' must be a table of device parameters")
    preset = data.get("preset")
    if preset is not None and not isinstance(preset, str):
        raise ValueError(f"parameter file {path}: 'preset' must be a preset name, not {preset!r}")
    fields = {name: _as_text(value) for name, value in parameters.items()}
    if fields.get("cell_map"):  # a map file named relative to the parameter file
        fields["cell_map"] = str(path.parent / fields["cell_map"])
    return preset, fields


def with_params_file(
    path: str | Path, preset_name: str | None, overrides: dict[str, str], default_preset: str
) -> tuple[str, dict[str, str]]:
    """The preset and overrides once the file's are applied under the explicit ones."""
    file_preset, file_fields = load_params_file(path)
    return preset_name or file_preset or default_preset, {**file_fields, **overrides}
