"""One HDF5 file per run (docs/data-format.md): a versioned layout written as the work proceeds.

:class:`RunFile` is a :class:`~protocols.recording.Recorder`: procedures write into it directly.
Datasets are flushed to disk at least every ``flush_interval`` seconds, so a killed process
leaves a readable file with everything up to the last flush. They are written plain and
compressed when the file is closed (:mod:`hil.run_compaction` says why).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from hil import run_layout as layout
from hil import terminal
from hil.interrupts import raise_if_stopped
from hil.run_compaction import compact, expand, live_options
from hil.run_layout import DATA_GROUP
from hil.run_recovery import raise_end_of_allocation
from protocols.recording import Attr

FLUSH_INTERVAL = 2.0
REMEMBER_BYTES = 1 << 20
"""a dataset rewritten in place up to this size is kept in memory, so an identical rewrite is skipped"""


class RunFileError(ValueError):
    """A run file that cannot be read or written; the message names the file and the problem."""


def software_version() -> str:
    try:
        return version("memristor-hil")
    except PackageNotFoundError:
        return "unknown"


class RunFile:
    """A run's HDF5 file, open for writing; also the procedure's :class:`Recorder`."""

    def __init__(
        self,
        path: str | Path,
        *,
        procedure: str,
        config: Mapping[str, Any],
        resource: str = "",
        board_identity: str = "",
        overwrite: bool = False,
        flush_interval: float = FLUSH_INTERVAL,
        show_progress: bool = True,
    ) -> None:
        self.path = Path(path)
        self.procedure = procedure
        if self.path.exists() and not overwrite:
            raise RunFileError(f"{self.path} exists; choose another name or pass overwrite (nothing was measured)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._file = h5py.File(self.path, "w")
        except OSError as exc:
            raise RunFileError(f"cannot create {self.path}: {exc}") from None
        self._file.attrs.update(layout.new_root(procedure, config, resource, board_identity, software_version()))
        self._data = self._file.create_group(DATA_GROUP)
        self._pending_attrs: dict[str, dict[str, Attr]] = {}
        self.flush_hooks: list[Callable[[], None]] = []
        self.clears = 0
        """how often :meth:`clear` dropped everything measured (a flush hook that skips what it wrote
        already writes again after one)"""
        self._new_caches()
        self._flush_interval = flush_interval
        self._last_flush = time.monotonic()
        self._start_terminal(show_progress)
        self._file.flush()

    @classmethod
    def reopen(cls, path: str | Path, show_progress: bool = True, flush_interval: float = FLUSH_INTERVAL) -> RunFile:
        """Open an existing run file to continue it (``hil train --resume``, ``hil characterize --resume``)."""
        data = read_run(path)  # validates the format and version first
        run = cls.__new__(cls)
        run.path = Path(path)
        run.procedure = data.procedure
        try:
            expand(run.path)  # compressed data rewritten in place would not survive a kill
            run._file = h5py.File(run.path, "r+")
        except OSError as exc:
            raise RunFileError(f"cannot open {run.path} for writing: {exc}") from None
        run._data = run._file.require_group(DATA_GROUP)
        run._pending_attrs = {}
        run.flush_hooks = []
        run.clears = 0
        run._new_caches()
        run._flush_interval = flush_interval
        run._last_flush = time.monotonic()
        run._start_terminal(show_progress)
        run._file.attrs.update(layout.resumed_root(data.root))
        run._file.flush()
        return run

    def _new_caches(self) -> None:
        """What this writer keeps of the file between calls (none of it is a fact the file does not hold)."""
        self._handles: dict[str, h5py.Dataset] = {}
        self._written_attrs: dict[str, dict[str, Attr]] = {}
        self._written: dict[str, _Written] = {}
        self._series: dict[str, _Series] = {}
        self._groups: dict[str, h5py.Group] = {}
        self._nodes: dict[str, h5py.Group | h5py.Dataset] = {}
        self._attributes: dict[tuple[str, str], _OpenAttribute] = {}

    def require_group(self, name: str) -> None:
        """A group that holds only attributes (written at once, not when a dataset appears)."""
        self._data.require_group(name)
        self._apply_pending(name)

    def set_root(self, **attrs: Attr) -> None:
        """Attributes of the run itself (``board_identity`` once the boards answer)."""
        self._file.attrs.update(attrs)

    def replace_config(self, config: Mapping[str, Any]) -> None:
        """Store a changed config (a resumed run given a larger budget)."""
        self._file.attrs[layout.CONFIG] = layout.config_text(config)

    def truncate(self, name: str, rows: int) -> None:
        """Keep only the first ``rows`` rows of an appended dataset (drop steps not journaled)."""
        dataset = self._data.get(name)
        if isinstance(dataset, h5py.Dataset) and dataset.shape[0] > rows:
            dataset.resize(rows, axis=0)
            self._series.pop(name, None)

    def clear(self) -> None:
        """Drop everything measured: a resumed run that starts over."""
        del self._file[DATA_GROUP]
        self.clears += 1
        self._new_caches()
        self._data = self._file.create_group(DATA_GROUP)
        self._pending_attrs.clear()
        self.flush()

    def read(self, name: str, /) -> np.ndarray[Any, Any] | None:
        """A dataset as stored so far (None if there is none): what a resumed run continues from."""
        dataset = self._data.get(name)
        return stored_array(dataset) if isinstance(dataset, h5py.Dataset) else None

    def read_attrs(self, name: str, /) -> dict[str, Attr]:
        """The stored attributes of a dataset or group (``""`` for ``/data``); none if it does not exist."""
        node = self._data if not name else self._data.get(name)
        return {k: _plain(v) for k, v in node.attrs.items() if k != layout.STORED_FROM} if node is not None else {}

    # ------------------------------------------------------------------ Recorder

    def _dataset(self, name: str) -> h5py.Dataset | None:
        """The dataset ``name``, its handle kept: a path lookup in h5py costs more than the write
        of a small checkpoint array (a training run rewrites several every update)."""
        dataset = self._handles.get(name)
        if dataset is None or not dataset.id.valid:
            found = self._data.get(name)
            dataset = found if isinstance(found, h5py.Dataset) else None
            if dataset is not None:
                self._handles[name] = dataset
        return dataset

    def write(self, name: str, data: npt.ArrayLike, /, **attrs: Attr) -> None:
        values = np.asarray(data)
        existing = self._dataset(name)
        kept = self._written.get(name)
        if kept is not None and kept.dataset is existing and kept.values.shape == values.shape:
            # A dataset this writer wrote last: its shape and stored type are known without asking
            # HDF5 (each question costs 10-20 us in a training loop's cold caches). The same bytes
            # as last time are on disk already and not written again.
            if kept.values.dtype == values.dtype and _same_bytes(kept.values, values):
                self._after_write(name, attrs)
                return
            stored = _as_stored(kept.dtype, values)
            if stored is not None:
                existing.id.write(h5py.h5s.ALL, h5py.h5s.ALL, stored, mtype=kept.mtype)
                kept.keep(values)
                self._after_write(name, attrs)
                return
        # DatasetID.shape: h5py's Dataset.shape costs about 60 us a call
        same_shape = existing is not None and existing.id.shape == values.shape
        stored = _as_stored(existing.dtype, values) if existing is not None and same_shape else None
        if existing is not None and stored is not None:
            # In place: rewriting a checkpoint every update must not grow the file. The low-level
            # write skips h5py's selection machinery (7x cheaper for a 128 x 64 map), and the values
            # go in the stored type, converted once here (``_as_stored`` checked nothing is lost).
            existing.id.write(h5py.h5s.ALL, h5py.h5s.ALL, stored)
            self._remember(name, existing, values)
            self._after_write(name, attrs)
            return
        # A new dataset, or one replaced (another shape or type). Whether the name is taken is asked
        # only when creating fails (each path lookup costs 0.1-0.2 ms in a training loop).
        if existing is not None:
            del self._data[name]
        self._forget(name)
        narrowed, widen = smallest_dtype(values)
        try:
            dataset = self._create(name, values.astype(narrowed))
        except ValueError:
            if name not in self._data:
                raise
            del self._data[name]  # a group of that name: replaced by the dataset
            self._forget_groups(name)
            dataset = self._create(name, values.astype(narrowed))
        if widen:
            dataset.attrs[layout.STORED_FROM] = widen
        self._handles[name] = dataset
        self._remember(name, dataset, values)
        self._apply_pending(name)
        self._after_write(name, attrs)

    def _create(self, name: str, values: npt.NDArray[Any]) -> h5py.Dataset:
        parent, _, leaf = name.strip("/").rpartition("/")
        return self._group(parent).create_dataset(leaf, data=values, **live_options(values.shape, values.dtype))

    def _group(self, path: str) -> h5py.Group:
        """The group ``path`` under the data group, made if missing; its handle kept, so that the
        datasets of a checkpoint slot do not each ask the file for their parent (0.1-0.2 ms a question)."""
        if not path:
            return self._data
        group = self._groups.get(path)
        if group is None or not group.id.valid:
            group = self._groups[path] = self._data.require_group(path)
        return group

    def _after_write(self, name: str, attrs: Mapping[str, Attr]) -> None:
        if attrs:
            self.set_attrs(name, **attrs)
        self._flush_if_due()

    def _remember(self, name: str, dataset: h5py.Dataset, values: npt.NDArray[Any]) -> None:
        """Keep a copy of what a dataset now holds (small ones: checkpoints, counts), with its stored type."""
        if values.nbytes <= REMEMBER_BYTES and not values.dtype.hasobject:
            dtype = dataset.dtype
            self._written[name] = _Written(dataset, np.array(values, order="C"), dtype, _memory_type(dtype))
        else:
            self._written.pop(name, None)

    def _forget_groups(self, name: str) -> None:
        """A group deleted: its handle and those below it go (an unlinked group stays open, and
        what is written into it would be lost)."""
        below = f"{name.strip('/')}/"
        for kept in (self._groups, self._nodes):
            for path in [p for p in kept if f"{p.strip('/')}/".startswith(below)]:
                del kept[path]

    def _forget(self, name: str) -> None:
        """A dataset deleted or replaced: its kept handle and what it held go."""
        self._handles.pop(name, None)
        self._nodes.pop(name, None)
        self._forget_attributes(name)
        self._written.pop(name, None)
        self._series.pop(name, None)
        self._written_attrs.pop(name, None)

    def append(self, name: str, row: npt.ArrayLike, /) -> None:
        values = np.asarray(row)
        series = self._series.get(name)
        if series is None or not series.dataset.id.valid:
            series = self._open_series(name, values)
        if series.row_shape != values.shape:
            raise RunFileError(f"cannot append a row of shape {values.shape} to {name} of rows {series.row_shape}")
        narrow = _as_stored(series.dtype, values)
        if narrow is None:
            self._widen(name, series.dataset, values.dtype)
            series = self._open_series(name, values)
            narrow = np.ascontiguousarray(values)
        # One more row, written through HDF5's low-level calls (h5py's resize and slice assignment
        # build the same selections with several times the Python around them); the row count,
        # type and the row's memory space are kept from the last append.
        rows, dataset = series.rows, series.dataset.id
        dataset.set_extent((rows + 1, *values.shape))
        series.rows = rows + 1
        target = dataset.get_space()
        target.select_hyperslab((rows, *(0,) * values.ndim), (1, *values.shape))
        dataset.write(series.row_space, target, narrow, mtype=series.mtype)
        self._flush_if_due()

    def _open_series(self, name: str, values: npt.NDArray[Any]) -> _Series:
        """The series ``name`` (created, for rows like ``values``, if there is none), its extent and
        type read once."""
        dataset = self._dataset(name)
        if dataset is None:
            stored, widen = smallest_dtype(values)
            options = live_options(values.shape, stored, rows=True)
            dataset = self._data.create_dataset(
                name, shape=(0, *values.shape), maxshape=(None, *values.shape), dtype=stored, **options
            )
            if widen:
                dataset.attrs[layout.STORED_FROM] = widen
            self._handles[name] = dataset
            self._apply_pending(name)
        shape = dataset.id.shape  # the low-level call: h5py's Dataset.shape costs several times more
        dtype, row_space = dataset.dtype, h5py.h5s.create_simple((1, *shape[1:]))
        series = _Series(dataset, shape[0], shape[1:], dtype, _memory_type(dtype), row_space)
        self._series[name] = series
        return series

    def _widen(self, name: str, dataset: h5py.Dataset, dtype: np.dtype[Any]) -> h5py.Dataset:
        """A series stored narrow whose new row needs its full type: copied once into that type."""
        rows, attrs = dataset[()], dict(dataset.attrs)
        attrs.pop(layout.STORED_FROM, None)
        del self._data[name]
        widened = self._data.create_dataset(name, data=rows.astype(dtype), maxshape=(None, *rows.shape[1:]),
                                            **live_options(rows.shape[1:], dtype, rows=True))  # fmt: skip
        widened.attrs.update(attrs)
        self._forget(name)
        self._handles[name] = widened
        return widened

    def set_attrs(self, name: str, /, **attrs: Attr) -> None:
        # Scalars already on disk with the same value are not written again: every flush rewrites
        # a link's dozen counters, most unchanged, and each h5py attribute write costs ~0.3 ms.
        written = self._written_attrs.get(name)
        if written is not None:
            attrs = {key: value for key, value in attrs.items() if not _same_scalar(written.get(key), value)}
            if not attrs:
                return
        node = self._node(name)
        if node is None:  # a dataset or group still to come: applied once it exists (or as a group at close)
            self._pending_attrs.setdefault(name, {}).update(attrs)
            return
        for key, value in attrs.items():
            # A number whose attribute exists with its type and shape is written in place; h5py's
            # assignment deletes and creates the attribute (several times the cost).
            if not self._write_attr_in_place(name, node, key, value):
                self._attributes.pop((name, key), None)  # deleted and created anew: its open id goes
                node.attrs[key] = value
        cache = self._written_attrs.setdefault(name, {})
        for key, value in attrs.items():
            if isinstance(value, _SCALARS):
                cache[key] = value
            else:
                cache.pop(key, None)

    def _node(self, name: str) -> h5py.Group | h5py.Dataset | None:
        """The group or dataset ``name`` (``""``: the data group), its handle kept; None if it does not exist."""
        if not name:
            return self._data
        node = self._nodes.get(name)
        if node is None or not node.id.valid:
            found = self._data.get(name)
            node = found if isinstance(found, h5py.Group | h5py.Dataset) else None
            if node is not None:
                self._nodes[name] = node
        return node

    def _apply_pending(self, created: str) -> None:
        """Attributes set before their dataset or group existed, once ``created`` (and the groups
        above it) does: told by the name, without asking the file about every pending one."""
        path = f"{created.strip('/')}/"
        for name in [n for n in self._pending_attrs if path.startswith(f"{n.strip('/')}/")]:
            self._forget_attributes(name)
            self._data[name].attrs.update(self._pending_attrs.pop(name))

    def _write_attr_in_place(self, name: str, node: h5py.Group | h5py.Dataset, key: str, value: Attr) -> bool:
        """Overwrite the existing scalar attribute ``key`` of ``node`` with ``value`` (an int, float or
        str; not a bool: h5py stores those as an enum) when it has the type ``value`` would be given
        anew; whether it did. The attribute stays open for the next write (an update rewrites the
        same few counters every time)."""
        new: npt.NDArray[Any]
        if type(value) is str:
            new = np.array(value, dtype=_UTF8)
        elif type(value) in (int, float) or isinstance(value, np.integer | np.floating):
            new = np.asarray(value)
        else:
            return False
        opened = self._attributes.get((name, key))
        if opened is None:
            opened = _open_attribute(node, key)
            if opened is None:
                return False
            self._attributes[(name, key)] = opened
        if (type(value) is str) != opened.text or (not opened.text and opened.dtype != new.dtype):
            return False
        opened.id.write(new)
        return True

    def _forget_attributes(self, name: str) -> None:
        for held in [k for k in self._attributes if k[0] == name]:
            del self._attributes[held]

    def _start_terminal(self, show_progress: bool) -> None:
        """No bar yet (the first phase or step draws one, below what was printed before); the
        run's log file beside it."""
        self._show_progress = show_progress
        self._bar: tqdm[Any] | None = None
        self._status: dict[str, Attr] = {}
        self._log: logging.Handler | None = terminal.open_run_log(self.path)

    def phase(self, name: str, total: int | None = None) -> None:
        """Begin a phase of the run: the last phase's bar stays on its own line, a new one starts."""
        raise_if_stopped()
        logging.getLogger(__name__).info("%s: %s", self.path.name, name)
        if not self._show_progress:
            return
        if self._bar is not None:
            self._bar.close()
        self._status = {}
        self._bar = terminal.progress_bar(name, total)

    def progress(self, advance: int = 0, total: int | None = None, **status: Attr) -> None:
        raise_if_stopped()  # a step boundary: where a stop whose first raise was lost is raised again
        if not self._show_progress:
            return
        if self._bar is None:
            self.phase(self.procedure, total)
        assert self._bar is not None
        if total is not None and total != self._bar.total:
            self._bar.total = total
            self._bar.refresh()
        if status:  # fields stay until replaced: the last test accuracy shows while training goes on
            self._status.update(status)
            self._bar.set_postfix(self._status, refresh=False)
        self._bar.update(advance)

    # ------------------------------------------------------------------ lifecycle

    def _flush_if_due(self) -> None:
        if time.monotonic() - self._last_flush >= self._flush_interval:
            self.flush()

    def flush(self) -> None:
        for hook in self.flush_hooks:  # e.g. the pulse counts so far: on disk with every step
            hook()
        self._file.flush()
        self._last_flush = time.monotonic()

    def close(self, status: str = "completed") -> None:
        """Record how the run ended and close the file."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._log is not None:
            terminal.close_run_log(self._log)
            self._log = None
        if self._file:
            for name, attrs in self._pending_attrs.items():
                self._data.require_group(name).attrs.update(attrs)
            self._pending_attrs.clear()
            for hook in self.flush_hooks:
                with contextlib.suppress(Exception):  # a failing hook must not lose how the run ended
                    hook()
            self._file.attrs.update(layout.closed_root(status))
            self._attributes.clear()
            self._file.close()
            compact(self.path)

    def __enter__(self) -> RunFile:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close(layout.COMPLETED)
        elif issubclass(exc_type, KeyboardInterrupt):  # Ctrl-C, and SIGTERM/SIGHUP (hil.cli)
            self.close(layout.INTERRUPTED)
        else:
            self.close(f"failed: {exc_type.__name__}: {exc}")


# ---------------------------------------------------------------------- reading


@dataclass
class RunData:
    """Everything a run file holds, read into memory."""

    path: Path
    root: dict[str, Any]
    datasets: Mapping[str, np.ndarray[Any, Any]] = field(default_factory=dict)
    """every dataset by name: in memory, or read when asked for (:func:`read_run` with ``lazy``)"""
    attrs: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def procedure(self) -> str:
        return str(self.root.get(layout.PROCEDURE, ""))

    @property
    def config(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.root.get(layout.CONFIG, "{}"))
        return loaded

    def options(self, group: str) -> dict[str, Any]:
        """The options a procedure recorded in its data group (``{}`` where it recorded none)."""
        loaded: dict[str, Any] = json.loads(str(self.attrs.get(group, {}).get("options", "{}")))
        return loaded


_SCALARS = (bool, int, float, str, np.bool_, np.integer, np.floating)


def _same_scalar(stored: Attr | None, value: Attr) -> bool:
    """``value`` is a scalar equal to, and of the same type as, ``stored``."""
    return isinstance(value, _SCALARS) and type(stored) is type(value) and bool(stored == value)


def smallest_dtype(values: npt.NDArray[Any]) -> tuple[np.dtype[Any], str]:
    """The smallest type that holds ``values`` exactly (float64 -> float32 where no digit is lost, as
    for everything read from a board; int64 -> int32), and the type a reader widens them back to."""
    if values.dtype == np.float64 and values.size and holds(np.dtype(np.float32), values):
        return np.dtype(np.float32), "float64"
    if values.dtype == np.int64 and values.size and holds(np.dtype(np.int32), values):
        return np.dtype(np.int32), "int64"
    return values.dtype, ""


def holds(dtype: np.dtype[Any], values: npt.NDArray[Any]) -> bool:
    """Whether a dataset of ``dtype`` stores ``values`` without losing anything."""
    if dtype == values.dtype or not values.size:
        return True
    if values.dtype.kind == "f" and dtype.kind == "f":
        with np.errstate(over="ignore"):
            narrow = values.astype(dtype)
        return bool(np.array_equal(narrow, values, equal_nan=True))
    if values.dtype.kind in "iub" and dtype.kind in "iu":
        info = np.iinfo(dtype)
        return bool(values.min() >= info.min and values.max() <= info.max)
    return False


def _as_stored(dtype: np.dtype[Any], values: npt.NDArray[Any]) -> npt.NDArray[Any] | None:
    """``values`` in a dataset's ``dtype``, C-ordered (0-d stays 0-d), ready for a low-level write;
    None when that type would lose something (``holds``)."""
    if dtype == values.dtype or not values.size:
        return np.asarray(values, dtype=dtype, order="C")
    if values.dtype.kind == "f" and dtype.kind == "f":
        with np.errstate(over="ignore"):
            narrow = np.asarray(values, dtype=dtype, order="C")
        return narrow if np.array_equal(narrow, values, equal_nan=True) else None
    if values.dtype.kind in "iub" and dtype.kind in "iu":
        info = np.iinfo(dtype)
        fits = values.min() >= info.min and values.max() <= info.max
        return np.asarray(values, dtype=dtype, order="C") if fits else None
    return None


def _same_bytes(kept: npt.NDArray[Any], values: npt.NDArray[Any]) -> bool:
    """Whether ``values`` (of ``kept``'s type and shape) are byte for byte ``kept`` (C-ordered): what
    a rewrite would put on disk is there already. Compared as 8-byte words where they divide evenly
    (several times cheaper than a float comparison that treats NaNs as equal)."""
    if not values.size:
        return True
    flat = np.ascontiguousarray(values).reshape(-1)
    unit = np.int64 if kept.nbytes % 8 == 0 else np.uint8
    return bool(np.array_equal(kept.reshape(-1).view(unit), flat.view(unit)))


_MEMORY_TYPES: dict[np.dtype[Any], h5py.h5t.TypeID] = {}


def _memory_type(dtype: np.dtype[Any]) -> h5py.h5t.TypeID | None:
    """HDF5's type for numbers of ``dtype`` in memory, made once (h5py makes it anew at every write
    it is not given, about 8 us); None (h5py's own choice) for other types."""
    if dtype.kind not in "iuf":
        return None
    found = _MEMORY_TYPES.get(dtype)
    if found is None:
        found = _MEMORY_TYPES[dtype] = h5py.h5t.py_create(dtype)
    return found


@dataclass
class _Written:
    """A dataset as this writer last wrote it: a copy of the values given, and the stored type."""

    dataset: h5py.Dataset
    values: npt.NDArray[Any]
    dtype: np.dtype[Any]
    mtype: h5py.h5t.TypeID | None

    def keep(self, values: npt.NDArray[Any]) -> None:
        """``values`` written: copied into the kept buffer (no new array an update)."""
        if values.dtype == self.values.dtype:
            np.copyto(self.values, values)
        else:
            self.values = np.array(values, order="C")


@dataclass
class _Series:
    """A series this writer appends to: its rows so far, row shape, stored type, one row's memory space."""

    dataset: h5py.Dataset
    rows: int
    row_shape: tuple[int, ...]
    dtype: np.dtype[Any]
    mtype: h5py.h5t.TypeID | None
    row_space: h5py.h5s.SpaceID


_UTF8 = h5py.string_dtype("utf-8")


@dataclass(frozen=True)
class _OpenAttribute:
    """A scalar attribute held open to be overwritten: a UTF-8 string (``text``) or a number of ``dtype``."""

    id: h5py.h5a.AttrID
    text: bool
    dtype: np.dtype[Any]


def _open_attribute(node: h5py.Group | h5py.Dataset, key: str) -> _OpenAttribute | None:
    """The existing scalar attribute ``key`` of ``node``, if it is a number or a variable-length UTF-8
    string (what h5py makes of a Python str); None otherwise."""
    name = key.encode()
    if not h5py.h5a.exists(node.id, name):
        return None
    attribute = h5py.h5a.open(node.id, name)
    if attribute.shape != ():
        return None
    dtype = attribute.dtype
    info = h5py.check_string_dtype(dtype)
    if info is not None:
        text = info.length is None and info.encoding == "utf-8"
        return _OpenAttribute(attribute, True, dtype) if text else None
    return _OpenAttribute(attribute, False, dtype) if dtype.kind in "iuf" else None


def stored_array(dataset: h5py.Dataset) -> np.ndarray[Any, Any]:
    """A dataset in memory, in the type it was written with (a narrowed one widened back)."""
    values: np.ndarray[Any, Any] = dataset[()]
    widen = dataset.attrs.get(layout.STORED_FROM)
    return values.astype(_plain(widen)) if widen else values


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def run_state(run: RunData) -> str:
    """``completed``, ``failed: ...``, ``interrupted``, ``running`` (its process is alive) or
    ``killed`` (marked running, but the process that wrote it is gone)."""
    status = layout.status(run)
    if status != layout.RUNNING:
        return status
    host, pid = run.root.get(layout.HOST), run.root.get(layout.PID)
    if host != platform.node() or not isinstance(pid, int):
        return "running (on another host, or killed)"
    return "running" if _process_alive(pid) else "killed"


def read_resumable(path: str | Path, procedure: str | None = None) -> RunData:
    """A run file to continue: of ``procedure`` (any when None) and not being written by a live process."""
    previous = read_run(path)
    if procedure is not None and previous.procedure != procedure:
        raise RunFileError(f"{path} is a {previous.procedure!r} run, not a {procedure!r} run")
    check_not_live(path, previous)
    return previous


def check_not_live(path: str | Path, run: RunData) -> None:
    """Two writers of one run file would interleave their steps: a live run is left to its process."""
    if run_state(run) == layout.RUNNING:
        raise RunFileError(f"{path} is being written by a live process (PID {run.root.get(layout.PID)}); stop it first")


def check_same_board(previous: RunData, now: str, allow_other_board: bool) -> None:
    """A resumed run continues on the chip(s) it began on: its data (a network's weights, a device's
    history) lives in those devices. ``now`` is the identity that answers today."""
    began_on = str(previous.root.get(layout.BOARD_IDENTITY, ""))
    if began_on and now != began_on and not allow_other_board:
        raise RunFileError(f"the run began on {began_on}, but now {now} answers; resume there, or pass "
                           "--force-other-board to go on with this one")  # fmt: skip


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name == "nt":  # no signal 0 there; ask the process table
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # type: ignore[attr-defined]
        if handle:
            ctypes.windll.kernel32.CloseHandle(handle)  # type: ignore[attr-defined]
        return bool(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    # A zombie (killed, not yet reaped by its parent) still answers signal 0.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    return True


class LazyDatasets(Mapping[str, np.ndarray[Any, Any]]):
    """A run file's datasets, each read from the file only when asked for (``hil show`` on a file of
    hundreds of MB holds one dataset at a time); opened without the writer's lock each time."""

    def __init__(self, path: Path, shapes: Mapping[str, tuple[tuple[int, ...], np.dtype[Any]]]) -> None:
        self.path = path
        self.shapes = dict(shapes)
        """shape and dtype (as written) of each dataset, known without reading it"""

    def __getitem__(self, name: str) -> np.ndarray[Any, Any]:
        if name not in self.shapes:
            raise KeyError(name)
        with h5py.File(self.path, "r", locking=False) as f:
            return stored_array(f[DATA_GROUP][name])

    def __iter__(self) -> Iterator[str]:
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)

    def extremes(self, name: str) -> tuple[float, float] | None:
        """Smallest and largest finite value, read chunk by chunk (None: none, or not numbers)."""
        low, high = np.inf, -np.inf
        with h5py.File(self.path, "r", locking=False) as f:
            dataset = f[DATA_GROUP][name]
            if dataset.dtype.kind not in "fiu" or not dataset.size:
                return None
            for part in dataset.iter_chunks() if dataset.chunks else [()]:
                values = np.asarray(dataset[part], dtype=np.float64)
                values = values[np.isfinite(values)]
                if values.size:
                    low, high = min(low, float(values.min())), max(high, float(values.max()))
        return (low, high) if low <= high else None


def check_run_path(path: Path) -> None:
    """A :class:`RunFileError` unless ``path`` is a file: a folder is named as one (a run directory
    given where one of its files was meant), not as missing."""
    if path.is_dir():
        raise RunFileError(f"{path} is a directory, not a run file (one of its .h5 files?)")
    if not path.is_file():
        raise RunFileError(f"{path}: no such file")


def read_run(path: str | Path, lazy: bool = False) -> RunData:
    """Read a run file; a missing, unreadable or foreign file is a :class:`RunFileError`. With
    ``lazy``, datasets are read only when asked for (:class:`LazyDatasets`)."""
    path = Path(path)
    check_run_path(path)
    try:
        run = _read_run(path, locking=True, lazy=lazy)
    except RunFileError as exc:
        # No live writer holds the file (that fails on its lock): a flush a kill cut short? (hil.run_recovery)
        if "lock" not in str(exc) and raise_end_of_allocation(path):
            return _read_run(path, locking=True, lazy=lazy)
        # A live run holds its file's write lock; its last flushed state is still readable.
        with contextlib.suppress(RunFileError, TypeError):
            return _read_run(path, locking=False, lazy=lazy)
        raise
    # Read with the lock, so no writer holds it: a cut flush can also leave data a lazy read has not
    # touched yet behind the end of allocation (a header's 56 bytes to look).
    raise_end_of_allocation(path)
    return run


def _read_run(path: Path, locking: bool, lazy: bool = False) -> RunData:
    try:
        with h5py.File(path, "r", locking=locking) as f:
            root = {k: _plain(v) for k, v in f.attrs.items()}
            problem = layout.format_problem(root)
            if problem is not None:
                raise RunFileError(f"{path} {problem}")
            run = RunData(path, root)
            group = f.get(DATA_GROUP)
            shapes: dict[str, tuple[tuple[int, ...], np.dtype[Any]]] = {}
            if isinstance(group, h5py.Group):
                group.visititems(lambda name, obj: _collect(run, name, obj, shapes if lazy else None))
                run.attrs[""] = {k: _plain(v) for k, v in group.attrs.items()}
            if lazy:
                run.datasets = LazyDatasets(path, shapes)
            return run
    except (OSError, KeyError, RuntimeError) as exc:  # h5py's KeyError and RuntimeError: an object it could not read
        raise RunFileError(f"{path} is not a readable HDF5 file: {exc}") from None


def _collect(
    run: RunData, name: str, obj: h5py.Dataset | h5py.Group,
    shapes: dict[str, tuple[tuple[int, ...], np.dtype[Any]]] | None,
) -> None:  # fmt: skip
    attrs = {k: _plain(v) for k, v in obj.attrs.items() if k != layout.STORED_FROM}
    if attrs:
        run.attrs[name] = attrs
    if not isinstance(obj, h5py.Dataset):
        return
    if shapes is not None:
        widen = obj.attrs.get(layout.STORED_FROM)
        shapes[name] = (obj.shape, np.dtype(_plain(widen)) if widen else obj.dtype)
    else:
        assert isinstance(run.datasets, dict)
        run.datasets[name] = stored_array(obj)
