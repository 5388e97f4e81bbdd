"""The campaign's results: one row per cell, rewritten as Parquet and CSV each time a cell finishes.

Each file is written to a temporary name beside it and renamed over the old one, so a reader (or
a campaign killed mid-write) never sees half a table.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

PARQUET = "results.parquet"
CSV = "results.csv"
META = "campaign.json"
METRICS = ("final_accuracy", "best_accuracy", "pulses", "seconds")


class ResultsTable:
    """Rows by cell key, in the order cells finished; :meth:`save` writes both files atomically."""

    def __init__(self, folder: str | Path, axes: Iterable[str] = ()) -> None:
        self.folder = Path(folder)
        self.axes = list(axes)
        self.rows: dict[str, dict[str, Any]] = {}

    def add(self, row: Mapping[str, Any]) -> None:
        self.rows[str(row["key"])] = dict(row)

    def frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(list(self.rows.values()))
        if frame.empty:
            frame = pd.DataFrame(columns=["key", *self.axes, "seed", "status", "error", *METRICS])
        return frame

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        frame = self.frame()
        _atomic(self.folder / PARQUET, lambda tmp: frame.to_parquet(tmp, index=False))
        _atomic(self.folder / CSV, lambda tmp: frame.to_csv(tmp, index=False))


def _atomic(path: Path, write: Any) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def save_meta(folder: str | Path, meta: Mapping[str, Any]) -> None:
    path = Path(folder) / META
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8"))


class ResultsError(ValueError):
    """A campaign folder whose table or description cannot be read; the message names the file."""


REQUIRED = ("key", "status")
"""Columns every campaign table has (hil sweep show reads them)."""


def load_results(folder: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A campaign folder's table and its description (axes, name, kind); OSError if there is none, a
    :class:`ResultsError` naming the file if it is damaged or another program's."""
    folder = Path(folder)
    table = folder / PARQUET
    if not table.is_file():
        raise FileNotFoundError(f"{folder} holds no campaign results ({PARQUET}); run hil sweep first")
    try:
        frame = pd.read_parquet(table)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise ResultsError(f"{table} is not a readable campaign table: {exc}") from None
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise ResultsError(f"{table} is not a campaign table: no {', '.join(missing)} column "
                           f"(it has {', '.join(map(str, frame.columns)) or 'none'})")  # fmt: skip
    meta_path = folder / META
    meta: dict[str, Any] = {}
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ResultsError(f"{meta_path} is not a readable campaign description: {exc}") from None
        if not isinstance(meta, dict):
            kind = type(meta).__name__
            raise ResultsError(f"{meta_path} is not a campaign description: a JSON {kind}, not an object")
    return frame, meta
