"""benchmarks/twin.py's ablations: the twin file with one figure (or its cell map) taken from the chip's truth."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

import numpy as np
import pytest
import tomli_w

from tests.twin.twin_benchmark import twin_benchmark


def write_twin(folder: Path) -> tuple[Path, Path]:
    shape = (4, 3)
    none = np.zeros(shape, bool)
    fitted = {"stuck_low": none, "stuck_high": none, "unformed": none,
              "set_slope": np.full(shape, 90e-6), "set_intercept": np.full(shape, 110e-6),
              "g_stuck": np.full(shape, np.nan)}  # fmt: skip
    true = {**fitted, "stuck_high": np.eye(4, 3, dtype=bool), "set_slope": np.full(shape, 98e-6),
            "g_stuck": np.where(np.eye(4, 3, dtype=bool), 1e-3, np.nan)}  # fmt: skip
    np.savez(folder / "chip.cells.npz", **fitted)  # type: ignore[arg-type]
    np.savez(folder / "chip.true-cells.npz", **true)  # type: ignore[arg-type]
    document = {"preset": "umass-ta-hfo2", "parameters": {"set_slope": 96e-6, "write_noise": 15.7e-6,
                                                          "cell_map": "chip.cells.npz"}}  # fmt: skip
    (folder / "chip.toml").write_text(tomli_w.dumps(document), encoding="utf-8")
    return folder / "chip.toml", folder / "chip.true-cells.npz"


def test_an_ablation_replaces_one_thing_and_keeps_the_rest(tmp_path: Path) -> None:
    bench = twin_benchmark()
    twin, true_map = write_twin(tmp_path)
    truth = {"set_slope": 98e-6, "write_noise": 16e-6}

    slope = tomllib.loads(bench.ablated_twin(twin, "set_slope", truth, true_map).read_text())["parameters"]
    assert slope == {"set_slope": 98e-6, "write_noise": 15.7e-6, "cell_map": "chip.cells.npz"}

    cells = tomllib.loads(bench.ablated_twin(twin, "cells", truth, true_map).read_text())["parameters"]
    assert cells == {"set_slope": 96e-6, "write_noise": 15.7e-6, "cell_map": "chip.true-cells.npz"}

    defects_file = bench.ablated_twin(twin, "defects", truth, true_map)
    defects = tomllib.loads(defects_file.read_text())["parameters"]
    assert defects["set_slope"] == 96e-6
    with np.load(defects_file.parent / defects["cell_map"]) as merged:
        assert merged["stuck_high"].tolist() == np.eye(4, 3, dtype=bool).tolist()  # the chip's defects
        assert np.all(merged["set_slope"] == 90e-6)  # the fitted lines

    with pytest.raises(ValueError, match="not a parameter the twin file fits"):
        bench.ablated_twin(twin, "read_noise", truth, true_map)


def test_kinds_are_the_known_ones_or_ablations() -> None:
    bench = twin_benchmark()
    assert bench.kind_argument("twin-true-write_noise") == "twin-true-write_noise"
    assert bench.RUN_LABEL.fullmatch("high-write-noise-twin-true-set_slope-12")["kind"] == "twin-true-set_slope"
    assert bench.RUN_LABEL.fullmatch("many-defects-twin-3")["kind"] == "twin"
    with pytest.raises(argparse.ArgumentTypeError):
        bench.kind_argument("chip")
