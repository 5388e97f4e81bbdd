"""Comparing a twin with a fresh characterization of a board, parameter by parameter."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hil.twin.fit import Twin

# A parameter agrees when it is within this relative difference, or within 3 combined sigmas.
RELATIVE_TOLERANCE = 0.10


@dataclass(frozen=True)
class Comparison:
    parameter: str
    twin: Any
    measured: Any
    sigma: float
    agrees: bool

    @property
    def relative(self) -> float:
        if isinstance(self.twin, list) or not self.twin:
            return math.nan
        return float(self.measured) / float(self.twin) - 1.0


def compare(twin_parameters: Mapping[str, Any], twin_sources: Mapping[str, Any], measured: Twin) -> list[Comparison]:
    """Every parameter of the twin file against the same parameter fitted from the new runs."""
    rows = []
    for name, value in twin_parameters.items():
        if name not in measured.parameters:
            continue
        now = measured.parameters[name]
        if isinstance(value, str) or isinstance(now, str):
            continue  # a file name (the cell map), not a figure
        if isinstance(value, list) or isinstance(now, list) or name in ("rows", "cols"):
            rows.append(Comparison(name, value, now, 0.0, value == now))
            continue
        source = measured.sources.get(name)
        sigma_now = source.uncertainty if source is not None else math.nan
        sigma_twin = float(twin_sources.get(name, {}).get("uncertainty", math.nan))
        sigma = math.hypot(*(s for s in (sigma_now, sigma_twin) if math.isfinite(s))) if any(
            math.isfinite(s) for s in (sigma_now, sigma_twin)) else math.nan  # fmt: skip
        difference = abs(float(now) - float(value))
        agrees = difference <= RELATIVE_TOLERANCE * abs(float(value)) or (
            math.isfinite(sigma) and difference <= 3 * sigma
        )
        rows.append(Comparison(name, value, now, sigma, agrees))
    return rows


def comparison_table(rows: list[Comparison]) -> str:
    width = max((len(r.parameter) for r in rows), default=9)
    lines = [f"{'parameter':<{width}}  {'twin':>12}  {'measured':>12}  {'sigma':>9}  {'diff':>7}  verdict"]
    for r in rows:
        if isinstance(r.twin, list):
            lines.append(f"{r.parameter:<{width}}  {r.twin!s:>12}  {r.measured!s:>12}  {'':>9}  {'':>7}  "
                         f"{'ok' if r.agrees else 'DIFFERS'}")  # fmt: skip
            continue
        diff = f"{r.relative:+.1%}" if math.isfinite(r.relative) else ""
        lines.append(f"{r.parameter:<{width}}  {float(r.twin):>12.4g}  {float(r.measured):>12.4g}  {r.sigma:>9.2g}  "
                     f"{diff:>7}  {'ok' if r.agrees else 'DIFFERS'}")  # fmt: skip
    return "\n".join(lines)
