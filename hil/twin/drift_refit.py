"""The retention step's drift figures fitted again for the twin: on the devices' conductances,
and on the cells the yield map found working.

- **The wires.** A cell read alone sees ``1 / G_read = 1 / G + r * segments``, so a change of
  the device's conductance reaches the read scaled by ``(G_read / G)^2``: a drift of ``nu`` reads as
  ``nu (1 - G r segments)^2``, 6 % less at 300 uS behind 96 one-ohm segments (a 64 x 32 array).
  The twin emulates the same wires, so a drift fitted on the reads would be lowered twice. The
  reads are taken back to the devices (:func:`hil.twin.wire_reads.device_conductance`) before
  the per-cell fits; the fit-noise removal works on them as on the reads.
- **The working cells.** The retention step calls a cell working when its SET read rose
  ``min_window`` above its RESET read; a shorted cell (1 mS) under 2 % read noise passes that
  test about once in six, and does not drift. A cell the yield map classed as a defect is left out.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from hil.storage import RunData
from hil.twin.wire_reads import Refit, device_conductance_of_cells
from protocols.characterization.retention import RetentionOptions, drift_figures
from protocols.characterization.yield_map import CellClass

FloatArray = npt.NDArray[np.float64]


def working_in_yield_map(cells: npt.NDArray[np.int64], yield_run: RunData | None) -> npt.NDArray[np.bool_]:
    """Per listed cell ``(row, col)``: not a defect of the yield map (every cell without one, or
    for a cell outside its region)."""
    keep = np.ones(len(cells), dtype=bool)
    classes = None if yield_run is None else yield_run.datasets.get("yield/class")
    if classes is None or yield_run is None:
        return keep
    attrs = yield_run.attrs.get("yield", {})
    row0, col0 = int(attrs.get("row0", 0)), int(attrs.get("col0", 0))
    rows, cols = np.asarray(classes).shape
    r, c = cells[:, 0] - row0, cells[:, 1] - col0
    inside = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
    keep[inside] = np.asarray(classes)[r[inside], c[inside]] == CellClass.NORMAL
    return keep


def drift_refit(runs: Mapping[str, RunData], r_segment: float, array_shape: tuple[int, int]) -> list[Refit]:
    """``drift_mean`` and ``drift_spread`` of the retention run in ``runs`` on the devices'
    conductances of its working cells that the yield map (if any) found normal; nothing without a
    retention run, its ``working`` mask, or three read times."""
    run = runs.get("retention")
    if run is None:
        return []
    g, time = run.datasets.get("retention/g"), run.datasets.get("retention/time")
    cells, working = run.datasets.get("retention/cells"), run.datasets.get("retention/working")
    if g is None or time is None or cells is None or working is None or len(time) < 3:
        return []
    cells = np.asarray(cells, dtype=np.int64).reshape(-1, 2)
    g_device = device_conductance_of_cells(np.asarray(g, dtype=np.float64), r_segment, array_shape, cells)
    keep = np.asarray(working, dtype=bool) & working_in_yield_map(cells, runs.get("yield-map"))
    options = run.options("retention")
    t0 = float(options.get("drift_time_constant", RetentionOptions().drift_time_constant))
    figures = drift_figures(np.asarray(time, dtype=np.float64), g_device[:, keep], t0)
    return [Refit(name, "retention", name, figures[name]) for name in ("drift_mean", "drift_spread") if name in figures]
