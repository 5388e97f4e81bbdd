"""How a run file's datasets sit on disk: plain while its run writes them, compressed once it is closed.

HDF5 is not crash-safe for compressed data. Rewriting a compressed chunk (a checkpoint written
again, a series' last chunk grown by a row) moves it when its size changes, and the space it left
is handed out again before the chunk index that still points there reaches the disk; a chunk
rewritten in place and torn by a kill cannot be decoded. Either way a SIGKILL can leave a file
that no longer opens ("filter returned failure during read"), measured at 3 kills in 17 on a
writer like a training run's. A plain chunk is rewritten in place and a torn one still reads (a
training run's two checkpoint slots make the torn one the slot not in use).

So a live run file holds plain datasets (series chunked, so they grow), and closing it writes a
compressed copy beside it and swaps it in with :func:`os.replace`: a kill during the copy leaves
the plain file whole. A closed file reopened to continue it is expanded the same way first.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

log = logging.getLogger(__name__)

StorageOptions = Callable[..., dict[str, Any]]
"""How a dataset is stored, from its (row) shape, type and whether it is a series: :func:`live_options`
or :func:`closed_options`."""

COMPRESS_FROM = 1024
"""Datasets of at least this many bytes (and every series) are compressed in a closed file."""
SERIES_CHUNK_BYTES = 8 * 1024
"""Rows of a series per chunk: about this many bytes (a reader of a few rows decompresses little)."""
COPY_BLOCK_BYTES = 16 * 1024 * 1024
"""Rows copied at a time: a long endurance series is never held whole in memory."""


def live_options(shape: tuple[int, ...], dtype: np.dtype[Any], rows: bool = False) -> dict[str, Any]:
    """Storage of a dataset written by a live run: plain; a series (``rows``) chunked so it can grow."""
    return {"chunks": _series_chunks(shape, dtype)} if rows else {}


def closed_options(shape: tuple[int, ...], dtype: np.dtype[Any], rows: bool = False) -> dict[str, Any]:
    """Storage in a closed run file: gzip (readable by every HDF5 and netCDF reader) with the byte
    shuffle, for every series and every numeric dataset of ``COMPRESS_FROM`` bytes or more."""
    compressed = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    if rows:
        return {"chunks": _series_chunks(shape, dtype), **compressed}
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if nbytes < COMPRESS_FROM or np.dtype(dtype).kind not in "fiub":
        return {}
    return {"chunks": True, **compressed}


def _series_chunks(row_shape: tuple[int, ...], dtype: np.dtype[Any]) -> tuple[int, ...]:
    row_bytes = max(1, int(np.prod(row_shape, dtype=np.int64)) * np.dtype(dtype).itemsize)
    return (max(1, SERIES_CHUNK_BYTES // row_bytes), *row_shape)


def compact(path: Path) -> None:
    """Compress a closed run file in place (atomically). A failure (a full disk) leaves the plain
    file, complete and readable, and is logged: the data matters more than its size."""
    try:
        _rewrite(path, closed_options)
    except (OSError, ValueError) as exc:
        log.warning("%s is kept uncompressed: %s", path, exc)


def expand(path: Path) -> None:
    """Make a closed run file safe to write again: its compressed datasets become plain (atomically)."""
    if _has_filters(path):
        _rewrite(path, live_options)


def _has_filters(path: Path) -> bool:
    with h5py.File(path, "r") as f:
        # visititems stops at the first object its function returns something for
        return f.visititems(lambda _, obj: True if isinstance(obj, h5py.Dataset) and obj.compression else None) is True


def _rewrite(path: Path, options: StorageOptions) -> None:
    """Copy every group, dataset and attribute of ``path`` into a file beside it, datasets stored
    by ``options``, then swap the copy in; the original stays whole until the swap."""
    partial = path.with_name(path.name + ".partial")
    try:
        with h5py.File(path, "r") as source, h5py.File(partial, "w") as copy:
            _copy_attrs(source, copy)
            source.visititems(lambda name, obj: _copy_object(name, obj, copy, options))
        with open(partial, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(partial, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()


def _copy_object(name: str, obj: h5py.Group | h5py.Dataset, copy: h5py.File, options: StorageOptions) -> None:
    if isinstance(obj, h5py.Group):
        _copy_attrs(obj, copy.require_group(name))
        return
    series = bool(obj.maxshape) and obj.maxshape[0] is None
    storage = options(obj.shape[1:] if series else obj.shape, obj.dtype, rows=series)
    target = copy.create_dataset(name, shape=obj.shape, maxshape=obj.maxshape, dtype=obj.dtype, **storage)
    if not obj.shape:
        target[()] = obj[()]
    elif obj.size:  # (an empty series: its shape is all there is)
        row_bytes = max(1, obj.size // obj.shape[0] * obj.dtype.itemsize)
        block = max(1, COPY_BLOCK_BYTES // row_bytes)
        for start in range(0, obj.shape[0], block):
            target[start : start + block] = obj[start : start + block]
    _copy_attrs(obj, target)


def _copy_attrs(source: h5py.HLObject, target: h5py.HLObject) -> None:
    for key in source.attrs:
        target.attrs.create(key, source.attrs[key], dtype=source.attrs.get_id(key).dtype)
