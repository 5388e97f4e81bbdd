"""One cell, in process: it completes, a rerun skips it, a failure is recorded, a stop interrupts it
with its board idle, and an interrupted cell on a board that outlives it resumes from its journal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import pytest

from hil.storage import read_run
from hil.sweep import cell as cell_module
from hil.sweep.campaign import expand, parse_campaign
from hil.sweep.cell import run_cell, run_path
from protocols.recording import completed_steps
from tests.conftest import EmulatorFactory

TINY_TRAINING: dict[str, Any] = {
    "kind": "train", "emulator": "emulator://?preset=ideal",
    "base": {"model": "mlp", "updates": 4, "batch_size": 10, "eval_every": 2, "calibrate": False,
             "optimizer": {"name": "sgd", "lr": 0.1},
             # 4 small steps pulse devices only under the rule's 0.015 V threshold (the MLP's own is 0.03 V)
             # and at 200 uS per unit weight (the MLP's own is 120 uS)
             "gate_coded": {"dvg_min": 0.015}, "g_unit": 200e-6},
}  # fmt: skip


class StopAfter:
    """A stop flag that turns on at its ``n``-th look."""

    def __init__(self, n: int) -> None:
        self.n, self.looks = n, 0

    def __call__(self) -> bool:
        self.looks += 1
        return self.looks >= self.n


def test_a_completed_cell_is_skipped_by_a_rerun(tmp_path: Path) -> None:
    cell = expand(parse_campaign(TINY_TRAINING))[0]
    row = run_cell(cell, tmp_path)
    assert row is not None and row["status"] == "completed", row
    assert 0 <= row["final_accuracy"] <= 1 and row["pulses"] > 0 and row["attempts"] == 1
    path = run_path(tmp_path, cell.key)
    assert read_run(path).root["status"] == "completed"
    stamp = path.stat().st_mtime_ns
    again = run_cell(cell, tmp_path)
    assert again is not None and again["status"] == "completed"
    assert again["final_accuracy"] == row["final_accuracy"] and again["pulses"] == row["pulses"]
    assert again["attempts"] == 1  # read back: the start it took (was 0 in a rerun's table)
    assert path.stat().st_mtime_ns == stamp  # not run again: the file was not touched
    assert len((tmp_path / "cells" / f"{cell.key}.attempts").read_text().splitlines()) == 1


def test_a_failing_cell_is_recorded_with_its_error(tmp_path: Path) -> None:
    campaign = parse_campaign({
        "kind": "sequence", "emulator": "emulator://?preset=ideal",
        "base": {"sequence": {"name": "too-hot", "targets": {"cells": [[0, 0]]},
                              "steps": [{"type": "pulse", "kind": "SET", "amplitude": 1.0, "v_gate": 1.0,
                                         "width": 1e-6}]}},
        "axes": {"sequence.steps.0.amplitude": [1.0, 50.0]},
    })  # fmt: skip
    good, hot = (run_cell(c, tmp_path) for c in expand(campaign))
    assert good is not None and good["status"] == "completed" and good["pulses"] == 1
    assert hot is not None and hot["status"] == "failed"
    assert "LimitError" in hot["error"] and "amplitude" in hot["error"] and "\n" not in hot["error"]
    assert hot["board_failure"] == ""  # the request's fault, not the board's
    assert read_run(hot["path"]).root["status"].startswith("failed: SequenceLimitError")


def test_a_stopped_cell_ends_interrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cell_module, "STOP_POLL", 0.0)
    cell = expand(parse_campaign(TINY_TRAINING))[0]
    row = run_cell(cell, tmp_path, should_stop=StopAfter(3))
    assert row is not None and row["status"] == "interrupted"
    assert read_run(run_path(tmp_path, cell.key)).root["status"] == "interrupted"
    assert run_cell(cell, tmp_path, should_stop=StopAfter(1)) is None  # stopped before it began: nothing run


def test_an_interrupted_cell_on_a_lasting_board_resumes_from_its_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emulator_process: EmulatorFactory
) -> None:
    monkeypatch.setattr(cell_module, "STOP_POLL", 0.0)
    board = emulator_process("tcp", seed=3, preset="ideal")  # a separate process: it outlives the run
    campaign = parse_campaign({"kind": "characterize", "pool": [board.resource],
                               "base": {"procedure": "pulse-response", "options": {"n_pulses": 10}}})  # fmt: skip
    cell = expand(campaign)[0]
    first = run_cell(cell, tmp_path, pool=[board.resource], should_stop=StopAfter(8))
    assert first is not None and first["status"] == "interrupted"
    path = run_path(tmp_path, cell.key)
    done_before = completed_steps(read_run(path).datasets["pulse_response/journal"])
    assert 0 < done_before < 21
    second = run_cell(cell, tmp_path, pool=[board.resource])
    assert second is not None and second["status"] == "completed" and second["resumed"], second
    with h5py.File(path, "r") as f:
        assert f.attrs["status"] == "completed" and f.attrs["resumed"] == 1
        assert completed_steps(f["data/pulse_response/journal"][()]) == 21
