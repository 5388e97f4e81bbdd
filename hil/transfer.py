"""Putting weights trained elsewhere on the arrays (ex-situ transfer), so they compute what they did.

Write-verify on each device's read-map conductance is not enough: in a VMM every cell's current
passes through row and column lines that its neighbours load, so what the TIA sees of a pair is
a fraction of its conductance difference (about 0.6 on a full 128-row column of the
``umass-ta-hfo2`` board), smaller far from the drivers and the TIA, and the two devices of a pair
are not attenuated alike, which the pair's large common conductance turns into weight errors.
The transfer therefore:

1. parks every device the placement does not use at its lowest conductance (a RESET), so the
   lines carry only the network's currents;
2. writes each pair's conductances by write-verify, as before;
3. reads each tile's *effective* weights, what its VMM computes (one batch of one-hot inputs per
   tile, :meth:`~hil.array_backend.ArrayBackend.read_effective`), and moves each device's target
   by the remaining error, scaled by its column's attenuation; then writes again. A few rounds
   bring the effective weights within the write noise of the software network's.

Optionally the weights are first quantized to the levels a device pair holds (Yao 2020: 15
levels from two 8-level devices), which is what the software network must then be judged against.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from pydantic import ConfigDict, Field, StrictBool

from drivers import PulseKind
from drivers.config_model import ConfigModel
from hil.array_backend import ArrayBackend
from hil.terminal import ProgressOnly, phase
from hil.updates import G_TARGET_FLOOR
from protocols.calibration import GateCalibration
from protocols.programming import write_verify
from protocols.recording import Recorder

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


class TransferConfig(ConfigModel):
    """How weights reach the arrays before in-situ training."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    park_unused: StrictBool = Field(True, description="RESET the devices no layer uses before writing the weights")
    rounds: int = Field(
        2,
        ge=0,
        le=20,
        description="rounds of correction on the effective weights (weights trained elsewhere; random initial "
        "weights too with refine_initial)",
    )
    refine_initial: StrictBool = Field(
        False,
        description="correct random initial weights on what the VMMs compute too (off: written to the read map's "
        "targets, which the wires make another network; docs/training.md, 'Learning speed')",
    )
    levels: int | None = Field(
        None, ge=2, le=4096, description="quantize each layer to this many levels first (Yao 2020: 15); none: off"
    )


@dataclass
class TransferReport:
    """What a transfer cost and how close it got, per round (round 0: the plain write-verify)."""

    pulses: int = 0
    parked: int = 0
    weight_error_rms: list[float] = field(default_factory=list)  # effective minus wanted, per round
    held_at_reach: list[int] = field(default_factory=list)
    """per write (the plain one, then each round's): devices whose target lay past what their
    calibration says they reach, written to the end of their reach instead"""
    written: int = 0
    """devices each write covers"""


def quantize(weights: Mapping[str, FloatArray], levels: int) -> dict[str, FloatArray]:
    """Each layer's weights rounded to the nearest of ``levels`` evenly spaced values spanning
    ``[-max|w|, max|w|]`` of that layer (an odd count keeps 0 exact)."""
    if levels < 2:
        raise ValueError(f"levels must be at least 2, got {levels}")
    out = {}
    for layer, w in weights.items():
        limit = float(np.abs(w).max())
        if limit == 0:
            out[layer] = w.copy()
            continue
        step = 2 * limit / (levels - 1)
        out[layer] = np.clip(np.round((w + limit) / step) * step - limit, -limit, limit)
    return out


def park_unused(
    backend: ArrayBackend,
    calibrations: Mapping[str, GateCalibration],
    v_reset: float,
    v_gate_reset: float,
    width: float,
) -> int:
    """RESET every working device the placement does not use (calibrated, responsive); the pulses sent.

    The gate calibration leaves every device SET high; unused devices at several hundred uS load
    every line a VMM drives. Devices outside a calibration's mask (bad lines) are never pulsed.
    """
    pulses = 0
    for name in backend.placement.boards():
        calibration = calibrations.get(name)
        if calibration is None:
            continue
        park = calibration.mask & calibration.responsive & ~backend.placement.used_mask(name)
        if park.any():
            pulses += backend.boards[name].apply_pulses(PulseKind.RESET, v_reset, v_gate_reset, width, mask=park)
    return pulses


def effective_error(backend: ArrayBackend, weights: Mapping[str, FloatArray]) -> dict[str, FloatArray]:
    """Per layer, the wanted weights minus what the arrays compute (as the host corrects them)."""
    return {layer: w - backend.weights(layer) for layer, w in weights.items()}


def refine(
    backend: ArrayBackend,
    weights: Mapping[str, FloatArray],
    targets: dict[str, tuple[FloatArray, BoolArray]],
    calibrations: Mapping[str, GateCalibration],
    tolerance: float,
    rounds: int,
    report: TransferReport,
) -> None:
    """Rounds of: read the effective weights, move the targets by the error, write-verify again.

    ``targets`` (per board: conductance targets and the mask of devices to write) are updated in
    place; the backend is left read back (its VMM read-back as it was).
    """
    kept, backend.vmm_readback = backend.vmm_readback, True
    backend.read_back()
    for _ in range(rounds):
        errors = effective_error(backend, weights)
        report.weight_error_rms.append(_rms(errors))
        shift_targets(backend, targets, errors)
        report.pulses += write_targets(backend, targets, calibrations, tolerance, report=report)
        backend.read_back()
    report.weight_error_rms.append(_rms(effective_error(backend, weights)))
    if not kept:
        backend.vmm_readback = False
        backend.read_back()


def shift_targets(
    backend: ArrayBackend, targets: dict[str, tuple[FloatArray, BoolArray]], changes: Mapping[str, FloatArray]
) -> None:
    """Move each board's conductance targets by the device changes that make each layer's weights
    change by ``changes`` (weight units, ``(fan_in, fan_out)`` per layer), in place."""
    for layer, change in changes.items():
        for tile in backend.placement.tiles[layer]:
            target = targets[tile.board][0]
            dg_plus, dg_minus = backend.device_changes(tile, change[tile.inputs, tile.outputs])
            plus, minus = tile.pair(target)
            tile.put(target, plus + dg_plus, minus + dg_minus)


def write_targets(
    backend: ArrayBackend,
    targets: dict[str, tuple[FloatArray, BoolArray]],
    calibrations: Mapping[str, GateCalibration],
    tolerance: float,
    recorder: Recorder | None = None,
    report: TransferReport | None = None,
) -> int:
    """Write-verify every masked device to its target (held to what the device reaches); the pulses.
    A ``recorder`` shows each board's programming as a phase of the run, with its progress; a
    ``report`` counts the devices held at their reach (also logged, and the run file keeps the
    count: never held silently)."""
    pulses = held = written = 0
    for name, (target, mask) in targets.items():
        board = backend.boards[name]
        calibration = calibrations.get(name)
        if calibration is not None:  # whole-board maps: ask no device for more than it reaches
            reach_low, reach_high = calibration.reach()
            past = int((mask & ((target < reach_low) | (target > reach_high))).sum())
            held, written = held + past, written + int(mask.sum())
            if past:
                # The weights' span is checked before any pulse against a nominal pair; a device's own
                # reach (its spread) and a column's attenuation (the correction rounds divide by it)
                # are known only once calibrated and read back.
                log.info("%s: %d of %d devices (%.1f %%) asked past their calibrated reach, written at "
                            "its end", name, past, int(mask.sum()), 100 * past / max(int(mask.sum()), 1))  # fmt: skip
            np.copyto(target, np.clip(target, reach_low, reach_high), where=mask)
        np.copyto(target, np.clip(target, G_TARGET_FLOOR, board.limits.g_cell_max), where=mask)
        if recorder is not None:
            phase(recorder, f"programming {name} ({int(mask.sum())} devices, write-verify)")
        result = write_verify(board, np.where(mask, target, 0.0), tolerance=tolerance, mask=mask,
                              calibration=calibration,
                              recorder=ProgressOnly(recorder) if recorder is not None else None)  # fmt: skip
        pulses += int(result.pulses.sum())
    if report is not None:
        report.held_at_reach.append(held)
        report.written = written
    return pulses


def _rms(errors: Mapping[str, FloatArray]) -> float:
    values = np.concatenate([e.ravel() for e in errors.values()]) if errors else np.zeros(1)
    return float(np.sqrt(np.mean(values**2)))
