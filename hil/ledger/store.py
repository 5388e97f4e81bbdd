"""A chip's ledger: one HDF5 file per chip that every run on it appends to.

It holds the chip's life across run files (docs/ledger.md): cumulative pulses per device by kind,
the latest conductance map and defect classes, every gate calibration with its date, the yield
measured over time, the list of runs that touched the chip, and the sessions still open on it.

Writers hold a file lock, so runs in several processes (a sweep's workers) update one chip's
ledger in turn. An update never changes the file in place: the whole ledger is written anew
beside it, synced, and moved over the old one (``os.replace``), so a writer killed at any moment
leaves the previous ledger or the next one, never a torn one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import filelock
import h5py
import numpy as np
import numpy.typing as npt

LEDGER_ENV = "MEMRISTOR_HIL_LEDGER"
"""Directory of the chips' ledgers; ``off`` records nothing. Default: ``~/.memristor-hil/chips``."""
LEDGER_FORMAT = "memristor-hil chip ledger"
LEDGER_VERSION = "1.1"
"""1.1: open sessions, unattributed pulses, the board counter, every calibration (1.0 files are read)."""
LOCK_TIMEOUT = 30.0
CALIBRATION_HISTORY_KEYS = ("k", "c", "v_gate_window")
"""What the ledger keeps of every calibration (the latest is kept whole): enough for each device's window."""

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


class LedgerError(ValueError):
    """A ledger that cannot be read or written (another chip's shape, a foreign file)."""


def ledger_dir() -> Path | None:
    """Where the chips' ledgers live (None: the ledger is switched off)."""
    configured = os.environ.get(LEDGER_ENV, "")
    if configured.lower() == "off":
        return None
    return Path(configured) if configured else Path.home() / ".memristor-hil" / "chips"


def chip_key(serial: str) -> str:
    """A file name for a chip's serial number (anything but letters, digits, ``-_.`` becomes ``_``)."""
    key = re.sub(r"[^A-Za-z0-9_.-]", "_", serial.strip()) or "unknown"
    return key.lstrip(".") or "unknown"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _age(stamp: str) -> float:
    """Seconds since an ISO 8601 UTC time."""
    return (datetime.now(UTC) - datetime.fromisoformat(stamp)).total_seconds()


@dataclass
class Dated:
    """A map or set of maps with when and by which run it was measured."""

    arrays: dict[str, npt.NDArray[Any]]
    measured_utc: str
    run: str
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def age(self) -> float:
        """Seconds since it was measured."""
        return _age(self.measured_utc)


@dataclass
class OpenSession:
    """A run's session on the chip that has begun and not yet been settled into the ledger."""

    run: str
    board: str
    procedure: str
    session: int
    """the session's number in its run file (the link record's ``sessions``)"""
    counter_at_start: int
    """the board's ``SYST:PCNT?`` as the session began (-1: unknown)"""
    opened_utc: str
    credited: dict[str, IntArray] = field(default_factory=dict)
    """pulses per device by kind already added to the chip's totals (a live session's flushed counts)"""

    @property
    def key(self) -> str:
        return f"{self.run}#{self.board}#{self.session}"

    def meta(self) -> dict[str, Any]:
        return {"run": self.run, "board": self.board, "procedure": self.procedure, "session": self.session,
                "counter_at_start": self.counter_at_start, "opened_utc": self.opened_utc}  # fmt: skip


@dataclass
class ChipHistory:
    """Everything a chip's ledger holds, read into memory."""

    serial: str
    identity: str
    shape: tuple[int, int]
    pulses: dict[str, IntArray]
    """cumulative pulses per device, by kind (``set``, ``reset``, ``form``, ``sweep``)"""
    runs: list[dict[str, Any]]
    conductance: Dated | None = None
    defects: Dated | None = None
    calibration: Dated | None = None
    calibrations: list[Dated] = field(default_factory=list)
    """every gate calibration, oldest first: ``k``, ``c`` and ``v_gate_window`` of each"""
    yield_history: FloatArray = field(default_factory=lambda: np.zeros((0, 2)))
    """rows of (POSIX time, s; fraction of working devices)"""
    unattributed_pulses: int = 0
    """pulses the board counted (``SYST:PCNT?``) that no run file put on a device: those of a session
    killed after its last flush, or applied outside any run"""
    open_sessions: dict[str, OpenSession] = field(default_factory=dict)
    counter_identity: str = ""
    counter_expected: int = -1
    """the board's ``SYST:PCNT?`` once the last settled session ended (-1: unknown)"""
    created_utc: str = ""

    @property
    def total_pulses(self) -> IntArray:
        total = np.zeros(self.shape, dtype=np.int64)
        for counts in self.pulses.values():
            total += counts
        return total

    @property
    def pulses_counted(self) -> int:
        """Every pulse the chip has taken as far as the ledger knows: per device, and unattributed."""
        return int(self.total_pulses.sum()) + self.unattributed_pulses

    def add_pulses(self, counts: Mapping[str, npt.NDArray[Any]]) -> int:
        """Add per-device pulse counts by kind; returns how many were added."""
        added = 0
        for kind, values in counts.items():
            values = np.asarray(values, np.int64)
            if values.shape != self.shape:
                raise LedgerError(f"pulse counts of shape {values.shape} for a {self.shape[0]} x {self.shape[1]} chip")
            self.pulses[kind] = self.pulses.get(kind, np.zeros(self.shape, np.int64)) + values
            added += int(values.sum())
        return added

    def window_history(self, cell: tuple[int, int]) -> list[tuple[str, float, float]]:
        """A device's linear window, (measured, G at the window's low gate, G at its high gate) in S,
        by calibration: how it moved over the chip's life."""
        row, col = cell
        found = []
        for dated in self.calibrations:
            k, c = float(dated.arrays["k"][row, col]), float(dated.arrays["c"][row, col])
            low, high = (float(v) for v in dated.arrays["v_gate_window"])
            found.append((dated.measured_utc, k * low + c, k * high + c))
        return found


@dataclass
class Session:
    """What one run's session on a chip adds to its ledger."""

    run: str
    procedure: str
    board: str
    pulses: Mapping[str, IntArray]
    conductance: Mapping[str, npt.NDArray[Any]] | None = None
    conductance_attrs: Mapping[str, Any] = field(default_factory=dict)
    defects: Mapping[str, npt.NDArray[Any]] | None = None
    defects_attrs: Mapping[str, Any] = field(default_factory=dict)
    calibration: Mapping[str, npt.NDArray[Any]] | None = None
    calibration_attrs: Mapping[str, Any] = field(default_factory=dict)
    working_fraction: float | None = None
    status: str = ""
    session: int = 0
    """its number in the run file; with ``run`` and ``board``, the open session it settles"""
    counter_at_start: int = -1
    """the board's ``SYST:PCNT?`` as it began (-1: unknown)"""


def add_session(history: ChipHistory, session: Session) -> None:
    """Settle one session: its pulses (less what its open entry already credited) and findings."""
    now = utc_now()
    key = OpenSession(session.run, session.board, session.procedure, session.session, -1, now).key
    opened = history.open_sessions.pop(key, None)
    credited = opened.credited if opened is not None else {}
    history.add_pulses({kind: np.asarray(counts, np.int64) - credited.get(kind, 0)
                        for kind, counts in session.pulses.items()})  # fmt: skip
    for name, arrays, attrs in (("conductance", session.conductance, session.conductance_attrs),
                                ("defects", session.defects, session.defects_attrs),
                                ("calibration", session.calibration, session.calibration_attrs)):  # fmt: skip
        if arrays is not None:
            dated = Dated({k: np.asarray(v) for k, v in arrays.items()}, now, session.run,
                          {k: v for k, v in attrs.items() if v is not None})  # fmt: skip
            setattr(history, name, dated)
            if name == "calibration":
                history.calibrations.append(
                    Dated({k: dated.arrays[k] for k in CALIBRATION_HISTORY_KEYS}, now, session.run))
    if session.working_fraction is not None:
        history.yield_history = np.vstack([history.yield_history, [time.time(), session.working_fraction]])
    pulses_total = int(sum(int(np.sum(c)) for c in session.pulses.values()))
    history.runs.append({"run": session.run, "procedure": session.procedure, "board": session.board,
                         "recorded_utc": now, "pulses": pulses_total, "status": session.status})  # fmt: skip


class ChipLedger:
    """The ledger of one chip, ``<directory>/<serial>.h5``."""

    def __init__(self, directory: str | Path, serial: str) -> None:
        self.serial = serial
        self.path = Path(directory) / f"{chip_key(serial)}.h5"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(f"{self.path}.lock", timeout=LOCK_TIMEOUT)
        with lock:
            yield

    def exists(self) -> bool:
        return self.path.is_file()

    def update(self, change: Callable[[ChipHistory], None], identity: str, shape: tuple[int, int]) -> ChipHistory:
        """Read the chip's history (a new one if none), let ``change`` change it in memory, and put it
        back whole and atomically; under the chip's lock. Returns the history as written."""
        with self._locked():
            if self.exists():
                history = self.read()
                if history.shape != tuple(shape):
                    rows, cols = history.shape
                    raise LedgerError(f"{self.path} holds a {rows} x {cols} chip; this board is {shape[0]} x "
                                      f"{shape[1]} (two chips with one serial number?)")  # fmt: skip
            else:
                history = ChipHistory(self.serial, identity, (int(shape[0]), int(shape[1])), {}, [],
                                      created_utc=utc_now())  # fmt: skip
            if identity:
                history.identity = identity
            change(history)
            self._replace(history)
            return history

    def record(self, session: Session, identity: str, shape: tuple[int, int]) -> None:
        """Add one session's pulses and findings to the chip's history."""
        self.update(lambda history: add_session(history, session), identity, shape)

    def _replace(self, history: ChipHistory) -> None:
        """Write the history to a file beside the ledger, sync it, and move it over the ledger."""
        partial = self.path.with_name(f"{self.path.name}.partial")
        try:
            with h5py.File(partial, "w") as f:
                _write(f, history)
            with open(partial, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(partial, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
        _sync_directory(self.path.parent)

    def read(self) -> ChipHistory:
        if not self.exists():
            raise LedgerError(f"no ledger for chip {self.serial!r} (looked for {self.path})")
        try:
            with h5py.File(self.path, "r", locking=False) as f:
                return _read(f, self.path)
        except (OSError, KeyError) as exc:
            raise LedgerError(f"{self.path} is not a readable ledger: {exc}") from None


def _sync_directory(directory: Path) -> None:
    """Make a rename durable (POSIX); a directory cannot be opened this way on Windows."""
    if os.name == "nt":
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _plain(value: Any) -> Any:
    return _text(value) if isinstance(value, bytes) else value.item() if isinstance(value, np.generic) else value


# ---------------------------------------------------------------------- the file


def _write(f: h5py.File, history: ChipHistory) -> None:
    f.attrs.update({"format": LEDGER_FORMAT, "format_version": LEDGER_VERSION, "serial": history.serial,
                    "rows": history.shape[0], "cols": history.shape[1], "identity": history.identity,
                    "created_utc": history.created_utc or utc_now(), "updated_utc": utc_now(),
                    "unattributed_pulses": history.unattributed_pulses, "counter_identity": history.counter_identity,
                    "counter_expected": history.counter_expected})  # fmt: skip
    _arrays(f.create_group("pulses"), history.pulses)
    for name in ("conductance", "defects", "calibration"):
        dated = getattr(history, name)
        if dated is not None:
            _dated_group(f.create_group(name), dated)
    series = f.create_group("calibration_history")
    for index, dated in enumerate(history.calibrations):
        _dated_group(series.create_group(f"{index:05d}"), dated)
    f.create_dataset("yield_history", data=np.asarray(history.yield_history, np.float64).reshape(-1, 2))
    runs = [json.dumps(entry) for entry in history.runs]
    f.create_dataset("runs", data=np.array(runs, dtype=h5py.string_dtype()), dtype=h5py.string_dtype())
    opened = f.create_group("open_sessions")
    for index, session in enumerate(history.open_sessions.values()):
        group = opened.create_group(f"{index:05d}")
        group.attrs["session"] = json.dumps(session.meta())
        _arrays(group, session.credited)


def _arrays(group: h5py.Group, arrays: Mapping[str, npt.NDArray[Any]]) -> None:
    for key, values in arrays.items():
        array = np.asarray(values)
        group.create_dataset(key, data=array, compression="gzip" if array.ndim >= 2 else None)


def _dated_group(group: h5py.Group, dated: Dated) -> None:
    _arrays(group, dated.arrays)
    group.attrs.update({"measured_utc": dated.measured_utc, "run": dated.run})
    group.attrs.update({k: v for k, v in dated.attrs.items() if v is not None})


def _read(f: h5py.File, path: Path) -> ChipHistory:
    if f.attrs.get("format") != LEDGER_FORMAT:
        raise LedgerError(f"{path} is not a {LEDGER_FORMAT} file")
    shape = (int(f.attrs["rows"]), int(f.attrs["cols"]))
    group = f.get("pulses")
    pulses = {k: np.asarray(v[()], np.int64) for k, v in group.items()} if group is not None else {}
    runs = [json.loads(_text(r)) for r in f["runs"][()]] if "runs" in f else []
    yields = np.asarray(f["yield_history"][()], np.float64).reshape(-1, 2) if "yield_history" in f else np.zeros((0, 2))
    latest = _dated(f, "calibration")
    series = f.get("calibration_history")
    if series is not None:
        calibrations = [d for d in (_dated(series, name) for name in sorted(series)) if d is not None]
    else:  # a 1.0 ledger kept only the latest
        calibrations = [Dated({k: latest.arrays[k] for k in CALIBRATION_HISTORY_KEYS}, latest.measured_utc,
                              latest.run)] if latest is not None else []  # fmt: skip
    opened: dict[str, OpenSession] = {}
    for node in (f["open_sessions"].values() if "open_sessions" in f else []):
        meta = json.loads(_text(node.attrs["session"]))
        session = OpenSession(credited={k: np.asarray(v[()], np.int64) for k, v in node.items()}, **meta)
        opened[session.key] = session
    return ChipHistory(
        serial=_text(f.attrs["serial"]), identity=_text(f.attrs.get("identity", "")), shape=shape, pulses=pulses,
        runs=runs, conductance=_dated(f, "conductance"), defects=_dated(f, "defects"), calibration=latest,
        calibrations=calibrations, yield_history=yields,
        unattributed_pulses=int(f.attrs.get("unattributed_pulses", 0)), open_sessions=opened,
        counter_identity=_text(f.attrs.get("counter_identity", "")),
        counter_expected=int(f.attrs.get("counter_expected", -1)), created_utc=_text(f.attrs.get("created_utc", "")),
    )  # fmt: skip


def _dated(f: h5py.Group, name: str) -> Dated | None:
    group = f.get(name)
    if not isinstance(group, h5py.Group):
        return None
    attrs = {k: _plain(v) for k, v in group.attrs.items()}
    measured, run = str(attrs.pop("measured_utc", "")), str(attrs.pop("run", ""))
    return Dated({k: v[()] for k, v in group.items()}, measured, run, attrs)
