"""Campaign axes: the values each axis takes, and the cells they make (a product, with zipped groups).

An axis is written in the campaign file as a list of values, or as a range::

    "emulator.write_noise" = [1e-6, 2e-6, 4e-6]
    "optimizer.lr" = { start = 0.01, stop = 0.1, num = 3, scale = "log" }   # num values, ends included
    "batch_size" = { start = 10, stop = 50, step = 20 }                     # 10, 30, 50

Axes combine as a product; the axes named together in a ``zip`` group advance together instead.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import ConfigDict, Discriminator, Field, PlainValidator, Tag, model_validator

from drivers.config_model import ConfigModel

AxisValue = bool | int | float | str
MAX_AXIS_VALUES = 10_000
MAX_CELLS = 100_000


class AxisRange(ConfigModel):
    """A range of numbers: ``num`` evenly spaced values (linear or log), or ``start`` to ``stop`` by ``step``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    start: float
    stop: float
    num: int | None = Field(None, ge=1, le=MAX_AXIS_VALUES, description="values, both ends included")
    step: float | None = Field(None, description="spacing from start; stop included when it falls on a step")
    scale: Literal["linear", "log"] = "linear"

    @model_validator(mode="after")
    def _one_spacing(self) -> AxisRange:
        if (self.num is None) == (self.step is None):
            raise ValueError("give either num or step")
        if self.step is not None:
            if self.step == 0 or (self.stop - self.start) / self.step < 0:
                raise ValueError(f"step {self.step:g} does not lead from {self.start:g} to {self.stop:g}")
            if abs(self.stop - self.start) / abs(self.step) >= MAX_AXIS_VALUES:
                raise ValueError(f"more than {MAX_AXIS_VALUES} values")
            if self.scale == "log":
                raise ValueError("a log scale takes num, not step")
        if self.scale == "log" and (self.start <= 0 or self.stop <= 0):
            raise ValueError("a log scale needs start and stop > 0")
        return self

    def values(self) -> list[AxisValue]:
        whole = all(float(v).is_integer() for v in (self.start, self.stop, self.step or 1.0))
        if self.step is not None:
            count = int(np.floor((self.stop - self.start) / self.step + 1e-9)) + 1
            numbers = self.start + self.step * np.arange(count)
            return [round(v) for v in numbers] if whole else [float(v) for v in numbers]
        assert self.num is not None
        space = np.geomspace if self.scale == "log" else np.linspace
        numbers = space(self.start, self.stop, self.num)
        if whole and self.scale == "linear" and all(float(v).is_integer() for v in numbers):
            return [int(v) for v in numbers]
        return [float(v) for v in numbers]


def _axis_value(value: Any) -> AxisValue:
    """One value of a listed axis: a boolean, an integer, a finite number or a string (one message,
    not one per member of the union)."""
    if isinstance(value, bool | int | str) or (isinstance(value, float) and math.isfinite(value)):
        return value
    raise ValueError(f"{value!r} is not a finite number, a string or a boolean")


def _axis_form(value: Any) -> str:
    return "range" if isinstance(value, dict | AxisRange) else "values"


# A table is a range and anything else a list, so an error names the form given, not both forms'.
Axis = Annotated[
    Annotated[list[Annotated[AxisValue, PlainValidator(_axis_value)]], Field(min_length=1), Tag("values")]
    | Annotated[AxisRange, Tag("range")],
    Discriminator(_axis_form),
]


def axis_values(axis: Axis) -> list[AxisValue]:
    values = axis.values() if isinstance(axis, AxisRange) else list(axis)
    if not values:
        raise ValueError("an axis needs at least one value")
    return values


def combinations(axes: Mapping[str, Axis], zipped: Sequence[Sequence[str]] = ()) -> Iterator[dict[str, AxisValue]]:
    """Every combination of axis values, in file order: the product of the axes, zipped groups together."""
    values = {name: axis_values(axis) for name, axis in axes.items()}
    groups: list[list[str]] = []
    grouped: set[str] = set()
    for group in zipped:
        for name in group:
            if name not in values:
                raise ValueError(f"zip names {name!r}, which is not an axis")
            if name in grouped:
                raise ValueError(f"zip names {name!r} twice")
        lengths = {len(values[name]) for name in group}
        if len(lengths) > 1:
            raise ValueError(f"zipped axes {list(group)} have different numbers of values: "
                             + ", ".join(f"{n}: {len(values[n])}" for n in group))  # fmt: skip
        grouped.update(group)
    for name in values:  # each axis once, in file order; a zip group where its first axis is
        if name not in grouped:
            groups.append([name])
        elif any(group[0] == name for group in zipped):
            groups.append(next(list(g) for g in zipped if g[0] == name))
    factors = [[dict(zip(group, row, strict=True)) for row in zip(*(values[n] for n in group), strict=True)]
               for group in groups]  # fmt: skip
    total = int(np.prod([len(f) for f in factors])) if factors else 1
    if total > MAX_CELLS:
        raise ValueError(f"the axes make {total:,} combinations; at most {MAX_CELLS:,}")
    for parts in itertools.product(*factors):
        combined: dict[str, AxisValue] = {}
        for part in parts:
            combined.update(part)
        yield combined


def set_path(config: dict[str, Any], path: str, value: Any) -> None:
    """Set ``config[a][b][0]...`` from the dotted path ``a.b.0``; missing tables are created."""
    parts = path.split(".")
    node: Any = config
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ValueError(f"{path}: {where} is not an index of a list of {len(node)}")
            key: int | str = int(part)
        elif isinstance(node, dict):
            key = part
        else:
            raise ValueError(f"{path}: {'.'.join(parts[:depth])} holds a value, not a table")
        if last:
            node[key] = value
        else:
            if isinstance(node, dict) and node.get(part) is None:
                node[part] = {}
            node = node[key]
