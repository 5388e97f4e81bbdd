"""Where a procedure puts its data as it goes, and how it reports progress.

Procedures take a :class:`Recorder` and write every measurement the moment they have it, so an
interrupted run keeps everything up to its last step. ``hil`` supplies a recorder that writes an
HDF5 file and draws a progress bar; :class:`MemoryRecorder` keeps everything in memory (for
scripts and tests).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

Attr = str | int | float | bool


class Recorder(Protocol):
    """The sink of a procedure's data. Dataset names are paths such as ``"sweep/current"``."""

    def write(self, name: str, data: npt.ArrayLike, /, **attrs: Attr) -> None:
        """Store a whole dataset (replacing one of the same name), e.g. a final map."""

    def append(self, name: str, row: npt.ArrayLike, /) -> None:
        """Grow a dataset by one row along its first axis, e.g. one read of a time series."""

    def set_attrs(self, name: str, /, **attrs: Attr) -> None:
        """Attach metadata to a dataset or group (``""`` for the run itself)."""

    def progress(self, advance: int = 0, total: int | None = None, **status: Attr) -> None:
        """Report ``advance`` more steps done (of ``total``, when known) and a short status."""


class MemoryRecorder:
    """A :class:`Recorder` that keeps everything in memory."""

    def __init__(self) -> None:
        self.datasets: dict[str, np.ndarray[Any, Any]] = {}
        self.attrs: dict[str, dict[str, Attr]] = {}
        self.steps_done = 0
        self.total: int | None = None
        self.status: dict[str, Attr] = {}

    def write(self, name: str, data: npt.ArrayLike, /, **attrs: Attr) -> None:
        self.datasets[name] = np.array(data)
        if attrs:
            self.set_attrs(name, **attrs)

    def append(self, name: str, row: npt.ArrayLike, /) -> None:
        new = np.asarray(row)[None, ...]
        old = self.datasets.get(name)
        self.datasets[name] = new if old is None else np.concatenate([old, new])

    def set_attrs(self, name: str, /, **attrs: Attr) -> None:
        self.attrs.setdefault(name, {}).update(attrs)

    def progress(self, advance: int = 0, total: int | None = None, **status: Attr) -> None:
        self.steps_done += advance
        if total is not None:
            self.total = total
        self.status.update(status)
