"""Wire resistance: a VMM with every row driven, against the single-cell reads of the same cells.

A cell read alone sees one series path through the lines; a VMM with every row driven shares
the lines among all cells, so its column currents fall short of ``v * sum(G)`` by the voltage
the shared wires drop. This procedure reads the map (``reads`` times, averaged), runs
``vectors`` identical VMM vectors with every row at ``v_read`` (averaged), and fits the one
resistance per wire segment that makes a nodal model of the lines reproduce the column currents.

The geometry assumed is the board's documented one (docs/emulator-physics.md): each row line is
driven from its column-0 end, each column line ends in its TIA below the last row, one segment
between neighbouring cells and one to the driver or TIA; so a cell ``(i, j)`` read alone has
``j + 1 + rows - i`` segments in series. Cells are taken as ohmic at the read voltage.

Optionally (``program``) every cell is first SET at ``set_gate``: higher conductances mean larger
wire drops and a tighter fit. Datasets: ``wire_resistance/g_read`` (rows, cols) S,
``wire_resistance/i_vmm`` (cols,) A, ``wire_resistance/i_model`` (cols,) A at the fitted value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from pydantic import Field

from drivers import Board, LimitError, PulseKind
from protocols.characterization.common import (
    FloatArray,
    ProcedureOptions,
    PulseWidth,
    Selection,
    SetAmplitude,
    SetGate,
    check_pulse,
    check_read_voltage,
    pulse,
    select_region,
    start_group,
)
from protocols.characterization.common import RegionOptions as _Region
from protocols.characterization.figures import Figure, record_figures
from protocols.recording import Recorder

GROUP = "wire_resistance"


class WireResistanceOptions(ProcedureOptions):
    """Options of ``wire-resistance`` (always the whole array: the lines span it)."""

    v_read: float = Field(0.2, description="read voltage, and every row's VMM input, V")
    reads: int = Field(16, ge=1, le=1000, description="map reads averaged")
    vectors: int = Field(64, ge=1, le=100000, description="identical VMM vectors averaged")
    program: bool = Field(True, description="SET every cell at set_gate first (larger drops, tighter fit)")
    set_amplitude: SetAmplitude = 2.5
    set_gate: SetGate = 1.5
    width: PulseWidth = 1e-6
    r_max: float = Field(20.0, gt=0, le=1e4, description="largest segment resistance considered, ohm")


@dataclass(frozen=True)
class WireResistance:
    r_segment: float
    g_read: FloatArray
    i_vmm: FloatArray
    figures: dict[str, Figure] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def series_segments(rows: int, cols: int) -> FloatArray:
    """Wire segments in series with each cell read alone, ``(rows, cols)``."""
    i, j = np.indices((rows, cols))
    return np.asarray((j + 1) + (rows - i), dtype=np.float64)


def column_currents(g: FloatArray, r_segment: float, v_rows: FloatArray) -> FloatArray:
    """Column currents (A) of an ohmic crossbar with wire segments of ``r_segment`` ohm, every row
    driven at ``v_rows`` from its column-0 end and every column at 0 V at its TIA below the last row."""
    rows, cols = g.shape
    if r_segment <= 0:
        return np.asarray(v_rows @ g)
    gw = 1.0 / r_segment
    n = rows * cols
    u = np.arange(n).reshape(rows, cols)  # row-line nodes
    w = u + n  # column-line nodes
    a_idx: list[npt.NDArray[np.int64]] = []
    b_idx: list[npt.NDArray[np.int64]] = []
    vals: list[FloatArray] = []

    def conductor(p: npt.NDArray[np.int64], q: npt.NDArray[np.int64], value: FloatArray | float) -> None:
        a_idx.append(p.ravel())
        b_idx.append(q.ravel())
        vals.append(np.broadcast_to(value, p.shape).ravel())

    conductor(u[:, :-1], u[:, 1:], gw)
    conductor(w[:-1, :], w[1:, :], gw)
    conductor(u, w, g)
    p, q = np.concatenate(a_idx).astype(np.intp), np.concatenate(b_idx).astype(np.intp)
    val = np.concatenate(vals)
    diag = np.zeros(2 * n)
    np.add.at(diag, p, val)
    np.add.at(diag, q, val)
    diag[u[:, 0]] += gw  # to the row driver
    diag[w[-1, :]] += gw  # to the TIA (virtual ground)
    matrix = sp.coo_matrix(
        (np.concatenate([-val, -val, diag]), (np.concatenate([p, q, np.arange(2 * n)]),
                                              np.concatenate([q, p, np.arange(2 * n)]))),
        shape=(2 * n, 2 * n),
    ).tocsc()  # fmt: skip
    rhs = np.zeros(2 * n)
    rhs[u[:, 0]] = gw * v_rows
    nodes = spla.spsolve(matrix, rhs)
    return np.asarray(gw * nodes[w[-1, :]])


def fit_segment_resistance(g_read: FloatArray, i_vmm: FloatArray, v_read: float, r_max: float) -> tuple[float, float]:
    """``(r, sigma_r)``: the segment resistance whose model matches the VMM column currents."""
    rows, cols = g_read.shape
    segments = series_segments(rows, cols)
    v_rows = np.full(rows, v_read)
    # A read through r*segments in series: 1/G_read = 1/G + r*segments; G must stay positive.
    r_limit = min(r_max, float(np.min(1.0 / (g_read * segments))) * 0.999)

    def model(r: float) -> FloatArray:
        g = 1.0 / (1.0 / g_read - r * segments)
        return column_currents(g, r, v_rows)

    # Gauss-Newton on the one unknown: the currents are smooth and nearly linear in r, so a few
    # steps (two network solves each) converge; kept inside [0, r_limit].
    r = 0.0
    sensitivity = np.zeros(cols)
    for _ in range(8):
        h = max(1e-3 * r, 1e-5 * r_limit, 1e-6)
        at_r = model(r)
        sensitivity = (model(min(r + h, r_limit)) - at_r) / (min(r + h, r_limit) - r)
        scale = float(sensitivity @ sensitivity)
        if scale <= 0:
            break
        step = -float(sensitivity @ (at_r - i_vmm)) / scale
        r_next = min(max(r + step, 0.0), r_limit)
        if abs(r_next - r) <= 1e-6 * max(r_next, 1e-3):
            r = r_next
            break
        r = r_next
    residual = model(r) - i_vmm
    dof = max(cols - 1, 1)
    sigma = math.sqrt(float((residual**2).sum()) / dof / max(float((sensitivity**2).sum()), 1e-300))
    return r, sigma


def check_wire_resistance(board: Board, opts: WireResistanceOptions) -> Selection:
    """Every limit the run meets, checked before anything is sent (the all-rows VMM's column
    current included, which the board would check only after the SET); the whole array."""
    selection = select_region(board, _Region(v_read=opts.v_read))
    check_read_voltage(board, opts.v_read)
    if opts.program:
        check_pulse(board, selection, PulseKind.SET, opts.set_amplitude, opts.set_gate, opts.width)
    rows, limit = board.shape[0], board.limits.i_col
    worst = board.predicted_column_current(rows, opts.v_read)
    if worst > limit.max:
        raise LimitError("predicted column current of the all-rows VMM", worst, limit.min, limit.max, "A",
                         hint=f"a v_read of at most {board.largest_vmm_input(rows):.3g} V keeps {rows} rows "
                              f"of cells up to g_cell_max = {board.limits.g_cell_max:g} S within it")  # fmt: skip
    return selection


def measure_wire_resistance(board: Board, recorder: Recorder, **options: Any) -> WireResistance:
    """Single-cell reads and an all-rows VMM of the whole array; fit of the segment resistance."""
    opts = WireResistanceOptions.model_validate(options)
    selection = check_wire_resistance(board, opts)
    rows, cols = board.shape
    inputs = np.full((opts.vectors, rows), opts.v_read)
    recorder.progress(0, total=2 + int(opts.program), step="wire resistance")
    if opts.program:
        pulse(board, selection, PulseKind.SET, opts.set_amplitude, opts.set_gate, opts.width)
        recorder.progress(1, step="SET")
    g_read = np.mean([board.read_map(opts.v_read) for _ in range(opts.reads)], axis=0)
    recorder.write(f"{GROUP}/g_read", g_read, unit="S")
    start_group(recorder, GROUP, "wire-resistance", opts)
    recorder.progress(1, step="reads")
    i_vmm = np.asarray(board.vmm(inputs)).mean(axis=0)
    recorder.write(f"{GROUP}/i_vmm", i_vmm, unit="A")
    recorder.progress(1, step="VMM")
    r, sigma = fit_segment_resistance(g_read, i_vmm, opts.v_read, opts.r_max)
    segments = series_segments(rows, cols)
    model = column_currents(1.0 / (1.0 / g_read - r * segments), r, np.full(rows, opts.v_read))
    recorder.write(f"{GROUP}/i_model", model, unit="A")
    shortfall = 1.0 - float(i_vmm.sum() / (opts.v_read * g_read.sum()))
    figures = {"line_resistance": Figure(r, sigma, "ohm"), "vmm_shortfall": Figure(shortfall, math.nan)}
    record_figures(recorder, GROUP, figures)
    notes = (f"VMM column currents {shortfall:.2%} below the sum of single-cell reads",)
    return WireResistance(r, g_read, i_vmm, figures, notes)
