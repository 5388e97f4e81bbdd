"""CPU time of the run file's calls per training update, by call and dataset path.

Runs the whole stack as ``benchmarks/speed.py`` does (``run_training`` on the in-process emulator,
``umass-ta-hfo2``, seed 1) and times every ``RunFile.write``/``append``/``set_attrs``/``flush``, the
flush hook's wear map (``write_wear``) and h5py's ``File.flush``, each exclusive of the calls
nested in it (a flush's hooks are counted under their own names). Checkpoint slots ``state/a``
and ``state/b`` are merged as ``state/*``. Only the training loop's updates are counted; the
first updates create the checkpoint datasets, so a short run shows more per update than a long one
(``first_updates_ms`` gives the run-file time of each of the first three).

    python benchmarks/run_file_calls.py                      # MLP, 60 updates
    python benchmarks/run_file_calls.py --model cnn --updates 20

Prints a table, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import h5py
import speed

import hil.link_record as link_record
from hil.storage import RunFile

clock = time.process_time


class Calls:
    """Exclusive CPU seconds and call counts by key, counted only while ``active``."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.active = False
        self._stack: list[list[Any]] = []  # [key, start, time in nested calls]

    def wrap(self, owner: Any, method: str, key: Callable[..., str]) -> None:
        original = getattr(owner, method)

        def timed(*args: Any, **kwargs: Any) -> Any:
            self._stack.append([key(*args, **kwargs), clock(), 0.0])
            try:
                return original(*args, **kwargs)
            finally:
                name, start, nested = self._stack.pop()
                total = clock() - start
                if self.active:
                    self.spent[name] += total - nested
                    self.calls[name] += 1
                if self._stack:
                    self._stack[-1][2] += total

        setattr(owner, method, timed)


def slots(name: str) -> str:
    return re.sub(r"state/[ab]\b", "state/*", name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mlp", choices=list(speed.MODELS))
    parser.add_argument("--updates", type=int, default=60)
    args = parser.parse_args(argv)
    speed.retain_freed_memory()
    speed.Clocks.clock = clock
    calls = Calls()
    calls.wrap(RunFile, "write", lambda self, name, *a, **k: f"write {slots(name)}")
    calls.wrap(RunFile, "append", lambda self, name, *a, **k: f"append {slots(name)}")
    calls.wrap(RunFile, "set_attrs", lambda self, name, *a, **k: f"set_attrs {slots(name) or '/'}")
    calls.wrap(RunFile, "flush", lambda self: "flush (hooks' own code)")
    calls.wrap(h5py.File, "flush", lambda self: "h5py File.flush")
    calls.wrap(link_record, "write_wear", lambda *a, **k: "write_wear (stacking the counts)")
    ticks: list[tuple[dict[str, float], dict[str, int]]] = []  # totals at the loop's start and after each update

    class Counting(speed.TickingRunFile):
        def progress(self, advance: int = 0, total: int | None = None, **status: Any) -> None:
            if total is not None:  # the training loop's bar: count from here
                calls.active = True
                calls.spent.clear()
                calls.calls.clear()
                ticks[:] = [({}, {})]
            elif advance == 1 and calls.active:
                ticks.append((dict(calls.spent), dict(calls.calls)))
            super().progress(advance, total, **status)

    speed.TickingRunFile = Counting  # type: ignore[misc]
    load_before = os.getloadavg()
    resource = f"emulator://?preset={speed.PRESET}&seed=1"
    with tempfile.TemporaryDirectory() as folder:
        timing = speed.run_stack(args.model, args.updates, resource, direct=False, folder=Path(folder))
    # the mean over the updates but the last (its final evaluation and map), as speed.py takes it
    counted = len(ticks) - 2
    spent, made = ticks[-2]
    per_update = {key: seconds / counted for key, seconds in spent.items()}
    per_call = {key: made[key] / counted for key in spent}
    totals = [sum(t[0].values()) for t in ticks]
    steps = [b - a for a, b in itertools.pairwise(totals)]
    whole = timing["total"]
    recorder = timing.get("recorder", 0.0)
    rows = sorted(per_update.items(), key=lambda kv: -kv[1])
    print(f"{args.model}: {1e3 * whole:.2f} ms of CPU per update, run file {1e3 * recorder:.3f} ms "
          f"({100 * recorder / whole:.1f} %), {counted} updates")  # fmt: skip
    print("| call | ms per update | calls per update |")
    print("|---|---:|---:|")
    for key, seconds in rows:
        print(f"| {key} | {1e3 * seconds:.3f} | {per_call[key]:.1f} |")
    result = {
        "model": args.model,
        "updates": args.updates,
        "whole_stack_ms": round(1e3 * whole, 3),
        "run_file_ms": round(1e3 * recorder, 3),
        "run_file_share": round(recorder / whole, 4),
        "updates_counted": counted,
        "by_call_ms": {key: round(1e3 * seconds, 4) for key, seconds in rows},
        "calls_per_update": {key: round(per_call[key], 2) for key, _ in rows},
        "first_updates_ms": [round(1e3 * step, 3) for step in steps[:3]],
        "steady_ms": round(1e3 * sum(steps[2:-1]) / max(1, len(steps) - 3), 3),
        "clock": "cpu",
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
