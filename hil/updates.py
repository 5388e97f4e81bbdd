"""Turning weight changes into pulses.

**Gate-coded two-pulse scheme** (Li 2018, Wang 2019). The host remembers each device's SET gate
voltage. A weight change ``dW`` becomes a gate change ``dVg = dW * g_unit / k`` (``k`` the
device's SET slope, S/V), ``+dVg`` on G+ and ``-dVg`` on G-. Where the new gate is lower the
device is RESET first (SET only raises G); every changed device is then SET at its clipped new
gate. An update is at most one RESET batch and one SET batch per board.

Two refinements a platform that knows its chip can afford (both can be switched off):

- the gate a device *should* have accumulates every change, but a device is pulsed only once its
  pending change exceeds ``dvg_min``: re-programming for a change smaller than the write noise
  mostly adds noise, so small changes wait until they add up;
- ``k`` and ``c`` come per device from a gate calibration, and devices found defective are never
  pulsed.

**Threshold write-verify** (Yao 2020): the target conductance of each device moves by
``±dW * g_unit / 2``; only devices whose pending change exceeds a threshold are written, by
closed-loop write-verify.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt
from pydantic import ConfigDict, Field, StrictBool

from drivers import PulseKind
from drivers.config_model import ConfigModel
from hil.array_backend import ArrayBackend
from protocols.calibration import GateCalibration
from protocols.programming import write_verify

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


class GateCodedConfig(ConfigModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    set_slope: float = Field(98e-6, gt=0, le=0.1, description="k the host assumes without a calibration, S/V")
    set_intercept: float = Field(120e-6, ge=-0.1, le=0.1, description="c the host assumes without a calibration, S")
    v_gate_min: float = Field(0.6, ge=0, description="lowest SET gate voltage, V")
    v_gate_max: float = Field(2.5, gt=0, description="highest SET gate voltage, V")
    v_set: float = Field(2.5, gt=0, description="SET amplitude, V")
    v_reset: float = Field(1.8, gt=0, description="RESET amplitude, V")
    v_gate_reset: float = Field(5.0, gt=0, description="gate voltage during RESET (transistor fully on), V")
    width: float = Field(1e-6, gt=0, description="pulse width, s")
    dvg_min: float = Field(
        0.015, ge=0, le=100, description="pending gate change that earns a pulse, V (0: every change)"
    )
    rounding: Literal["threshold", "stochastic"] = Field(
        "threshold",
        description="a pending change below dvg_min: 'threshold' waits until changes add up; 'stochastic' "
        "pulses it by dvg_min with probability |change| / dvg_min (unbiased, no delay)",
    )
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seed of the stochastic rounding")
    reset_above: StrictBool = Field(
        False,
        description="RESET first a device raised whose read-back conductance is already above the level its "
        "SET aims at: a SET never lowers G, so without it small raises keep the higher of two write errors",
    )


@dataclass
class DeviceMemory:
    """What the host knows of each device of one board."""

    k: FloatArray  # SET slope, S/V
    c: FloatArray  # SET intercept, S
    v_gate_target: FloatArray  # the gate every change so far asks for, V
    v_gate_applied: FloatArray  # the gate of the last SET, V
    defective: BoolArray
    pulses: npt.NDArray[np.int64]

    @classmethod
    def nominal(cls, shape: tuple[int, int], config: GateCodedConfig) -> DeviceMemory:
        return cls(
            k=np.full(shape, config.set_slope),
            c=np.full(shape, config.set_intercept),
            v_gate_target=np.full(shape, config.v_gate_min),
            v_gate_applied=np.full(shape, config.v_gate_min),
            defective=np.zeros(shape, dtype=bool),
            pulses=np.zeros(shape, dtype=np.int64),
        )

    def calibrate(self, calibration: GateCalibration, defective: BoolArray) -> None:
        """Per-device k and c from a calibration (whole-board maps); defective devices are never pulsed."""
        k, c = calibration.effective_fit()
        self.k = np.where(calibration.mask, k, self.k)
        self.c = np.where(calibration.mask, c, self.c)
        self.defective = defective.copy()


@dataclass
class UpdateStats:
    pulses: int = 0
    devices_changed: int = 0
    batches: int = 0


class UpdateRule(Protocol):
    """How weight changes reach the devices: what every update rule offers the trainer.

    ``install`` gives the rule what a board's characterization found, ``recall`` rebuilds its
    memory from the conductances read back (at the start and on resume), ``apply`` turns one
    update's weight changes into pulses, and ``state_arrays``/``load_state_arrays`` are what a
    checkpoint saves per board and a resume loads.
    """

    def install(self, backend: ArrayBackend, board: str, calibration: GateCalibration, defective: BoolArray) -> None:
        """A board's per-device calibration and the devices never to pulse."""

    def recall(self, backend: ArrayBackend) -> None: ...

    def apply(self, backend: ArrayBackend, delta: dict[str, FloatArray]) -> UpdateStats: ...

    def state_arrays(self) -> dict[str, dict[str, npt.NDArray[np.generic]]]:
        """Per board, the arrays a resume needs; each holds a ``pulses`` count per device."""

    def load_state_arrays(self, board: str, arrays: dict[str, npt.NDArray[np.generic]]) -> None: ...


@dataclass
class GateCodedUpdate:
    """The gate-coded update rule and the host's memory of every device."""

    config: GateCodedConfig
    memory: dict[str, DeviceMemory] = field(default_factory=dict)
    updates: int = 0  # updates applied (keys the stochastic rounding's draws, so a resume redraws alike)

    def memory_for(self, backend: ArrayBackend, board: str) -> DeviceMemory:
        if board not in self.memory:
            self.memory[board] = DeviceMemory.nominal(backend.placement.board_shapes[board], self.config)
        return self.memory[board]

    def install(self, backend: ArrayBackend, board: str, calibration: GateCalibration, defective: BoolArray) -> None:
        """Per-device k and c; the gates used narrow to the calibration's linear window (turn-on and
        saturation left out)."""
        low, high = calibration.v_gate_window
        window = {"v_gate_min": max(low, self.config.v_gate_min), "v_gate_max": min(high, self.config.v_gate_max)}
        self.config = self.config.model_copy(update=window)
        self.memory_for(backend, board).calibrate(calibration, defective)

    def gate_for(self, memory: DeviceMemory, conductance: FloatArray) -> FloatArray:
        """The SET gate that gives ``conductance`` on each device, clipped to the gate window."""
        c = self.config
        return np.clip((conductance - memory.c) / memory.k, c.v_gate_min, c.v_gate_max)

    def recall(self, backend: ArrayBackend) -> None:
        """Gate memory from the conductances read back (at the start, and after a resume)."""
        for board, g in backend.conductance.items():
            memory = self.memory_for(backend, board)
            memory.v_gate_applied = self.gate_for(memory, g)
            memory.v_gate_target = memory.v_gate_applied.copy()

    def apply(self, backend: ArrayBackend, delta: dict[str, FloatArray]) -> UpdateStats:
        """One update: weight changes ``delta[layer] (fan_in, fan_out)`` as pulses."""
        c = self.config
        for layer, dw in delta.items():
            for tile in backend.placement.tiles[layer]:
                memory = self.memory_for(backend, tile.board)
                k_plus, k_minus = tile.pair(memory.k)
                dg_plus, dg_minus = backend.device_changes(tile, dw[tile.inputs, tile.outputs])
                target_plus, target_minus = tile.pair(memory.v_gate_target)
                tile.put(memory.v_gate_target, target_plus + dg_plus / k_plus, target_minus + dg_minus / k_minus)
        stats = UpdateStats()
        self.updates += 1
        for index, (board, memory) in enumerate(sorted(self.memory.items())):
            memory.v_gate_target = np.clip(memory.v_gate_target, c.v_gate_min, c.v_gate_max)
            pending = memory.v_gate_target - memory.v_gate_applied
            due = (np.abs(pending) > max(c.dvg_min, 1e-9)) & ~memory.defective
            gates = memory.v_gate_target.copy()
            if c.rounding == "stochastic" and c.dvg_min > 0:
                # Below dvg_min a change is pulsed as a whole step of dvg_min with probability
                # |change| / dvg_min: on average the device moves as asked, now rather than later,
                # for about as many pulses as waiting would cost.
                draw = np.random.default_rng([c.seed, self.updates, index]).random(pending.shape)
                small = ~due & ~memory.defective & (draw < np.abs(pending) / c.dvg_min)
                gates = np.where(small, memory.v_gate_applied + np.sign(pending) * c.dvg_min, gates)
                due |= small
            reset = due & (pending < 0)
            if c.reset_above and board in backend.conductance:
                reset |= due & (backend.conductance[board] > memory.k * gates + memory.c)
            self._pulse(backend, board, memory, gates, reset=reset, set_mask=due, stats=stats)
        return stats

    def state_arrays(self) -> dict[str, dict[str, npt.NDArray[np.generic]]]:
        """Per board, what a resume needs: the gate each device should have and had, and pulse counts."""
        return {
            b: {"v_gate_target": m.v_gate_target, "v_gate_applied": m.v_gate_applied, "pulses": m.pulses,
                "updates": np.array(self.updates, dtype=np.int64)}
            for b, m in self.memory.items()
        }  # fmt: skip

    def load_state_arrays(self, board: str, arrays: dict[str, npt.NDArray[np.generic]]) -> None:
        memory = self.memory[board]
        if "v_gate_target" in arrays:
            memory.v_gate_target = np.asarray(arrays["v_gate_target"], dtype=np.float64).copy()
        if "v_gate_applied" in arrays:
            memory.v_gate_applied = np.asarray(arrays["v_gate_applied"], dtype=np.float64).copy()
        if "pulses" in arrays:
            memory.pulses = np.asarray(arrays["pulses"], dtype=np.int64).copy()
        if "updates" in arrays:
            self.updates = int(np.asarray(arrays["updates"]))

    def _pulse(
        self, backend: ArrayBackend, board: str, memory: DeviceMemory, gates: FloatArray, reset: BoolArray,
        set_mask: BoolArray, stats: UpdateStats,
    ) -> None:  # fmt: skip
        c = self.config
        device = backend.boards[board]
        gates = np.clip(np.where(set_mask, gates, c.v_gate_min), c.v_gate_min, c.v_gate_max)
        if reset.any():
            stats.pulses += device.apply_pulses(PulseKind.RESET, c.v_reset, c.v_gate_reset, c.width, mask=reset)
            stats.batches += 1
        if set_mask.any():
            stats.pulses += device.apply_pulses(PulseKind.SET, c.v_set, gates, c.width, mask=set_mask)
            stats.batches += 1
        stats.devices_changed += int(set_mask.sum())
        memory.v_gate_applied = np.where(set_mask, gates, memory.v_gate_applied)
        memory.pulses += reset.astype(np.int64) + set_mask.astype(np.int64)


class WriteVerifyUpdateConfig(ConfigModel):
    """Yao 2020: write only where the change exceeds a threshold, by closed-loop write-verify."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    threshold: float = Field(1.5e-6, ge=0, le=0.1, description="pending conductance change worth writing, S")
    tolerance: float = Field(2e-6, gt=0, le=0.1, description="write-verify tolerance, S")
    max_iterations: int = Field(8, ge=1, le=1000, description="write-verify iterations per update")


G_TARGET_FLOOR = 1e-6
"""The lowest conductance a write-verify target asks for, S: a fully RESET device, far below any weight's."""


@dataclass
class WriteVerifyUpdate:
    """Conductance targets per device; the due ones are written by closed-loop write-verify.

    A device is due once the change asked of it since its last write exceeds the threshold
    (comparing targets with a fresh read instead would chase read noise).
    """

    config: WriteVerifyUpdateConfig
    calibration: dict[str, GateCalibration] = field(default_factory=dict)
    defective: dict[str, BoolArray] = field(default_factory=dict)
    g_target: dict[str, FloatArray] = field(default_factory=dict)
    pending: dict[str, FloatArray] = field(default_factory=dict)
    pulses: dict[str, npt.NDArray[np.int64]] = field(default_factory=dict)

    def install(self, backend: ArrayBackend, board: str, calibration: GateCalibration, defective: BoolArray) -> None:
        self.calibration[board] = calibration
        self.defective[board] = defective.copy()

    def recall(self, backend: ArrayBackend) -> None:
        for board, g in backend.conductance.items():
            self.g_target[board] = g.copy()
            self.pending[board] = np.zeros(g.shape)
            self.pulses.setdefault(board, np.zeros(g.shape, dtype=np.int64))

    def apply(self, backend: ArrayBackend, delta: dict[str, FloatArray]) -> UpdateStats:
        for layer, dw in delta.items():
            for tile in backend.placement.tiles[layer]:
                dg_plus, dg_minus = backend.device_changes(tile, dw[tile.inputs, tile.outputs])
                for board_map in (self.g_target[tile.board], self.pending[tile.board]):
                    plus, minus = tile.pair(board_map)
                    tile.put(board_map, plus + dg_plus, minus + dg_minus)
        stats = UpdateStats()
        for board, target in self.g_target.items():
            # Same-signed changes push one device of a pair toward nothing and the other past what a cell
            # may hold; the target stops at what the device can hold (the weight is clipped, as on a chip).
            np.clip(target, G_TARGET_FLOOR, backend.boards[board].limits.g_cell_max, out=target)
            due = (np.abs(self.pending[board]) > self.config.threshold) & backend.placement.used_mask(board)
            if board in self.defective:
                due &= ~self.defective[board]
            if not due.any():
                continue
            g = backend.conductance[board]
            result = write_verify(
                backend.boards[board], np.where(due, target, g), tolerance=self.config.tolerance,
                max_iterations=self.config.max_iterations, mask=due, calibration=self.calibration.get(board),
            )  # fmt: skip
            self.pending[board][due] = 0.0
            stats.pulses += int(result.pulses.sum())
            stats.devices_changed += int(due.sum())
            stats.batches += result.round_trips
            self.pulses[board] += result.pulses
        return stats

    def state_arrays(self) -> dict[str, dict[str, npt.NDArray[np.generic]]]:
        return {
            b: {"g_target": t, "pending": self.pending[b], "pulses": self.pulses[b]} for b, t in self.g_target.items()
        }

    def load_state_arrays(self, board: str, arrays: dict[str, npt.NDArray[np.generic]]) -> None:
        for name, store in (("g_target", self.g_target), ("pending", self.pending)):
            if name in arrays:
                store[board] = np.asarray(arrays[name], dtype=np.float64).copy()
        if "pulses" in arrays:
            self.pulses[board] = np.asarray(arrays["pulses"], dtype=np.int64).copy()
