"""In-situ training end to end: run_training and ``hil train`` on emulated boards, bad input, resume.

The network is deliberately tiny (8x8 digits pooled to 4x4, one dense 16 -> 10 layer: 32 rows x 10
columns of devices) so a run of 80 updates takes well under a second in process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt
import pytest

from drivers import Board, PulseBatch
from hil.cli import EXIT_ERROR, main
from hil.config import ConfigError
from hil.datasets import load_dataset
from hil.nn import Network, load_network_spec
from hil.optimizers import Optimizer, OptimizerConfig
from hil.run_layout import EVALUATIONS, JOURNAL, pulse_counts
from hil.storage import RunData, RunFile, read_run
from hil.training.config import TrainConfig, load_train_config
from hil.training.loop import ExactLearner, Schedule, train
from hil.training.run import PROCEDURE, run_training
from protocols.recording import DiscardingRecorder
from tests.conftest import REPO_ROOT, EmulatorFactory

FloatArray = npt.NDArray[np.float64]
TINY_NETWORK: dict[str, Any] = {
    "input_shape": [8, 8],
    "n_classes": 10,
    "layers": [{"type": "maxpool", "size": 2}, {"type": "flatten"}, {"type": "dense", "out": 10}],
}
# One chip's realization decides how far this tiny network gets in 80 updates. With read noise
# drawn per read (issue 17) chip 1 came out unlucky (48 to 57 % after 80 updates at training
# seeds 0 to 3, against 66 to 69 % before), while chips 2 to 6 average 68.9 % (67.8 % before the
# change): chip 3 (66.9 %) is a typical one. (Chip 2 makes the write-verify rule ask for a
# negative target conductance, which the Board refuses: a bug of that rule, not of the chip.)
REALISTIC = "emulator://?preset=umass-ta-hfo2&seed=3&rows=32&cols=10"
EMULATOR_ARGS = ("--rows", "32", "--cols", "10")
CHANCE = 0.1
UPDATES, EVAL_EVERY, BATCH = 80, 20, 50
KILL_UPDATES = 600  # the kill -9 run: long enough that it is still running when killed
TINY_TOML = f"""
dataset = "digits"
updates = {UPDATES}
eval_every = {EVAL_EVERY}
batch_size = {BATCH}
calibration_gates = 3

[network]
input_shape = [8, 8]
n_classes = 10
layers = [{{type = "maxpool", size = 2}}, {{type = "flatten"}}, {{type = "dense", out = 10}}]

[optimizer]
name = "rmsprop"
lr = 0.05
"""


def saved(data: RunData, name: str) -> np.ndarray[Any, Any]:
    """A dataset of the run's last complete checkpoint (the slot its journal names)."""
    return np.asarray(data.datasets[f"{data.attrs['train']['state']}/{name}"])


def tiny_config(**fields: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "network": TINY_NETWORK, "dataset": "digits", "boards": {"board0": REALISTIC}, "updates": UPDATES,
        "eval_every": EVAL_EVERY, "batch_size": BATCH, "calibration_gates": 3,
        "optimizer": {"name": "rmsprop", "lr": 0.05},
    }  # fmt: skip
    return TrainConfig.model_validate(base | fields)


def new_run(path: Path, config: TrainConfig) -> RunFile:
    return RunFile(path, procedure=PROCEDURE, config=config.model_dump(mode="json"), show_progress=False)


def train_into(path: Path, config: TrainConfig) -> RunData:
    with new_run(path, config) as run:
        run_training(config, run)
    return read_run(path)


def resume(path: Path, updates: int | None = None) -> RunData:
    """What ``hil train --resume`` does, in process, optionally with a larger ``updates``."""
    previous = read_run(path)
    config = load_train_config("", previous.config | ({"updates": updates} if updates else {}))
    with RunFile.reopen(path, show_progress=False) as run:
        run_training(config, run, previous)
    return read_run(path)


def journal_updates(data: RunData) -> list[int]:
    return [int(u) for u in data.datasets[JOURNAL][:, 0]]


def eval_updates(data: RunData) -> list[int]:
    return [int(u) for u in data.datasets[EVALUATIONS][:, 0]]


# ---------------------------------------------------------------------------- in-situ training


@pytest.fixture(scope="module")
def insitu(tmp_path_factory: pytest.TempPathFactory) -> RunData:
    """One gate-coded run on the realistic preset (11 % defective cells, write noise, wires)."""
    return train_into(tmp_path_factory.mktemp("insitu") / "run.h5", tiny_config())


def test_in_situ_training_learns_well_above_chance(insitu: RunData) -> None:
    evaluations = insitu.datasets[EVALUATIONS]
    transfer = insitu.attrs["prepare"]["accuracy_after_transfer"]
    assert transfer < 2 * CHANCE  # random initial weights
    assert evaluations[-1, 1] > 5 * CHANCE
    assert evaluations[-1, 1] > evaluations[0, 1]
    assert evaluations[-1, 2] < evaluations[0, 2]  # test loss falls


def test_the_journal_has_one_row_per_update(insitu: RunData) -> None:
    journal = insitu.datasets[JOURNAL]
    assert journal.shape == (UPDATES, 7)
    assert journal_updates(insitu) == list(range(UPDATES))
    assert insitu.attrs[JOURNAL]["columns"].split(",")[:3] == ["update", "epoch", "loss"]
    schedule = Schedule(load_dataset("digits").n_train, BATCH, seed=0)
    assert [int(e) for e in journal[:, 1]] == [schedule.batch(u)[0] for u in range(UPDATES)]
    assert (journal[:, 4] > 0).all()  # every update pulsed some devices
    assert insitu.attrs["train"]["completed_updates"] == UPDATES
    assert insitu.root["status"] == "completed"


def test_evaluations_at_eval_every_and_snapshots_per_epoch(insitu: RunData) -> None:
    assert eval_updates(insitu) == [20, 40, 60, 80]
    per_epoch = Schedule(1438, BATCH, 0).batches_per_epoch  # digits: 1,438 training samples
    assert insitu.datasets["snapshots/board0"].shape == (UPDATES // per_epoch, 32, 10)
    snapshots = insitu.datasets["snapshots/board0"]
    assert not np.array_equal(snapshots[0], snapshots[-1])  # the conductances moved in between
    assert (snapshots > 0).all()


def test_the_pulse_map_counts_every_update_pulse_and_spares_defective_devices(insitu: RunData) -> None:
    pulses = insitu.datasets["pulses/board0"]
    assert pulses.shape == (32, 10)
    assert pulses.sum() == insitu.datasets[JOURNAL][:, 4].sum()
    defective = insitu.datasets["prepare/calibration/board0/stuck_low"].astype(bool)
    defective |= insitu.datasets["prepare/calibration/board0/stuck_high"].astype(bool)
    assert defective.any()  # 11 % of the realistic preset's devices are defective
    assert (pulses[defective] == 0).all()


def test_hil_train_writes_the_run_a_plot_and_a_summary(
    tiny_toml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli.h5"
    status = main(["train", "--config", str(tiny_toml), "--board", REALISTIC, "--updates", "20", "--eval-every", "10",
                   "--out", str(out)])  # fmt: skip
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert f"-> {out}" in captured.out
    assert "test accuracy" in captured.out and "after 20 updates" in captured.out
    assert "status completed" in captured.err
    assert out.with_suffix(".png").is_file()
    data = read_run(out)
    assert data.config["updates"] == 20 and data.config["boards"] == {"board0": REALISTIC}
    assert journal_updates(data) == list(range(20))


def test_write_verify_updates_also_learn(tmp_path: Path) -> None:
    data = train_into(tmp_path / "wv.h5", tiny_config(update="write-verify", updates=60))
    assert data.datasets[EVALUATIONS][-1, 1] > 5 * CHANCE
    assert journal_updates(data) == list(range(60))


def test_the_exact_baseline_runs_the_same_loop_without_a_board(tmp_path: Path) -> None:
    # A board that cannot be opened: the baseline must never try.
    config = tiny_config(update="exact", boards={"board0": "emulator://?preset=no-such-preset"})
    data = train_into(tmp_path / "exact.h5", config)
    journal = data.datasets[JOURNAL]
    assert journal_updates(data) == list(range(UPDATES))
    assert (journal[:, 4] == 0).all()
    assert eval_updates(data) == [20, 40, 60, 80]
    assert data.datasets[EVALUATIONS][-1, 1] > 5 * CHANCE
    assert saved(data, "weights/dense1").shape == (16, 10)
    assert "prepare" not in data.attrs
    assert not any(name.startswith(("pulses/", "snapshots/", "prepare/")) for name in data.datasets)


# ---------------------------------------------------------------------------- bad input


@pytest.fixture
def pulses_sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every pulse any in-process board is asked for (recorded, then really sent)."""
    sent: list[str] = []

    def spy(name: str) -> Callable[..., Any]:
        original = getattr(Board, name)

        def recording(self: Board, *args: Any, **kwargs: Any) -> Any:
            sent.append(name)
            return original(self, *args, **kwargs)

        return recording

    for name in ("apply_pulses", "pulse", "set_pulse", "reset_pulse", "form_pulse"):
        monkeypatch.setattr(Board, name, spy(name))
    return sent


@pytest.fixture
def tiny_toml(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_TOML)
    return path


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    status = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return status, err


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('model = "resnet"\n', "  model: "),
        ('[optimizer]\nname = "lion"\n', "  optimizer.name: "),
        ('update = "magic"\n', "  update: "),
        ('optimiser = { name = "sgd" }\n', "  optimiser: "),
        ("updates = 0\n", "  updates: "),
        ('updates = "many"\n', "  updates: "),
        ("batch_size = 1e12\n", "  batch_size: "),
        ("seed = -1\n", "  seed: "),
        ("g_unit = inf\n", "  g_unit: "),
        ("v_input = nan\n", "  v_input: "),
        ('[optimizer]\nname = "sgd"\nlr = nan\n', "  optimizer.lr: "),
        ("[gate_coded]\ndvg_min = -1\n", "  gate_coded.dvg_min: "),
        ('boards = { board0 = { resource = "x", framing = "maybe" } }\n', "  boards.board0.BoardConfig.framing: "),
        ('boards = { board0 = { resource = "x", timeout = nan } }\n', "  boards.board0.BoardConfig.timeout: "),
        ("calibration_gates = 100000000\n", "  calibration_gates: "),
    ],
)
def test_a_bad_config_file_names_the_field(
    text: str, field: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], pulses_sent: list[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=field.strip()):
        load_train_config(path)
    status, err = run_cli(["train", "--config", str(path), "--out", str(tmp_path / "never.h5")], capsys)
    assert status == EXIT_ERROR
    assert f" {field.strip()} " in err and err.count("\n") == 1
    assert not (tmp_path / "never.h5").exists()
    assert pulses_sent == []


def test_a_bad_network_spec_in_the_config_names_the_layer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad-network.toml"
    path.write_text(TINY_TOML.replace("out = 10}]", "out = 7}]"))
    status, err = run_cli(["train", "--config", str(path), "--board", REALISTIC, "--out", str(tmp_path / "r.h5")],
                          capsys)  # fmt: skip
    assert status == EXIT_ERROR
    assert "layers[2] (dense)" in err and "must end with 10 outputs" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(["--board", "emulator://?preset=ideal&seed=1&rows=32&cols=8"],
                     "layer 'dense1' (16 x 10 weights) does not fit", id="does-not-fit"),
        pytest.param(["--board", REALISTIC, "--dataset", "nope"], "unknown dataset 'nope'", id="unknown-dataset"),
        pytest.param(["--board", REALISTIC, "--mnist-dir", "{empty}"], "is missing train-images-idx3-ubyte[.gz]",
                     id="mnist-dir-without-idx"),
        pytest.param(["--board", REALISTIC, "--mnist-dir", "{wrong_magic}"], "wrong magic number",
                     id="idx-wrong-magic"),
        pytest.param(["--board", REALISTIC, "--mnist-dir", "{nowhere}"], "does not exist or is not a directory",
                     id="mnist-dir-missing"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_before_any_pulse(
    extra: list[str], message: str, tiny_toml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    pulses_sent: list[str],
) -> None:  # fmt: skip
    empty = tmp_path / "empty"
    empty.mkdir()
    wrong_magic = tmp_path / "wrong-magic"
    wrong_magic.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):  # fmt: skip
        (wrong_magic / name).write_bytes(b"\x00\x00\x08\x02" + b"\x00" * 12)  # 2-D: neither images' nor labels' magic
    dirs = {"empty": str(empty), "wrong_magic": str(wrong_magic), "nowhere": str(tmp_path / "nowhere")}
    argv = ["train", "--config", str(tiny_toml), "--out", str(tmp_path / "run.h5")] + [a.format(**dirs) for a in extra]

    status, err = run_cli(argv, capsys)
    assert status == EXIT_ERROR
    assert message in err
    assert pulses_sent == []
    assert not (tmp_path / "run.h5").exists()  # a run refused before its first pulse leaves no file


def test_an_explicit_placement_that_overlaps_is_refused_naming_the_tile(tmp_path: Path, pulses_sent: list[str]) -> None:
    placement = {"layers": [{"layer": "dense1", "tiles": [{"inputs": [0, 8]}, {"row0": 15, "inputs": [8, 16]}]}]}
    config = tiny_config(placement=placement)
    overlap = "layer 'dense1' tile 1 overlaps layer 'dense1' tile 0"
    with new_run(tmp_path / "overlap.h5", config) as run, pytest.raises(ValueError, match=overlap):
        run_training(config, run)
    assert pulses_sent == []


@pytest.fixture
def pulse_masks(monkeypatch: pytest.MonkeyPatch) -> list[npt.NDArray[np.bool_]]:
    """The whole-board mask of every pulse batch any in-process board applies."""
    masks: list[npt.NDArray[np.bool_]] = []
    apply = Board.apply_pulses

    def recording(self: Board, kind: Any, amplitude: Any = 0.0, v_gate: Any = 0.0, width: Any = 0.0,
                  mask: Any = None, origin: tuple[int, int] = (0, 0)) -> int:  # fmt: skip
        if isinstance(kind, PulseBatch):
            batch = kind
        else:
            batch = self.check_pulses(kind, amplitude, v_gate, width, mask, origin)
        full = np.zeros(self.shape, dtype=bool)
        r = batch.region
        full[r.row0 : r.row0 + r.nrows, r.col0 : r.col0 + r.ncols] = batch.planes[3] != 0
        masks.append(full)
        return apply(self, batch)

    monkeypatch.setattr(Board, "apply_pulses", recording)
    return masks


def test_bad_lines_are_never_pulsed_in_a_whole_run(tmp_path: Path, pulse_masks: list[npt.NDArray[np.bool_]]) -> None:
    config = tiny_config(boards={"board0": "emulator://?preset=umass-ta-hfo2&seed=1&rows=36&cols=12"}, updates=5,
                         eval_every=5, bad_lines={"board0": {"rows": [0, 7], "cols": [3]}})  # fmt: skip
    data = train_into(tmp_path / "bad-lines.h5", config)
    assert data.root["status"] == "completed" and pulse_masks
    on_bad_lines = np.zeros((36, 12), dtype=bool)
    on_bad_lines[[0, 7], :] = True
    on_bad_lines[:, 3] = True
    assert not any((mask & on_bad_lines).any() for mask in pulse_masks)


def test_resume_refuses_a_file_that_is_not_a_training_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "iv.h5"
    with RunFile(path, procedure="iv-sweep", config={}, show_progress=False):
        pass
    status, err = run_cli(["train", "--resume", str(path)], capsys)
    assert status == EXIT_ERROR
    assert "is a 'iv-sweep' run, not a 'train' run" in err


# ---------------------------------------------------------------------------- resume


def final_weights(data: RunData) -> FloatArray:
    return np.asarray(saved(data, "weights/dense1"))


def test_an_exact_run_resumed_with_more_updates_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    straight = train_into(tmp_path / "straight.h5", tiny_config(update="exact", updates=40))
    train_into(tmp_path / "resumed.h5", tiny_config(update="exact", updates=20))
    resumed = resume(tmp_path / "resumed.h5", updates=40)

    assert journal_updates(resumed) == list(range(40))
    assert np.array_equal(resumed.datasets[JOURNAL][:, :6], straight.datasets[JOURNAL][:, :6])
    assert eval_updates(resumed) == [20, 40]
    assert np.array_equal(resumed.datasets[EVALUATIONS], straight.datasets[EVALUATIONS])
    assert np.array_equal(final_weights(resumed), final_weights(straight))
    assert float(saved(resumed, "optimizer/steps")) == 40  # the RMSprop state continued
    assert np.array_equal(saved(resumed, "optimizer/square/dense1"),
                          saved(straight, "optimizer/square/dense1"))  # fmt: skip
    assert resumed.root["resumed"] == 1 and resumed.root["status"] == "completed"


def interrupt_at(run: RunFile, method: str, name: str, occurrence: int) -> None:
    """Make ``run.<method>(name, ...)`` raise KeyboardInterrupt (Ctrl-C) on its ``occurrence``-th call."""
    original = getattr(run, method)
    calls = 0

    def interrupting(dataset: str, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        if dataset == name:
            calls += 1
            if calls == occurrence:
                raise KeyboardInterrupt
        return original(dataset, *args, **kwargs)

    setattr(run, method, interrupting)


def run_interrupted(path: Path, config: TrainConfig, method: str, name: str, occurrence: int) -> RunData:
    with pytest.raises(KeyboardInterrupt), new_run(path, config) as run:
        interrupt_at(run, method, name, occurrence)
        run_training(config, run)
    return read_run(path)


def test_ctrl_c_between_updates_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    config = tiny_config(update="exact", updates=12, eval_every=4)
    straight = train_into(tmp_path / "straight.h5", config)
    # Ctrl-C as update 6 starts journaling: updates 0..5 are complete on disk.
    killed = run_interrupted(tmp_path / "killed.h5", config, "append", JOURNAL, occurrence=7)
    assert killed.root["status"] == "interrupted"
    assert killed.attrs["train"]["completed_updates"] == 6
    resumed = resume(tmp_path / "killed.h5")
    assert journal_updates(resumed) == list(range(12))
    assert np.array_equal(final_weights(resumed), final_weights(straight))
    assert float(saved(resumed, "optimizer/steps")) == 12


def test_ctrl_c_inside_a_checkpoint_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    config = tiny_config(update="exact", updates=12, eval_every=4)
    straight = train_into(tmp_path / "straight.h5", config)
    # Ctrl-C while update 6's weights are being checkpointed, after its optimizer state was written.
    killed = run_interrupted(tmp_path / "killed.h5", config, "write", "state/b/weights/dense1", occurrence=4)
    assert killed.attrs["train"]["completed_updates"] == 6
    resumed = resume(tmp_path / "killed.h5")
    assert float(saved(resumed, "optimizer/steps")) == 12
    assert np.allclose(final_weights(resumed), final_weights(straight))


class ProgressLog(DiscardingRecorder):
    """A recorder that keeps only what the progress bar would show."""

    def __init__(self) -> None:
        self.total: int | None = None
        self.position = 0

    def progress(self, advance: int = 0, total: int | None = None, **status: Any) -> None:
        self.total = total if total is not None else self.total
        self.position += advance


def test_a_resumed_runs_progress_bar_ends_full() -> None:
    network = Network(load_network_spec(TINY_NETWORK))
    rng = np.random.default_rng(0)
    x_train, x_test = rng.uniform(0, 1, (100, 8, 8)), rng.uniform(0, 1, (20, 8, 8))
    y_train, y_test = rng.integers(0, 10, 100), rng.integers(0, 10, 20)
    log = ProgressLog()
    learner = ExactLearner(network.init_weights(rng))
    train(network, learner, Optimizer(OptimizerConfig()), (x_train, y_train, x_test, y_test), updates=10,
          batch_size=10, eval_every=5, seed=0, recorder=log, start_update=4)  # fmt: skip
    assert (log.position, log.total) == (10, 10)


def test_an_array_run_resumes_with_the_conductances_read_back(
    emulator_process: EmulatorFactory, tmp_path: Path
) -> None:
    """In process against an emulator process that keeps its array: 20 updates, then resume to 30."""
    emulator = emulator_process(preset="umass-ta-hfo2", seed=1, extra=EMULATOR_ARGS)
    path = tmp_path / "array.h5"
    first = train_into(path, tiny_config(boards={"board0": emulator.resource}, updates=20, eval_every=10))
    resumed = resume(path, updates=30)

    assert journal_updates(resumed) == list(range(30))
    assert eval_updates(resumed) == [10, 20, 30]
    assert float(saved(resumed, "optimizer/steps")) == 30
    assert resumed.attrs["prepare"] == first.attrs["prepare"]  # not characterized or programmed again
    k = "prepare/calibration/board0/k"
    assert np.array_equal(resumed.datasets[k], first.datasets[k])
    # Pulses: the map continued from the checkpoint, and still matches the journal.
    assert resumed.datasets["pulses/board0"].sum() == resumed.datasets[JOURNAL][:, 4].sum()
    assert (resumed.datasets["pulses/board0"] >= first.datasets["pulses/board0"]).all()
    # The trained conductances were read back, not reprogrammed: the first resumed batches are well above chance.
    assert resumed.datasets[JOURNAL][20:25, 3].mean() > 3 * CHANCE
    assert resumed.datasets[EVALUATIONS][-1, 1] > 4 * CHANCE


# ---------------------------------------------------------------------------- kill -9 and hil train --resume


def journal_rows(path: Path) -> int:
    """Rows of the journal as last flushed, read without the writer's lock (0 if not readable yet)."""
    with contextlib.suppress(OSError, KeyError, RuntimeError), h5py.File(path, "r", locking=False) as f:
        dataset = f[f"data/{JOURNAL}"]
        return int(dataset.shape[0])
    return 0


def test_a_run_killed_with_sigkill_resumes_and_completes(
    emulator_process: EmulatorFactory, tiny_toml: Path, tmp_path: Path, killable: list[subprocess.Popen[bytes]]
) -> None:
    emulator = emulator_process(preset="umass-ta-hfo2", seed=1, extra=EMULATOR_ARGS)
    path = tmp_path / "killed.h5"
    train_argv = [sys.executable, "-m", "hil.cli", "train", "--board", emulator.resource, "--config",
                  str(tiny_toml), "--out", str(path), "--updates", str(KILL_UPDATES),
                  "--eval-every", "100"]  # fmt: skip
    with (tmp_path / "train.stderr").open("wb") as stderr:
        process = subprocess.Popen(train_argv, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
    killable.append(process)
    give_up = time.monotonic() + 120  # a safety net against a hang, not a timing assertion
    while journal_rows(path) < 20 and process.poll() is None and time.monotonic() < give_up:
        time.sleep(0.2)
    log = (tmp_path / "train.stderr").read_text()
    assert process.poll() is None, f"the run ended before it could be killed:\n{log}"
    assert journal_rows(path) >= 20
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL

    killed = read_run(path)  # what the last flush left is a readable run file
    assert killed.root["status"] == "running"
    done = killed.attrs["train"]["completed_updates"]
    assert 19 <= done < KILL_UPDATES
    assert journal_updates(killed)[:done] == list(range(done))
    # Pulse counts are written once an update, in the checkpoint; ``pulses/<board>`` when the updates end.
    assert "pulses/board0" not in killed.datasets
    assert pulse_counts(killed, "board0").sum() == killed.datasets[JOURNAL][:done, 4].sum() > 0

    resumed_process = subprocess.run(
        [sys.executable, "-m", "hil.cli", "train", "--resume", str(path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed_process.returncode == 0, resumed_process.stderr[-2000:]
    assert f"resuming {path} after update {done} of {KILL_UPDATES}" in resumed_process.stdout
    assert "does not outlive its process" not in resumed_process.stderr  # a TCP board outlived the killed run

    final = read_run(path)
    assert final.root["status"] == "completed"
    assert final.root["resumed"] == 1
    assert final.datasets[JOURNAL].shape == (KILL_UPDATES, 7)
    assert journal_updates(final) == list(range(KILL_UPDATES))
    assert eval_updates(final) == list(range(100, KILL_UPDATES + 1, 100))
    assert final.attrs["train"]["completed_updates"] == KILL_UPDATES
    assert final.datasets["pulses/board0"].sum() == final.datasets[JOURNAL][:, 4].sum()
    assert np.array_equal(pulse_counts(final, "board0"), final.datasets["pulses/board0"])
    assert final.datasets[EVALUATIONS][-1, 1] > 5 * CHANCE
    # Training went on from the trained array, not from fresh or re-programmed weights.
    assert final.datasets[JOURNAL][done : done + 5, 3].mean() > 2.5 * CHANCE
