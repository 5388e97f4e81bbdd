"""Conductance map and yield map: every cell classified normal, stuck low, stuck high or unformed.

Destructive (default): read; SET every cell at a high gate (one batch); read; RESET every cell
(one batch); read. Five round trips for any array size. Cells are left RESET.

- normal: the switching window ``g_set - g_reset`` is at least ``min_window``; by default
  (``min_window`` null) that is derived from the chip's own windows,
  :func:`~protocols.characterization.common.auto_min_window` (a quarter of a typical window, and
  for each cell at least a tenth of its own SET level), so a chip of 10-60 uS is judged as one of
  100-900 uS; the chip-wide part is recorded as the group's ``min_window_used``;
- unformed: not switching, and no read reached ``g_unformed_max`` (a virgin cell is an insulator;
  SET pulses do not form it). This one stays absolute (2 uS): a virgin cell's level is the
  pristine oxide's, not the switching window's, so it does not scale with the chip. A stuck-low
  cell below it (the TaOx/HfOx preset's sit at 1 uS) is classed unformed here; the forming
  step, which tries to form it, tells the two apart (``hil/twin/defects.py``);
- stuck high: not switching, and ``g_set`` at or above ``g_stuck_high_min``, or the RESET leaves it
  at or above the switching cells' median SET level (a shorted cell);
- stuck low: any other cell that does not switch.

Non-destructive (``destructive=False``): one read, classified by level alone: below
``g_unformed_max`` unformed, below ``g_stuck_low_max`` stuck low (by default a quarter of the
median read of the cells above ``g_unformed_max``: the chip's own typical level), at or above
``g_stuck_high_min`` stuck high, otherwise normal. A read cannot tell a stuck cell from a working
one that happens to hold the same conductance, so this is a screen, not a test.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Self

import numpy as np
import numpy.typing as npt
from pydantic import Field, StrictBool, model_validator

from drivers import Board, PulseKind
from protocols.characterization.common import (
    FloatArray,
    MinWindow,
    PulseWidth,
    RegionOptions,
    ResetAmplitude,
    ResetGate,
    Selection,
    SetAmplitude,
    SetGate,
    auto_min_window,
    check_pulse,
    check_read_voltage,
    pulse,
    select_region,
    start_group,
    typical_min_window,
)
from protocols.characterization.figures import Figure, binomial, mean_of, median_of, record_figures
from protocols.recording import Attr, Recorder

GROUP = "yield"


class CellClass(IntEnum):
    """Codes of ``yield/class``; its ``class_names`` attribute lists the names in code order."""

    NORMAL = 0
    STUCK_LOW = 1
    STUCK_HIGH = 2
    UNFORMED = 3


CLASS_NAMES = tuple(c.name.lower() for c in CellClass)


class YieldMapOptions(RegionOptions):
    """Options of ``yield-map``."""

    destructive: StrictBool = Field(
        True, description="SET then RESET every cell to measure its window (leaves cells RESET); false: one read"
    )
    set_amplitude: SetAmplitude = 2.5
    set_gate: SetGate = 2.0
    reset_amplitude: ResetAmplitude = 1.8
    reset_gate: ResetGate = 5.0
    width: PulseWidth = 1e-6
    min_window: MinWindow = None
    g_unformed_max: float = Field(2e-6, gt=0, description="a cell never reading above this is unformed, S")
    g_stuck_low_max: float | None = Field(
        None, gt=0, description="read-only: a cell below this is stuck low, S; null (default): a quarter of the "
        "median read of the cells above g_unformed_max",
    )  # fmt: skip
    g_stuck_high_min: float = Field(
        800e-6, gt=0, description="a (non-switching) cell at or above this is stuck high, S"
    )
    bad_line_fraction: float = Field(
        0.9, gt=0, le=1, description="a row or column with at least this fraction of defective cells is a bad line"
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        stuck_low_max = self.g_unformed_max if self.g_stuck_low_max is None else self.g_stuck_low_max
        if not self.g_unformed_max <= stuck_low_max < self.g_stuck_high_min:
            raise ValueError("thresholds must satisfy g_unformed_max <= g_stuck_low_max < g_stuck_high_min")
        return self


@dataclass(frozen=True)
class YieldMap:
    classes: npt.NDArray[np.int8]
    """``(nrows, ncols)`` :class:`CellClass` codes"""
    g_initial: FloatArray
    g_set: FloatArray | None
    g_reset: FloatArray | None
    counts: dict[str, int]
    bad_rows: tuple[int, ...] = ()
    """array rows flagged bad (their defect rate reached ``bad_line_fraction``)"""
    bad_cols: tuple[int, ...] = ()
    figures: dict[str, Figure] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def yield_fraction(self) -> float:
        return self.counts["normal"] / self.classes.size


# The read-only screen's automatic stuck-low line: a quarter of the chip's typical read (15 to 35
# uS on a Ta/HfO2 array at its RESET floor, whose stuck cells read 5 uS; 2.5 to 5 uS on a TaOx/HfOx
# one at 10-20 uS, whose stuck cells read 1 uS). Never below g_unformed_max.
STUCK_LOW_SHARE = 0.25


def stuck_low_line(g: FloatArray, options: YieldMapOptions) -> float:
    """The read-only screen's ``g_stuck_low_max``: the option, or its automatic value (above)."""
    if options.g_stuck_low_max is not None:
        return options.g_stuck_low_max
    conducting = g[g >= options.g_unformed_max]
    if not conducting.size:
        return options.g_unformed_max
    return max(STUCK_LOW_SHARE * float(np.median(conducting)), options.g_unformed_max)


def window_line(g_set: FloatArray, g_reset: FloatArray, options: YieldMapOptions) -> FloatArray | float:
    """The destructive rule's ``min_window``: the option, or each cell's own (``auto_min_window``)."""
    if options.min_window is not None:
        return options.min_window
    return auto_min_window(g_set - g_reset, g_set)


def _chip_window(g_set: FloatArray, g_reset: FloatArray, options: YieldMapOptions) -> float:
    """The window line as one figure (the auto rule's chip-wide part; each cell's own line is also
    at least ``LEVEL_SHARE`` of its SET level)."""
    return options.min_window if options.min_window is not None else typical_min_window(g_set - g_reset)


def classify_levels(g: FloatArray, options: YieldMapOptions) -> npt.NDArray[np.int8]:
    """Classes by one read's level alone (the non-destructive rule)."""
    classes = np.full(g.shape, CellClass.NORMAL, dtype=np.int8)
    classes[g >= options.g_stuck_high_min] = CellClass.STUCK_HIGH
    classes[g < stuck_low_line(g, options)] = CellClass.STUCK_LOW
    classes[g < options.g_unformed_max] = CellClass.UNFORMED
    return classes


def classify_switching(
    g_initial: FloatArray, g_set: FloatArray, g_reset: FloatArray, options: YieldMapOptions
) -> npt.NDArray[np.int8]:
    """Classes by the SET/RESET window and levels (the destructive rule).

    A cell the RESET leaves at a stuck-high level does not switch, whatever its window: under 2 %
    read noise a shorted cell (1 mS) shows a "window" of 50 uS once in 25 reads. Nor does a cell
    the RESET leaves at or above the switching cells' median SET level: it stays in the
    low-resistance state, so it is stuck high even below ``g_stuck_high_min`` (a shorted cell's
    read loses ``G^2 r segments`` to the wires, 7 % at 1 mS behind 96 one-ohm segments, and shorts
    vary from cell to cell: 1 mS ones read as low as 770 uS on a 64 x 32 array).
    """
    switching = (g_set - g_reset >= window_line(g_set, g_reset, options)) & (g_reset < options.g_stuck_high_min)
    stays_high = g_reset >= options.g_stuck_high_min
    if switching.any():
        stays_high |= g_reset >= float(np.median(g_set[switching]))
        switching &= ~stays_high
    never_conducts = np.maximum(np.maximum(g_initial, g_set), g_reset) < options.g_unformed_max
    classes = np.full(g_set.shape, CellClass.STUCK_LOW, dtype=np.int8)
    classes[(g_set >= options.g_stuck_high_min) | stays_high] = CellClass.STUCK_HIGH
    classes[never_conducts] = CellClass.UNFORMED
    classes[switching] = CellClass.NORMAL
    return classes


def summarize(classes: npt.NDArray[np.int8]) -> dict[str, Attr]:
    """Counts and fractions of each class, as attributes."""
    counts = np.bincount(classes.ravel(), minlength=len(CellClass))
    attrs: dict[str, Attr] = {"n_cells": int(classes.size), "yield_fraction": float(counts[0] / classes.size)}
    for name, count in zip(CLASS_NAMES, counts, strict=True):
        attrs[f"count_{name}"] = int(count)
        attrs[f"fraction_{name}"] = float(count / classes.size)
    return attrs


def check_yield_map(board: Board, opts: YieldMapOptions) -> Selection:
    """Every limit the run meets, checked before anything is sent; the cells it works on."""
    selection = select_region(board, opts)
    check_read_voltage(board, opts.v_read)
    if opts.destructive:
        check_pulse(board, selection, PulseKind.SET, opts.set_amplitude, opts.set_gate, opts.width)
        check_pulse(board, selection, PulseKind.RESET, opts.reset_amplitude, opts.reset_gate, opts.width)
    return selection


def measure_yield_map(board: Board, recorder: Recorder, **options: Any) -> YieldMap:
    """Conductance maps and a per-cell class map of a region (see the module's rule)."""
    opts = YieldMapOptions.model_validate(options)
    selection = check_yield_map(board, opts)
    region = selection.region
    total = 5 if opts.destructive else 1

    g_initial = board.read_map(opts.v_read, region)
    recorder.write(f"{GROUP}/g_initial", g_initial, unit="S")
    start_group(recorder, GROUP, "yield-map", opts, row0=region.row0, col0=region.col0)
    recorder.progress(1, total, step="read")
    g_set = g_reset = None
    if opts.destructive:
        pulse(board, selection, PulseKind.SET, opts.set_amplitude, opts.set_gate, opts.width)
        recorder.progress(1, total, step="SET")
        g_set = board.read_map(opts.v_read, region)
        recorder.write(f"{GROUP}/g_set", g_set, unit="S")
        recorder.progress(1, total, step="read")
        pulse(board, selection, PulseKind.RESET, opts.reset_amplitude, opts.reset_gate, opts.width)
        recorder.progress(1, total, step="RESET")
        g_reset = board.read_map(opts.v_read, region)
        recorder.write(f"{GROUP}/g_reset", g_reset, unit="S")
        classes = classify_switching(g_initial, g_set, g_reset, opts)
        recorder.set_attrs(GROUP, min_window_used=_chip_window(g_set, g_reset, opts))
        recorder.progress(1, total, step="read")
    else:
        classes = classify_levels(g_initial, opts)
        recorder.set_attrs(GROUP, g_stuck_low_max_used=stuck_low_line(g_initial, opts))
    summary = summarize(classes)
    recorder.write(f"{GROUP}/class", classes, class_names=",".join(CLASS_NAMES))
    recorder.set_attrs(GROUP, **summary)
    counts = {name: int(summary[f"count_{name}"]) for name in CLASS_NAMES}
    defective = classes != CellClass.NORMAL
    row_rate, col_rate = defective.mean(axis=1), defective.mean(axis=0)
    recorder.write(f"{GROUP}/row_defect_rate", row_rate)
    recorder.write(f"{GROUP}/col_defect_rate", col_rate)
    bad_rows = tuple(int(r) + region.row0 for r in np.flatnonzero(row_rate >= opts.bad_line_fraction))
    bad_cols = tuple(int(c) + region.col0 for c in np.flatnonzero(col_rate >= opts.bad_line_fraction))
    bad_lines = json.dumps({"rows": list(bad_rows), "cols": list(bad_cols)})
    recorder.set_attrs(GROUP, bad_lines=bad_lines)
    figures = defect_figures(classes, g_set if g_set is not None else g_initial, g_reset, region.row0, region.col0,
                             bad_rows, bad_cols)  # fmt: skip
    record_figures(recorder, GROUP, figures)
    line = (f"window of a normal cell at least {1e6 * _chip_window(g_set, g_reset, opts):.3g} uS"
            if g_set is not None and g_reset is not None else
            f"stuck low below {1e6 * stuck_low_line(g_initial, opts):.3g} uS")  # fmt: skip
    notes = (
        "classes: " + ", ".join(f"{name} {count}" for name, count in counts.items()) + f" ({line})",
        f"defect rate per row: max {row_rate.max():.0%}; per column: max {col_rate.max():.0%}",
        f"bad_lines (training config format): {bad_lines}",
    )
    return YieldMap(classes, g_initial, g_set, g_reset, counts, bad_rows, bad_cols, figures, notes)


def defect_figures(
    classes: npt.NDArray[np.int8], g_set: FloatArray, g_reset: FloatArray | None, row0: int, col0: int,
    bad_rows: tuple[int, ...], bad_cols: tuple[int, ...],
) -> dict[str, Figure]:  # fmt: skip
    """Defect fractions of the cells off the bad lines, and the levels of each class."""
    off_lines = np.ones(classes.shape, dtype=bool)
    off_lines[[r - row0 for r in bad_rows], :] = False
    off_lines[:, [c - col0 for c in bad_cols]] = False
    total = int(off_lines.sum())
    figures = {
        f"fraction_{name}": binomial(int(((classes == cls) & off_lines).sum()), total)
        for cls, name in zip(CellClass, CLASS_NAMES, strict=True)
        if cls is not CellClass.NORMAL
    }
    # The median: the class also holds working cells whose window is under min_window (a device
    # with a k a fifth of the mean, say), at their own level of 100 uS or more, not the stuck level.
    figures["g_stuck_low"] = median_of(g_set[classes == CellClass.STUCK_LOW], "S")
    figures["g_stuck_high"] = mean_of(g_set[classes == CellClass.STUCK_HIGH], "S")
    if g_reset is not None:
        figures["g_reset"] = mean_of(g_reset[classes == CellClass.NORMAL], "S")
    return figures
