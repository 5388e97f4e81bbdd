"""Two runs that differ only in their evaluation schedule train identically on the emulator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hil.array_backend import ArrayBackend
from hil.training import run as training_run
from tests.hil.test_training import saved, tiny_config, train_into

# Drift off: with drift on, an evaluation's reads take time on the array's clock, and the cells
# age by it (physics, the same on a chip); everything random is per source and per read.
NO_DRIFT = "emulator://?preset=umass-ta-hfo2&seed=1&rows=32&cols=10&drift_mean=0&drift_spread=0"
UPDATES = 28  # one epoch of the digits set at batch 50: the run's one conductance snapshot


def run_with(path: Path, eval_every: int) -> dict[str, np.ndarray]:
    data = train_into(path, tiny_config(boards={"board0": NO_DRIFT}, updates=UPDATES, eval_every=eval_every))
    return {
        "conductance": np.asarray(data.datasets["snapshots/board0"][-1]),
        "gates": saved(data, "devices/board0/v_gate_target"),
        "loss": np.asarray(data.datasets["train/journal"][:, 2]),
        "evaluations": np.asarray(data.datasets["train/eval"]),
    }


def test_runs_differing_only_in_eval_every_reach_the_same_conductances(tmp_path: Path) -> None:
    often = run_with(tmp_path / "often.h5", eval_every=3)
    once = run_with(tmp_path / "once.h5", eval_every=1000)
    assert len(often["evaluations"]) == 10 and len(once["evaluations"]) == 1  # they did differ
    for name in ("conductance", "gates", "loss"):
        np.testing.assert_array_equal(often[name], once[name], err_msg=name)
    np.testing.assert_array_equal(often["evaluations"][-1], once["evaluations"][-1])


def test_an_evaluation_leaves_the_column_gains_as_it_found_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[tuple[str, int], np.ndarray]] = []
    original = training_run.evaluate

    def spying_evaluate(network, backend, x, y, **options):  # type: ignore[no-untyped-def]
        assert isinstance(backend, ArrayBackend)
        before = {key: gain.copy() for key, gain in backend.gains.items()}
        result = original(network, backend, x, y, **options)  # options: the phase's progress
        seen.append(before)
        assert backend.gains.keys() == before.keys()
        for key, gain in before.items():
            np.testing.assert_array_equal(backend.gains[key], gain)
        return result

    monkeypatch.setattr(training_run, "evaluate", spying_evaluate)
    train_into(tmp_path / "run.h5", tiny_config(boards={"board0": NO_DRIFT}, updates=4, eval_every=1000))
    assert seen  # the check ran (the evaluation after programming the weights)
