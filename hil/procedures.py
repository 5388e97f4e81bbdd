"""The characterization procedures a technician runs with ``hil characterize NAME``.

Each entry binds a protocol-layer function (``run(board, recorder, **options)``) to its options
model (the CLI's flags are generated from its fields) and to the plot that ``hil characterize``
saves and ``hil show`` re-draws from the stored data alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from pydantic import BaseModel

from drivers import Board
from protocols.characterization.checks import CHECKS
from protocols.recording import Attr

Datasets = Mapping[str, np.ndarray[Any, Any]]
Attrs = Mapping[str, Mapping[str, Attr]]


@dataclass(frozen=True)
class ProcedureSpec:
    name: str
    summary: str
    run: Callable[..., object]
    """``run(board, recorder, **options)``: measures, writing through the recorder as it goes."""
    options: type[BaseModel]
    """Its options; every field becomes a ``--flag`` with the field's default and description."""
    plot: Callable[[Datasets, Attrs, Figure], None]
    """Draws the run from its stored datasets and attributes onto an empty figure."""

    @property
    def check(self) -> Callable[[Board, Any], object]:
        """``check(board, options)``: every limit the run meets, checked on the open board without
        sending anything (raises :class:`~drivers.InvalidRequest`); run before the run file is made,
        so a refused run leaves an existing file (``--overwrite``) as it was."""
        return CHECKS[self.name]


REGISTRY: dict[str, ProcedureSpec] = {}


def register(spec: ProcedureSpec) -> ProcedureSpec:
    REGISTRY[spec.name] = spec
    return spec
