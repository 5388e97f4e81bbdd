"""Parameters of the emulated 1T1R devices, with named presets.

Figures come from shared/reference/device-parameters.md (Li 2018, Wang 2019, Yao 2020).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class DeviceParameters(BaseModel):
    """Everything the array model needs; all SI units."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rows: int = Field(128, ge=1, le=4096, description="array rows")
    cols: int = Field(64, ge=1, le=4096, description="array columns")
    g_min: float = Field(1e-6, gt=0, description="lowest conductance a cell reaches, S")
    g_max: float = Field(1e-3, gt=0, description="highest conductance a cell reaches, S")
    g_initial_mean: float = Field(120e-6, ge=0, description="mean conductance of a fresh (formed) cell, S")
    g_initial_spread: float = Field(20e-6, ge=0, description="spread of fresh conductances, S")
    set_slope: float = Field(98e-6, description="k of G = k * v_gate + c, S/V")
    set_intercept: float = Field(120e-6, description="c of G = k * v_gate + c, S")
    set_slope_spread: float = Field(0.15, ge=0, description="device-to-device relative spread of k")
    v_set_threshold: float = Field(1.0, ge=0, description="SET amplitude below which nothing changes, V")
    v_reset_threshold: float = Field(0.9, ge=0, description="RESET amplitude below which nothing changes, V")
    reset_voltage_scale: float = Field(0.4, gt=0, description="RESET depth per volt above threshold, V")
    g_reset: float = Field(20e-6, gt=0, description="conductance a full RESET drives toward, S")
    write_noise: float = Field(4e-6, ge=0, description="Gaussian sigma per programming event, S")
    read_noise: float = Field(0.01, ge=0, description="relative sigma of a read")
    stuck_low_fraction: float = Field(0.0, ge=0, le=1)
    stuck_high_fraction: float = Field(0.0, ge=0, le=1)
    g_stuck_low: float = Field(5e-6, gt=0, description="conductance of a stuck-low cell, S")
    g_stuck_high: float = Field(950e-6, gt=0, description="conductance of a shorted cell, S")


PRESETS: dict[str, DeviceParameters] = {
    "ideal": DeviceParameters(
        write_noise=0.0, read_noise=0.0, set_slope_spread=0.0, g_initial_spread=0.0
    ),
    "umass-ta-hfo2": DeviceParameters(stuck_low_fraction=0.09, stuck_high_fraction=0.02),
}


def preset(name: str, **overrides: Any) -> DeviceParameters:
    """A named preset with some fields replaced; unknown names and fields are errors."""
    try:
        base = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}") from None
    return DeviceParameters.model_validate({**base.model_dump(), **overrides})
