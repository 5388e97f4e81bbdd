"""The yield map's classes with the forming step's verdict on the cells that never conducted.

The yield map calls a non-switching cell that never read above ``g_unformed_max`` (2 uS)
unformed: a virgin cell is an insulator. That level is the pristine oxide's and does not scale
with the chip, but a stuck-low level does: the TaOx/HfOx preset's stuck cells read 1 uS, under
the line, so on such a chip the yield map files them as unformed and the twin would have no
stuck-low cells at all. The forming step tells the two apart: it sent its FORM ramp to every cell
under the line, and a virgin cell forms while a stuck one does not. So a cell the yield map calls
unformed that forming tried and could not form is stuck low here.

On a chip whose stuck cells read above the line (the Ta/HfO2 array's 5 uS), no cell changes
class, and the figures stay the yield map's own.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from hil.storage import RunData
from protocols.characterization.yield_map import CellClass

ClassMap = npt.NDArray[np.int8]


def _origin(run: RunData, group: str) -> tuple[int, int]:
    attrs = run.attrs.get(group, {})
    return int(attrs.get("row0", 0)), int(attrs.get("col0", 0))


def not_formed(forming: RunData | None, shape: tuple[int, int], origin: tuple[int, int]) -> npt.NDArray[np.bool_]:
    """Cells of the ``shape`` region at ``origin`` that forming tried (they read under its line)
    and that did not form by the end of its ramp; all False without a forming run over that region."""
    dead = np.zeros(shape, dtype=bool)
    if forming is None:
        return dead
    tried = forming.datasets.get("forming/unformed_before")
    formed = forming.datasets.get("forming/formed")
    if tried is None or np.shape(tried) != shape or _origin(forming, "forming") != origin:
        return dead
    tried = np.asarray(tried, dtype=bool)
    return tried & ~np.asarray(formed, dtype=bool) if formed is not None else tried


def formed_by_ramp(forming: RunData) -> npt.NDArray[np.bool_] | None:
    """The virgin cells forming found and formed (``unformed_before`` that then conducted)."""
    tried = forming.datasets.get("forming/unformed_before")
    if tried is None:
        return None
    formed = forming.datasets.get("forming/formed")
    tried = np.asarray(tried, dtype=bool)
    return tried & np.asarray(formed, dtype=bool) if formed is not None else np.zeros_like(tried)


def reconciled_classes(runs: Mapping[str, RunData]) -> tuple[ClassMap, int] | None:
    """The yield map's classes with its unformed cells that forming could not form made stuck low,
    and how many changed; None without a yield map."""
    yield_run = runs.get("yield-map")
    if yield_run is None or "yield/class" not in yield_run.datasets:
        return None
    classes = np.array(yield_run.datasets["yield/class"], dtype=np.int8)
    dead = not_formed(runs.get("forming"), classes.shape, _origin(yield_run, "yield"))
    change = dead & (classes == CellClass.UNFORMED)
    classes[change] = CellClass.STUCK_LOW
    return classes, int(change.sum())
