"""Parameters of the emulated 1T1R devices, with named presets.

Figures come from shared/reference/device-parameters.md (Li 2018, Wang 2019, Hu 2018, Yao 2020,
the IBM aihwkit HfOx drift fit). docs/emulator-physics.md explains the model each field feeds.
Every field is a plain scalar so a resource string (``emulator://?preset=umass-ta-hfo2&seed=3&
write_noise=8e-6``) can override any of them; values arriving as strings are coerced by pydantic.
Every field is finite and bounded to a physical range by its own constraints (``ge``/``le``): a
new field says its range the same way.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from drivers.config_model import ConfigModel


class DeviceParameters(ConfigModel):
    """Everything the array model needs; SI units (V, A, S, s, ohm).

    "Spread" fields are device-to-device (drawn once per cell from the seed); "noise" fields are
    cycle-to-cycle (drawn per event).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    # --- geometry and time -------------------------------------------------------------------
    rows: int = Field(128, ge=1, le=4096, description="array rows")
    cols: int = Field(64, ge=1, le=4096, description="array columns")
    clock: Literal["simulated", "wall"] = Field(
        "simulated", description="simulated: time advances only by operations and waits; wall: real time"
    )
    read_duration: float = Field(1e-6, ge=0, le=1.0, description="duration of one cell read or one VMM vector, s")

    # --- conductance window and fresh state ----------------------------------------------------
    g_min: float = Field(100e-6, gt=0, le=0.1, description="mean conductance a full RESET reaches (HRS floor), S")
    g_max: float = Field(900e-6, gt=0, le=0.1, description="mean highest conductance a SET reaches (LRS ceiling), S")
    g_initial_mean: float = Field(120e-6, ge=0, le=0.1, description="mean conductance of a fresh formed cell, S")
    g_initial_spread: float = Field(20e-6, ge=0, le=0.1, description="spread of fresh formed conductances, S")

    # --- forming -------------------------------------------------------------------------------
    start_formed: bool = Field(True, description="cells start formed (False: virgin, FORM them first)")
    g_virgin: float = Field(0.5e-6, gt=0, le=0.1, description="mean conductance of a virgin (unformed) cell, S")
    v_form_threshold: float = Field(3.0, ge=0, le=20, description="mean amplitude that forms a virgin cell, V")

    # --- SET: gate-controlled compliance ---------------------------------------------------------
    set_slope: float = Field(
        98e-6, ge=-0.1, le=0.1, description="mean k of the compliance line G = k * v_gate + c, S/V"
    )
    set_intercept: float = Field(120e-6, ge=-0.1, le=0.1, description="mean c of the compliance line, S")
    set_slope_spread: float = Field(0.15, ge=0, le=10, description="device-to-device relative sigma of k")
    set_intercept_spread: float = Field(0.05, ge=0, le=10, description="device-to-device relative sigma of c")
    set_intercept_spread_abs: float = Field(
        0.0, ge=0, le=1e-3, description="device-to-device absolute sigma of c, added to the relative one, S"
    )
    v_gate_saturation: float = Field(
        0.0, ge=0, le=20, description="gate voltage above which the compliance stops rising (transistor "
        "saturation), V; 0: none",
    )
    v_set_threshold: float = Field(1.0, ge=0, le=20, description="mean SET amplitude below which nothing changes, V")
    v_gate_threshold: float = Field(
        0.5, ge=0, description="transistor threshold: a pulse with its gate below this changes nothing, V"
    )
    set_time: float = Field(1e-6, gt=0, le=1e3, description="SET time constant at the SET threshold, s")
    width_reference: float = Field(1e-6, gt=0, le=1e3, description="pulse width at which the compliance line holds, s")
    set_width_exponent: float = Field(
        0.02, ge=0, le=10, description="compliance target grows as (width / width_reference) ** this"
    )

    # --- RESET -------------------------------------------------------------------------------------
    v_reset_threshold: float = Field(
        0.9, ge=0, le=20, description="mean RESET amplitude below which nothing changes, V"
    )
    reset_voltage_scale: float = Field(
        0.15, gt=0, le=20, description="amplitude above threshold per e-fold fall of the RESET floor toward g_min, V"
    )
    reset_time: float = Field(1e-6, gt=0, le=1e3, description="RESET time constant at the RESET threshold, s")
    switching_voltage_scale: float = Field(
        0.2, gt=0, le=20, description="amplitude above threshold per e-fold speed-up of SET and RESET, V"
    )

    # --- variability -----------------------------------------------------------------------------
    write_noise: float = Field(
        4e-6, ge=0, le=0.1, description="Gaussian sigma of the level a programming event aims at, S"
    )
    read_noise: float = Field(0.01, ge=0, le=10, description="relative sigma of a cell's conductance per read")
    d2d_spread: float = Field(
        0.05,
        ge=0,
        le=10,
        description="relative device-to-device sigma of thresholds, window bounds and stuck levels; "
        "log-normal sigma of switching times",
    )

    # --- defects ---------------------------------------------------------------------------------
    stuck_low_fraction: float = Field(0.0, ge=0, le=1, description="fraction of cells stuck at low conductance")
    stuck_high_fraction: float = Field(0.0, ge=0, le=1, description="fraction of shorted (stuck-high) cells")
    g_stuck_low: float = Field(5e-6, gt=0, le=0.1, description="mean conductance of a stuck-low cell, S")
    g_stuck_high: float = Field(1e-3, gt=0, le=0.1, description="mean conductance of a shorted cell, S")
    unformed_fraction: float = Field(
        0.0, ge=0, le=1, description="fraction of cells that start virgin although start_formed (a partial forming)"
    )
    bad_rows: str = Field(
        "", description="rows whose every cell is stuck low (a broken line), comma-separated, e.g. '3,17'"
    )
    bad_cols: str = Field(
        "", description="columns whose every cell is stuck low (a broken line), comma-separated, e.g. '3,17'"
    )

    cell_map: str = Field(
        "",
        max_length=4096,
        description="a .npz file of one chip's measured cells (defect positions, k, c, "
        "stuck levels) that replace the drawn ones where given (mock_hardware/physics/cell_map.py); '': none",
    )

    # --- current-voltage curve ---------------------------------------------------------------------
    iv_nonlinearity: float = Field(
        1.5, ge=0, le=100, description="a of I = G v sinh(a v)/(a v), normalised at v_iv_reference, 1/V (0: ohmic)"
    )
    v_iv_reference: float = Field(0.2, gt=0, le=20, description="read voltage at which G is defined, V")

    # --- retention -------------------------------------------------------------------------------
    drift_mean: float = Field(
        -0.09e-6, ge=-0.01, le=0.01, description="mean conductance change per unit of ln(1 + t/t0), S"
    )
    drift_spread: float = Field(
        0.088e-6, ge=0, le=0.01, description="sigma of that change across programming events, S"
    )
    drift_time_constant: float = Field(1.0, gt=0, le=1e9, description="t0 of the drift law, s")
    drift_exponent: float = Field(
        0.0, ge=0, le=0.5,
        description="nu of a drift common to every cell that scales it, G0 (1 + t/t0)^-nu (phase-change "
        "memory's kind; 0: none)",
    )

    # --- wires -----------------------------------------------------------------------------------
    line_resistance: float = Field(0.0, ge=0, le=1e4, description="resistance of one row or column line segment, ohm")
    line_refactor_tolerance: float = Field(
        1e-3,
        gt=0,
        le=1,
        description="estimated relative error of VMM currents (line coupling of the conductance changes since "
        "the last factorization) below which the line network is updated per cell instead of refactorized",
    )

    @field_validator("bad_rows", "bad_cols", mode="before")
    @classmethod
    def _line_list(cls, value: Any) -> Any:
        """Accept a list of line numbers (a parameter file) as well as ``"3,17"``; store ``"3,17"``."""
        if isinstance(value, list | tuple):
            return ",".join(str(v) for v in value)
        if isinstance(value, str):
            parts = [part for part in value.replace(" ", "").split(",") if part]
            if not all(part.isdigit() for part in parts):
                raise ValueError(f"{value!r} is not a comma-separated list of line numbers")
            return ",".join(parts)
        return value

    @property
    def bad_row_list(self) -> tuple[int, ...]:
        return tuple(int(part) for part in self.bad_rows.split(",") if part)

    @property
    def bad_col_list(self) -> tuple[int, ...]:
        return tuple(int(part) for part in self.bad_cols.split(",") if part)

    @model_validator(mode="after")
    def _consistent(self) -> DeviceParameters:
        lines_of = (("bad_rows", self.bad_row_list, self.rows), ("bad_cols", self.bad_col_list, self.cols))
        for name, lines, size in lines_of:
            outside = [line for line in lines if not 0 <= line < size]
            if outside:
                raise ValueError(f"{name} {outside[0]} is outside the array (0 to {size - 1})")
            if len(set(lines)) != len(lines):
                raise ValueError(f"{name} lists a line twice: {list(lines)}")
        if self.g_min >= self.g_max:
            raise ValueError(f"g_min ({self.g_min}) must be below g_max ({self.g_max})")
        if self.stuck_low_fraction + self.stuck_high_fraction > 1:
            raise ValueError("stuck_low_fraction + stuck_high_fraction exceeds 1")
        return self


PRESETS: dict[str, DeviceParameters] = {
    # No randomness, no defects, ohmic cells, no wires, no drift: for debugging algorithms. The
    # switching dynamics stay, so a pulse protocol that works here is at least physically sane.
    "ideal": DeviceParameters(
        write_noise=0.0,
        read_noise=0.0,
        set_slope_spread=0.0,
        set_intercept_spread=0.0,
        g_initial_spread=0.0,
        d2d_spread=0.0,
        set_width_exponent=0.0,
        iv_nonlinearity=0.0,
        drift_mean=0.0,
        drift_spread=0.0,
    ),
    # Li 2018 / Wang 2019 128x64 Ta/HfO2 1T1R array (MLP simulation figures).
    "umass-ta-hfo2": DeviceParameters(
        rows=128,
        cols=64,
        g_min=100e-6,
        g_max=900e-6,
        set_slope=98e-6,
        set_intercept=120e-6,
        set_slope_spread=0.15,
        write_noise=4e-6,
        read_noise=0.01,
        stuck_low_fraction=0.09,
        stuck_high_fraction=0.02,
        width_reference=1e-6,
        line_resistance=0.35,
    ),
    # Yao 2020 TaOx/HfOx processing element: 128x16, identical 50 ns pulses with write-verify,
    # a 10 to 60 uS window (the group's earlier array). Unpublished figures are sensible guesses.
    "tsinghua-taox-hfox": DeviceParameters(
        rows=128,
        cols=16,
        g_min=10e-6,
        g_max=60e-6,
        g_initial_mean=20e-6,
        g_initial_spread=5e-6,
        set_slope=30e-6,
        set_intercept=-10e-6,
        set_slope_spread=0.1,
        # With 50 ns pulses a SET at 1.5 V moves about a quarter of the way to its compliance
        # level: the identical-pulse regime that write-verify with fixed pulses relies on.
        width_reference=50e-9,
        set_time=1e-6,
        reset_time=1e-6,
        switching_voltage_scale=0.3,
        reset_voltage_scale=0.25,
        write_noise=1e-6,
        read_noise=0.01,
        stuck_low_fraction=0.01,
        stuck_high_fraction=0.002,
        g_stuck_low=1e-6,
        g_stuck_high=100e-6,
        read_duration=50e-9,
        line_resistance=0.35,
    ),
}


def preset(name: str, **overrides: Any) -> DeviceParameters:
    """A named preset with some fields replaced; unknown names and fields are errors."""
    try:
        base = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}") from None
    return DeviceParameters.model_validate({**base.model_dump(), **overrides})
