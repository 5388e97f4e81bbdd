"""``hil sweep``: bad campaigns are one-line errors; ``hil sweep show`` summarizes and draws a table."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.cli import main
from hil.sweep.table import ResultsTable, save_meta


def test_a_bad_campaign_file_is_one_error_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    campaign = tmp_path / "bad.toml"
    campaign.write_text('kind = "train"\n[base]\nmodel = "mlp"\n[axes]\n"optimizer.lr" = [0.1, -2.0]\n')
    assert main(["sweep", str(campaign), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cell ") and "optimizer.lr: Input should be greater than 0" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()  # nothing started
    assert main(["sweep", "show", str(tmp_path / "nowhere")]) == 2
    assert "holds no campaign results" in capsys.readouterr().err


def test_show_summarizes_over_seeds_and_draws_each_axis_and_the_heatmap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = ResultsTable(tmp_path, ["update", "noise"])
    accuracies = {("gate-coded", 1e-6): [0.80, 0.90], ("gate-coded", 4e-6): [0.60, 0.70],
                  ("write-verify", 1e-6): [0.85, 0.95], ("write-verify", 4e-6): [0.75, 0.85]}  # fmt: skip
    for (update, noise), values in accuracies.items():
        for seed, accuracy in enumerate(values):
            table.add({"key": f"{update}{noise}{seed}", "update": update, "noise": noise, "seed": seed,
                       "status": "completed", "error": "", "final_accuracy": accuracy})  # fmt: skip
    table.add({"key": "broken", "update": "gate-coded", "noise": 4e-6, "seed": 2, "status": "failed",
               "error": "LinkLost: gone", "final_accuracy": float("nan")})  # fmt: skip
    table.save()
    save_meta(tmp_path, {"name": "demo", "kind": "train", "axes": ["update", "noise"], "cells": 9})
    assert main(["sweep", "show", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "9 cells finished; 8 completed, 1 failed" in out.replace("9 of 9", "9")
    assert "failed broken: LinkLost: gone" in out
    rows = [line.split() for line in out.splitlines()]
    summary = {tuple(row[:2]): row[2:] for row in rows if row and row[0] in ("gate-coded", "write-verify")}
    assert summary[("gate-coded", "4e-06")][0] == "0.65"  # mean over seeds; the failed cell left out
    assert summary[("gate-coded", "4e-06")][2] == "2" and summary[("write-verify", "1e-06")][0] == "0.9"
    figures = sorted(p.name for p in (tmp_path / "figures").glob("*.png"))
    assert figures == ["final_accuracy-update-x-noise.png", "final_accuracy-vs-noise.png",
                       "final_accuracy-vs-update.png"]  # fmt: skip
    assert all((tmp_path / "figures" / name).stat().st_size > 5000 for name in figures)
