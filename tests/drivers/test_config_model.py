"""The config and options models refuse true/false where a number is meant (drivers/config_model.py).

pydantic reads a bool as 1 or 0 for an int or float field: before, ``batch_size = true`` trained on
batches of one, ``seeds = true`` ran one seed, ``[[true, 0]]`` named cell (1, 0), and a limit's
``min = false`` was 0 V.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from drivers.limits import Range
from hil.config import validation_problems
from hil.sweep.campaign import Campaign
from hil.training.config import TrainConfig
from mock_hardware.device_params import DeviceParameters
from protocols.characterization.gate_calibration import GateCalibrationOptions
from protocols.characterization.retention import RetentionOptions
from protocols.characterization.yield_map import YieldMapOptions


@pytest.mark.parametrize(("model", "data", "field"), [
    (TrainConfig, {"batch_size": True}, "batch_size"),
    (TrainConfig, {"v_input": True}, "v_input"),
    (TrainConfig, {"gate_coded": {"v_set": False}}, "gate_coded.v_set"),  # a nested model's field
    (GateCalibrationOptions, {"repeats": True}, "repeats"),
    (RetentionOptions, {"cells": [[True, 0]]}, "cells"),  # a bool inside a list of numbers
    (Campaign, {"name": "c", "seeds": True, "base": {}}, "seeds"),
    (Range, {"min": False, "max": 1.0}, "min"),
    (DeviceParameters, {"write_noise": True}, "write_noise"),
])  # fmt: skip
def test_a_bool_where_a_number_is_meant_is_one_problem_naming_the_field(
    model: type[BaseModel], data: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        model.model_validate(data)
    problems = validation_problems(refused.value).strip()
    assert problems.startswith(f"{field}: a number is meant, not ") and "\n" not in problems


@pytest.mark.parametrize(("model", "data"), [
    (YieldMapOptions, {"destructive": False}),  # a bool field takes bools
    (DeviceParameters, {"start_formed": False}),
    (TrainConfig, {"batch_size": 20, "v_input": 0.1}),  # numbers stay numbers
    (RetentionOptions, {"cells": [[1, 0]]}),
])  # fmt: skip
def test_bools_where_bools_are_meant_and_numbers_pass(model: type[BaseModel], data: dict[str, Any]) -> None:
    model.model_validate(data)


def test_a_bool_for_a_field_of_words_gets_pydantic_s_own_message() -> None:
    with pytest.raises(ValidationError) as refused:
        RetentionOptions.model_validate({"program": True})
    assert "Input should be 'none', 'set' or 'reset'" in validation_problems(refused.value)
