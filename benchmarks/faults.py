"""In-situ MLP training over the emulated TCP link, with link faults and without.

Runs of the same training (same chip seed, same samples), each against its own emulator
process over a real TCP socket:

- ``plain``: plain mode (no frames), no faults: the reference;
- ``framed``: framed mode (sequence numbers and checksums), no faults: the cost of the framing;
- ``faults``: framed mode with a fault plan: ``--drop`` of replies lost, ``--corrupt`` of replies
  damaged (one byte), and the link closed once mid-run.

For each: test accuracy, wall time, the driver's link counters, the pulses the host saw applied
against the board's own count (``SYST:PCNT?``; a difference would be a pulse applied twice or an
unconfirmed one), and whether the run file is whole. Prints a Markdown table, then one JSON
object as the last line.

    python benchmarks/faults.py                  # the paper's 1,600 updates (about 7 minutes on 2 cores)
    python benchmarks/faults.py --updates 200    # a shorter run
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from served import serve_tcp

from drivers import open_board
from hil.nn.defaults import model_defaults
from hil.run_layout import EVALUATIONS, JOURNAL
from hil.storage import RunFile, read_run
from hil.training.config import TrainConfig
from hil.training.run import run_training

PRESET = "umass-ta-hfo2"
MODEL = "mlp"  # Li 2018, trained with its defaults (hil/nn/defaults.py)
TIMEOUT = 1.0  # s: the longest command of this run takes a few ms (more on a loaded machine); a lost reply costs one


def start_emulator(seed: int, faults: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """``python -m mock_hardware serve --tcp`` on a free loopback port; the process and its resource."""
    return serve_tcp(PRESET, seed, *(f"--fault={name}={value}" for name, value in faults.items()))


def board_pulse_count(resource: str) -> int:
    """The board's own count of pulses applied since power-up."""
    with open_board(resource, timeout=TIMEOUT, framing=True) as board:  # checksummed: a damaged count is seen
        return int(board.query("SYST:PCNT?"))


def one_run(name: str, framing: bool, faults: dict[str, str], args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    process, resource = start_emulator(args.seed, faults)
    try:
        config = TrainConfig.model_validate({
            # optimizer, rate, batch and conductance per unit weight: the MLP's defaults (MODEL_DEFAULTS)
            "model": MODEL, "seed": args.seed, "updates": args.updates, "eval_every": max(1, args.updates // 4),
            "boards": {"board0": {"resource": resource, "timeout": TIMEOUT, "framing": framing}},
        })  # fmt: skip
        path = folder / f"{name}.h5"
        started = time.perf_counter()
        with RunFile(path, procedure="train", config=config.model_dump(mode="json"), show_progress=False) as run:
            result = run_training(config, run)
        seconds = time.perf_counter() - started
        board_pulses = board_pulse_count(resource)
    finally:
        process.stdin.close()  # type: ignore[union-attr]
        process.wait(timeout=10)
    saved = read_run(path)
    link = saved.attrs["link/board0"]
    journal = saved.datasets[JOURNAL]
    whole = (
        saved.root["status"] == "completed"
        and journal.shape[0] == args.updates
        and np.array_equal(journal[:, 0], np.arange(args.updates))
        and len(saved.datasets[EVALUATIONS]) == 4
    )
    return {
        "run": name, "framed": bool(link["framed"]), "faults": faults,
        "accuracy": result.final_test_accuracy, "seconds": seconds,
        "retries": int(link["retries"]), "reconnects": int(link["reconnects"]),
        "stale_replies": int(link["stale_replies"]), "applied_before_loss": int(link["applied_before_loss"]),
        "host_pulses": int(link["pulses_applied"]), "board_pulses": board_pulses,
        "pulses_applied_twice": board_pulses - int(link["pulses_applied"]),
        "run_file_whole": bool(whole),
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=model_defaults(MODEL).updates,
                        help="weight updates per run (default: the paper's, %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="the emulated chip and the training order")
    parser.add_argument("--drop", type=float, default=0.005, help="fraction of replies lost")
    parser.add_argument("--corrupt", type=float, default=0.005, help="fraction of replies damaged")
    parser.add_argument("--close-after", type=int, default=3000, help="the link closes once after this many commands")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each clean mode (the fastest counts)")
    args = parser.parse_args()
    fault_plan = {"drop_reply": str(args.drop), "corrupt_reply": str(args.corrupt),
                  "close_after": str(args.close_after), "close_times": "1", "seed": "7"}  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        # Plain and framed alternate, and the fastest of each counts: the machine is shared.
        clean = [one_run(f"{name}-{i}", framing, {}, args, Path(folder))
                 for i in range(args.repeats) for name, framing in (("plain", False), ("framed", True))]  # fmt: skip
        faulted = one_run("faults", True, fault_plan, args, Path(folder))
    plain = min((r for r in clean if not r["framed"]), key=lambda r: r["seconds"])
    framed = min((r for r in clean if r["framed"]), key=lambda r: r["seconds"])
    runs = [*clean, faulted]
    print("| run | accuracy | wall time | retries | reconnects | late replies dropped | pulses answered from "
          "the kept reply | pulses (host / board) | applied twice | run file whole |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        print(f"| {r['run']} | {100 * r['accuracy']:.2f} % | {r['seconds']:.1f} s | {r['retries']} | {r['reconnects']} "
              f"| {r['stale_replies']} | {r['applied_before_loss']} | {r['host_pulses']:,} / {r['board_pulses']:,} "
              f"| {r['pulses_applied_twice']} | {'yes' if r['run_file_whole'] else 'NO'} |")  # fmt: skip
    summary = {
        "benchmark": "faults", "updates": args.updates, "seed": args.seed, "fault_plan": fault_plan,
        "timeout_s": TIMEOUT, "machine": platform.platform(), "runs": runs,
        "accuracy_plain": plain["accuracy"], "accuracy_framed": framed["accuracy"],
        "accuracy_faults": faulted["accuracy"],
        "retries": faulted["retries"], "reconnects": faulted["reconnects"],
        "pulses_applied_twice": sum(r["pulses_applied_twice"] for r in runs),
        "data_lost": not all(r["run_file_whole"] for r in runs),
        "framing_overhead": framed["seconds"] / plain["seconds"] - 1,
        "faults_overhead": faulted["seconds"] / plain["seconds"] - 1,
    }  # fmt: skip
    print(json.dumps(summary))
    return 0 if summary["pulses_applied_twice"] == 0 and not summary["data_lost"] else 1


if __name__ == "__main__":
    sys.exit(main())
