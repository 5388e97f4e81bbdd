"""A run file as lazy xarray objects, for notebooks: ``hil.open_run(path)``.

Nothing is read until asked for: every dataset becomes a dask-backed variable over its HDF5 chunks,
so a learning curve or the histogram of one snapshot reads only what it needs, also of a file still
being written (opened without the writer's lock; what is on disk is its last flush). Dimensions are
named: a table with a ``columns`` attribute (a journal, the evaluations) becomes a dataset of one
variable per column along its first column (``update``, ``step``); maps have ``row`` and ``col``
coordinates in array coordinates (a region's offset included); snapshots grow along ``epoch``;
other series along ``<name>_step``. Units are in each variable's ``units`` attribute.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.array as da
import h5py
import numpy as np
import xarray as xr

from hil import run_layout as layout
from hil.storage import RunFileError, check_run_path, read_run

LEADING_DIMS = {layout.SNAPSHOTS: "epoch"}
"""Names of a series' growing axis, by the group it lives in."""


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value.item() if isinstance(value, np.generic) else value


def _lazy(dataset: h5py.Dataset) -> da.Array:
    array = da.from_array(dataset, chunks=dataset.chunks or dataset.shape or (), lock=False)  # h5py locks itself
    widen = dataset.attrs.get(layout.STORED_FROM)
    return array.astype(_plain(widen)) if widen else array


def _attrs(node: h5py.HLObject) -> dict[str, Any]:
    attrs = {k: _plain(v) for k, v in node.attrs.items() if k not in (layout.STORED_FROM, "columns")}
    if "unit" in attrs:
        attrs["units"] = attrs["unit"]  # the CF name, which xarray and plotting libraries read
    return attrs


def _table(dataset: h5py.Dataset) -> xr.Dataset:
    """A journal-like table: one variable per column, along the first column."""
    columns = str(_plain(dataset.attrs["columns"])).split(",")
    array = _lazy(dataset)
    dim = columns[0]
    index = array[:, 0]
    variables = {name: ((dim,), array[:, i]) for i, name in enumerate(columns) if i > 0}
    return xr.Dataset(variables, coords={dim: ((dim,), index)}, attrs=_attrs(dataset))


def _is_series(dataset: h5py.Dataset) -> bool:
    return dataset.maxshape is not None and dataset.ndim > 0 and dataset.maxshape[0] is None


def _variable(name: str, group: str, dataset: h5py.Dataset, offset: tuple[int, int]) -> xr.DataArray:
    array = _lazy(dataset)
    series = _is_series(dataset)
    shape = dataset.shape[1:] if series else dataset.shape
    dims: list[str] = [LEADING_DIMS.get(group.split("/")[0], f"{name}_step")] if series else []
    coords: dict[str, Any] = {}
    if len(shape) >= 2:
        dims += [f"{name}_dim{i}" for i in range(len(shape) - 2)] + ["row", "col"]
        coords = {"row": np.arange(shape[-2]) + offset[0], "col": np.arange(shape[-1]) + offset[1]}
    else:
        dims += [f"{name}_dim{i}" for i in range(len(shape))]
    return xr.DataArray(array, dims=dims, coords=coords, attrs=_attrs(dataset), name=name)


def _items(group: h5py.Group) -> list[tuple[str, h5py.Group | h5py.Dataset]]:
    """The group's members, opened by name (h5py's ``items()`` gives None for one it cannot read: this
    raises its error), listed first: h5py holds its lock while iterating, not while dask reads."""
    return [(name, group[name]) for name in list(group)]


def _node(group: h5py.Group, path: str) -> xr.Dataset:
    offset = (int(group.attrs.get("row0", 0)), int(group.attrs.get("col0", 0)))
    variables: dict[str, xr.DataArray] = {}
    for name, item in _items(group):
        if isinstance(item, h5py.Dataset) and "columns" not in item.attrs:
            variables[name] = _variable(name, path, item, offset)
    try:
        return xr.Dataset(variables, attrs=_attrs(group))
    except ValueError:  # maps of different regions in one group: each keeps dimensions of its own
        renamed = {name: v.rename({d: f"{name}_{d}" for d in ("row", "col") if d in v.dims})
                   for name, v in variables.items()}  # fmt: skip
        return xr.Dataset(renamed, attrs=_attrs(group))


def _tree(group: h5py.Group, path: str, nodes: dict[str, xr.Dataset]) -> None:
    nodes[path or "/"] = _node(group, path)
    for name, item in _items(group):
        child = f"{path}/{name}" if path else name
        if isinstance(item, h5py.Group):
            _tree(item, child, nodes)
        elif "columns" in item.attrs:
            nodes[child] = _table(item)


def open_run(path: str | Path) -> xr.DataTree:
    """A run file as a tree of lazy xarray datasets, one node per group of ``/data`` (and one per
    table); the root carries the run's attributes (procedure, status, config as JSON, ...).

    >>> run = hil.open_run("runs/demo-cnn.h5")
    >>> run["train/journal"].loss.rolling(update=50).mean().plot()
    >>> run["snapshots"].board0.isel(epoch=-1).plot.hist(bins=80)
    """
    path = Path(path)
    check_run_path(path)
    try:
        return _open_tree(path)
    except RunFileError:
        # Says what is wrong, or makes a file whose last flush a kill cut short readable (hil.run_recovery)
        read_run(path, lazy=True)
    return _open_tree(path)


def _open_tree(path: Path) -> xr.DataTree:
    try:
        f = h5py.File(path, "r", locking=False)  # also while its writer holds the lock
    except OSError as exc:
        raise RunFileError(f"{path} is not a readable HDF5 file: {exc}") from None
    root = {k: _plain(v) for k, v in f.attrs.items()}
    problem = layout.format_problem(root)
    if problem is not None:
        f.close()
        raise RunFileError(f"{path} {problem}")
    nodes: dict[str, xr.Dataset] = {}
    try:
        data = f.get(layout.DATA_GROUP)
        if isinstance(data, h5py.Group):
            _tree(data, "", nodes)
    except (OSError, KeyError, RuntimeError) as exc:  # h5py's, for an object it could not read
        f.close()
        raise RunFileError(f"{path} is not a readable HDF5 file: {exc}") from None
    tree = xr.DataTree.from_dict(nodes)
    tree.attrs = root | {"path": str(path)}
    return tree
