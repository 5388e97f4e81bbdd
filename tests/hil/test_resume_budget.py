"""A completed run is resumed only with a larger budget, given explicitly."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.cli import EXIT_ERROR, main
from hil.storage import read_run


def test_a_completed_run_is_resumed_only_with_a_larger_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "done.h5"
    base = ["train", "--model", "mlp", "--baseline", "--eval-every", "5"]
    assert main([*base, "--updates", "5", "--out", str(path)]) == 0
    before = read_run(path)
    capsys.readouterr()
    assert main(["train", "--resume", str(path)]) == EXIT_ERROR
    assert "5 of 5 updates are done" in capsys.readouterr().err
    assert read_run(path).root == before.root  # not counted as a resume, nothing overwritten
    assert main(["train", "--resume", str(path), "--updates", "10"]) == 0
    after = read_run(path)
    assert after.attrs["train"]["completed_updates"] == 10 and after.root["resumed"] == 1
    assert after.config["updates"] == 10
