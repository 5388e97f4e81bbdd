"""Turning weight changes into pulses: the gate-coded two-pulse scheme of Li 2018 / Wang 2019.

The host remembers each device's last SET gate voltage. A weight change ``dW`` becomes a gate
change ``dVg = dW * g_unit / k`` (``k`` the SET slope, S/V), ``+dVg`` on G+ and ``-dVg`` on G-.
Where the new gate is lower the device is RESET first (SET only raises G); every changed device
is then SET at its clipped new gate. Each update is at most one RESET batch and one SET batch
per board. Changes of gate below ``dvg_min`` are skipped: re-programming a device for a change
smaller than its write noise mostly adds noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from drivers import PulseKind
from hil.array_backend import ArrayBackend
from hil.mapping import Tile

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


class GateCodedConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    set_slope: float = Field(98e-6, gt=0, description="k: SET conductance per gate volt the host assumes, S/V")
    set_intercept: float = Field(120e-6, description="c: SET conductance at 0 V gate the host assumes, S")
    v_gate_min: float = Field(0.7, ge=0, description="lowest SET gate voltage, V")
    v_gate_max: float = Field(1.6, gt=0, description="highest SET gate voltage, V")
    v_set: float = Field(2.5, gt=0, description="SET amplitude, V")
    v_reset: float = Field(1.7, gt=0, description="RESET amplitude, V")
    v_gate_reset: float = Field(5.0, gt=0, description="gate voltage during RESET (transistor fully on), V")
    width: float = Field(1e-6, gt=0, description="pulse width, s")
    dvg_min: float = Field(0.0, ge=0, description="smallest gate change worth a pulse, V (0: every change)")
    skip_bad: bool = Field(True, description="send no pulses to devices known to be stuck")


@dataclass
class UpdateStats:
    pulses: int = 0
    devices_changed: int = 0
    batches: int = 0


@dataclass
class GateCodedUpdate:
    """The update rule and its memory: every device's last SET gate voltage, per board."""

    config: GateCodedConfig
    v_gate: dict[str, FloatArray] = field(default_factory=dict)
    pulse_count: dict[str, npt.NDArray[np.int64]] = field(default_factory=dict)
    bad_devices: dict[str, BoolArray] = field(default_factory=dict)

    def gate_for(self, conductance: FloatArray) -> FloatArray:
        """The SET gate voltage that gives ``conductance``, clipped to the gate window."""
        c = self.config
        return np.clip((conductance - c.set_intercept) / c.set_slope, c.v_gate_min, c.v_gate_max)

    @property
    def g_window(self) -> tuple[float, float]:
        c = self.config
        return c.set_slope * c.v_gate_min + c.set_intercept, c.set_slope * c.v_gate_max + c.set_intercept

    def recall_from(self, backend: ArrayBackend) -> None:
        """Re-derive the gate memory from the conductances read back (after a resume)."""
        for board, g in backend.conductance.items():
            self.v_gate[board] = self.gate_for(g)
            self.pulse_count.setdefault(board, np.zeros(g.shape, dtype=np.int64))

    def program(self, backend: ArrayBackend, weights: dict[str, FloatArray]) -> UpdateStats:
        """Program initial weights: every device RESET, then SET at the gate for its target,
        ``G± = g_mid ± w * g_unit / 2`` around the middle of the window."""
        g_low, g_high = self.g_window
        g_mid = (g_low + g_high) / 2
        targets: dict[str, FloatArray] = {}
        masks: dict[str, BoolArray] = {}
        for board in backend.placement.boards():
            shape = backend.placement.board_shapes[board]
            targets[board] = np.full(shape, g_mid)
            masks[board] = np.zeros(shape, dtype=bool)
            self.v_gate.setdefault(board, np.full(shape, self.config.v_gate_min))
            self.pulse_count.setdefault(board, np.zeros(shape, dtype=np.int64))
        for layer, w in weights.items():
            for tile in backend.placement.tiles[layer]:
                half = w[tile.inputs, tile.outputs] * backend.g_unit / 2
                _put(targets[tile.board], tile, g_mid + half, g_mid - half)
                masks[tile.board] |= tile.cell_mask(masks[tile.board].shape)
        stats = UpdateStats()
        for board, mask in masks.items():
            gate = self.gate_for(targets[board])
            self._pulse(backend, board, mask, mask, gate, stats)
        return stats

    def apply(self, backend: ArrayBackend, delta: dict[str, FloatArray]) -> UpdateStats:
        """One update: weight changes ``delta[layer] (fan_in, fan_out)`` as pulses."""
        c = self.config
        new_gate = {board: v.copy() for board, v in self.v_gate.items()}
        for layer, dw in delta.items():
            for tile in backend.placement.tiles[layer]:
                dvg = dw[tile.inputs, tile.outputs] * backend.g_unit / c.set_slope
                gates = new_gate[tile.board]
                plus = gates[np.ix_(tile.plus_rows, tile.cols)] + dvg
                minus = gates[np.ix_(tile.minus_rows, tile.cols)] - dvg
                _put(gates, tile, plus, minus)
        stats = UpdateStats()
        for board, gates in new_gate.items():
            gates = np.clip(gates, c.v_gate_min, c.v_gate_max)
            old = self.v_gate[board]
            changed = np.abs(gates - old) > max(c.dvg_min, 1e-9)
            if c.skip_bad and board in self.bad_devices:
                changed &= ~self.bad_devices[board]
            reset = changed & (gates < old)
            self._pulse(backend, board, reset, changed, gates, stats)
        return stats

    def _pulse(
        self, backend: ArrayBackend, board: str, reset: BoolArray, set_mask: BoolArray, gates: FloatArray,
        stats: UpdateStats,
    ) -> None:  # fmt: skip
        c = self.config
        device = backend.boards[board]
        if reset.any():
            stats.pulses += device.apply_pulses(PulseKind.RESET, c.v_reset, c.v_gate_reset, c.width, mask=reset)
            stats.batches += 1
        if set_mask.any():
            stats.pulses += device.apply_pulses(PulseKind.SET, c.v_set, np.where(set_mask, gates, c.v_gate_min),
                                                c.width, mask=set_mask)  # fmt: skip
            stats.batches += 1
        stats.devices_changed += int(set_mask.sum())
        self.v_gate[board] = np.where(set_mask, gates, self.v_gate[board])
        self.pulse_count[board] += reset.astype(np.int64) + set_mask.astype(np.int64)


def _put(board_map: FloatArray, tile: Tile, plus: FloatArray, minus: FloatArray) -> None:
    board_map[np.ix_(tile.plus_rows, tile.cols)] = plus
    board_map[np.ix_(tile.minus_rows, tile.cols)] = minus
