"""CPU time of the demo CNN's three VMM shapes through the whole in-process stack.

``Board.vmm`` on the embedded emulator (``umass-ta-hfo2``, seed 1): host encoding, wire codec,
firmware, physics (wires on, the line solve done once before timing). Shapes as the demo's
placement makes them: conv1 6,400 x 72 inputs, 18 rows driven, 15 of 57 columns measured; conv2
6,400 x 128, 120 driven, 4 of 28; dense 100 x 128, all driven, 10 of 61. CPU time (not wall), so
a busy machine distorts it less. Prints a line per shape, then one JSON object.

    python benchmarks/vmm_stack.py            # about 10 s
    python benchmarks/vmm_stack.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import numpy.typing as npt

from drivers import Region, open_board

RESOURCE = "emulator://?preset=umass-ta-hfo2&seed=1"


def drive(rng: np.random.Generator, nvec: int, nrows: int, driven: int, density: float) -> npt.NDArray[np.float32]:
    """Pairs of rows at +v and -v, ``density`` of the inputs non-zero, each vector scaled to 0.2 V."""
    out = np.zeros((nvec, nrows), np.float32)
    rows = np.sort(rng.choice(nrows, driven, replace=False))
    half = driven // 2
    x = rng.uniform(0, 1, (nvec, half)) * (rng.uniform(0, 1, (nvec, half)) < density)
    x = x / np.maximum(x.max(axis=1, keepdims=True), 1e-9) * 0.2
    out[:, rows[0::2][:half]] = x
    out[:, rows[1::2][:half]] = -x
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="VMMs timed per convolution shape (dense: 5x)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    cases = {
        "conv1": (drive(rng, 6400, 72, 18, 0.26), Region(0, 0, 72, 57), np.arange(0, 57, 4)[:15]),
        "conv2": (drive(rng, 6400, 128, 120, 0.4), Region(0, 0, 128, 28), np.array([0, 9, 18, 27])),
        "dense": (drive(rng, 100, 128, 128, 0.97), Region(0, 0, 128, 61), np.arange(0, 61, 6)[:10]),
    }
    result: dict[str, float] = {}
    with open_board(RESOURCE) as board:
        for v_rows, region, columns in cases.values():
            board.vmm(v_rows, region, columns=columns)  # the line solve, scratch space
        for name, (v_rows, region, columns) in cases.items():
            repeats = args.repeats * (5 if name == "dense" else 1)
            start = time.process_time()
            for _ in range(repeats):
                board.vmm(v_rows, region, columns=columns)
            result[f"{name}_cpu_ms"] = round((time.process_time() - start) / repeats * 1e3, 2)
            print(f"{name}: {result[f'{name}_cpu_ms']} ms of CPU per VMM")
    print(json.dumps({**result, "load_average": list(os.getloadavg()), "repeats": args.repeats}))


if __name__ == "__main__":
    main()
