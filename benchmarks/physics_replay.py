"""The array physics of a training run alone: record every call into the emulator's array, replay it.

``record`` runs ``benchmarks/speed.py``'s whole stack (``run_training`` on the in-process
emulator, ``umass-ta-hfo2``, seed 1) and keeps every call the firmware makes into its
``CrossbarArray`` (arguments and the array's construction), marking the calls of the timed
updates. ``replay`` makes fresh arrays, makes the same calls in the same order and reports the CPU
time of each method over the updates (the wire solve apart), best of ``--rounds``; with
``--digests FILE`` it writes a SHA-256 of every output, with ``--compare FILE`` it checks them: a
change to the physics that should not change its numbers is proven bit for bit, and timed without
the host, codec and firmware around it.

    .venv/bin/python benchmarks/physics_replay.py record --model cnn --updates 20 --out /tmp/cnn.pkl
    PYTHONPATH=<main> .venv/bin/python benchmarks/physics_replay.py replay /tmp/cnn.pkl --digests /tmp/main.json
    .venv/bin/python benchmarks/physics_replay.py replay /tmp/cnn.pkl --compare /tmp/main.json

A recording is a pickle (CNN: about 8 MB an update): read only recordings this script made.
The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed  # the whole stack as speed.py runs it

import hil.training.run as training_run
import mock_hardware.array_model as array_model
from hil.allocator import retain_freed_memory
from mock_hardware.physics import line_resistance

METHODS = ("vmm", "vmm_bound", "read_conductance", "apply_pulses", "advance_time", "wait", "column_currents")


def _copy(value: Any) -> Any:
    return value.copy() if isinstance(value, np.ndarray) else value


def record(model: str, updates: int, out: Path) -> dict[str, Any]:
    """Run the whole stack and keep every array call; the calls of the timed updates are marked."""
    log: dict[str, Any] = {"model": model, "arrays": [], "calls": [], "window": [0, 0]}
    original_init = array_model.CrossbarArray.__init__
    originals = {name: getattr(array_model.CrossbarArray, name) for name in METHODS}

    def init(self: Any, params: Any, seed: int = 0, noise_seed: int | None = None) -> None:
        self._replay_index = len(log["arrays"])
        log["arrays"].append((params, seed, noise_seed))
        original_init(self, params, seed, noise_seed)

    def wrapped(name: str) -> Any:
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            kept = [_copy(a) for a in args], {k: _copy(v) for k, v in kwargs.items()}
            log["calls"].append((self._replay_index, name, *kept))
            return originals[name](self, *args, **kwargs)

        return call

    class Marking(speed.TickingRunFile):
        """Marks the first call of the loop's first update and the first after its last timed one."""

        def progress(self, advance: int = 0, total: int | None = None, **status: Any) -> None:
            if total is not None:
                log["window"] = [len(log["calls"]), len(log["calls"])]
                self.done = 0
            elif advance == 1:
                self.done += 1
                if self.done == updates:
                    log["window"][1] = len(log["calls"])
            super().progress(advance, total, **status)

    config = speed.config_for(model, updates + 1, f"emulator://?preset={speed.PRESET}&seed=1")
    array_model.CrossbarArray.__init__ = init  # type: ignore[method-assign]
    for name in METHODS:
        setattr(array_model.CrossbarArray, name, wrapped(name))
    try:
        with tempfile.TemporaryDirectory() as folder:
            run = Marking(Path(folder) / "run.h5", procedure="train", config=config.model_dump(mode="json"),
                          show_progress=False)  # fmt: skip
            run.clocks = speed.Clocks()
            with run:
                training_run.run_training(config, run)
    finally:
        array_model.CrossbarArray.__init__ = original_init  # type: ignore[method-assign]
        for name, method in originals.items():
            setattr(array_model.CrossbarArray, name, method)
    log["calls"] = log["calls"][: log["window"][1]]  # nothing after the last timed update
    with open(out, "wb") as file:
        pickle.dump(log, file, protocol=pickle.HIGHEST_PROTOCOL)
    return {"recorded": str(out), "calls": len(log["calls"]), "window": log["window"], "updates": updates}


def _digest(value: Any) -> str:
    if isinstance(value, np.ndarray):
        raw = str(value.dtype).encode() + str(value.shape).encode() + np.ascontiguousarray(value).tobytes()
    else:
        raw = repr(value).encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def replay(path: Path, rounds: int) -> tuple[dict[str, float], list[str], int]:
    """CPU ms per method over the marked window (best of ``rounds``), and every output's digest."""
    with open(path, "rb") as file:
        log = pickle.load(file)  # a recording this script wrote
    start, stop = log["window"]
    solve_seconds = [0.0]
    original_transfer = line_resistance.TransferSolver.transfer

    def timed_transfer(self: Any, *args: Any, **kwargs: Any) -> Any:
        began = time.process_time()
        try:
            return original_transfer(self, *args, **kwargs)
        finally:
            solve_seconds[0] += time.process_time() - began

    line_resistance.TransferSolver.transfer = timed_transfer  # type: ignore[method-assign]
    best: dict[str, float] = defaultdict(lambda: float("inf"))
    digests: list[str] = []
    try:
        for _ in range(rounds):
            arrays = [array_model.CrossbarArray(params, seed, noise_seed) for params, seed, noise_seed in log["arrays"]]
            spent: dict[str, float] = defaultdict(float)
            digests = []
            for index, (which, name, args, kwargs) in enumerate(log["calls"]):
                method = getattr(arrays[which], name)
                args = [_copy(a) for a in args]
                solved = solve_seconds[0]
                began = time.process_time()
                result = method(*args, **kwargs)
                seconds = time.process_time() - began
                if start <= index < stop:
                    spent[name] += seconds
                    spent["line solve"] += solve_seconds[0] - solved
                digests.append(_digest(result))
            spent["total"] = sum(v for k, v in spent.items() if k != "line solve")
            spent["total without the line solve"] = spent["total"] - spent["line solve"]
            for key, seconds in spent.items():
                best[key] = min(best[key], seconds)
    finally:
        line_resistance.TransferSolver.transfer = original_transfer  # type: ignore[method-assign]
    return {key: 1e3 * seconds for key, seconds in best.items()}, digests, stop - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="run the whole stack and keep its array calls")
    rec.add_argument("--model", choices=list(speed.MODELS), default="cnn")
    rec.add_argument("--updates", type=int, default=20, help="timed updates (default 20)")
    rec.add_argument("--out", type=Path, required=True)
    rep = sub.add_parser("replay", help="replay a recording on fresh arrays")
    rep.add_argument("recording", type=Path)
    rep.add_argument("--rounds", type=int, default=3, help="replays; the best time of each method (default 3)")
    rep.add_argument("--digests", type=Path, help="write every output's digest here")
    rep.add_argument("--compare", type=Path, help="check every output's digest against this file")
    args = parser.parse_args(argv)
    retain_freed_memory()  # as the hil command does
    if args.command == "record":
        print(json.dumps(record(args.model, args.updates, args.out)))
        return 0
    ms, digests, calls = replay(args.recording, args.rounds)
    result: dict[str, Any] = {"cpu_ms_over_the_updates": {k: round(v, 2) for k, v in sorted(ms.items())},
                              "calls_timed": calls, "outputs": len(digests)}  # fmt: skip
    for key, value in sorted(ms.items()):
        print(f"{key:32s} {value:9.2f} ms")
    if args.digests:
        args.digests.write_text(json.dumps(digests))
    status = 0
    if args.compare:
        expected = json.loads(args.compare.read_text())
        differing = [i for i, (a, b) in enumerate(zip(digests, expected, strict=False)) if a != b]
        if len(expected) != len(digests):
            differing.append(min(len(expected), len(digests)))
        result["outputs_differing"] = len(differing)
        result["first_differing_call"] = differing[0] if differing else None
        print(f"outputs: {len(digests)}, differing from {args.compare}: {len(differing)}")
        status = 1 if differing else 0
    print(json.dumps(result))
    return status


if __name__ == "__main__":
    raise SystemExit(main())
