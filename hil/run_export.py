"""``hil export RUN.h5 --to netcdf|parquet|csv``: a run file for tools that do not read it directly.

netCDF keeps the tree (one group per node, dimensions, coordinates and units, as
:func:`hil.run_data.open_run` names them); parquet and csv write a directory of tables, one per
journal and one per other dataset in long form (a column per dimension, then the value).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hil.storage import RunFileError

if TYPE_CHECKING:  # pandas, xarray and dask take seconds to import: only an export needs them
    import xarray as xr

FORMATS = ("netcdf", "parquet", "csv")
SUFFIX = {"netcdf": ".nc", "parquet": "", "csv": ""}


def _netcdf_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """netCDF has no boolean attribute: stored as 0/1."""
    return {k: int(v) if isinstance(v, bool | np.bool_) else v for k, v in attrs.items()}


def _netcdf_node(node: xr.Dataset) -> xr.Dataset:
    converted = node.copy()
    for name, variable in node.data_vars.items():
        if variable.dtype == bool:  # netCDF has no boolean type either
            converted[name] = variable.astype(np.int8).assign_attrs(_netcdf_attrs(variable.attrs) | {"boolean": 1})
        else:
            converted[name].attrs = _netcdf_attrs(variable.attrs)
    converted.attrs = _netcdf_attrs(node.attrs)
    return converted


def export_netcdf(tree: xr.DataTree, out: Path) -> list[Path]:
    nodes = {node.path: _netcdf_node(node.to_dataset(inherit=False)) for node in tree.subtree}
    import xarray

    converted = xarray.DataTree.from_dict(nodes)
    converted.attrs = _netcdf_attrs({str(k): v for k, v in tree.attrs.items()})
    converted.to_netcdf(out, engine="h5netcdf")
    return [out]


def _tables(tree: xr.DataTree) -> dict[str, Any]:
    """Every table of the run: a journal as it is, every other variable in long form."""
    import pandas

    tables: dict[str, Any] = {}
    for node in tree.subtree:
        dataset = node.to_dataset(inherit=False)
        stem = node.path.strip("/").replace("/", ".") or "root"
        dims = {tuple(v.dims) for v in dataset.data_vars.values()}
        if len(dims) == 1 and len(next(iter(dims))) == 1:  # a table: every column along one dimension
            tables[stem] = dataset.to_dataframe().reset_index()
            continue
        for name, variable in dataset.data_vars.items():
            if variable.ndim:
                tables[f"{stem}.{name}"] = variable.to_dataframe(name=str(name)).reset_index()
            else:  # a single value
                tables[f"{stem}.{name}"] = pandas.DataFrame({str(name): [variable.values.item()]})
    return tables


def export_tables(tree: xr.DataTree, out: Path, kind: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, frame in _tables(tree).items():
        path = out / f"{stem}.{kind}"
        if kind == "parquet":
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
        written.append(path)
    return written


def export_run(path: str | Path, kind: str, out: str | Path | None = None, overwrite: bool = False) -> list[Path]:
    """Write the run file at ``path`` as ``kind`` (netcdf, parquet, csv); the files written."""
    if kind not in FORMATS:
        raise RunFileError(f"--to {kind!r}: expected one of {', '.join(FORMATS)}")
    source = Path(path)
    target = Path(out) if out else source.with_suffix(SUFFIX[kind]) if kind == "netcdf" else source.with_name(
        f"{source.stem}-{kind}")  # fmt: skip
    if target.exists() and target.resolve() == source.resolve():
        raise RunFileError(f"--out {target} is the run file itself; choose another --out (nothing was written)")
    if kind == "netcdf" and target.is_dir():
        raise RunFileError(f"--out {target} is a directory; netCDF is one file: name it (RUN.nc) (nothing was written)")
    if kind != "netcdf" and target.exists() and not target.is_dir():
        raise RunFileError(f"--out {target} is a file; {kind} tables go in a directory: choose another --out "
                           "(nothing was written)")  # fmt: skip
    if target.exists() and not overwrite:
        raise RunFileError(f"{target} exists; choose another --out or pass --overwrite (nothing was written)")
    from hil.run_data import open_run

    tree = open_run(source)
    return export_netcdf(tree, target) if kind == "netcdf" else export_tables(tree, target, kind)


def cmd_export(args: argparse.Namespace) -> int:
    written = export_run(args.file, args.to, args.out, args.overwrite)
    where = written[0] if len(written) == 1 else f"{len(written)} files in {written[0].parent}"
    print(f"wrote {where}")
    return 0


def register(commands: Any) -> None:
    export = commands.add_parser("export", help="a run file as netCDF, or as parquet/csv tables",
                                 description="Write a run file as netCDF (its tree: dimensions, coordinates, "
                                 "units) or as a directory of parquet or csv tables.")  # fmt: skip
    export.add_argument("file", metavar="RUN.h5", help="the run file")
    export.add_argument("--to", required=True, choices=FORMATS, help="output format")
    export.add_argument("--out", metavar="PATH", help="output file (netcdf) or directory (parquet, csv); "
                        "default: beside the run file")  # fmt: skip
    export.add_argument("--overwrite", action="store_true", help="replace an existing output")
    export.set_defaults(handler=cmd_export)
