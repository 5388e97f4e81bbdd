"""``hil deploy``: a network trained elsewhere, programmed onto the chip, evaluated, optionally fine-tuned.

A deployment is an ordinary training run whose initial weights come from a ``.npz`` file
(:mod:`hil.weights_file`) and whose budget is the fine-tuning's (0: program and evaluate only), so
``hil show``, ``hil evaluate`` and ``hil train --resume`` work on it as on any run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hil.training.config import TrainConfig, load_train_config


def deploy_config(
    weights: str | Path, model: str | None, config_file: str | None = None, fine_tune: int = 0,
    overrides: dict[str, Any] | None = None, fit: bool = True,
) -> TrainConfig:  # fmt: skip
    """The run that writes ``weights`` onto the chip (each layer scaled to fill what the devices hold,
    with ``fit``, where that leaves the network's answers unchanged) and fine-tunes them in situ for
    ``fine_tune`` updates (the layers of ``retrain_layers`` in ``overrides``, default all: hybrid
    training for any network)."""
    given: dict[str, Any] = {
        "initial_weights": str(Path(weights).resolve()), "updates": fine_tune, "fit_initial_weights": fit,
    }  # fmt: skip
    if model is not None:
        given["model"] = model
    return load_train_config(config_file or "", given | (overrides or {}))
