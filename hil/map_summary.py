"""Summaries and files of conductance maps."""

from __future__ import annotations

import json
from collections.abc import Mapping
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


MAP_SUFFIXES = (".npy", ".csv", ".nc")


def save_map(
    path: str | Path, conductance: FloatArray, about: Mapping[str, str | float] | None = None, overwrite: bool = False
) -> Path:
    """Write a map, S, with what it is (``about``: read voltage, board, time): ``.nc`` (netCDF, with
    row and column coordinates and the facts as attributes), ``.csv`` (one array row per line
    under ``#`` header lines) or ``.npy`` (numpy, the facts in ``FILE.npy.json`` beside it). An
    existing file is replaced only with ``overwrite``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MAP_SUFFIXES:
        raise ValueError(f"cannot write {path}: use a {', '.join(MAP_SUFFIXES)} file name")
    if path.exists() and not overwrite:
        raise ValueError(f"{path} exists; choose another name or pass --overwrite (the map was not written)")
    facts = {"unit": "S", **(about or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npy":
        np.save(path, conductance)
        path.with_name(path.name + ".json").write_text(json.dumps(facts, indent=2) + "\n")
    elif suffix == ".csv":
        header = "\n".join(f"{key}: {value}" for key, value in facts.items())
        np.savetxt(path, conductance, delimiter=",", fmt="%.6e", header=header)
    else:
        import xarray as xr  # only for this format: a light import path for the rest

        rows, cols = conductance.shape
        array = xr.DataArray(conductance, dims=("row", "col"), coords={"row": np.arange(rows), "col": np.arange(cols)},
                             name="conductance", attrs={"units": "S", **facts})  # fmt: skip
        array.to_netcdf(path, engine="h5netcdf")
    return path
