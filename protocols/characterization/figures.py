"""Fitted figures: what a procedure found, each with its uncertainty, stored and printed.

A procedure stores each figure as attributes of its group, ``fit_<name>`` (the value, SI units),
``fit_<name>_sigma`` (one standard uncertainty) and ``fit_<name>_unit``, and returns them in its
result's ``figures``; ``hil characterize`` prints them and ``hil twin fit`` reads them back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from protocols.recording import Attr, Recorder

PREFIX = "fit_"


@dataclass(frozen=True)
class Figure:
    value: float
    uncertainty: float
    unit: str = ""

    def __str__(self) -> str:
        if math.isnan(self.value):
            return "not measured"
        return f"{self.value:.4g} +- {self.uncertainty:.2g} {self.unit}".rstrip()


def record_figures(recorder: Recorder, group: str, figures: Mapping[str, Figure]) -> None:
    """Store every figure as attributes of ``group``."""
    attrs: dict[str, Attr] = {}
    for name, figure in figures.items():
        attrs[f"{PREFIX}{name}"] = float(figure.value)
        attrs[f"{PREFIX}{name}_sigma"] = float(figure.uncertainty)
        attrs[f"{PREFIX}{name}_unit"] = figure.unit
    recorder.set_attrs(group, **attrs)


def read_figures(attrs: Mapping[str, object]) -> dict[str, Figure]:
    """The figures stored in a group's attributes by :func:`record_figures`."""
    figures = {}
    for key, value in attrs.items():
        if not key.startswith(PREFIX) or key.endswith(("_sigma", "_unit")):
            continue
        name = key[len(PREFIX) :]
        sigma = attrs.get(f"{key}_sigma", math.nan)
        figures[name] = Figure(
            float(value),  # type: ignore[arg-type]
            float(sigma),  # type: ignore[arg-type]
            str(attrs.get(f"{key}_unit", "")),
        )
    return figures


def binomial(count: int, total: int) -> Figure:
    """A fraction and its binomial standard error."""
    if total <= 0:
        return Figure(math.nan, math.nan)
    p = count / total
    return Figure(p, math.sqrt(max(p * (1 - p), 1.0 / total) / total))


def median_of(values: npt.ArrayLike, unit: str) -> Figure:
    """Median of a sample and its standard error (for a normal bulk, from the median absolute
    deviation: a few outliers move neither); NaN when empty."""
    array = np.asarray(values, dtype=np.float64).ravel()
    if not array.size:
        return Figure(math.nan, math.nan, unit)
    median = float(np.median(array))
    if array.size < 2:
        return Figure(median, math.nan, unit)
    sd = 1.4826 * float(np.median(np.abs(array - median)))  # the MAD as a normal sigma
    return Figure(median, math.sqrt(math.pi / 2) * sd / math.sqrt(array.size), unit)


def mean_of(values: npt.ArrayLike, unit: str) -> Figure:
    """Mean of a sample and its standard error (NaN when empty)."""
    array = np.asarray(values, dtype=np.float64).ravel()
    if not array.size:
        return Figure(math.nan, math.nan, unit)
    sigma = float(array.std(ddof=1) / math.sqrt(array.size)) if array.size > 1 else math.nan
    return Figure(float(array.mean()), sigma, unit)
