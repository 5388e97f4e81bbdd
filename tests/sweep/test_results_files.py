"""`hil sweep show` on a campaign folder with a damaged or foreign file: one line naming the file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from hil.cli import EXIT_ERROR, main
from hil.sweep.table import META, PARQUET


def _show_error(folder: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["sweep", "show", str(folder)]) == EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unexpected" not in err
    return err


def test_a_damaged_table_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / PARQUET).write_bytes(b"junk")
    assert f"{tmp_path / PARQUET} is not a readable campaign table" in _show_error(tmp_path, capsys)


def test_another_programs_parquet_is_named_with_its_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pd.DataFrame({"x": [1, 2]}).to_parquet(tmp_path / PARQUET)
    err = _show_error(tmp_path, capsys)  # was: unexpected KeyError: 'status'
    assert f"{tmp_path / PARQUET} is not a campaign table: no key, status column (it has x)" in err


@pytest.mark.parametrize(("text", "message"), [("{broken", "is not a readable campaign description"),
                                               ("[1, 2]", "a JSON list, not an object")])  # fmt: skip
def test_a_damaged_description_is_named(
    text: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pd.DataFrame({"key": ["k"], "status": ["completed"], "final_accuracy": [0.5]}).to_parquet(tmp_path / PARQUET)
    (tmp_path / META).write_text(text)
    err = _show_error(tmp_path, capsys)  # was: the JSON error alone, no file named
    assert str(tmp_path / META) in err and message in err
