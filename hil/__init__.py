"""The memristor HIL platform's host side: ``hil.open_run(path)`` opens a run file as lazy xarray."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hil.run_data import open_run

__all__ = ["open_run"]


def __getattr__(name: str) -> Any:
    # xarray and dask are imported only by those who open a run this way, not by every command.
    if name == "open_run":
        from hil.run_data import open_run

        return open_run
    raise AttributeError(f"module 'hil' has no attribute {name!r}")
