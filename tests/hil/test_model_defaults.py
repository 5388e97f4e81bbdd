"""Each model trains with its paper's settings; a flag given alone changes only its own field;
``--seed`` seeds the training, ``--chip-seed`` the emulated chip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from drivers import open_board
from hil.cli import EXIT_ERROR, main
from hil.nn import ARCHITECTURES
from hil.nn.defaults import MODEL_DEFAULTS
from hil.optimizers import OPTIMIZER_NAMES
from hil.storage import read_run
from hil.training.config import MODEL_NAMES, TrainConfig
from hil.updates import GateCodedConfig

TINY_BOARD = "emulator://?preset=umass-ta-hfo2&seed=3&rows=16&cols=8"


def test_one_table_names_every_model_and_a_rate_for_every_optimizer() -> None:
    assert list(MODEL_DEFAULTS) == list(ARCHITECTURES) == list(MODEL_NAMES)
    for defaults in MODEL_DEFAULTS.values():
        assert set(defaults.lr) == set(OPTIMIZER_NAMES)
        assert defaults.optimizer in OPTIMIZER_NAMES


@pytest.mark.parametrize(
    ("model", "optimizer", "lr", "batch", "updates", "g_unit", "layer_g_unit"),
    [("mlp", "sgd", 0.5, 50, 1600, 120e-6, {"dense2": 60e-6}), ("cnn", "rmsprop", 0.01, 100, 1200, 100e-6, {}),
     ("convlstm", "rmsprop", 0.01, 50, 1200, 100e-6, {})],
)  # fmt: skip
def test_a_model_alone_brings_its_papers_settings(
    model: str, optimizer: str, lr: float, batch: int, updates: int, g_unit: float, layer_g_unit: dict[str, float]
) -> None:
    config = TrainConfig.model_validate({"model": model})
    assert (config.optimizer.name, config.optimizer.lr, config.batch_size, config.updates, config.g_unit) == (
        optimizer, lr, batch, updates, g_unit
    )  # fmt: skip
    assert config.layer_g_unit == layer_g_unit
    # a run's own conductance per unit weight holds for every layer: the model's per-layer ones go with its own
    given = TrainConfig.model_validate({"model": model, "g_unit": 50e-6})
    assert (given.g_unit, given.layer_g_unit) == (50e-6, {})
    assert TrainConfig.model_validate({"model": model, "layer_g_unit": {"x": 1e-4}}).layer_g_unit == {"x": 1e-4}


@pytest.mark.parametrize("model", list(MODEL_DEFAULTS))
def test_a_model_brings_its_pulse_threshold_and_a_given_one_wins(model: str) -> None:
    assert TrainConfig.model_validate({"model": model}).gate_coded.dvg_min == MODEL_DEFAULTS[model].dvg_min
    # another gate_coded field given alone keeps the model's threshold; a threshold given is kept
    other = TrainConfig.model_validate({"model": model, "gate_coded": {"rounding": "stochastic"}}).gate_coded
    assert (other.rounding, other.dvg_min) == ("stochastic", MODEL_DEFAULTS[model].dvg_min)
    assert TrainConfig.model_validate({"model": model, "gate_coded": {"dvg_min": 0.007}}).gate_coded.dvg_min == 0.007
    # a model not tuned keeps the rule's own default
    assert MODEL_DEFAULTS["convlstm"].dvg_min == GateCodedConfig().dvg_min


def test_a_network_of_its_own_does_not_take_the_models_per_layer_conductances() -> None:
    network = {"input_shape": [30], "n_classes": 2, "layers": [{"type": "dense", "out": 2}]}
    config = TrainConfig.model_validate({"model": "mlp", "network": network})
    assert config.layer_g_unit == {} and config.g_unit == MODEL_DEFAULTS["mlp"].g_unit


def train_config_from_cli(tmp_path: Path, *argv: str) -> dict[str, Any]:
    """Run ``hil train ARGV`` for one exact-arithmetic update on the small digits set; its stored config."""
    out = tmp_path / "run.h5"
    code = main(["train", *argv, "--baseline", "--updates", "1", "--dataset", "digits", "--out", str(out),
                 "--overwrite"])  # fmt: skip
    assert code == 0
    return read_run(out).config


@pytest.mark.parametrize(
    ("argv", "optimizer", "lr"),
    [
        (["--model", "mlp"], "sgd", MODEL_DEFAULTS["mlp"].lr["sgd"]),
        (["--model", "mlp", "--lr", "0.07"], "sgd", 0.07),  # --lr alone keeps the model's optimizer
        (["--model", "mlp", "--optimizer", "rmsprop"], "rmsprop", MODEL_DEFAULTS["mlp"].lr["rmsprop"]),
        (["--model", "cnn", "--optimizer", "sgd"], "sgd", MODEL_DEFAULTS["cnn"].lr["sgd"]),
    ],
)
def test_a_flag_alone_changes_only_its_own_field(tmp_path: Path, argv: list[str], optimizer: str, lr: float) -> None:
    config = train_config_from_cli(tmp_path, *argv)
    assert (config["optimizer"]["name"], config["optimizer"]["lr"]) == (optimizer, lr)
    model = argv[1]
    assert config["batch_size"] == MODEL_DEFAULTS[model].batch_size


def test_flags_over_a_config_file_replace_only_what_they_name(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('model = "mlp"\n[optimizer]\nname = "adam"\nlr = 0.003\n')
    config = train_config_from_cli(tmp_path, "--config", str(path), "--lr", "0.02")
    assert (config["optimizer"]["name"], config["optimizer"]["lr"]) == ("adam", 0.02)
    # another optimizer named without a rate: the file's rate was adam's, so the model's rate for sgd
    config = train_config_from_cli(tmp_path, "--config", str(path), "--optimizer", "sgd")
    assert (config["optimizer"]["name"], config["optimizer"]["lr"]) == ("sgd", MODEL_DEFAULTS["mlp"].lr["sgd"])


def test_help_shows_each_models_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for name, defaults in MODEL_DEFAULTS.items():
        assert f"{name}" in text and defaults.summary() in text
    assert "--chip-seed" in text


def conductance_of(config: TrainConfig) -> np.ndarray[Any, Any]:
    with open_board(config.board_configs["board0"].resource) as board:
        return board.read_map()


def test_chip_seed_picks_the_emulated_chip_and_seed_does_not() -> None:
    base = {"boards": {"board0": TINY_BOARD}}
    chip3 = conductance_of(TrainConfig.model_validate(base))
    same_chip_other_training = conductance_of(TrainConfig.model_validate(base | {"seed": 9}))
    other_chip = conductance_of(TrainConfig.model_validate(base | {"chip_seed": 4}))
    # read noise differs read to read; the chips' stuck and spread devices differ far more
    assert np.abs(same_chip_other_training - chip3).mean() < np.abs(other_chip - chip3).mean() / 3
    assert TrainConfig.model_validate(base | {"chip_seed": 4}).board_configs["board0"].resource.endswith("seed=4")


def test_chip_seed_on_a_board_that_is_not_emulated_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--board", "TCPIP::127.0.0.1::1::SOCKET", "--chip-seed", "2", "--out", "/nonexistent/x.h5"])
    assert code == EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "chip_seed = 2" in err and "serve --seed" in err
