"""The whole training run checked against its boards before any pulse (hil.training.plan)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from hil.training.config import TrainConfig
from hil.training.plan import PlanError
from hil.training.run import preflight

BOARD = "emulator://?preset=ideal&seed=1&rows=128&cols=16"
NETWORK = {"input_shape": [8, 8], "n_classes": 10, "layers": [{"type": "flatten"}, {"type": "dense", "out": 10}]}


def config(**fields: Any) -> TrainConfig:
    return TrainConfig.model_validate({"dataset": "digits", "network": NETWORK, "boards": {"board0": BOARD}} | fields)


def test_a_sane_run_passes_and_names_its_board() -> None:
    assert preflight(config()).startswith("board0: MEMHIL EMU-1T1R (serial SN-0001")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        # In the read limit, not the current; the message names the v_input that fits (50 mA / 153.6 mS
        # is 0.3255 V: rounded down, so the value as printed passes, below).
        ({"v_input": 0.5}, "tile 0 drives 128 rows of board0, up to 76.8 mA into a column; its limit is 50 mA "
                           "(a v_input of at most 0.325 V in the training config fits)"),
        ({"v_input": 0.6}, "v_input = 0.6 V: VMM inputs of +-0.6 V are outside board0's read limit"),
        ({"bad_lines": {"board0": {"rows": [128]}}}, "bad_lines.board0.rows[0] = 128 is outside the array"),
        ({"bad_lines": {"board0": {"cols": [3, 16]}}}, "bad_lines.board0.cols[1] = 16"),
        ({"gate_coded": {"v_set": 9.0}}, "gate_coded.v_set / v_gate_min"),
        ({"gate_coded": {"v_gate_reset": 9.0}}, "gate_coded.v_reset / v_gate_reset"),
        ({"gate_coded": {"width": 1.0}}, "gate_coded.width"),
        ({"gate_coded": {"v_gate_min": 2.0, "v_gate_max": 1.0}}, "gate_coded.v_gate_min = 2 V is above"),
        ({"layer_g_unit": {"dense9": 2e-4}}, "layer_g_unit names layer 'dense9', not one of the network's ['dense1']"),
    ],
)
def test_what_only_the_board_can_tell_is_refused_naming_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(PlanError, match="nothing was sent") as refused:
        preflight(config(**fields))
    assert message in str(refused.value)



def test_the_v_input_the_current_error_names_passes_the_check() -> None:
    with pytest.raises(PlanError) as refused:
        preflight(config(v_input=0.5))
    fits = float(re.search(r"a v_input of at most ([0-9.e+-]+) V", str(refused.value))[1])  # type: ignore[index]
    assert fits < 0.5
    preflight(config(v_input=fits))  # raises if the value as printed is still over the limit

TWO_CLASSES = {"input_shape": [8, 8], "n_classes": 2, "layers": [{"type": "flatten"}, {"type": "dense", "out": 2}]}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"dataset": "breast-cancer"}, "'breast-cancer': samples of shape (30,) do not fit the network's input_shape"),
        ({"dataset": "mnist28"}, "samples of shape (28, 28)"),
        ({"network": TWO_CLASSES}, "dataset = 'digits': labels 0..9 need 10 outputs, the network has n_classes = 2"),
        # was trained with batches of 1,438 while the run file said 2,000
        ({"batch_size": 2000}, "batch_size = 2000 is larger than the 1438 training samples of dataset = 'digits'"),
    ],
)
def test_data_the_network_cannot_take_is_refused_before_any_file_or_pulse(fields: dict[str, Any], message: str) -> None:
    # Found at the first evaluation before: after the gate calibration and the programming of every device.
    with pytest.raises(PlanError, match="nothing was sent") as refused:
        preflight(config(**fields))
    assert message in str(refused.value)


def test_a_run_without_updates_draws_no_batch_so_any_batch_size_passes(tmp_path: Any) -> None:
    # A deploy with no fine-tuning (updates = 0) was refused for a batch_size over the training set.
    weights = tmp_path / "w.npz"
    np.savez(weights, dense1=np.full((64, 10), 0.01))
    preflight(config(batch_size=2000, updates=0, initial_weights=str(weights)))
    with pytest.raises(PlanError, match="batch_size = 2000 is larger than"):  # with updates, still refused
        preflight(config(batch_size=2000, updates=1, initial_weights=str(weights)))


def test_the_data_check_holds_for_the_float_baseline_too(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from hil.cli import EXIT_ERROR, main

    out = tmp_path / "run.h5"
    assert main(["train", "--model", "mlp", "--dataset", "mnist28", "--baseline", "--out", str(out)]) == EXIT_ERROR
    assert "samples of shape (28, 28)" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not out.exists()  # no run file for a run that cannot be done


def test_mnist_dir_with_another_dataset_is_refused_not_silently_preferred(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from hil.cli import EXIT_ERROR, main

    out = tmp_path / "run.h5"
    argv = ["train", "--dataset", "digits", "--mnist-dir", str(tmp_path), "--baseline", "--out", str(out)]
    assert main(argv) == EXIT_ERROR  # was: trained on mnist-idx from that folder, --dataset digits ignored
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--mnist-dir" in err and "--dataset digits" in err
    assert not out.exists()


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--seed", "-1", "seed: Input should be greater than or equal to 0 (got -1)"),
    ("--lr", "nan", "optimizer.lr: Input should be a finite number (got nan)"),
])  # fmt: skip
def test_a_config_error_names_the_value_given(
    flag: str, value: str, message: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from hil.cli import EXIT_ERROR, main

    assert main(["train", "--model", "mlp", flag, value, "--out", str(tmp_path / "run.h5")]) == EXIT_ERROR
    assert message in capsys.readouterr().err  # was: field and limit, not the value


def test_mnist_dir_keeps_the_config_files_other_dataset_options(tmp_path: Any) -> None:
    from hil.training.config import load_train_config

    path = tmp_path / "yao.toml"
    path.write_text('model = "yao-hybrid"\ndataset = "mnist-idx"\n[dataset_options]\nsize = 28\ndirectory = "/old"\n')
    overrides = {"dataset": "mnist-idx", "dataset_options": {"directory": "/new"}}  # what --mnist-dir /new gives
    config = load_train_config(path, overrides)
    assert config.dataset_options == {"size": 28, "directory": "/new"}  # was: size dropped, 8x8 for a 28x28 net
    path.write_text('dataset = "digits"\n[dataset_options]\ntest_fraction = 0.1\n')
    assert load_train_config(path, overrides).dataset_options == {"directory": "/new"}  # another set's: dropped


def test_a_mnist_idx_set_of_the_wrong_size_says_how_to_get_the_right_one(tmp_path: Any) -> None:
    from tests.hil.test_datasets import _write_mnist

    _write_mnist(tmp_path, gz=False)
    fields = {"dataset": "mnist-idx", "dataset_options": {"directory": str(tmp_path)}, "model": "yao-hybrid",
              "network": None}  # fmt: skip
    with pytest.raises(PlanError, match=r"dataset = 'mnist-idx', dataset_options\.size = 28 gives 28x28"):
        preflight(config(**fields))
