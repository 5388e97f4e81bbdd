"""The whole training run checked against its boards before any pulse (hil.training.plan)."""

from __future__ import annotations

from typing import Any

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
        ({"v_input": 0.5}, "tile 0 drives 128 rows of board0, up to 76.8 mA"),  # in the read limit, not the current
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
