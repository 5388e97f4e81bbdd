"""Summaries and files of conductance maps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# The usable window of the UMass Ta/HfO2 array (shared/reference/device-parameters.md).
DEFAULT_WINDOW = (100e-6, 900e-6)


@dataclass(frozen=True)
class MapSummary:
    rows: int
    cols: int
    g_min: float
    g_median: float
    g_max: float
    window: tuple[float, float]
    below_window: int
    above_window: int

    @property
    def outside_window(self) -> int:
        return self.below_window + self.above_window

    def __str__(self) -> str:
        us = 1e6
        cells = self.rows * self.cols
        return (
            f"{self.rows} x {self.cols} map: min {self.g_min * us:.1f} uS, median {self.g_median * us:.1f} uS, "
            f"max {self.g_max * us:.1f} uS; {self.outside_window} of {cells} cells "
            f"({100 * self.outside_window / cells:.1f} %) "
            f"outside {self.window[0] * us:.0f}-{self.window[1] * us:.0f} uS "
            f"({self.below_window} below, {self.above_window} above)"
        )


def summarize(conductance: FloatArray, window: tuple[float, float] = DEFAULT_WINDOW) -> MapSummary:
    rows, cols = conductance.shape
    return MapSummary(
        rows=rows,
        cols=cols,
        g_min=float(conductance.min()),
        g_median=float(np.median(conductance)),
        g_max=float(conductance.max()),
        window=window,
        below_window=int((conductance < window[0]).sum()),
        above_window=int((conductance > window[1]).sum()),
    )


def save_map(path: str | Path, conductance: FloatArray) -> Path:
    """Write a map as ``.npy`` (numpy) or ``.csv`` (siemens, one array row per line)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".csv"):
        raise ValueError(f"cannot write {path}: use a .npy or .csv file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npy":
        np.save(path, conductance)
    else:
        np.savetxt(path, conductance, delimiter=",", fmt="%.6e")
    return path
