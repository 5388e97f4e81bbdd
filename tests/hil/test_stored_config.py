"""A run file's training config means what it meant when written, whatever the model's defaults are now.

A field left null meant "the model's default" of the software that wrote the file; the CNN's VMM
read-back default changed (off, then on), so a file's layout version says which meaning applies,
and new files store the resolved value."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import pytest

from hil import run_layout as layout
from hil.cli import main
from hil.nn.defaults import MODEL_DEFAULTS
from hil.storage import RunData, read_run
from hil.training.config import TrainConfig, stored_train_config
from hil.training.run import resume_config

OLD_CNN_RUN = Path(__file__).parent / "data" / "layout-1.1" / "train.h5"  # a CNN run without vmm_readback


def with_config(run: RunData, version: str, **fields: object) -> RunData:
    """``run`` as if written in layout ``version`` with these config fields."""
    config = layout.config_text(run.config | fields)
    return RunData(path=run.path, root=run.root | {layout.VERSION: version, layout.CONFIG: config},
                   datasets=run.datasets, attrs=run.attrs)  # fmt: skip


def test_an_old_cnn_run_resumes_without_the_read_back_it_never_had(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = shutil.copy(OLD_CNN_RUN, tmp_path)
    old = read_run(path)
    assert old.config["model"] == "cnn" and old.config.get("vmm_readback") is None  # absent: the field came later
    assert MODEL_DEFAULTS["cnn"].vmm_readback  # today's default, which null did not mean then
    assert resume_config(str(path), old, updates=13).uses_vmm_readback is False
    assert main(["train", "--resume", str(path), "--updates", "13"]) == 0
    resumed = read_run(path)
    assert resumed.attrs["train"]["completed_updates"] == 13
    assert resumed.config["vmm_readback"] is False  # stored resolved: a later resume means the same


@pytest.mark.parametrize(("model", "before_1_4"), [("cnn", False), ("mlp", False), ("yao-hybrid", True)])
def test_null_read_back_means_the_default_of_the_files_layout(model: str, before_1_4: bool) -> None:
    run = read_run(OLD_CNN_RUN)
    assert stored_train_config(with_config(run, "1.3", model=model)).uses_vmm_readback is before_1_4
    current = stored_train_config(with_config(run, layout.FORMAT_VERSION, model=model))
    assert current.uses_vmm_readback is MODEL_DEFAULTS[model].vmm_readback
    # a value the file states is kept, whatever its layout
    assert stored_train_config(with_config(run, "1.1", model=model, vmm_readback=True)).uses_vmm_readback is True


def test_a_new_run_file_stores_the_read_back_resolved(tmp_path: Path) -> None:
    assert TrainConfig.model_validate({"model": "cnn"}).vmm_readback is True
    assert (
        TrainConfig.model_validate({"model": "mlp", "vmm_readback": None}).vmm_readback
        is MODEL_DEFAULTS["mlp"].vmm_readback
    )
    out = tmp_path / "run.h5"
    argv = ["train", "--model", "cnn", "--baseline", "--updates", "1", "--dataset", "digits"]
    assert main([*argv, "--out", str(out)]) == 0
    with h5py.File(out) as f:
        assert f.attrs[layout.VERSION] == layout.FORMAT_VERSION
    assert read_run(out).config["vmm_readback"] is True


def test_a_stored_pulse_threshold_is_kept_when_the_models_default_changes() -> None:
    """Every file stores ``gate_coded`` whole: the layout-1.1 CNN run trained at 0.015 V and resumes so."""
    run = read_run(OLD_CNN_RUN)
    assert run.config["gate_coded"]["dvg_min"] == 0.015 != MODEL_DEFAULTS["cnn"].dvg_min
    assert stored_train_config(run).gate_coded.dvg_min == 0.015
