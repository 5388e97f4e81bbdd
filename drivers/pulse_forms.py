"""Which form a checked pulse batch travels in: ``PULS:BATC``'s four float32 planes, or ``PULS:SPAR``
(protocol 1.3) naming the pulsed cells with their values, whichever is smaller.

``PULS:SPAR`` carries a value shared by every pulsed cell once, as a number in the command; a value
that varies per cell as uint16 DAC codes (the nearest, within half a DAC step) when the board reports
its DAC scale and every coded level lies inside the host's limits, else as float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from drivers import commands as cmd
from drivers import compact
from drivers.commands import Line, PulseKind
from drivers.limits import Range

PLANES_BYTES_PER_CELL = 4 * compact.F32.itemsize  # PULS:BATC: amplitude, gate, width, mask


@dataclass(frozen=True)
class BatchForm:
    """One batch command as it goes on the wire: its header, the arguments after the region, its block."""

    header: str
    args: tuple[str | int | float, ...]
    block: npt.NDArray[np.float32] | bytes

    @property
    def block_bytes(self) -> int:
        return len(self.block) if isinstance(self.block, bytes) else self.block.size * compact.F32.itemsize


def amplitude_line(kind: PulseKind) -> Line:
    """The line a pulse's amplitude drives: the column for RESET, the row otherwise."""
    return Line.COL if kind is PulseKind.RESET else Line.ROW


def sparse_form(
    kind: PulseKind, planes: npt.NDArray[np.float32], scales: compact.Scales | None, limits: tuple[Range, Range]
) -> BatchForm:
    """The ``PULS:SPAR`` form of checked ``planes`` (amplitude, gate, width, mask); ``limits``: the
    host's ranges of the amplitude and the gate, which a DAC-coded level must stay inside."""
    mask = planes[3] != 0
    where = np.flatnonzero(mask)  # one pass for the selection and the three planes' values
    count, cells = len(where), mask.size
    select = min(compact.Selection, key=lambda form: compact.selection_bytes(form, cells, count))
    args: list[str | int | float] = [select.value, count]
    if select is compact.Selection.INDEX:
        parts = [where.astype(compact.index_dtype(cells)).tobytes()]  # encode_selection's IDX, from the same pass
    else:
        parts = [compact.encode_selection(mask, select)]
    lines = (amplitude_line(kind), Line.GATE, None)
    for plane, line, limit in zip(planes[:3], lines, (*limits, None), strict=True):
        values = plane.ravel().take(where)  # plane[mask], without a second scan of the mask
        if (values == values[0]).all():
            args.append(float(values[0]))  # the float32 value, exactly: the value the limits were checked against
            continue
        if scales is not None and line is not None and limit is not None:
            step = scales.dac_step(line)
            codes = compact.dac_codes(values, step)
            levels = codes * step
            if compact.fits(codes, compact.PULSE_CODE_DTYPE) and compact.within(levels, limit.min, limit.max):
                args.append(compact.ValueForm.DAC.value)
                parts.append(codes.astype(compact.PULSE_CODE_DTYPE).tobytes())
                continue
        args.append(compact.ValueForm.FLOAT.value)
        parts.append(values.astype(compact.F32).tobytes())
    return BatchForm(cmd.PULS_SPAR.header, tuple(args), b"".join(parts))


def smallest_form(
    kind: PulseKind, planes: npt.NDArray[np.float32], scales: compact.Scales | None, limits: tuple[Range, Range],
    sparse: bool,
) -> BatchForm:  # fmt: skip
    """The smaller of the dense planes and (when the board has it, ``sparse``) the sparse form."""
    dense = BatchForm(cmd.PULS_BATC.header, (), planes)
    if not sparse:
        return dense
    spar = sparse_form(kind, planes, scales, limits)
    return spar if spar.block_bytes < dense.block_bytes else dense
