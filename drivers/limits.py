"""Safety limits: a validated model, and the checks every request passes before a byte is sent.

Limits come from the board config (host side) and must lie within the firmware's own absolute
maxima, which the board reports at connect. Values outside a limit are refused, never clamped.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from pydantic import ConfigDict, Field, model_validator

from drivers.codec import block_bounds
from drivers.config_model import ConfigModel
from drivers.errors import LimitError


class Range(ConfigModel):
    """A closed interval ``[min, max]``."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    min: float
    max: float

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.min <= self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self

    def contains(self, other: Range) -> bool:
        return self.min <= other.min and other.max <= self.max


class SafetyLimits(ConfigModel):
    """What the host lets reach the board's lines. SI units."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    v_row: Range = Field(description="row (bit) line voltage, V")
    v_col: Range = Field(description="column (source) line voltage, V")
    v_gate: Range = Field(description="gate (word) line voltage, V")
    v_read: Range = Field(description="row voltage during reads and VMM, V")
    pulse_width: Range = Field(description="pulse width, s")
    i_col: Range = Field(description="current into one column, A")
    g_cell_max: float = Field(
        1.2e-3, gt=0, description="highest conductance a cell may have, S; bounds predicted column currents"
    )

    def within(self, absolute: SafetyLimits) -> list[str]:
        """Names of the limits that reach beyond ``absolute`` (the firmware's maxima)."""
        names = ("v_row", "v_col", "v_gate", "v_read", "pulse_width", "i_col")
        return [n for n in names if not getattr(absolute, n).contains(getattr(self, n))]


def limit_unit(name: str) -> str:
    """The SI unit of a safety limit, as its field's description ends (``v_row`` -> ``V``)."""
    field = SafetyLimits.model_fields.get(name)
    description = (field.description or "") if field is not None else ""
    return description.rsplit(", ", 1)[-1].split(";")[0].strip() if ", " in description else ""


def check_value(parameter: str, value: float, limit: Range, unit: str) -> None:
    """Refuse ``value`` if it is not finite or lies outside ``limit``."""
    if not np.isfinite(value) or not limit.min <= value <= limit.max:
        raise LimitError(parameter, float(value), limit.min, limit.max, unit)


def check_array(
    parameter: str,
    values: npt.NDArray[np.floating],
    limit: Range,
    unit: str,
    where: npt.NDArray[np.bool_] | None = None,
    origin: tuple[int, ...] = (),
    extremes: tuple[float, float] | None = None,
) -> None:
    """Refuse the first element of ``values`` (among ``where``) that is not finite or outside ``limit``.

    The error names the element's index, offset by ``origin`` so it reads as array coordinates.
    float32 values are on their way into a block and meet the limits as float32 can express them.
    ``extremes``: ``(values.min(), values.max())`` when the caller has them already (one pass each).
    """
    low, high = block_bounds(limit.min, limit.max) if values.dtype == np.float32 else (limit.min, limit.max)
    # Every element inside, selected or not: nothing to refuse (NaN fails both comparisons, since min
    # and max propagate it, and is found below); else the selected elements are checked one by one.
    if not values.size:
        return
    smallest, largest = extremes if extremes is not None else (values.min(), values.max())
    if low <= smallest and largest <= high:
        return
    bad = ~np.isfinite(values) | (values < low) | (values > high)
    if where is not None:
        bad &= where
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        shown = [i + (origin[k] if k < len(origin) else 0) for k, i in enumerate(index)]
        raise LimitError(f"{parameter}{shown if shown else ''}", float(values[index]), limit.min, limit.max, unit)


def check_index(parameter: str, value: int, size: int) -> None:
    """Refuse an index outside ``0 .. size-1``."""
    if not 0 <= value < size:
        raise LimitError(parameter, value, 0, size - 1)
