"""What the figures tell a reader: the float baseline, the defective spike and its cells, the read-noise floor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from hil import run_layout as layout
from hil.plots import plot_gate_calibration, plot_read_disturb, plot_training, read_noise_floor


def _texts(figure: Figure) -> str:
    """Every title, legend entry and annotation of a figure, one per line."""
    texts = []
    for ax in figure.axes:
        texts.append(ax.get_title())
        texts += [t.get_text() for t in ax.texts]
        legend = ax.get_legend()
        if legend is not None:
            texts += [t.get_text() for t in legend.get_texts()]
    return "\n".join(texts)


def _training(pretrain: bool) -> tuple[dict[str, np.ndarray], dict[str, dict[str, float]]]:
    updates = np.arange(40, dtype=np.float64)
    journal = np.column_stack([updates, updates, np.linspace(2.3, 0.4, 40), np.linspace(0.1, 0.9, 40)])
    datasets = {layout.JOURNAL: journal, layout.EVALUATIONS: np.array([[20, 0.71], [40, 0.874]]),
                layout.final_conductance("board0"): np.full((4, 3), 50e-6)}  # fmt: skip
    if pretrain:
        datasets[layout.PRETRAIN_EVALUATIONS] = np.array([[300, 0.9125]])
    return datasets, {layout.PREPARE: {"accuracy_after_transfer": 0.655}}


def test_the_training_figure_shows_the_float_baseline_or_says_there_is_none() -> None:
    figure = Figure()
    plot_training(*_training(pretrain=True), figure)
    text = _texts(figure)
    assert "test accuracy: final 87.4 %; float 91.2 %" in text
    assert "float baseline: 91.2 %" in text
    assert "before training: 65.5 %" in text
    figure = Figure()
    plot_training(*_training(pretrain=False), figure)
    text = _texts(figure)
    assert "float baseline" not in text.replace("no float baseline", "")
    assert "no float baseline recorded" in text
    assert "board0, after the last update" in text  # no epoch ended: the final map instead of snapshots


def test_the_gate_calibration_figure_marks_the_defective_spike_and_names_its_cells() -> None:
    rows, cols, gates = 3, 4, np.linspace(0.6, 1.5, 4)
    k = np.full((rows, cols), 80e-6)
    k[1, 2] = k[2, 0] = 1e-8  # two cells that do not answer the gate
    c = np.full((rows, cols), -20e-6)
    g = k[None] * gates[:, None, None] + c[None]
    datasets = {"calibration/v_gate": gates, "calibration/g": g, "calibration/k": k, "calibration/c": c,
                "calibration/responsive": k > 1e-6}  # fmt: skip
    attrs = {"calibration": {"row0": 5, "col0": 2}}  # a region of the array: indices include its offset
    figure = Figure()
    plot_gate_calibration(datasets, attrs, figure)
    text = _texts(figure)
    assert "not responding: 2 cells,\n(6, 4), (7, 2)" in text and "responding: 10 cells" in text
    assert "defective spike\n(k = 0.01 uS/V)" in text
    assert "cell (6, 4), not responding" in text  # its curve beside the working ones
    datasets["calibration/responsive"] = np.ones((rows, cols), bool)  # nothing defective: nothing marked
    figure = Figure()
    plot_gate_calibration(datasets, attrs, figure)
    assert "defective spike" not in _texts(figure)


def test_the_read_disturb_figure_draws_the_read_noise_floor() -> None:
    blocks, cells, block = 6, 5, 16
    datasets = {"read_disturb/reads": np.arange(1, blocks + 1) * block,
                "read_disturb/g_mean": np.full((blocks, cells), 100e-6),
                "read_disturb/g_std": np.full((blocks, cells), 1e-6)}  # fmt: skip
    attrs = {"read_disturb": {"options": json.dumps({"record_every": block, "v_read": 0.2})}}
    expected = 2 * 1.0 * np.sqrt(2 / block)  # uS: 2 sigma of the difference of two means of 16 reads
    assert read_noise_floor(datasets, attrs) == pytest.approx(expected)
    figure = Figure()
    plot_read_disturb(datasets, attrs, figure)
    assert f"read-noise floor: +-{expected:.3g} uS" in _texts(figure)
    attrs = {"read_disturb": {"options": json.dumps({"record_every": 1})}}  # single reads: no floor to draw
    assert read_noise_floor(datasets, attrs) is None


def test_a_long_series_is_drawn_from_rows_that_line_up_and_read_block_by_block(tmp_path: Path) -> None:
    from hil.run_report import ThinnedDatasets, kept_rows
    from hil.storage import LazyDatasets, RunFile, read_run

    keep = kept_rows(100_000)
    assert len(keep) <= 20_000 and list(keep[:5_000]) == list(range(5_000)) and np.all(np.diff(keep) > 0)
    assert list(kept_rows(100_001)[: len(keep)]) == list(keep)  # a torn last row changes no kept row
    assert list(kept_rows(300)) == list(range(300))

    path = tmp_path / "long.h5"
    g = np.linspace(1e-6, 2e-4, 3000 * 4).reshape(3000, 4).astype(np.float32).astype(np.float64)
    with RunFile(path, procedure="endurance", config={}, show_progress=False) as run:
        for row in g:
            run.append("endurance/g_on", row)
    lazy = read_run(path, lazy=True).datasets
    assert isinstance(lazy, LazyDatasets)
    thinned = ThinnedDatasets(lazy, budget=400)
    drawn = thinned["endurance/g_on"]
    np.testing.assert_array_equal(drawn, g[kept_rows(3000, 400)])  # the very rows, widened back exactly
    assert drawn.dtype == np.float64 and thinned.thinned == {"endurance/g_on": 3000}
    assert "endurance/g_on" in thinned and "endurance/g_off" not in thinned
