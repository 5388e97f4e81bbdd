"""A chip's ledger: one HDF5 file per chip that every run on it appends to.

It holds the chip's life across run files (docs/ledger.md): cumulative pulses per device by kind,
the latest conductance map, defect classes and gate calibration with their dates, the yield
measured over time, and the list of runs that touched the chip. Writers hold a file lock, so runs
in several processes (a sweep's workers) append to one chip's ledger in turn.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator, Mapping
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
LEDGER_VERSION = "1.0"
LOCK_TIMEOUT = 30.0

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
    yield_history: FloatArray = field(default_factory=lambda: np.zeros((0, 2)))
    """rows of (POSIX time, s; fraction of working devices)"""

    @property
    def total_pulses(self) -> IntArray:
        total = np.zeros(self.shape, dtype=np.int64)
        for counts in self.pulses.values():
            total += counts
        return total


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

    def record(self, session: Session, identity: str, shape: tuple[int, int]) -> None:
        """Add one session's pulses and findings to the chip's history."""
        with self._locked(), h5py.File(self.path, "a") as f:
            if not f.attrs.get("format"):
                f.attrs.update({"format": LEDGER_FORMAT, "format_version": LEDGER_VERSION, "serial": self.serial,
                                "rows": shape[0], "cols": shape[1], "created_utc": utc_now()})  # fmt: skip
            _check(f, self.path, shape)
            f.attrs["identity"] = identity
            now = utc_now()
            pulses = f.require_group("pulses")
            for kind, counts in session.pulses.items():
                if kind not in pulses:
                    pulses.create_dataset(kind, data=np.zeros(shape, np.int64), compression="gzip")
                stored = pulses[kind]
                stored[...] = stored[()] + counts
            pulses.attrs["updated_utc"] = now
            for name, arrays, attrs in (("conductance", session.conductance, session.conductance_attrs),
                                        ("defects", session.defects, session.defects_attrs),
                                        ("calibration", session.calibration, session.calibration_attrs)):  # fmt: skip
                if arrays is not None:
                    _replace(f, name, arrays, {"measured_utc": now, "run": session.run, **attrs})
            if session.working_fraction is not None:
                _append(f, "yield_history", np.array([time.time(), session.working_fraction]))
            pulses_total = int(sum(int(c.sum()) for c in session.pulses.values()))
            entry = {"run": session.run, "procedure": session.procedure, "board": session.board, "recorded_utc": now,
                     "pulses": pulses_total, "status": session.status}  # fmt: skip
            _append(f, "runs", np.array(json.dumps(entry), dtype=h5py.string_dtype()))

    def read(self) -> ChipHistory:
        if not self.exists():
            raise LedgerError(f"no ledger for chip {self.serial!r} (looked for {self.path})")
        try:
            with h5py.File(self.path, "r", locking=False) as f:
                if f.attrs.get("format") != LEDGER_FORMAT:
                    raise LedgerError(f"{self.path} is not a {LEDGER_FORMAT} file")
                shape = (int(f.attrs["rows"]), int(f.attrs["cols"]))
                group = f.get("pulses")
                pulses = {k: np.asarray(v[()], np.int64) for k, v in group.items()} if group is not None else {}
                runs = [json.loads(_text(r)) for r in f["runs"][()]] if "runs" in f else []
                history = f["yield_history"][()] if "yield_history" in f else np.zeros((0, 2))
                return ChipHistory(
                    serial=str(f.attrs["serial"]), identity=_text(f.attrs.get("identity", "")), shape=shape,
                    pulses=pulses, runs=runs, conductance=_dated(f, "conductance"), defects=_dated(f, "defects"),
                    calibration=_dated(f, "calibration"), yield_history=np.asarray(history, np.float64),
                )  # fmt: skip
        except OSError as exc:
            raise LedgerError(f"{self.path} is not a readable ledger: {exc}") from None


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _check(f: h5py.File, path: Path, shape: tuple[int, int]) -> None:
    if f.attrs.get("format") != LEDGER_FORMAT:
        raise LedgerError(f"{path} is not a {LEDGER_FORMAT} file")
    stored = (int(f.attrs["rows"]), int(f.attrs["cols"]))
    if stored != tuple(shape):
        raise LedgerError(f"{path} holds a {stored[0]} x {stored[1]} chip; this board is {shape[0]} x {shape[1]} "
                          "(two chips with one serial number?)")  # fmt: skip


def _replace(f: h5py.File, name: str, arrays: Mapping[str, npt.NDArray[Any]], attrs: Mapping[str, Any]) -> None:
    if name in f:
        del f[name]
    group = f.create_group(name)
    for key, values in arrays.items():
        array = np.asarray(values)
        group.create_dataset(key, data=array, compression="gzip" if array.ndim >= 2 else None)
    group.attrs.update({k: v for k, v in attrs.items() if v is not None})


def _append(f: h5py.File, name: str, row: npt.NDArray[Any]) -> None:
    if name not in f:
        f.create_dataset(name, shape=(0, *row.shape), maxshape=(None, *row.shape), dtype=row.dtype, chunks=True)
    dataset = f[name]
    dataset.resize(dataset.shape[0] + 1, axis=0)
    dataset[-1] = row


def _dated(f: h5py.File, name: str) -> Dated | None:
    group = f.get(name)
    if not isinstance(group, h5py.Group):
        return None
    attrs = {k: (_text(v) if isinstance(v, bytes) else v.item() if isinstance(v, np.generic) else v)
             for k, v in group.attrs.items()}  # fmt: skip
    measured, run = str(attrs.pop("measured_utc", "")), str(attrs.pop("run", ""))
    return Dated({k: v[()] for k, v in group.items()}, measured, run, attrs)
