"""A network's life after training: ``hil deploy`` (weights trained elsewhere) and ``hil evaluate``
(inference on the chip as it is now, over simulated time, with drift compensation and its cost).

The network is the tiny one of test_training (8x8 digits pooled to 4x4, dense 16 -> 10: 32 rows x
10 columns of devices), so every run here takes seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest

from drivers import open_board
from hil.cli import EXIT_ERROR, main
from hil.config import ConfigError
from hil.lifecycle.cli import parse_duration
from hil.lifecycle.evaluate import POINTS, Compensation, GainCorrected, column_gains, point_times
from hil.nn import ExactBackend, Network, load_network_spec
from hil.run_layout import pulses_recorded
from hil.storage import RunData, read_run
from hil.weights_file import fit_weights, read_weights, scale_invariant, write_weights
from tests.conftest import EmulatorFactory

TINY_NETWORK: dict[str, Any] = {
    "input_shape": [8, 8],
    "n_classes": 10,
    "layers": [{"type": "maxpool", "size": 2}, {"type": "flatten"}, {"type": "dense", "out": 10}],
}
TINY_TOML = """
dataset = "digits"
updates = 60
eval_every = 30
batch_size = 50
calibration_gates = 3

[network]
input_shape = [8, 8]
n_classes = 10
layers = [{type = "maxpool", size = 2}, {type = "flatten"}, {type = "dense", out = 10}]

[optimizer]
name = "rmsprop"
lr = 0.05
"""
CHIP = "preset=umass-ta-hfo2&seed=3&rows=32&cols=10"
CHANCE = 0.1
DAY = 86400.0


@pytest.fixture
def tiny_toml(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_TOML)
    return path


def points(path: Path) -> np.ndarray[Any, Any]:
    return np.asarray(read_run(path).datasets[POINTS])


def last_accuracy(run: RunData) -> float:
    return float(run.datasets["train/eval"][-1, 1])


# ---------------------------------------------------------------------------------------- evaluate


def test_a_trained_network_is_evaluated_later_on_its_chip_and_followed_over_a_day(
    emulator_process: EmulatorFactory, tiny_toml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Over a real TCP socket: train, then evaluate the same chip in another session (placement and
    calibration from the file, conductances read back), then follow it for a simulated day."""
    server = emulator_process(seed=3, preset="umass-ta-hfo2", extra=("--rows", "32", "--cols", "10"))
    run = tmp_path / "run.h5"
    assert main(["train", "--config", str(tiny_toml), "--board", server.resource, "--out", str(run)]) == 0
    trained = last_accuracy(read_run(run))
    assert trained > 3 * CHANCE

    now = tmp_path / "now.h5"
    assert main(["evaluate", str(run), "--out", str(now)]) == 0
    (row,) = points(now)
    assert abs(row[1] - trained) < 0.06  # the same weights, read again (read noise moves a few answers)
    assert row[5] == 0 and pulses_recorded(read_run(now)) == 0  # inference only: no pulse

    later = tmp_path / "day.h5"
    assert main(["evaluate", str(run), "--every", "6h", "--for", "1d", "--refresh", "8e-6", "--out", str(later)]) == 0
    table = points(later)
    assert list(table[:, 0]) == [0, 6 * 3600, 12 * 3600, 18 * 3600, DAY]
    assert (table[:, 1] > 3 * CHANCE).all()
    # every refresh pulse is in the file's link record, checked against the board's own count
    assert pulses_recorded(read_run(later)) == int(table[:, 5].sum())
    with open_board(server.resource) as board:
        assert board.clock() >= DAY
    out = capsys.readouterr().out
    assert "24 h" in out and "refresh pulses" in out


def test_a_chip_that_lost_the_weights_is_refused_unless_refreshed(
    tiny_toml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An in-process emulator starts fresh in every process: its devices are not the run's."""
    run = tmp_path / "run.h5"
    board = f"emulator://?{CHIP}"
    assert main(["train", "--config", str(tiny_toml), "--board", board, "--out", str(run)]) == 0
    capsys.readouterr()
    refused = tmp_path / "refused.h5"
    assert main(["evaluate", str(run), "--out", str(refused)]) == EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "does not hold the weights" in err and "--refresh" in err
    assert not refused.exists()
    rewritten = tmp_path / "rewritten.h5"
    assert main(["evaluate", str(run), "--refresh", "8e-6", "--out", str(rewritten)]) == 0
    (row,) = points(rewritten)
    assert row[4] > 100 and row[5] > 0  # most used devices written back
    assert abs(row[1] - last_accuracy(read_run(run))) < 0.1


def test_drift_that_ruins_the_network_is_undone_by_a_refresh(
    emulator_process: EmulatorFactory, tiny_toml: Path, tmp_path: Path
) -> None:
    """On a chip drifting fast (5 uS per unit of ln t: about 50 uS in a day), a day without
    compensation ruins the network; a refresh writes the drifted devices back, at a cost in pulses."""
    server = emulator_process(seed=3, preset="umass-ta-hfo2",
                              extra=("--rows", "32", "--cols", "10", "--set", "drift_spread=5e-6"))  # fmt: skip
    run = tmp_path / "run.h5"
    assert main(["train", "--config", str(tiny_toml), "--board", server.resource, "--out", str(run)]) == 0
    trained = last_accuracy(read_run(run))
    drifted = tmp_path / "drifted.h5"
    assert main(["evaluate", str(run), "--every", "1d", "--for", "1d", "--out", str(drifted)]) == 0
    without = points(drifted)
    refreshed = tmp_path / "refreshed.h5"
    assert main(["evaluate", str(run), "--every", "12h", "--for", "1d", "--refresh", "8e-6", "--out",
                 str(refreshed)]) == 0  # fmt: skip
    kept = points(refreshed)
    assert without[-1, 3] > 10e-6  # the devices moved
    assert without[-1, 1] < trained - 0.15  # and the network with them
    assert (np.abs(kept[:, 1] - trained) < 0.1).all()  # each point after its refresh
    assert kept[0, 3] > 10e-6 and kept[0, 5] > 0  # the day of drift before, undone with pulses
    assert (kept[1:, 5] > 0).all()  # every later refresh costs pulses too


# ------------------------------------------------------------------------------------------ deploy


def exact_weights(tmp_path: Path, tiny_toml: Path) -> Path:
    """Weights trained in exact arithmetic ("elsewhere"), saved in the deploy layout."""
    run = tmp_path / "float.h5"
    assert main(["train", "--config", str(tiny_toml), "--baseline", "--updates", "200", "--out", str(run)]) == 0
    saved = read_run(run)
    slot = saved.attrs["train"]["state"]
    return write_weights(tmp_path / "weights.npz", {"dense1": saved.datasets[f"{slot}/weights/dense1"]})


def test_weights_trained_elsewhere_are_deployed_evaluated_and_fine_tuned(
    tiny_toml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = exact_weights(tmp_path, tiny_toml)
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "float.h5"), "--out", str(tmp_path / "never.h5")]) == EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "exact-arithmetic run" in err and not (tmp_path / "never.h5").exists()
    deployed = tmp_path / "deployed.h5"
    board = f"emulator://?{CHIP}"
    assert main(["deploy", str(weights), "--config", str(tiny_toml), "--board", board, "--out", str(deployed)]) == 0
    run = read_run(deployed)
    assert run.config["updates"] == 0 and "train/journal" not in run.datasets  # evaluate only: no update
    on_chip = float(run.attrs["prepare"]["accuracy_after_transfer"])
    assert on_chip > 3 * CHANCE
    assert "on the chip: test accuracy" in capsys.readouterr().out
    tuned = tmp_path / "tuned.h5"
    assert main(["deploy", str(weights), "--config", str(tiny_toml), "--board", board, "--out", str(tuned),
                 "--fine-tune", "40"]) == 0  # fmt: skip
    assert last_accuracy(read_run(tuned)) > on_chip  # fine-tuning in situ recovers what the transfer lost
    weights.unlink()  # the run file keeps the deployed weights: it alone continues the fine-tuning
    assert main(["train", "--resume", str(tuned), "--updates", "50"]) == 0
    assert len(read_run(tuned).datasets["train/journal"]) == 50


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"dense1": np.zeros((16, 9))}, "'dense1' has shape (16, 9), the network needs (16, 10)"),
        ({"dense1": np.zeros((16, 10)), "dense2": np.zeros((3, 3))}, "unknown array 'dense2'"),
        ({}, "missing 'dense1'"),
        ({"dense1": np.full((16, 10), np.nan)}, "'dense1' holds 160 non-finite values"),
        # finite as long doubles, inf as float64: was taken, calibrated, then failed in the placement
        ({"dense1": np.full((16, 10), np.longdouble("1e400"))}, "'dense1' holds 160 non-finite values (as float64)"),
        # subnormal: the fit's scale overflows to inf (was: 98,304 calibration pulses, then a failed run file)
        ({"dense1": np.full((16, 10), 1e-320)}, "'dense1' holds |w| up to 1e-320, too small to scale to"),
    ],
)
def test_a_weights_file_that_does_not_fit_is_one_line_and_nothing_is_sent(
    arrays: dict[str, Any], message: str, tiny_toml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    out = tmp_path / "never.h5"
    assert main(["deploy", str(path), "--config", str(tiny_toml), "--board", f"emulator://?{CHIP}",
                 "--out", str(out)]) == EXIT_ERROR  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err
    assert not out.exists()


def test_devices_asked_past_their_reach_are_counted_in_the_run_file_and_said(
    tiny_toml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Weights inside a nominal pair's span (so taken before any pulse) can still ask a device for
    # more than its own calibrated window holds (its spread, a column's attenuation): those are
    # written at the end of their reach, which was silent.
    from hil.lifecycle.deploy import deploy_config

    limit = deploy_config(tmp_path / "x.npz", None, str(tiny_toml), fit=False).weight_limit
    signs = np.where(np.arange(160).reshape(16, 10) % 2 == 0, 1.0, -1.0)
    board = f"emulator://?{CHIP}"
    held = {}
    for name, scale in (("edge", 0.99 * limit), ("middle", 0.05)):
        path = tmp_path / f"{name}.npz"
        np.savez(path, dense1=scale * signs)
        out = tmp_path / f"{name}.h5"
        assert main(["deploy", str(path), "--config", str(tiny_toml), "--board", board, "--out", str(out),
                     "--no-fit"]) == 0  # fmt: skip
        prepare = read_run(out).attrs["prepare"]
        held[name] = int(prepare["devices_held_at_reach"])
        assert 250 < int(prepare["devices_written"]) <= 320  # the working devices of the 16 x 10 pairs
        said = "devices asked past their calibrated reach" in capsys.readouterr().out
        assert said == (held[name] > 0)
    assert held["edge"] > 20 and held["middle"] == 0, held


def test_weights_past_what_a_device_pair_holds_are_refused_unless_fitted(
    tiny_toml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hil.lifecycle.deploy import deploy_config
    from hil.training.plan import PlanError
    from hil.training.run import preflight

    path = tmp_path / "big.npz"
    np.savez(path, dense1=np.linspace(-40.0, 40.0, 160).reshape(16, 10))  # 40 units: 4 mS a pair
    out = tmp_path / "never.h5"
    argv = ["deploy", str(path), "--config", str(tiny_toml), "--board", f"emulator://?{CHIP}", "--out", str(out)]
    assert main([*argv, "--no-fit"]) == EXIT_ERROR  # was: written, every device at the end of its reach
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "initial_weights: 'dense1' holds |w| up to 40" in err and "nothing was sent" in err
    assert not out.exists()
    overrides = {"boards": {"board0": f"emulator://?{CHIP}"}}
    with pytest.raises(PlanError, match="past the"):
        preflight(deploy_config(path, None, str(tiny_toml), overrides=overrides, fit=False))
    assert preflight(deploy_config(path, None, str(tiny_toml), overrides=overrides, fit=True))  # scaled to fit

    # A campaign's cell has no preflight: the run itself refuses before its boards are opened.
    import hil.training.run as training_run
    from hil.storage import RunFile

    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the boards were opened")

    config = deploy_config(path, None, str(tiny_toml), overrides=overrides, fit=False)
    with mock.patch.object(training_run, "opened_boards", never), pytest.raises(PlanError, match="past the"), \
            RunFile(tmp_path / "cell.h5", procedure="train", config={}, show_progress=False) as run:  # fmt: skip
        training_run.run_training(config, run)


def test_random_weights_drawn_past_what_a_device_pair_holds_are_refused(
    tiny_toml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import hil.training.run as training_run
    from hil.storage import RunFile
    from hil.training.config import TrainConfig
    from hil.training.plan import PlanError

    out = tmp_path / "never.h5"
    # conv1 draws |w| up to 0.80 at init_scale 1 against the 1.86 a pair holds: 4x is past it
    config_file = tmp_path / "big.toml"
    config_file.write_text('model = "cnn"\nupdates = 1\ninit_scale = 4\n')
    argv = ["train", "--config", str(config_file), "--out", str(out)]
    assert main(argv) == EXIT_ERROR  # was: trained, conv1's devices written to the ends of their reach
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "init_scale = 4: 'conv1' holds |w| up to" in err and "lower init_scale" in err
    assert not out.exists()

    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the boards were opened")

    config = TrainConfig(model="cnn", updates=1, init_scale=4.0)  # a campaign's cell: no preflight
    with mock.patch.object(training_run, "opened_boards", never), pytest.raises(PlanError, match="init_scale = 4"), \
            RunFile(tmp_path / "cell.h5", procedure="train", config={}, show_progress=False) as run:  # fmt: skip
        training_run.run_training(config, run)


def test_a_file_that_is_not_a_npz_is_named(tmp_path: Path) -> None:
    path = tmp_path / "weights.npz"
    path.write_text("not a zip")
    with pytest.raises(ConfigError, match=r"is not a \.npz"):
        read_weights(path, Network(load_network_spec(TINY_NETWORK)))
    with pytest.raises(ConfigError, match="does not exist"):
        read_weights(tmp_path / "none.npz", Network(load_network_spec(TINY_NETWORK)))


def test_a_single_npy_array_or_a_text_file_is_named_as_what_it_is(tmp_path: Path) -> None:
    network = Network(load_network_spec(TINY_NETWORK))
    np.save(tmp_path / "dense1.npy", np.zeros((16, 10)))  # what np.save writes: one array, no names
    with pytest.raises(ConfigError, match=r"is one \.npy array, not a \.npz of named arrays.*dense1=\.\.\."):
        read_weights(tmp_path / "dense1.npy", network)  # was: unexpected TypeError (np.load gave an ndarray)
    (tmp_path / "weights.npz").write_text("conv1,conv2\n0.1,0.2\n")
    with pytest.raises(ConfigError, match=r"is not a \.npz \(a zip of \.npy arrays.*starts with b'conv'"):
        read_weights(tmp_path / "weights.npz", network)  # was: "contains pickled (object) data"


def test_an_array_the_network_does_not_have_is_never_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    network = Network(load_network_spec(TINY_NETWORK))
    path = tmp_path / "weights.npz"
    np.savez(path, dense1=np.full((16, 10), 0.25), optimizer_state=np.zeros((64, 64)))
    read: list[tuple[int, ...]] = []
    real = np.lib.format.read_array

    def counting(stream: Any, *args: Any, **kwargs: Any) -> Any:
        array = real(stream, *args, **kwargs)
        read.append(array.shape)
        return array

    monkeypatch.setattr(np.lib.format, "read_array", counting)
    with pytest.raises(ConfigError, match="unknown array 'optimizer_state'"):
        read_weights(path, network)
    assert (64, 64) not in read  # checked from its header: a huge foreign array costs nothing
    np.savez(path, dense1=np.asfortranarray(np.arange(160.0).reshape(16, 10)))
    assert np.array_equal(read_weights(path, network)["dense1"], np.arange(160.0).reshape(16, 10))


def test_fitting_the_weights_to_the_devices_keeps_every_answer() -> None:
    def spec(activation: str) -> dict[str, Any]:
        hidden = {"type": "dense", "out": 12, "activation": activation}
        return {"input_shape": [8, 8], "n_classes": 10,
                "layers": [{"type": "flatten"}, hidden, {"type": "dense", "out": 10}]}  # fmt: skip

    network = Network(load_network_spec(spec("relu")))
    weights = network.init_weights(np.random.default_rng(0), scale=7.0)
    x = np.random.default_rng(1).uniform(0, 1, (200, 8, 8))
    fitted, scales = fit_weights(weights, network, limit=1.5)
    assert all(np.abs(w).max() == pytest.approx(1.5) for w in fitted.values())
    assert all(s != 1.0 for s in scales.values())
    assert (network.predict(x, ExactBackend(fitted)) == network.predict(x, ExactBackend(weights))).all()
    tanh = Network(load_network_spec(spec("tanh")))
    assert not scale_invariant(tanh)
    assert fit_weights(tanh.init_weights(np.random.default_rng(0)), tanh, 1.5)[1] == {"dense1": 1.0, "dense2": 1.0}


# ------------------------------------------------------------------------------------- compensation


def test_column_gains_take_out_what_scales_a_column() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, 10))
    probe = rng.uniform(0, 1, (32, 16))
    true_gain = np.linspace(0.7, 1.3, 10)
    reference = ExactBackend({"d": w}).matmul("d", probe)
    drifted = ExactBackend({"d": w * true_gain})
    gains = column_gains(drifted.matmul("d", probe), reference)
    np.testing.assert_allclose(gains, true_gain)
    x = rng.uniform(0, 1, (5, 16))
    np.testing.assert_allclose(GainCorrected(drifted, {"d": gains}).matmul("d", x), x @ w)


def test_column_gains_leave_alone_a_change_no_gain_explains() -> None:
    """Independent drift of every device (the emulator's) is not a column gain: the gains stay 1,
    and the network's outputs are not mis-scaled; a real gain on some columns is still taken out."""
    rng = np.random.default_rng(1)
    w = rng.normal(size=(16, 10))
    probe = rng.uniform(-1, 1, (32, 16))  # zero-mean, as the evaluator's: a column's sum is not its gain
    reference = ExactBackend({"d": w}).matmul("d", probe)
    drifted = w + 0.3 * rng.normal(size=w.shape)  # every weight moved on its own
    np.testing.assert_array_equal(column_gains(probe @ drifted, reference), np.ones(10))
    scaled = drifted.copy()
    scaled[:, :3] = 0.6 * w[:, :3]  # three columns lose 40 % of their gain, without noise
    gains = column_gains(probe @ scaled, reference)
    np.testing.assert_allclose(gains[:3], 0.6)
    np.testing.assert_array_equal(gains[3:], 1.0)


def test_durations_and_evaluation_times() -> None:
    assert [parse_duration(t) for t in ("90", "90s", "30min", "2h", "1d", "1h30m", "1.5h")] == [
        90, 90, 1800, 7200, DAY, 5400, 5400
    ]  # fmt: skip
    for bad in ("", "2x", "h", "1h 2", "-1h"):
        with pytest.raises(Exception, match="is not a duration"):
            parse_duration(bad)
    assert point_times(None, None) == [0.0]
    assert point_times(3600, 7200) == [0, 3600, 7200]
    with pytest.raises(ValueError, match="go together"):
        point_times(3600, None)
    with pytest.raises(ValueError, match="at most"):
        point_times(1, DAY)
    for bad in (-1.0, 0.0, float("nan"), 1.0):
        with pytest.raises(ValueError, match="--refresh"):
            Compensation(refresh_tolerance=bad)


# ------------------------------------------------------------------------------- reference cells


def test_reference_cells_take_out_a_drift_that_scales_every_device(
    emulator_process: EmulatorFactory, tiny_toml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A chip whose devices all shrink by the same power of time (phase-change memory's drift, x0.32 in
    a day): the pairs' differences shrink alike, which a network without biases shrugs off, but the
    single-device pairs (one device dead) are weighed against a fixed digital reference and go wrong.
    Reference cells measure the common line and put the network back, for their pulses and reads."""
    server = emulator_process(seed=3, preset="umass-ta-hfo2", extra=(
        "--rows", "48", "--cols", "10", "--set", "drift_mean=0", "--set", "drift_spread=0",
        "--set", "drift_exponent=0.1"))  # fmt: skip
    run = tmp_path / "run.h5"
    assert main(["train", "--config", str(tiny_toml), "--board", server.resource, "--out", str(run)]) == 0
    trained = last_accuracy(read_run(run))
    rewrite = ["--refresh", "4e-6", "--out"]  # each evaluation starts from freshly written weights
    assert main(["evaluate", str(run), *rewrite, str(tmp_path / "w1.h5")]) == 0
    plain = tmp_path / "plain.h5"
    assert main(["evaluate", str(run), "--every", "1d", "--for", "1d", "--out", str(plain)]) == 0
    assert main(["evaluate", str(run), *rewrite, str(tmp_path / "w2.h5")]) == 0
    capsys.readouterr()
    referenced = tmp_path / "referenced.h5"
    code = main(["evaluate", str(run), "--every", "1d", "--for", "1d", "--reference-cells", "4", "--out",
                 str(referenced)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    without, kept = points(plain), points(referenced)
    assert without[-1, 1] < trained - 0.1  # the single-device pairs ruin it
    assert kept[-1, 1] > without[-1, 1] + 0.1 and abs(kept[-1, 1] - trained) < 0.08
    assert kept[0, 7] == pytest.approx(1.0, abs=0.02) and kept[-1, 7] == pytest.approx((1 + DAY) ** -0.1, rel=0.03)
    assert kept[0, 8] > 0 and kept[1, 8] == 0  # the references are written once ...
    assert (kept[:, 9] > 10).all()  # ... and read at every point
    assert pulses_recorded(read_run(referenced)) == int(kept[:, 8].sum())
    table = np.asarray(read_run(referenced).datasets["evaluate/reference_cells/board0"])
    assert table.shape == (int(kept[0, 9]), 4) and (table[:, 0] >= 0).all()
    out = capsys.readouterr().out
    assert "reference cells" in out and "reads" in out

    assert main(["evaluate", str(run), *rewrite, str(tmp_path / "w3.h5")]) == 0
    per_column = tmp_path / "per-column.h5"  # a line per column, from its 4 references only
    assert main(["evaluate", str(run), "--every", "1d", "--for", "1d", "--reference-cells", "4", "--reference-fit",
                 "column", "--out", str(per_column)]) == 0  # fmt: skip
    assert abs(points(per_column)[-1, 1] - trained) < 0.08


def test_reference_cells_are_refused_with_a_refresh_in_one_line(
    tiny_toml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "never.h5"
    assert main(["evaluate", str(tmp_path / "any.h5"), "--refresh", "8e-6", "--reference-cells", "4", "--out",
                 str(out)]) == EXIT_ERROR  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--reference-cells" in err and "--refresh" in err
    assert not out.exists()
