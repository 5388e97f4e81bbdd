"""Run a campaign's cells on Dask: a local cluster of worker processes, or an existing cluster.

Cells already completed (their run files say so) are not sent again. At most a few cells per
worker thread are in flight at once, so a board taken out of the pool is not offered to cells
sent later, and a stop reaches few queued cells. A worker that dies takes its running cell with
it; Dask runs the cell again on another worker, where it starts over or continues from its journal
(:func:`hil.sweep.cell.run_cell`). Ctrl-C stops the campaign: no new cell starts, running cells
stop at their next step with their run files ``interrupted`` and their boards idle, then the
cluster is closed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distributed import Client, Event, Future, LocalCluster, as_completed, wait
from tqdm import tqdm

from drivers import open_board
from hil.config import ConfigError
from hil.sweep.campaign import Campaign, Cell, check_cells, emulator_resource, expand
from hil.sweep.cell import base_row, completed_row, previous_run, run_cell, run_path
from hil.sweep.pool import BoardPool
from hil.sweep.table import ResultsTable, save_meta

log = logging.getLogger(__name__)
STOP_GRACE = 60.0
"""Longest the campaign waits, after Ctrl-C, for running cells to reach their next step, s."""


POLL = 0.05
"""Seconds between two looks for finished cells (and for Ctrl-C)."""


@contextlib.contextmanager
def _ctrl_c_as_flag() -> Iterator[threading.Event]:
    """Ctrl-C sets a flag the campaign loop reads, instead of raising wherever the main thread is:
    a KeyboardInterrupt raised inside a finalizer run by the garbage collector is printed and lost."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: flag.set())
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class CampaignReport:
    folder: Path
    cells: int
    already_done: int = 0
    completed: int = 0
    failed: int = 0
    interrupted: bool = False
    pool_out: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


class StopFlag:
    """Whether the campaign was stopped: a Dask event, read from the worker running the cell."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self) -> bool:
        return bool(Event(self.name).is_set())


def cell_task(
    cell: Cell, folder: str, pool: list[str], stop_name: str, resume: str, pool_wait: float
) -> dict[str, Any] | None:
    """What a worker runs for one cell."""
    return run_cell(cell, folder, pool=pool, should_stop=StopFlag(stop_name), resume=resume, pool_wait=pool_wait)


@contextlib.contextmanager
def dask_client(workers: int | None, scheduler: str | None) -> Iterator[Client]:
    """A client of ``scheduler``, or of a local cluster of ``workers`` single-threaded worker processes."""
    if scheduler:
        with Client(scheduler, timeout="30s") as client:
            yield client
        return
    n_workers = workers or os.cpu_count() or 1
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,\
            Client(cluster) as client:  # fmt: skip
        yield client


def check_emulators(cells: list[Cell]) -> None:
    """Open each distinct emulated chip once (seed aside), so a bad emulator parameter fails before any cell."""
    seen: set[str] = set()
    for cell in cells:
        if cell.resource is None:
            continue
        probe = emulator_resource(cell.resource, {"seed": 0})
        if probe in seen:
            continue
        seen.add(probe)
        try:
            open_board(cell.resource).close()
        except Exception as exc:
            raise ConfigError(f"{cell.describe()}: the emulator {cell.resource} cannot be opened: {exc}") from None


def run_campaign(
    campaign: Campaign,
    folder: str | Path,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: bool = True,
    client: Client | None = None,
) -> CampaignReport:
    """Run every cell not yet completed; the table in ``folder`` is rewritten as each one finishes."""
    started = time.perf_counter()
    folder = Path(folder)
    cells = expand(campaign)
    check_cells(cells)
    if campaign.pool is None:
        check_emulators(cells)
    axes = list(campaign.axes)
    meta = {"name": campaign.name, "kind": campaign.kind, "axes": axes, "cells": len(cells),
            "campaign": campaign.model_dump(mode="json")}  # fmt: skip
    save_meta(folder, meta)
    table = ResultsTable(folder, axes)
    todo: deque[Cell] = deque()
    for cell in cells:
        previous = previous_run(run_path(folder, cell.key))
        row = completed_row(cell, previous) if previous is not None else None
        if row is not None:
            table.add(row)
        else:
            todo.append(cell)
    report = CampaignReport(folder, len(cells), already_done=len(table.rows))
    table.save()
    if todo:
        if client is not None:
            _run_on(client, campaign, folder, todo, table, report, progress)
        else:
            with dask_client(min(workers or os.cpu_count() or 1, len(todo)), scheduler) as own:
                _run_on(own, campaign, folder, todo, table, report, progress)
        if report.pool_out:
            save_meta(folder, meta | {"pool_out": report.pool_out})
    report.seconds = time.perf_counter() - started
    return report


def _run_on(
    client: Client, campaign: Campaign, folder: Path, todo: deque[Cell], table: ResultsTable,
    report: CampaignReport, progress: bool,
) -> None:  # fmt: skip
    pool = BoardPool(list(campaign.pool or []))
    stop_name = f"hil-sweep-stop-{uuid.uuid4().hex}"
    stop = Event(stop_name, client=client)
    threads = sum(w.get("nthreads", 1) for w in client.scheduler_info().get("workers", {}).values()) or 1
    capacity = 2 * threads
    in_flight: dict[Future, tuple[Cell, int]] = {}
    finished = as_completed()
    bar = tqdm(total=report.cells, initial=report.already_done, unit="cell", desc=campaign.name,
               disable=not progress, dynamic_ncols=True)  # fmt: skip

    def send(cell: Cell, tries: int) -> None:
        future = client.submit(cell_task, cell, str(folder), pool.available, stop_name, campaign.resume,
                                campaign.pool_wait, key=f"hil-cell-{cell.key}-{uuid.uuid4().hex[:8]}",
                                pure=False)  # fmt: skip
        in_flight[future] = (cell, tries)
        finished.add(future)

    def record(row: dict[str, Any]) -> None:
        table.add(row)
        table.save()
        bar.update(1)
        if row["status"] == "completed":
            report.completed += 1
        elif row["status"] == "failed":
            report.failed += 1
            report.errors.append(f"{row['key']}: {row['error']}")

    def fill() -> None:
        while todo and len(in_flight) < capacity:
            if campaign.pool is not None and not pool:
                cell = todo.popleft()
                record(base_row(cell) | {"status": "failed", "error": "no board left in the pool: "
                                         + "; ".join(f"{r}: {why}" for r, why in pool.out.items())})  # fmt: skip
                continue
            send(todo.popleft(), 1)

    def collect(future: Future) -> None:
        cell, tries = in_flight.pop(future)
        try:
            row = future.result()
        except Exception as exc:  # the task itself failed (e.g. its workers kept dying)
            row = base_row(cell) | {"status": "failed", "error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
        if row is None:
            return  # stopped before it began: it runs next time
        if row["board_failure"] and pool.take_out(row["board"], row["board_failure"]):
            log.warning("board %s taken out of the pool: %s", row["board"], row["board_failure"])
            report.pool_out = dict(pool.out)
        if row["board_failure"] and pool and tries < len(pool.resources):
            send(cell, tries + 1)  # the board's fault, not the cell's: on another board
            return
        record(row)

    try:
        with _ctrl_c_as_flag() as ctrl_c:
            fill()
            while not finished.is_empty():
                if ctrl_c.is_set():
                    raise KeyboardInterrupt
                if not finished.has_ready():
                    time.sleep(POLL)
                    continue
                for future in finished.next_batch(block=False):
                    collect(future)
                fill()
    except (KeyboardInterrupt, SystemExit):
        report.interrupted = True
        todo.clear()
        stop.set()
        running = list(in_flight)
        with contextlib.suppress(Exception):
            wait(running, timeout=STOP_GRACE)
        for future in running:
            if future.done() and future.status == "finished":
                collect(future)
        client.cancel(list(in_flight))
        raise
    finally:
        bar.close()
        report.pool_out = dict(pool.out)
        table.save()
