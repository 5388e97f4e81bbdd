"""Forming virgin cells: a FORM amplitude ramp over the whole array, stopping per cell.

A fresh chip's cells are virgin (nearly insulating) until a first, higher-voltage pulse grows
the filament; the transistor's gate limits the forming current, so a cell forms at a moderate
conductance instead of shorting. :func:`form_cells` reads the array, then for each amplitude of
the ramp sends one FORM batch to the cells that do not conduct yet and reads the map again: two
round trips per ramp step, whatever the number of cells. A cell that conducts gets no more
FORM pulses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from drivers import Board, InvalidRequest, PulseKind, Region
from protocols.recording import Recorder

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class FormingResult:
    """What :func:`form_cells` did."""

    formed: BoolArray
    """cells that conduct (read above the threshold) at the end, whether formed now or before"""
    v_form: FloatArray
    """amplitude of the FORM pulse after which each cell first conducted, V; 0 where it already
    conducted before the ramp; NaN where it never did or was not selected"""
    pulses: npt.NDArray[np.int32]
    """FORM pulses per cell"""
    g_final: FloatArray
    """conductance of the last read, S"""
    mask: BoolArray
    """the cells the ramp was for"""
    steps: int
    """ramp steps taken"""
    round_trips: int
    """commands sent: map reads and FORM batches"""

    @property
    def unformed(self) -> BoolArray:
        """Selected cells that still do not conduct."""
        return np.asarray(self.mask & ~self.formed)


def form_cells(
    board: Board,
    mask: npt.ArrayLike | None = None,
    v_start: float = 2.0,
    v_stop: float = 4.0,
    v_step: float = 0.1,
    v_gate: float = 1.0,
    width: float = 10e-6,
    g_formed_threshold: float = 10e-6,
    region: Region | None = None,
    v_read: float = 0.2,
    recorder: Recorder | None = None,
) -> FormingResult:
    """Form every masked cell that does not conduct yet, with a rising FORM amplitude.

    Args:
        board: the open board.
        mask: cells to form, ``region``-shaped (default: all).
        v_start: first FORM amplitude, V.
        v_stop: last FORM amplitude, V (inclusive, if the steps land on it).
        v_step: amplitude increment, V.
        v_gate: gate voltage during FORM, V: the transistor's compliance limits the forming current.
        width: FORM pulse width, s.
        g_formed_threshold: a cell reading above this conducts (is formed), S. Between a virgin
            cell's nanosiemens and a RESET cell's tens of microsiemens.
        region: part of the array (default: all of it).
        v_read: read voltage, V.
        recorder: receives ``forming/amplitude`` and ``forming/g`` rows per step, the final maps,
            and progress per step with the formed fraction.
    """
    region = region if region is not None else Region(0, 0, *board.shape)
    if not (np.isfinite([v_start, v_stop, v_step]).all() and v_step > 0 and v_start <= v_stop):
        raise InvalidRequest(
            f"FORM ramp {v_start} V to {v_stop} V in {v_step} V steps: expected v_start <= v_stop and v_step > 0"
        )
    if not g_formed_threshold > 0:
        raise InvalidRequest(f"g_formed_threshold = {g_formed_threshold} S; expected a positive conductance")
    selected = np.ones(region.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if selected.shape != region.shape:
        raise InvalidRequest(f"mask has shape {selected.shape}; expected {region.shape} (the region's shape)")
    # The step count is rounded so float steps do not drop the last amplitude (2.0 + 20 * 0.1).
    amplitudes = v_start + v_step * np.arange(int(np.floor((v_stop - v_start) / v_step + 1e-9)) + 1)
    origin = (region.row0, region.col0)
    for amplitude in (amplitudes[0], amplitudes[-1]):  # the ramp is monotonic: its ends bound it
        board.check_pulses(PulseKind.FORM, float(amplitude), v_gate, width, selected, origin)

    g = board.read_map(v_read, region)
    round_trips = 1
    formed = g > g_formed_threshold
    v_form = np.where(selected & formed, 0.0, np.nan)
    pulses = np.zeros(region.shape, dtype=np.int32)
    steps = 0
    if recorder is not None:
        recorder.append("forming/g", g)
        recorder.set_attrs("forming", v_gate=v_gate, width=width, g_formed_threshold=g_formed_threshold,
                           row0=region.row0, col0=region.col0)  # fmt: skip
        recorder.progress(0, total=len(amplitudes), step="forming")
    for amplitude in amplitudes:
        todo = selected & ~formed
        if not todo.any():
            break
        board.apply_pulses(PulseKind.FORM, float(amplitude), v_gate, width, todo, origin)
        pulses += todo
        g = board.read_map(v_read, region)
        round_trips += 2
        steps += 1
        formed_now = todo & (g > g_formed_threshold)
        v_form[formed_now] = amplitude
        formed |= formed_now
        fraction = float((selected & formed).sum() / max(1, int(selected.sum())))
        if recorder is not None:
            recorder.append("forming/amplitude", np.array(amplitude))
            recorder.append("forming/g", g)
            recorder.progress(1, amplitude=float(amplitude), formed=fraction)
    result = FormingResult(
        formed=formed, v_form=v_form, pulses=pulses, g_final=g, mask=selected, steps=steps, round_trips=round_trips
    )
    if recorder is not None:
        recorder.write("forming/formed", formed)
        recorder.write("forming/v_form", v_form, unit="V")
        recorder.write("forming/pulses", pulses)
    return result
