"""A chip's measured per-cell values (a twin's cell map), in place of the drawn ones.

A cell map is an ``.npz`` file of ``(rows, cols)`` arrays, any of:

- ``stuck_low``, ``stuck_high``, ``unformed`` (bool): where the chip's defective and virgin
  cells are; given, they replace the positions drawn from the fractions;
- ``set_slope`` (S/V), ``set_intercept`` (S), ``g_stuck`` (S) (float): each cell's own value;
  NaN where the chip did not measure it (that cell keeps its drawn value).

``hil twin fit`` writes one beside a twin file; ``DeviceParameters.cell_map`` names it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import numpy.typing as npt

MASKS = ("stuck_low", "stuck_high", "unformed")
VALUES = ("set_slope", "set_intercept", "g_stuck")


def load_cell_map(path: str | Path, shape: tuple[int, int]) -> dict[str, npt.NDArray[np.generic]]:
    """The map's arrays by name, checked: known names, the array's shape, masks boolean, values
    finite or NaN and positive where the physics needs it. A problem is a ``ValueError`` naming
    the file and the array."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: np.asarray(data[name]) for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"cannot read cell map {path}: {getattr(exc, 'strerror', None) or exc}") from None
    for name, array in arrays.items():
        if name not in MASKS + VALUES:
            raise ValueError(f"cell map {path}: unknown array {name!r}; known: {', '.join(MASKS + VALUES)}")
        if array.shape != shape:
            raise ValueError(f"cell map {path}: {name} has shape {array.shape}; the array is {shape}")
        if name in MASKS and array.dtype != np.bool_:
            raise ValueError(f"cell map {path}: {name} must be boolean, not {array.dtype}")
        if name in VALUES:
            if array.dtype.kind != "f" or np.isinf(array).any():
                raise ValueError(f"cell map {path}: {name} must hold finite floats (NaN: not measured)")
            low = -0.1 if name == "set_intercept" else 0.0
            outside = ~np.isnan(array) & ((array <= low) | (array > 0.1))
            if outside.any():
                r, c = (int(i) for i in np.argwhere(outside)[0])
                raise ValueError(f"cell map {path}: {name}[{r}, {c}] = {array[r, c]:g} is outside ({low:g}, 0.1]")
    return arrays


def measured_or(drawn: npt.NDArray[np.float64], measured: npt.NDArray[np.generic] | None) -> npt.NDArray[np.float64]:
    """``measured`` where it is a number, ``drawn`` elsewhere."""
    if measured is None:
        return drawn
    return np.asarray(np.where(np.isnan(measured), drawn, measured), dtype=np.float64)
