"""Where a procedure puts its data as it goes, and how it reports progress.

Procedures take a :class:`Recorder` and write every measurement the moment they have it, so an
interrupted run keeps everything up to its last step. ``hil`` supplies a recorder that writes an
HDF5 file and draws a progress bar; :class:`MemoryRecorder` keeps everything in memory (for
scripts and tests).

A long procedure also keeps a :class:`Journal` of its completed steps, so that a killed run
continues from its last completed step when ``hil characterize --resume`` gives it the same
(reopened) file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Attr = str | int | float | bool
JOURNAL = "journal"


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


@runtime_checkable
class StoredRecorder(Recorder, Protocol):
    """A recorder that reads back what it stored (``hil``'s run file): a killed run resumes from it."""

    def read(self, name: str, /) -> npt.NDArray[Any] | None:
        """The dataset ``name`` as stored, or None if there is none."""

    def read_attrs(self, name: str, /) -> dict[str, Attr]:
        """The attributes of a dataset or group (none if it does not exist)."""

    def truncate(self, name: str, rows: int) -> None:
        """Keep only the first ``rows`` rows of an appended dataset."""

    def flush(self) -> None:
        """Put everything recorded so far on disk."""


class DiscardingRecorder:
    """A :class:`Recorder` that stores nothing: the base of recorders that only follow progress
    (override :meth:`progress`)."""

    def write(self, name: str, data: npt.ArrayLike, /, **attrs: Attr) -> None:
        pass

    def append(self, name: str, row: npt.ArrayLike, /) -> None:
        pass

    def set_attrs(self, name: str, /, **attrs: Attr) -> None:
        pass

    def progress(self, advance: int = 0, total: int | None = None, **status: Attr) -> None:
        pass


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


def flush(recorder: Recorder) -> None:
    """Put everything ``recorder`` holds on disk, if it keeps a file: a step's data before its journal entry."""
    if isinstance(recorder, StoredRecorder):
        recorder.flush()


class Series:
    """A dataset grown one row at a time; its attributes are attached once it exists.

    (Attaching them before the first row could make a file-backed recorder create a group of
    that name, and the first append would then fail.)
    """

    def __init__(self, recorder: Recorder, name: str, **attrs: Attr) -> None:
        self._recorder = recorder
        self.name = name
        self._pending: dict[str, Attr] | None = attrs
        self.rows = 0
        self.earlier: list[Any] = []
        """rows recorded by the completed steps of an earlier, killed attempt (see :class:`Journal`)"""

    def append(self, row: npt.ArrayLike) -> None:
        self._recorder.append(self.name, row)
        self.rows += 1
        if self._pending:
            self._recorder.set_attrs(self.name, **self._pending)
        self._pending = None

    def _continue(self, earlier: npt.NDArray[Any]) -> None:
        self.earlier = list(earlier)
        self.rows = len(self.earlier)
        if self.rows:
            self._pending = None  # the dataset exists, with its attributes


def journaled_steps(datasets: Mapping[str, npt.ArrayLike]) -> int:
    """The most steps any journal among a run's datasets records (0 when none has a journal)."""
    return max((completed_steps(rows) for name, rows in datasets.items() if name.rsplit("/", 1)[-1] == JOURNAL),
               default=0)  # fmt: skip


def completed_steps(journal: npt.ArrayLike | None) -> int:
    """How many steps a journal records: its rows numbered 1, 2, ... up to the first gap."""
    rows = np.asarray(journal if journal is not None else np.zeros((0, 1)))
    if rows.ndim != 2 or not len(rows):
        return 0
    wrong = np.flatnonzero(rows[:, 0] != np.arange(1, len(rows) + 1))
    return int(wrong[0]) if wrong.size else len(rows)


class Journal:
    """The completed steps of a procedure's loop, in ``<group>/journal``, so a killed run resumes.

    One row per completed step: its number (1, 2, ...), then the rows each of the group's series
    (made with :meth:`series`, in order) held once it was done; the ``columns`` attribute names
    them. A step is journaled after its rows, and with a :class:`StoredRecorder` both are flushed
    to disk in that order: a kill at any moment leaves a journal that is a prefix of the steps.

    Given the reopened file of a killed run, the journal reads back how many steps were done
    (:attr:`done`), cuts every series back to the rows of those steps (a step in flight is
    dropped; the procedure does it again) and hands the procedure their rows
    (:attr:`Series.earlier`) to rebuild its state from. On a fresh run there is nothing to read.
    """

    def __init__(self, recorder: Recorder, group: str) -> None:
        self._recorder = recorder
        self._stored = recorder if isinstance(recorder, StoredRecorder) else None
        self.group = group
        self.name = f"{group}/{JOURNAL}"
        journal = self._stored.read(self.name) if self._stored is not None else None
        self.done = completed_steps(journal)
        """steps completed (by an earlier attempt, then counting on as steps complete)"""
        self._last: list[int] = [int(n) for n in journal[self.done - 1]] if journal is not None and self.done else []
        self.attrs: dict[str, Attr] = {}
        """the group's attributes as an earlier attempt left them (none on a fresh run)"""
        if self._stored is not None:
            self._stored.truncate(self.name, self.done)  # a torn row of the step in flight goes
            if self.done:
                self.attrs = self._stored.read_attrs(group)
        self._series: list[Series] = []
        self._described = self.done > 0

    def series(self, name: str, **attrs: Attr) -> Series:
        """The group's series ``name`` (with ``attrs`` once it exists), holding the rows of the steps done."""
        series = Series(self._recorder, f"{self.group}/{name}", **attrs)
        column = 1 + len(self._series)
        self._series.append(series)
        if self._stored is not None:
            rows = self._last[column] if column < len(self._last) else 0
            self._stored.truncate(series.name, rows)  # rows of the step in flight go
            stored = self._stored.read(series.name) if rows else None
            if rows and (stored is None or len(stored) < rows):
                raise ValueError(f"{series.name}: the journal counts {rows} rows, the file holds "
                                 f"{0 if stored is None else len(stored)}; the file is damaged")  # fmt: skip
            series._continue(stored if stored is not None else np.zeros((0,)))
        return series

    def step_done(self) -> None:
        """Journal one more completed step, once its rows are recorded."""
        flush(self._recorder)  # the step's rows reach the disk before the journal says they did
        self.done += 1
        self._recorder.append(self.name, np.array([self.done, *(s.rows for s in self._series)], dtype=np.int64))
        if not self._described:
            columns = ",".join(["step", *(s.name.rsplit("/", 1)[-1] for s in self._series)])
            self._recorder.set_attrs(self.name, columns=columns)
            self._described = True
        flush(self._recorder)
