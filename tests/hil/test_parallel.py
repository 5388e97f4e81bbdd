"""Yao 2020's parallel mode: copies of a convolution each computing one band of output positions."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from hil.cli import EXIT_ERROR, main
from hil.nn import Network, load_network_spec
from hil.parallel import (
    ParallelBackend,
    check_retrained,
    position_groups,
    replica_name,
    replicated_shapes,
    replicated_weights,
    run_parallel,
)
from hil.storage import RunFile, read_run
from hil.training.config import TrainConfig
from tests.conftest import EmulatorFactory

FloatArray = npt.NDArray[np.float64]
SMALL_CNN = {
    "input_shape": [8, 8], "n_classes": 10,
    "layers": [{"type": "conv", "kernels": 3, "size": 3, "padding": "valid", "activation": "relu"},
               {"type": "maxpool", "size": 2}, {"type": "flatten"}, {"type": "dense", "out": 10}],
}  # fmt: skip


def small_network() -> Network:
    return Network(load_network_spec(SMALL_CNN, "network"))


class ScaledCopies:
    """A stand-in array: copy g of a layer computes (g + 1) x @ W; it records which copy each call used."""

    def __init__(self, weights: dict[str, FloatArray]) -> None:
        self.w = weights
        self.calls: list[tuple[str, int]] = []

    def matmul(self, layer: str, x: FloatArray) -> FloatArray:
        base, _, group = layer.partition("@")
        self.calls.append((layer, len(x)))
        return np.asarray((int(group or 0) + 1) * (x @ self.w[base]), dtype=np.float64)

    def weights(self, layer: str) -> FloatArray:
        base, _, group = layer.partition("@")
        return (int(group or 0) + 1) * self.w[base]

    def evaluation(self) -> AbstractContextManager[None]:
        return nullcontext()


def test_positions_split_into_bands_of_output_rows() -> None:
    groups = position_groups(output_rows=6, output_cols=2, n_vectors=24, groups=3)  # two images
    per_image = np.repeat([0, 0, 1, 1, 2, 2], 2)
    assert groups.tolist() == per_image.tolist() * 2
    uneven = position_groups(output_rows=26, output_cols=1, n_vectors=26, groups=3)
    assert np.bincount(uneven).tolist() == [9, 9, 8]
    with pytest.raises(ValueError, match="whole images"):
        position_groups(6, 2, 25, 3)


def test_each_band_is_computed_by_its_own_copy_and_one_group_alone_by_one_copy() -> None:
    network = small_network()
    rng = np.random.default_rng(0)
    weights = {name: rng.normal(size=shape) for name, shape in network.weight_shapes.items()}
    inner = ScaledCopies(weights)
    parallel = ParallelBackend(inner, network, ["conv1"], groups=3)  # type: ignore[arg-type]
    x = rng.uniform(size=(2 * 36, 9))  # two images, 6 x 6 output positions
    out = parallel.matmul("conv1", x)
    band = position_groups(6, 6, len(x), 3)
    np.testing.assert_allclose(out, (band + 1)[:, None] * (x @ weights["conv1"]))
    assert sorted(name for name, _ in inner.calls) == ["conv1", "conv1@1", "conv1@2"]
    np.testing.assert_allclose(parallel.weights("conv1"), 2 * weights["conv1"])  # the copies' mean
    np.testing.assert_allclose(parallel.matmul("dense1", x[:3, :1].repeat(27, axis=1)),
                               x[:3, :1].repeat(27, axis=1) @ weights["dense1"])  # fmt: skip
    alone = ParallelBackend(inner, network, ["conv1"], groups=3, only=2)  # type: ignore[arg-type]
    np.testing.assert_allclose(alone.matmul("conv1", x), 3 * (x @ weights["conv1"]))


def test_a_replicated_layer_is_never_retrained() -> None:
    check_retrained(["dense1"], ["conv1"])
    with pytest.raises(ValueError, match="retrains named layers only"):
        check_retrained(None, ["conv1"])  # every layer: conv1 too
    with pytest.raises(ValueError, match="conv1 is replicated"):
        check_retrained(["conv1", "dense1"], ["conv1"])


def test_only_convolutions_are_replicated_and_every_copy_gets_the_weights() -> None:
    network = small_network()
    with pytest.raises(ValueError, match="'dense1' is not a convolution"):
        replicated_shapes(network, ["dense1"], 3)
    shapes = replicated_shapes(network, ["conv1"], 3)
    assert shapes[replica_name("conv1", 2)] == network.weight_shapes["conv1"] and len(shapes) == 4
    weights = {name: np.ones(shape) for name, shape in network.weight_shapes.items()}
    copies = replicated_weights(weights, ["conv1"], 3)
    assert all(np.array_equal(copies[f"conv1@{g}"], weights["conv1"]) for g in (1, 2))


@pytest.mark.parametrize("link", ["in-process", "tcp"])
def test_parallel_mode_places_writes_and_retrains_the_copies_on_an_emulated_chip(
    link: str, emulator_process: EmulatorFactory, tmp_path: Path
) -> None:
    if link == "tcp":  # the emulator as a separate process, over a real socket
        resource = emulator_process(seed=5, preset="umass-ta-hfo2", extra=("--rows", "64", "--cols", "32")).resource
    else:
        resource = "emulator://?preset=umass-ta-hfo2&seed=5&rows=64&cols=32"
    config = TrainConfig.model_validate({
        "model": "cnn", "network": SMALL_CNN, "dataset": "digits", "seed": 1, "boards": {"board0": resource},
        "updates": 3, "eval_every": 3, "batch_size": 20, "retrain_layers": ["dense1"],
        "optimizer": {"name": "sgd", "lr": 0.1},
    })  # fmt: skip
    path = f"{tmp_path}/parallel.h5"
    with RunFile(path, procedure="train", config=config.model_dump(mode="json"), show_progress=False) as run:
        result = run_parallel(config, run, layers=["conv1"], groups=2)
    assert len(result.groups_after_transfer) == 2 and len(result.groups_after_retraining) == 2
    accuracies = [*result.groups_after_transfer, result.combined_after_transfer, result.combined_after_retraining]
    assert all(0.0 <= a <= 1.0 for a in accuracies)
    assert result.transfer_pulses > 0 and result.retraining_pulses > 0
    # each copy is written on its own devices and holds the weights within the write noise
    assert result.copy_cells == [{"board0": 2 * 9 * 3}] * 2
    assert all(0 < error < 0.1 for error in result.copy_weight_error)


PARALLEL_TOML = """
model = "cnn"
dataset = "digits"
updates = 3
eval_every = 3
batch_size = 20
retrain_layers = ["dense1"]
optimizer = {name = "sgd", lr = 0.1}

[network]
input_shape = [8, 8]
n_classes = 10
layers = [{type = "conv", kernels = 3, size = 3, padding = "valid", activation = "relu"},
          {type = "maxpool", size = 2}, {type = "flatten"}, {type = "dense", out = 10}]

[parallel]
groups = 3
"""
PARALLEL_CHIP = "emulator://?preset=umass-ta-hfo2&seed=5&rows=64&cols=32"


@pytest.fixture
def parallel_toml(tmp_path: Path) -> Path:
    path = tmp_path / "parallel.toml"
    path.write_text(PARALLEL_TOML)
    return path


def test_parallel_mode_runs_from_the_command_line_and_is_recorded_in_the_run_file(
    parallel_toml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "parallel.h5"
    assert main(["parallel", "--config", str(parallel_toml), "--groups", "2", "--board", PARALLEL_CHIP, "--out",
                 str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "conv1 x 2" in printed and "together" in printed and "after retraining" in printed
    saved = read_run(out)
    assert saved.config["parallel"] == {"groups": 2, "layers": ["conv1"]}  # the flag replaced the file's 3
    parallel = saved.attrs["parallel"]
    assert len(json.loads(str(parallel["groups_after_retraining"]))) == 2 and int(parallel["transfer_pulses"]) > 0
    # the retraining's pulse counts, written once after its last update
    assert saved.datasets["pulses/board0"].sum() == saved.datasets["train/journal"][:, 4].sum() > 0

    # not resumable, not evaluable as a one-copy network, not trainable by `hil train`: each one line
    for argv in (["train", "--resume", str(out), "--updates", "10"], ["evaluate", str(out), "--refresh", "8e-6"],
                 ["train", "--config", str(parallel_toml), "--board", PARALLEL_CHIP, "--out", str(tmp_path / "t.h5")]):
        assert main(argv) == EXIT_ERROR, argv
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "parallel" in err, argv
    assert not (tmp_path / "t.h5").exists()


SMALL_CHIP = "emulator://?preset=umass-ta-hfo2&seed=5&rows=64&cols=16"  # 13 columns for the network, 3 per copy


@pytest.mark.parametrize(("board", "flags", "named"), [
    (PARALLEL_CHIP, ["--layers", "dense1"], "'dense1' is not a convolution"),
    (PARALLEL_CHIP, ["--groups", "1"], "parallel.groups"),
    (PARALLEL_CHIP, ["--layers", "conv9"], "'conv9' is not a convolution"),
    (SMALL_CHIP, ["--groups", "8"], "'conv1@2' (9 x 3 weights) does not fit"),  # found before the first pulse
    (PARALLEL_CHIP, ["--retrain-layers", "conv1", "dense1"], "retrain_layers: conv1 is replicated"),
])  # fmt: skip
def test_bad_parallel_runs_are_refused_in_one_line_and_leave_no_file(
    board: str, flags: list[str], named: str, parallel_toml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "never.h5"
    assert main(["parallel", "--config", str(parallel_toml), "--board", board, "--out", str(out), *flags]) == EXIT_ERROR
    (error,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]  # after any bars
    assert named in error
    assert not out.exists()
