"""Time per in-situ update: the whole stack against the physics alone and against bare numpy.

For the MLP (batch 50) and the CNN (batch 100) on ``umass-ta-hfo2``, in one process:

- **whole stack**: ``run_training`` on the in-process emulator (host network, array backend,
  update rule, ``Board`` with its safety checks, wire codec, firmware, physics, run-file journal
  and checkpoints), timed per update between the loop's progress ticks;
- **direct**: the same loop with the array backend's boards replaced by an adapter that calls the
  emulator's ``CrossbarArray`` directly (no ``Board``, codec or firmware);
- **bare**: the same gate-coded scheme written here in plain numpy (device pairs per layer with
  per-device slope and intercept, write noise, read noise on every product and read-back, stuck
  devices), with the same network code and optimizer but no wires, clock, drift, codec or files.

Also, from the whole-stack run: the share of the Board, codec and firmware (time inside the
``Board`` calls minus the array physics and the TIA/ADC electronics model inside them), of the
journal and checkpoints (time inside the
run file's calls), and of the wire-network solve; and the whole stack's time per update for the
MLP on arrays from 128 x 64 to 512 x 256 cells. Means over updates (a line solve does not happen on
every update, so a median would hide it); the last update (with the final evaluation) is left out.
Prints a table, then one JSON object as the last line.

    python benchmarks/speed.py              # about 3 minutes on an idle 2-core machine
    python benchmarks/speed.py --quick      # a smoke run
    python benchmarks/speed.py --models mlp --sizes 128x64,256x128 --updates 20
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import numpy.typing as npt

import hil.training.run as training_run
import mock_hardware.array_model as array_model
from drivers import Board, Region
from hil.allocator import retain_freed_memory
from hil.nn import Network, get_architecture
from hil.nn.backend import ExactBackend
from hil.optimizers import Optimizer, OptimizerConfig
from hil.storage import RunFile
from hil.training.config import TrainConfig
from hil.training.loop import ExactLearner, train
from hil.updates import GateCodedConfig, UpdateStats
from mock_hardware.array_model import CrossbarArray
from mock_hardware.array_model import PulseKind as ArrayPulseKind
from mock_hardware.device_params import DeviceParameters, preset
from mock_hardware.electronics import Electronics
from mock_hardware.physics import line_resistance
from protocols.recording import DiscardingRecorder

FloatArray = npt.NDArray[np.float64]
PRESET = "umass-ta-hfo2"
MODELS: dict[str, dict[str, Any]] = {
    "mlp": {"batch_size": 50, "optimizer": {"name": "sgd", "lr": 0.1}},
    "cnn": {"batch_size": 100, "optimizer": {"name": "rmsprop", "lr": 0.01}},
}
SIZES = ((128, 64), (256, 128), (512, 256))


# --- timing hooks ------------------------------------------------------------------------------


class Clocks:
    """Seconds spent inside groups of methods (outermost call only), read at every update tick."""

    clock: Callable[[], float] = time.perf_counter
    """wall time; ``--cpu-time`` sets ``time.process_time`` (the process's CPU: steadier on a loaded machine)"""

    def __init__(self) -> None:
        self.spent: dict[str, float] = defaultdict(float)
        self._depth: dict[str, int] = defaultdict(int)
        self.ticks: list[tuple[float, dict[str, float]]] = []

    def wrap(self, group: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._depth[group] += 1
            start = self.clock()
            try:
                return function(*args, **kwargs)
            finally:
                self._depth[group] -= 1
                if self._depth[group] == 0:
                    self.spent[group] += self.clock() - start

        return timed

    def tick(self) -> None:
        self.ticks.append((self.clock(), dict(self.spent)))

    def per_update(self) -> dict[str, float]:
        """Mean per update of the wall time and of each group (ticks: loop start, then each update)."""
        rows = []
        for (t0, before), (t1, after) in zip(self.ticks[:-2], self.ticks[1:-1], strict=True):  # drop the last
            row = {group: after.get(group, 0.0) - before.get(group, 0.0) for group in after}
            row["total"] = t1 - t0
            rows.append(row)
        groups = sorted({g for row in rows for g in row})
        return {g: float(np.mean([row.get(g, 0.0) for row in rows])) for g in groups}


@contextmanager
def patched(owner: Any, name: str, replacement: Any) -> Iterator[None]:
    original = getattr(owner, name)
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        setattr(owner, name, original)


@contextmanager
def instrumented(clocks: Clocks) -> Iterator[None]:
    """Time the Board calls, the physics, the line solve and the run file's calls."""
    hooks: list[tuple[Any, str, str]] = [(Board, m, "board") for m in ("vmm", "read_map", "apply_pulses")]
    hooks += [(CrossbarArray, m, "physics") for m in ("vmm", "vmm_bound", "read_conductance", "apply_pulses",
                                                      "column_currents")]
    if hasattr(line_resistance, "TransferSolver"):
        hooks += [(line_resistance.TransferSolver, "transfer", "line_solve")]
    else:  # before the TransferSolver existed (to measure older "before" figures)
        hooks += [(array_model, "effective_conductance", "line_solve")]
    # The TIA and ADC model (autoranging, quantization) is the board's electronics: physics the
    # firmware calls, timed apart so the codec and firmware's own share leaves it out.
    hooks += [(Electronics, m, "electronics") for m in ("measure_autoranged", "measure_autoranged_codes")]
    hooks += [(RunFile, m, "recorder") for m in ("write", "append", "set_attrs", "flush", "truncate")]
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in hooks]
    try:
        for owner, name, group in hooks:
            setattr(owner, name, clocks.wrap(group, getattr(owner, name)))
        yield
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


class TickingRunFile(RunFile):
    """A run file that ticks the clocks at the loop's start and after every update.

    The phases before the loop (gate calibration, write-verify of the initial weights) report
    their steps to the same ``progress``; a bar's ``total`` starts the ticks afresh, so only the
    training loop's bar (the last one) is timed."""

    clocks: Clocks

    def progress(self, advance: int = 0, total: int | None = None, **status: Any) -> None:
        if total is not None:
            self.clocks.ticks.clear()
            self.clocks.tick()
        elif advance == 1:
            self.clocks.tick()
        super().progress(advance, total, **status)


# --- the three variants ------------------------------------------------------------------------


class DirectBoard:
    """What the training loop asks of a board, answered by the emulator's physics directly."""

    def __init__(self, board: Board) -> None:
        transport: Any = board.link.transport
        self.array: CrossbarArray = transport._endpoint.firmware.array
        self.shape = board.shape

    def vmm(self, v_rows: FloatArray, region: Region, columns: Any = None, rows: Any = None,
            narrow: bool = False) -> FloatArray:  # fmt: skip
        volts = np.asarray(v_rows, dtype=np.float64)
        if rows is not None:  # the rows given, the others at 0 V
            volts = np.zeros((len(volts), region.nrows))
            volts[:, rows] = v_rows
        out = self.array.vmm(volts, region.row0, region.col0, region.ncols)
        return out[:, np.unique(columns)] if narrow and columns is not None else out

    def read_map(self, v_read: float = 0.2) -> FloatArray:
        return self.array.read_conductance(0, 0, self.shape[0], self.shape[1], v_read)

    def apply_pulses(self, kind: str, amplitude: Any, v_gate: Any, width: Any, mask: Any = None) -> int:
        amplitude, v_gate, width = (np.broadcast_to(np.asarray(a, dtype=np.float64), self.shape)
                                    for a in (amplitude, v_gate, width))  # fmt: skip
        mask = np.ones(self.shape, bool) if mask is None else np.asarray(mask, dtype=bool)
        return self.array.apply_pulses(ArrayPulseKind(str(kind)), 0, 0, amplitude, v_gate, width, mask)


def config_for(model: str, updates: int, resource: str) -> TrainConfig:
    return TrainConfig.model_validate(
        {"model": model, "updates": updates, "eval_every": 10**6, "boards": {"board0": resource}, **MODELS[model]}
    )


def run_stack(model: str, updates: int, resource: str, direct: bool, folder: Path) -> dict[str, float]:
    clocks = Clocks()
    real_train = train

    def direct_train(network: Any, learner: Any, *args: Any, **kwargs: Any) -> Any:
        backend = learner.array_backend
        backend.boards = {name: DirectBoard(board) for name, board in backend.boards.items()}
        return real_train(network, learner, *args, **kwargs)

    config = config_for(model, updates, resource)
    path = folder / f"{model}-{'direct' if direct else 'stack'}-{time.monotonic_ns()}.h5"
    run = TickingRunFile(path, procedure="train", config=config.model_dump(mode="json"), show_progress=False)
    run.clocks = clocks
    with instrumented(clocks), patched(training_run, "train", direct_train if direct else real_train), run:
        training_run.run_training(config, run)
    return clocks.per_update()


class BareArrays:
    """The gate-coded scheme on device pairs in plain numpy: a learner and its matmul backend."""

    def __init__(self, weights: dict[str, FloatArray], params: DeviceParameters, rule: GateCodedConfig, seed: int):
        self.rng = np.random.default_rng(seed)
        self.p, self.rule = params, rule
        self.g_unit = 100e-6
        self.state: dict[str, dict[str, FloatArray]] = {}
        for layer, w in weights.items():
            pair: dict[str, Any] = {}
            for sign, side in ((1, "plus"), (-1, "minus")):
                k = params.set_slope * (1 + params.set_slope_spread * self.rng.standard_normal(w.shape))
                c = params.set_intercept * (1 + 0.05 * self.rng.standard_normal(w.shape))
                roll = self.rng.random(w.shape)
                stuck = np.where(roll < params.stuck_low_fraction, params.g_min,
                                 np.where(roll < params.stuck_low_fraction + params.stuck_high_fraction,
                                          params.g_max * 1.5, np.nan))  # fmt: skip
                g_mid = rule.set_slope * (rule.v_gate_min + rule.v_gate_max) / 2 + rule.set_intercept
                target = g_mid + sign * w * self.g_unit / 2
                gate = np.clip((target - c) / k, rule.v_gate_min, rule.v_gate_max)
                pair |= {f"k_{side}": k, f"c_{side}": c, f"stuck_{side}": stuck, f"gate_{side}": gate,
                         f"applied_{side}": gate.copy()}  # fmt: skip
                pair[f"g_{side}"] = self._program(gate, k, c, stuck)
            self.state[layer] = pair
        self._read_back()

    def _program(self, gate: FloatArray, k: FloatArray, c: FloatArray, stuck: FloatArray) -> FloatArray:
        aimed = k * gate + c + self.p.write_noise * self.rng.standard_normal(gate.shape)
        g = np.clip(aimed, self.p.g_min, self.p.g_max)
        return np.where(np.isnan(stuck), g, stuck)

    def _read_back(self) -> None:
        self.read = {}
        for layer, s in self.state.items():
            noisy = [s[f"g_{side}"] * (1 + self.p.read_noise * self.rng.standard_normal(s[f"g_{side}"].shape))
                     for side in ("plus", "minus")]  # fmt: skip
            self.read[layer] = (noisy[0] - noisy[1]) / self.g_unit

    @property
    def backend(self) -> BareArrays:
        return self

    def matmul(self, layer: str, x: FloatArray) -> FloatArray:
        s = self.state[layer]
        g_plus, g_minus = s["g_plus"], s["g_minus"]
        ideal = x @ (g_plus - g_minus)
        spread = np.sqrt((x * x) @ (g_plus * g_plus + g_minus * g_minus)) * self.p.read_noise
        return np.asarray((ideal + spread * self.rng.standard_normal(ideal.shape)) / self.g_unit)

    def weights(self, layer: str) -> FloatArray:
        return self.read[layer]

    def apply(self, delta: dict[str, FloatArray]) -> UpdateStats:
        stats = UpdateStats()
        r = self.rule
        for layer, dw in delta.items():
            s = self.state[layer]
            for sign, side in ((1, "plus"), (-1, "minus")):
                gate = s[f"gate_{side}"] = np.clip(s[f"gate_{side}"] + sign * dw * self.g_unit / 2 / s[f"k_{side}"],
                                                   r.v_gate_min, r.v_gate_max)  # fmt: skip
                due = np.abs(gate - s[f"applied_{side}"]) > r.dvg_min
                programmed = self._program(gate, s[f"k_{side}"], s[f"c_{side}"], s[f"stuck_{side}"])
                s[f"g_{side}"] = np.where(due, programmed, s[f"g_{side}"])
                s[f"applied_{side}"] = np.where(due, gate, s[f"applied_{side}"])
                stats.pulses += int(due.sum())
        self._read_back()
        return stats

    def checkpoint(self, recorder: Any, slot: str) -> None:
        pass

    def snapshot(self, recorder: Any) -> None:
        pass


class TickingRecorder(DiscardingRecorder):
    """A recorder that stores nothing and ticks the clocks."""

    def __init__(self, clocks: Clocks) -> None:
        self.clocks = clocks

    def progress(self, advance: int = 0, total: int | None = None, **status: Any) -> None:
        if advance == 1 or total is not None:
            self.clocks.tick()


def run_bare(model: str, updates: int) -> dict[str, float]:
    config = config_for(model, updates, "unused")
    network = Network(get_architecture(model))
    data = training_run.load_data(config)
    weights = network.init_weights(np.random.default_rng(0), scale=1.0)
    learner = BareArrays(weights, preset(PRESET), config.gate_coded, seed=1)
    clocks = Clocks()
    train(network, learner, Optimizer(OptimizerConfig.model_validate(MODELS[model]["optimizer"])), data,
          updates=updates, batch_size=config.batch_size, eval_every=10**6, seed=0,
          recorder=TickingRecorder(clocks))  # fmt: skip
    return clocks.per_update()


def run_exact(model: str, updates: int) -> dict[str, float]:
    """The same loop with exact float weights (no devices at all): the host network's own cost."""
    config = config_for(model, updates, "unused")
    network = Network(get_architecture(model))
    data = training_run.load_data(config)
    weights = network.init_weights(np.random.default_rng(0), scale=1.0)
    clocks = Clocks()
    learner = ExactLearner(weights)
    assert isinstance(learner.backend, ExactBackend)
    train(network, learner, Optimizer(OptimizerConfig.model_validate(MODELS[model]["optimizer"])), data,
          updates=updates, batch_size=config.batch_size, eval_every=10**6, seed=0,
          recorder=TickingRecorder(clocks))  # fmt: skip
    return clocks.per_update()


# --- report ------------------------------------------------------------------------------------


def ms(seconds: float) -> float:
    return round(1e3 * seconds, 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=40, help="timed updates per variant (default 40)")
    parser.add_argument("--size-updates", type=int, default=6, help="timed updates per array size (default 6)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--sizes", default=",".join(f"{r}x{c}" for r, c in SIZES),
                        help="array sizes to scan, ROWSxCOLS,... ('' for none)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 updates, two sizes")
    parser.add_argument("--stack-only", action="store_true", help="time only the whole stack (before/after pairs)")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's malloc thresholds as they are (hil raises them)")  # fmt: skip
    parser.add_argument("--cpu-time", action="store_true",
                        help="CPU seconds of this process, not wall time (A/B pairs on a loaded machine)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.cpu_time:
        Clocks.clock = time.process_time
    if not args.default_malloc:
        retain_freed_memory()  # as the hil command does
    updates = 4 if args.quick else args.updates
    size_updates = 3 if args.quick else args.size_updates
    sizes = [tuple(int(n) for n in size.split("x")) for size in args.sizes.split(",") if size]
    sizes = sizes[:2] if args.quick else sizes
    load_before = os.getloadavg()
    started = time.perf_counter()
    resource = f"emulator://?preset={PRESET}&seed=1"
    results: dict[str, Any] = {"models": {}, "sizes": []}
    with tempfile.TemporaryDirectory() as folder:
        for model in args.models:
            stack = run_stack(model, updates + 1, resource, direct=False, folder=Path(folder))
            if args.stack_only:
                results["models"][model] = {"whole_stack_ms": ms(stack["total"]),
                                            "breakdown_ms": {k: ms(v) for k, v in stack.items()}}  # fmt: skip
                continue
            direct = run_stack(model, updates + 1, resource, direct=True, folder=Path(folder))
            no_wires = run_stack(model, updates + 1, resource + "&line_resistance=0", direct=False, folder=Path(folder))
            bare = run_bare(model, updates + 1)
            exact = run_exact(model, updates + 1)
            whole = stack["total"]
            # Board + codec + firmware: the Board calls minus the array physics and the electronics
            # model inside them (before session 7 the electronics were counted in this share; the
            # share as it was counted then is kept as ..._with_electronics)
            codec_firmware = stack.get("board", 0.0) - stack.get("physics", 0.0) - stack.get("electronics", 0.0)
            results["models"][model] = {
                "whole_stack_ms": ms(whole),
                "direct_physics_ms": ms(direct["total"]),
                "bare_numpy_ms": ms(bare["total"]),
                "exact_float_ms": ms(exact["total"]),
                "whole_stack_no_wires_ms": ms(no_wires["total"]),
                "whole_over_bare": round(whole / bare["total"], 2),
                "direct_over_bare": round(direct["total"] / bare["total"], 2),
                "no_wires_over_bare": round(no_wires["total"] / bare["total"], 2),
                "board_codec_firmware_share": round(codec_firmware / whole, 4),
                "board_codec_firmware_share_with_electronics": round(
                    (codec_firmware + stack.get("electronics", 0.0)) / whole, 4
                ),
                "board_codec_firmware_share_no_wires": round(
                    (no_wires.get("board", 0.0) - no_wires.get("physics", 0.0) - no_wires.get("electronics", 0.0))
                    / no_wires["total"], 4
                ),
                "electronics_share": round(stack.get("electronics", 0.0) / whole, 4),
                "journal_checkpoint_share": round(stack.get("recorder", 0.0) / whole, 4),
                "journal_checkpoint_share_no_wires": round(no_wires.get("recorder", 0.0) / no_wires["total"], 4),
                "line_solve_share": round(stack.get("line_solve", 0.0) / whole, 4),
                "physics_share": round(stack.get("physics", 0.0) / whole, 4),
                "breakdown_ms": {k: ms(v) for k, v in stack.items()},
            }
        if sizes:
            for rows, cols in sizes:
                sized = f"{resource}&rows={rows}&cols={cols}"
                timing = run_stack("mlp", size_updates + 1, sized, direct=False, folder=Path(folder))
                results["sizes"].append({"rows": rows, "cols": cols, "cells": rows * cols,
                                         "whole_stack_ms": ms(timing["total"]),
                                         "line_solve_ms": ms(timing.get("line_solve", 0.0))})  # fmt: skip
    for entry in results["sizes"]:
        base = results["sizes"][0]
        entry["time_ratio"] = round(entry["whole_stack_ms"] / base["whole_stack_ms"], 2)
        entry["cells_ratio"] = round(entry["cells"] / base["cells"], 2)
    results |= {
        "preset": PRESET,
        "updates_timed": updates,
        "clock": "cpu" if args.cpu_time else "wall",
        "seconds": round(time.perf_counter() - started, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"numpy {np.__version__}",
    }
    print("| model | whole stack | direct physics | bare numpy | exact float | whole/bare | codec+fw | files | line |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for model, r in results["models"].items():
        if args.stack_only:
            print(f"| {model} | {r['whole_stack_ms']} ms | | | | | | | |")
            continue
        print(f"| {model} | {r['whole_stack_ms']} ms | {r['direct_physics_ms']} ms | {r['bare_numpy_ms']} ms | "
              f"{r['exact_float_ms']} ms | {r['whole_over_bare']}x | {100 * r['board_codec_firmware_share']:.1f} % | "
              f"{100 * r['journal_checkpoint_share']:.1f} % | {100 * r['line_solve_share']:.1f} % |")  # fmt: skip
    for entry in results["sizes"]:
        print(f"{entry['rows']} x {entry['cols']}: {entry['whole_stack_ms']} ms per update "
              f"({entry['time_ratio']}x the time for {entry['cells_ratio']}x the cells)")  # fmt: skip
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
