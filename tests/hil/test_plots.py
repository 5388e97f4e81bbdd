"""Plots of every registered procedure, drawn from a MemoryRecorder's datasets and attributes alone."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from pydantic_core import PydanticUndefined

from drivers import Board, open_board
from hil.procedure_registry import REGISTRY
from hil.storage import RunFile, read_run
from protocols.recording import Attr, MemoryRecorder

RESOURCE = "emulator://?preset=umass-ta-hfo2&seed=3&rows=16&cols=8"

SMALL: dict[str, dict[str, Any]] = {
    "yield-map": {},
    "iv-sweep": {"cells": [(1, 1), (2, 3)], "cycles": 2},
    "gate-calibration": {"n_gates": 4},
    "pulse-response": {"n_pulses": 5},
    "endurance": {"max_cycles": 30, "read_every": 5},
    "retention": {"program": "set", "t_last": 100.0},
    "read-disturb": {"n_reads": 60, "record_every": 10},
    "forming": {},
    "write-noise": {"cycles": 3},
    "wire-resistance": {"reads": 2, "vectors": 4},
}


@pytest.fixture
def board() -> Iterator[Board]:
    with open_board(RESOURCE) as board:
        yield board


def _render(fig: Figure) -> None:
    """Draw to PNG bytes: catches errors that only appear at draw time."""
    fig.savefig(io.BytesIO(), format="png", dpi=40)


def _drawn_points(fig: Figure) -> int:
    """Finite data points in the figure's lines, images, bars and bands."""
    count = 0
    for ax in fig.axes:
        for line in ax.get_lines():
            count += int(np.isfinite(np.asarray(line.get_ydata(), dtype=float)).sum())
        for image in ax.get_images():
            assert isinstance(image, AxesImage)
            count += int(np.isfinite(np.asarray(image.get_array(), dtype=float)).sum())
        count += len(ax.patches)
        count += sum(1 for c in ax.collections if isinstance(c, PolyCollection))
    return count


def test_every_procedure_is_registered() -> None:
    assert set(SMALL) <= set(REGISTRY)
    for spec in REGISTRY.values():
        assert spec.summary
        assert spec.options.model_config.get("extra") == "forbid"


@pytest.mark.parametrize("name", sorted(SMALL))
def test_options_have_defaults_and_descriptions(name: str) -> None:
    # The CLI generates a --flag per field from its default and description.
    for field_name, field in REGISTRY[name].options.model_fields.items():
        assert field.default is not PydanticUndefined, field_name
        assert field.description, field_name
    REGISTRY[name].options()  # the defaults are valid together


@pytest.mark.parametrize("name", sorted(SMALL))
def test_plot_draws_a_full_run(board: Board, name: str) -> None:
    spec = REGISTRY[name]
    recorder = MemoryRecorder()
    spec.run(board, recorder, **SMALL[name])
    fig = Figure(figsize=(8, 6))
    spec.plot(recorder.datasets, recorder.attrs, fig)
    assert fig.axes
    assert _drawn_points(fig) > 10
    _render(fig)


GROUPS = {
    "yield-map": "yield", "iv-sweep": "iv", "gate-calibration": "calibration", "pulse-response": "pulse_response",
    "endurance": "endurance", "retention": "retention", "read-disturb": "read_disturb", "forming": "forming",
    "write-noise": "write_noise", "wire-resistance": "wire_resistance",
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SMALL))
def test_plot_redraws_from_a_run_file(board: Board, tmp_path: Path, name: str) -> None:
    # What `hil characterize` writes and `hil show` re-draws: the HDF5 file, not the recorder in memory.
    spec = REGISTRY[name]
    path = tmp_path / "run.h5"
    with RunFile(path, procedure=name, config={}, show_progress=False) as run:
        spec.run(board, run, **SMALL[name])
    saved = read_run(path)
    # The group's description survives the file (the plot reads options from it).
    assert saved.attrs[GROUPS[name]]["procedure"] == name
    assert "options" in saved.attrs[GROUPS[name]]
    fig = Figure(figsize=(8, 6))
    spec.plot(saved.datasets, saved.attrs, fig)
    assert _drawn_points(fig) > 10
    _render(fig)


class _StopAfter(MemoryRecorder):
    def __init__(self, calls: int) -> None:
        super().__init__()
        self.calls_left = calls

    def progress(self, advance: int = 0, total: int | None = None, **status: Attr) -> None:
        super().progress(advance, total, **status)
        self.calls_left -= 1
        if self.calls_left == 0:
            raise KeyboardInterrupt


@pytest.mark.parametrize("name", sorted(SMALL))
def test_plot_draws_an_interrupted_run(board: Board, name: str) -> None:
    spec = REGISTRY[name]
    recorder = _StopAfter(calls=2)
    with pytest.raises(KeyboardInterrupt):
        spec.run(board, recorder, **SMALL[name])
    fig = Figure()
    spec.plot(recorder.datasets, recorder.attrs, fig)
    assert fig.axes
    _render(fig)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_plot_of_a_run_without_data_says_so(name: str) -> None:
    fig = Figure()
    REGISTRY[name].plot({}, {}, fig)
    (ax,) = fig.axes
    assert "no " in ax.texts[0].get_text()
    _render(fig)


def test_yield_plot_of_a_read_only_run(board: Board) -> None:
    recorder = MemoryRecorder()
    REGISTRY["yield-map"].run(board, recorder, destructive=False)
    fig = Figure()
    REGISTRY["yield-map"].plot(recorder.datasets, recorder.attrs, fig)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("non-destructive" in t for t in texts)
    _render(fig)


def test_retention_plot_shows_the_fitted_slope(board: Board) -> None:
    recorder = MemoryRecorder()
    REGISTRY["retention"].run(board, recorder, program="set", t_last=1e3)
    fig = Figure()
    REGISTRY["retention"].plot(recorder.datasets, recorder.attrs, fig)
    labels = [str(line.get_label()) for ax in fig.axes for line in ax.get_lines()]
    assert any("per ln(t)" in label for label in labels)


@pytest.mark.parametrize("window_min", [None, 30e-6])
def test_endurance_plot_draws_the_window_it_stopped_at(board: Board, window_min: float | None) -> None:
    """The stop line is the user's ``window_min`` or, left automatic, the one the run derived from the chip."""
    recorder = MemoryRecorder()
    REGISTRY["endurance"].run(board, recorder, **SMALL["endurance"], window_min=window_min)
    used = recorder.attrs["endurance"]["window_min_used"] if window_min is None else window_min
    fig = Figure()
    REGISTRY["endurance"].plot(recorder.datasets, recorder.attrs, fig)
    stop = [line for ax in fig.axes for line in ax.get_lines() if line.get_label() == "stop below"]
    assert len(stop) == 1 and np.asarray(stop[0].get_ydata(), dtype=float)[0] == pytest.approx(used * 1e6)
