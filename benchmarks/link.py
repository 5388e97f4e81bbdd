"""Link benchmark: how fast each transport moves the protocol's traffic.

Starts the emulated board as separate processes (a TCP server and a pty) and measures, per
transport (pyvisa over TCP, pyvisa over the pty, pyserial over the pty, in-process):

- the round trip of a one-cell read (``Board.read_cell``): median and p99,
- a full-array conductance map (``Board.read_map``, one ``MAP?`` block), median of ``--repeats``,
- a batch of 1,000 VMM input vectors (``Board.vmm``, one ``VMM?`` block each way), median,
- the same map read cell by cell (what the protocol's bulk commands exist to avoid),
- the bytes each operation moves, counted at the transport.

It also works out the payload of a per-cell ASCII map against the one block, and what each
would take on a 115200-baud 8N1 serial link.

**Slow links** (``--part slow``): protocol 1.2's float32 forms ("before", forced with
``compact=False``) against 1.3's compact forms ("after"), at 115200 baud, 921600 baud and 1 MB/s:
the bytes and the wall time of a 128x64 map, a 1,000-vector VMM, a 128x64 write-verify and one
CNN and one MLP training update (forward VMMs, read-back and pulses), with the lower bound each
could reach (``link_budget.py``). Bytes are counted in process (they do not depend on the link).
Wall times are measured on an emulator paced to the link's speed (``serve --bytes-per-second``)
where that takes seconds, and modelled (bytes / rate + the same operation's time in process)
where it would take minutes; the JSON says which each is, and the measured ones show how close
the model is.

Human-readable lines go to stdout as it goes; the last line of stdout is one JSON object with
every figure. A benchmark, never a timed test.

    .venv/bin/python benchmarks/link.py            # default: both parts
    .venv/bin/python benchmarks/link.py --quick    # smoke run
    .venv/bin/python benchmarks/link.py --part slow
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import select
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from types import FrameType
from typing import Any

import numpy as np
from link_budget import LowerBound, bounding
from traffic import Traffic, count_traffic

from drivers import Board, open_board

PRESET = "umass-ta-hfo2"
SEED = 1
VMM_VECTORS = 1000
VMM_AMPLITUDE = 0.2  # V: inputs drawn uniformly from [-0.2, 0.2]
V_READ = 0.2  # V
SERIAL_BAUD = 115200
BITS_PER_SERIAL_BYTE = 10  # 8N1: start bit, 8 data bits, stop bit
READY_TIMEOUT = 30.0  # s for an emulator to print its READY line
STOP_TIMEOUT = 5.0  # s for an emulator to exit once its stdin closes
LINK_TIMEOUT = 20.0  # s the drivers tolerate without a reply

Json = dict[str, Any]


@dataclass(frozen=True)
class Settings:
    cell_reads: int
    """one-cell reads timed per transport"""
    repeats: int
    """map reads and VMM batches timed per transport (the median is reported)"""
    per_cell_map_everywhere: bool
    """time the cell-by-cell map on every transport, not only in process"""


# ----------------------------------------------------------------------------- emulator processes


@contextmanager
def emulator_process(*where: str) -> Iterator[str]:
    """Run ``python -m mock_hardware serve <where>`` (and any further serve options); yield the resource
    from its READY line.

    The process is stopped on the way out however the block ends: stdin closed and waited on,
    then terminated, then killed.
    """
    command = [sys.executable, "-m", "mock_hardware", "serve", *where, "--seed", str(SEED), "--preset", PRESET]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    try:
        yield _read_ready(process, " ".join(where))
    finally:
        _stop(process)


def _read_ready(process: subprocess.Popen[bytes], label: str) -> str:
    assert process.stdout is not None
    fd = process.stdout.fileno()
    deadline = time.monotonic() + READY_TIMEOUT
    received = b""
    while b"\n" not in received:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"emulator ({label}) printed no READY line within {READY_TIMEOUT:g} s")
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            raise RuntimeError(f"emulator ({label}) exited with status {process.wait()} before it was ready")
        received += chunk
    line = received.partition(b"\n")[0].decode("ascii", "replace").strip()
    if not line.startswith("READY "):
        raise RuntimeError(f"emulator ({label}) printed {line!r} instead of 'READY <resource>'")
    return line.removeprefix("READY ")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Close stdin (the emulator's signal to exit) and wait; terminate, then kill, if it lingers."""
    if process.stdin is not None:
        process.stdin.close()
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()  # only now, so a late READY line never meets a broken pipe


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the cleanup above


# ----------------------------------------------------------------------------- measuring


def timed(operation: Callable[[], object]) -> float:
    start = time.perf_counter()
    operation()
    return time.perf_counter() - start


def read_map_cell_by_cell(board: Board) -> None:
    rows, cols = board.shape
    for row in range(rows):
        for col in range(cols):
            board.read_cell(row, col, V_READ)


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f} us"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.2f} ms"


def _bytes(traffic: Traffic) -> str:
    trips = "1 round trip" if traffic.round_trips == 1 else f"{traffic.round_trips:,} round trips"
    return f"{traffic.sent:,} B out, {traffic.received:,} B back, {trips}"


def measure_transport(name: str, resource: str, settings: Settings, per_cell_map: bool) -> Json:
    """Every figure for one transport."""
    print(f"{name}: {resource}", flush=True)
    start = time.perf_counter()
    board = open_board(resource, timeout=LINK_TIMEOUT)
    open_s = time.perf_counter() - start
    with board:
        rows, cols = board.shape
        rng = np.random.default_rng(SEED)
        cells = rng.integers((0, 0), (rows, cols), size=(settings.cell_reads, 2)).tolist()
        v_rows = rng.uniform(-VMM_AMPLITUDE, VMM_AMPLITUDE, size=(VMM_VECTORS, rows))
        print(f"  open + describe     {_ms(open_s)}", flush=True)

        # The counted run of each operation doubles as its warm-up, so timed runs count nothing.
        # Reply lengths vary with the value read, so the bytes are averaged over the same cells.
        bytes_cell = count_traffic(board, lambda: [board.read_cell(row, col, V_READ) for row, col in cells])
        per_read = bytes_cell.per_operation(len(cells))
        cell_s = []
        for row, col in cells:
            start = time.perf_counter()
            board.read_cell(row, col, V_READ)
            cell_s.append(time.perf_counter() - start)
        cell_median = statistics.median(cell_s)
        cell_p99 = float(np.percentile(cell_s, 99))
        print(
            f"  read_cell           median {_us(cell_median)}, p99 {_us(cell_p99)} "
            f"({len(cell_s)} reads; {per_read['sent']:.1f} B out, {per_read['received']:.1f} B back per read)",
            flush=True,
        )

        bytes_map = count_traffic(board, lambda: board.read_map(V_READ))
        map_s = statistics.median(timed(lambda: board.read_map(V_READ)) for _ in range(settings.repeats))
        print(
            f"  read_map {rows}x{cols}     {_ms(map_s)} (median of {settings.repeats}; {_bytes(bytes_map)})", flush=True
        )

        bytes_vmm = count_traffic(board, lambda: board.vmm(v_rows))
        vmm_s = statistics.median(timed(lambda: board.vmm(v_rows)) for _ in range(settings.repeats))
        print(
            f"  vmm {VMM_VECTORS} vectors    {_ms(vmm_s)} (median of {settings.repeats}; {_bytes(bytes_vmm)})",
            flush=True,
        )

        per_cell_s: float | None = None
        if per_cell_map:
            per_cell_s = timed(lambda: read_map_cell_by_cell(board))
            print(
                f"  map cell by cell    {_ms(per_cell_s)} ({rows * cols:,} read_cell round trips; "
                f"{per_cell_s / map_s:,.0f}x the block)",
                flush=True,
            )

    return {
        "resource": resource,
        "open_s": open_s,
        "read_cell_median_s": cell_median,
        "read_cell_p99_s": cell_p99,
        "read_cell_reads": len(cell_s),
        "map_s": map_s,
        "vmm_1000_s": vmm_s,
        "map_cell_by_cell_s": per_cell_s,
        "bytes": {"read_cell": per_read, "map": asdict(bytes_map), "vmm_1000": asdict(bytes_vmm)},
    }


def map_payload(resource: str) -> Json:
    """Bytes of a full map as one block vs read cell by cell in ASCII, counted on the link."""
    with open_board(resource, timeout=LINK_TIMEOUT) as board:
        rows, cols = board.shape
        block = count_traffic(board, lambda: board.read_map(V_READ))
        per_cell = count_traffic(board, lambda: read_map_cell_by_cell(board))
    block_total = block.sent + block.received
    per_cell_total = per_cell.sent + per_cell.received
    serial_s = BITS_PER_SERIAL_BYTE / SERIAL_BAUD
    result = {
        "cells": rows * cols,
        "block": asdict(block),
        "per_cell_ascii": asdict(per_cell),
        "per_cell_ascii_bytes_per_cell": per_cell_total / (rows * cols),
        "per_cell_over_block": per_cell_total / block_total,
        "at_115200_baud_s": {"block": block_total * serial_s, "per_cell_ascii": per_cell_total * serial_s},
    }
    print(
        f"map payload ({rows}x{cols}): one block {block_total:,} B; cell by cell in ASCII {per_cell_total:,} B "
        f"({result['per_cell_ascii_bytes_per_cell']:.1f} B per cell, {result['per_cell_over_block']:.1f}x); "
        f"at {SERIAL_BAUD} baud 8N1: {block_total * serial_s:.2f} s vs {per_cell_total * serial_s:.1f} s",
        flush=True,
    )
    return result


# ----------------------------------------------------------------------------- slow links

LINK_RATES = {"115200 baud": 115200 / BITS_PER_SERIAL_BYTE, "921600 baud": 921600 / BITS_PER_SERIAL_BYTE,
              "1 MB/s": 1e6}  # fmt: skip
ENCODINGS = {"before (1.2, float32)": False, "after (1.3, compact)": True}
WV_WINDOW = (150e-6, 350e-6)  # S: targets a SET reaches on umass-ta-hfo2 without a calibration
WV_TOLERANCE = 4e-6  # S
TRAIN_MODELS: dict[str, dict[str, Any]] = {
    "cnn": {"batch_size": 100, "optimizer": {"name": "rmsprop", "lr": 0.01}},
    "mlp": {"batch_size": 50, "optimizer": {"name": "sgd", "lr": 0.1}},
}
TRAIN_UPDATES = 3  # the last (with the final evaluation) is left out


def _operations(board: Board, rng: np.random.Generator) -> dict[str, Callable[[], object]]:
    from protocols.programming import write_verify

    rows, cols = board.shape
    v_rows = rng.uniform(-VMM_AMPLITUDE, VMM_AMPLITUDE, size=(VMM_VECTORS, rows))
    targets = rng.uniform(*WV_WINDOW, size=(rows, cols))
    return {
        "map 128x64": lambda: board.read_map(V_READ),
        "vmm 1000 vectors": lambda: board.vmm(v_rows),
        "write-verify 128x64": lambda: write_verify(board, targets, WV_TOLERANCE),
    }


def _counted(resource: str, compact: bool, link_rate: float | None = None) -> dict[str, Json]:
    """Bytes, round trips, lower bound and in-process time of each board operation, in one encoding."""
    results: dict[str, Json] = {}
    for name in ("map 128x64", "vmm 1000 vectors", "write-verify 128x64"):
        with open_board(resource, timeout=LINK_TIMEOUT, compact=compact, link_rate=link_rate) as board:
            bound = LowerBound.of(board)
            operation = _operations(board, np.random.default_rng(SEED))[name]
            start = time.perf_counter()
            with bounding(bound):
                traffic = count_traffic(board, operation)
            results[name] = {**asdict(traffic), "in_process_s": time.perf_counter() - start,
                             "lower_bound_bytes": bound.bytes}  # fmt: skip
    return results


def _training_update(model: str, compact: bool) -> Json:
    """Bytes of one training update on the in-process emulator (mean over the updates but the last)."""
    import tempfile
    from pathlib import Path

    import hil.training.run as training_run
    from drivers.transports.inprocess import InProcessTransport
    from hil.storage import RunFile
    from hil.training.config import TrainConfig

    marks: list[tuple[float, Traffic, float]] = []
    traffic, bound = Traffic(), LowerBound(16, 14, 5)
    counting = {"on": False}

    class Ticking(RunFile):
        def progress(self, advance: int = 0, total: int | None = None, **status: Any) -> None:
            if advance == 1 or total is not None:
                counting["on"] = True
                marks.append((time.perf_counter(), Traffic(**asdict(traffic)), bound.bits))
            super().progress(advance, total, **status)

    originals = {name: getattr(InProcessTransport, name) for name in ("write", "read_exact", "read_line")}

    def write(self: Any, data: bytes) -> None:
        if counting["on"]:
            traffic.sent += len(data)
            traffic.round_trips += 1
        originals["write"](self, data)

    def reader(name: str) -> Callable[..., bytes]:
        def read(self: Any, *args: Any) -> bytes:
            data: bytes = originals[name](self, *args)
            if counting["on"]:
                traffic.received += len(data)
            return data

        return read

    board_init = Board.__init__

    def init(self: Board, *args: Any, **kwargs: Any) -> None:
        kwargs["compact"] = compact  # "before": the 1.2 forms, as if the board offered no more
        board_init(self, *args, **kwargs)

    config = TrainConfig.model_validate({"model": model, "updates": TRAIN_UPDATES, "eval_every": 10**6,
                                         "boards": {"board0": f"emulator://?preset={PRESET}&seed={SEED}"},
                                         **TRAIN_MODELS[model]})  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        run = Ticking(Path(folder) / f"{model}.h5", procedure="train", config=config.model_dump(mode="json"),
                      show_progress=False)  # fmt: skip
        InProcessTransport.write = write  # type: ignore[method-assign]
        InProcessTransport.read_exact = reader("read_exact")  # type: ignore[method-assign]
        InProcessTransport.read_line = reader("read_line")  # type: ignore[method-assign]
        Board.__init__ = init  # type: ignore[method-assign]
        try:
            with run, bounding(bound):
                training_run.run_training(config, run)
        finally:
            for name, function in originals.items():
                setattr(InProcessTransport, name, function)
            Board.__init__ = board_init  # type: ignore[method-assign]
    # marks: the loop's start, then after each update; the last update also evaluates
    spans = list(itertools.pairwise(marks))[: TRAIN_UPDATES - 1]
    count = len(spans)
    return {
        "sent": sum(b[1].sent - a[1].sent for a, b in spans) / count,
        "received": sum(b[1].received - a[1].received for a, b in spans) / count,
        "round_trips": sum(b[1].round_trips - a[1].round_trips for a, b in spans) / count,
        "lower_bound_bytes": sum(b[2] - a[2] for a, b in spans) / count / 8,
        "in_process_s": sum(b[0] - a[0] for a, b in spans) / count,
        "updates_averaged": count,
    }


def _paced(rate: float, compact: bool, names: list[str]) -> dict[str, float]:
    """Wall time of board operations on an emulator paced to ``rate`` bytes per second."""
    results: dict[str, float] = {}
    # after: the host knows the link's speed and bounds each command's time; before: as the host was
    with (
        emulator_process("--tcp", "127.0.0.1:0", "--bytes-per-second", str(rate)) as resource,
        open_board(resource, timeout=LINK_TIMEOUT + 60, compact=compact, link_rate=rate if compact else None) as b,
    ):
        operations = _operations(b, np.random.default_rng(SEED))
        for name in names:
            results[name] = timed(operations[name])
            print(f"    paced {name}: {results[name]:.2f} s", flush=True)
    return results


def slow_links(paced_budget_s: float, quick: bool) -> Json:
    """Before and after, at each link speed: bytes, lower bound, wall time (measured or modelled)."""
    resource = f"emulator://?preset={PRESET}&seed={SEED}"
    counted: dict[str, dict[str, Json]] = {}
    for label, compact in ENCODINGS.items():
        print(f"counting {label} in process", flush=True)
        counted[label] = _counted(resource, compact)
        for model in () if quick else tuple(TRAIN_MODELS):
            counted[label][f"{model} update"] = _training_update(model, compact)
        for name, figures in counted[label].items():
            moved = figures["sent"] + figures["received"]
            print(f"  {name:22s} {moved:>12,.0f} B in {figures['round_trips']:>7,.0f} commands "
                  f"({moved / figures['lower_bound_bytes']:.2f}x the lower bound "
                  f"{figures['lower_bound_bytes']:,.0f} B); {figures['in_process_s']:.2f} s in process", flush=True)
    table: dict[str, Json] = {}
    for rate_label, rate in LINK_RATES.items():
        table[rate_label] = {}
        for label, compact in ENCODINGS.items():
            rows: Json = {}
            modelled = {name: (f["sent"] + f["received"]) / rate + f["in_process_s"]
                        for name, f in counted[label].items()}  # fmt: skip
            # Measure on a paced link what takes seconds; model what would take minutes.
            names = [n for n in ("map 128x64", "vmm 1000 vectors", "write-verify 128x64")
                     if modelled[n] <= paced_budget_s]  # fmt: skip
            print(f"{rate_label}, {label}: pacing {names or 'nothing'}", flush=True)
            measured = _paced(rate, compact, names) if names else {}
            for name, figures in counted[label].items():
                moved = figures["sent"] + figures["received"]
                rows[name] = {
                    "bytes": moved,
                    "round_trips": figures["round_trips"],
                    "lower_bound_bytes": figures["lower_bound_bytes"],
                    "over_lower_bound": moved / figures["lower_bound_bytes"],
                    "lower_bound_s": figures["lower_bound_bytes"] / rate,
                    "modelled_s": modelled[name],
                    "measured_s": measured.get(name),
                }
            table[rate_label][label] = rows
    return {"link_rates_bytes_per_s": LINK_RATES, "counted": counted, "by_rate": table,
            "write_verify": {"window_S": WV_WINDOW, "tolerance_S": WV_TOLERANCE},
            "training": {"updates_run": TRAIN_UPDATES, "models": TRAIN_MODELS}}  # fmt: skip


# ----------------------------------------------------------------------------- machine


def machine_info() -> Json:
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), model)
    except OSError:
        pass
    packages: dict[str, str | None] = {}
    for package in ("numpy", "PyVISA", "PyVISA-py", "pyserial"):
        try:
            packages[package] = version(package)
        except PackageNotFoundError:
            packages[package] = None
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "packages": packages,
    }


# ----------------------------------------------------------------------------- main


TRANSPORTS = ("pyvisa-tcp", "pyvisa-pty", "pyserial-pty", "in-process")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: fewer repeats, cell-by-cell map only in process"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        metavar="N",
        help="map reads and VMM batches timed per transport (default 7; 1 with --quick)",
    )
    parser.add_argument(
        "--cell-reads", type=int, metavar="N", help="one-cell reads timed per transport (default 500; 100 with --quick)"
    )
    parser.add_argument(
        "--part", choices=("transports", "slow"), action="append",
        help="measure only this part; repeatable (default: both)",
    )
    parser.add_argument(
        "--paced-budget", type=float, default=20.0, metavar="S",
        help="on slow links, measure on a paced emulator each operation whose modelled time is at most S "
        "seconds, model the rest (default 20)",
    )
    parser.add_argument(
        "--transport",
        choices=TRANSPORTS,
        action="append",
        help="measure only this transport; repeatable (default: all)",
    )
    args = parser.parse_args(argv)
    for option in ("repeats", "cell_reads"):
        value = getattr(args, option)
        if value is not None and value < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings(
        cell_reads=args.cell_reads or (100 if args.quick else 500),
        repeats=args.repeats or (1 if args.quick else 7),
        per_cell_map_everywhere=not args.quick,
    )
    chosen = args.transport or list(TRANSPORTS)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    started = time.perf_counter()
    machine = machine_info()
    print(
        f"link benchmark: Python {machine['python']} on {machine['cpu_model']} ({machine['cpu_count']} CPUs); "
        f"{settings.cell_reads} cell reads, {settings.repeats} map/VMM repeats",
        flush=True,
    )

    parts = args.part or ["transports", "slow"]
    results: Json = {}
    slow = slow_links(args.paced_budget, args.quick) if "slow" in parts else None
    if "transports" not in parts:
        chosen = []
    with ExitStack() as emulators:
        resources: dict[str, str] = {"in-process": f"emulator://?preset={PRESET}&seed={SEED}"}
        if "pyvisa-tcp" in chosen:
            resources["pyvisa-tcp"] = emulators.enter_context(emulator_process("--tcp", "127.0.0.1:0"))
        if {"pyvisa-pty", "pyserial-pty"} & set(chosen):
            asrl = emulators.enter_context(emulator_process("--pty"))  # ASRL/dev/pts/N::INSTR
            resources["pyvisa-pty"] = asrl
            resources["pyserial-pty"] = "serial://" + asrl.removeprefix("ASRL").removesuffix("::INSTR")
        for name in TRANSPORTS:
            if name in chosen:
                per_cell = settings.per_cell_map_everywhere or name == "in-process"
                results[name] = measure_transport(name, resources[name], settings, per_cell)

    payload = map_payload(resources["in-process"]) if "transports" in parts else None
    elapsed = time.perf_counter() - started
    print(f"done in {elapsed:.1f} s", flush=True)
    summary = {
        "benchmark": "link",
        "machine": machine,
        "settings": {
            **asdict(settings),
            "preset": PRESET,
            "seed": SEED,
            "vmm_vectors": VMM_VECTORS,
            "vmm_amplitude_V": VMM_AMPLITUDE,
            "v_read_V": V_READ,
        },
        "transports": results,
        "map_payload": payload,
        "slow_links": slow,
        "elapsed_s": elapsed,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; emulators stopped", file=sys.stderr)
        sys.exit(130)
