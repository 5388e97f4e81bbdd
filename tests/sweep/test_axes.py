"""Axis expansion: lists, ranges, products, zipped groups, dotted paths."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from hil.sweep.axes import AxisRange, axis_values, combinations, set_path


def test_ranges_by_count_by_step_and_on_a_log_scale() -> None:
    assert axis_values(AxisRange(start=0.0, stop=8e-6, num=5)) == pytest.approx([0, 2e-6, 4e-6, 6e-6, 8e-6])
    assert axis_values(AxisRange(start=10, stop=50, step=20)) == [10, 30, 50]
    assert all(isinstance(v, int) for v in axis_values(AxisRange(start=10, stop=50, step=20)))
    assert axis_values(AxisRange(start=10, stop=55, step=20)) == [10, 30, 50]  # stop off the grid
    assert axis_values(AxisRange(start=1e-3, stop=1e-1, num=3, scale="log")) == pytest.approx([1e-3, 1e-2, 1e-1])
    assert axis_values(["a", "b"]) == ["a", "b"]


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"start": 0, "stop": 1}, "either num or step"),
        ({"start": 0, "stop": 1, "num": 2, "step": 1}, "either num or step"),
        ({"start": 0, "stop": 1, "step": -1}, "does not lead"),
        ({"start": 0, "stop": 1, "num": 3, "scale": "log"}, "start and stop > 0"),
        ({"start": 0, "stop": 1e9, "step": 1}, "more than"),
    ],
)
def test_a_bad_range_is_refused(bad: dict[str, float], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        AxisRange.model_validate(bad)


def test_axes_combine_as_a_product_in_file_order() -> None:
    cells = list(combinations({"a": [1, 2], "b": ["x", "y", "z"]}))
    assert len(cells) == 6
    assert cells[:3] == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 1, "b": "z"}]
    assert list(combinations({})) == [{}]


def test_zipped_axes_advance_together() -> None:
    cells = list(combinations({"a": [1, 2], "b": [10, 20], "c": ["p", "q"]}, [["a", "b"]]))
    assert cells == [{"a": 1, "b": 10, "c": "p"}, {"a": 1, "b": 10, "c": "q"},
                     {"a": 2, "b": 20, "c": "p"}, {"a": 2, "b": 20, "c": "q"}]  # fmt: skip
    with pytest.raises(ValueError, match="different numbers of values"):
        list(combinations({"a": [1, 2], "b": [1]}, [["a", "b"]]))
    with pytest.raises(ValueError, match="not an axis"):
        list(combinations({"a": [1]}, [["a", "nope"]]))


def test_dotted_paths_reach_tables_and_list_items() -> None:
    config: dict[str, object] = {"optimizer": {"name": "sgd"}, "steps": [{"amplitude": 1.0}]}
    set_path(config, "optimizer.lr", 0.1)
    set_path(config, "steps.0.amplitude", 2.0)
    set_path(config, "gate_coded.v_set", 2.5)  # a table not in the base yet
    assert config == {"optimizer": {"name": "sgd", "lr": 0.1}, "steps": [{"amplitude": 2.0}],
                      "gate_coded": {"v_set": 2.5}}  # fmt: skip
    with pytest.raises(ValueError, match=r"steps\.3"):
        set_path(config, "steps.3.amplitude", 1.0)
    with pytest.raises(ValueError, match="holds a value"):
        set_path(config, "optimizer.name.x", 1)
