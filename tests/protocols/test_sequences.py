"""Sequence models and files: round trips, and every kind of bad or hostile input refused clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.sequences import (
    MAX_EXPANDED_STEPS,
    MAX_LISTED_ERRORS,
    MAX_LOOP_DEPTH,
    Delay,
    Loop,
    Pulse,
    PulseSequence,
    Read,
    SequenceFileError,
    Step,
    TargetRegion,
    Targets,
    load_sequence,
    parse_sequence,
    save_sequence,
    sequence_from_text,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def full_sequence() -> PulseSequence:
    return PulseSequence(
        name="everything",
        description="one of each step, loops nested",
        targets=Targets(region=TargetRegion(row0=1, col0=2, nrows=2, ncols=3), cells=[[0, 0], [7, 5]]),
        steps=[
            Pulse(kind="FORM", amplitude=3.0, v_gate=1.0, width=1e-5),
            Loop(
                repeat=3,
                steps=[
                    Pulse(kind="SET", amplitude=2.0, v_gate=1.25, width=1e-6),
                    Loop(repeat=2, steps=[Read(v_read=-0.15), Delay(seconds=0.5)]),
                ],
            ),
            Pulse(kind="RESET", amplitude=1.1, v_gate=4.0, width=2e-7),
            Read(v_read=0.2),
        ],
    )


def valid_dict() -> dict[str, object]:
    return {
        "name": "x",
        "targets": {"cells": [[0, 0]]},
        "steps": [{"type": "read", "v_read": 0.2}],
    }


def errors_of(text: str, fmt: str = "json") -> SequenceFileError:
    with pytest.raises(SequenceFileError) as info:
        sequence_from_text(text, fmt)  # type: ignore[arg-type]
    return info.value


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_save_then_load_gives_the_same_sequence(tmp_path: Path, suffix: str) -> None:
    sequence = full_sequence()
    path = tmp_path / f"seq{suffix}"
    save_sequence(sequence, path)
    assert load_sequence(path) == sequence
    assert sequence.n_steps == 1 + 3 * (1 + 2 * 2) + 2


def test_expansion_order_follows_the_file() -> None:
    targets = full_sequence().targets.as_array().tolist()
    # The region row by row, then the listed cells in their order.
    assert targets == [[1, 2], [1, 3], [1, 4], [2, 2], [2, 3], [2, 4], [0, 0], [7, 5]]


@pytest.mark.parametrize("name", ["pulse-train.toml", "retention-check.json"])
def test_example_files_load_and_round_trip(tmp_path: Path, name: str) -> None:
    sequence = load_sequence(EXAMPLES / name)
    for suffix in (".json", ".toml"):
        save_sequence(sequence, tmp_path / f"copy{suffix}")
        assert load_sequence(tmp_path / f"copy{suffix}") == sequence


def test_pulse_train_example_is_what_its_comment_says() -> None:
    sequence = load_sequence(EXAMPLES / "pulse-train.toml")
    set_loop, reset_loop = sequence.steps[1], sequence.steps[2]
    assert isinstance(set_loop, Loop) and isinstance(reset_loop, Loop)
    assert set_loop.repeat == reset_loop.repeat == 20
    assert [type(s) for s in set_loop.steps] == [Pulse, Read]
    assert isinstance(set_loop.steps[0], Pulse) and set_loop.steps[0].kind == "SET"
    assert isinstance(reset_loop.steps[0], Pulse) and reset_loop.steps[0].kind == "RESET"


finite = st.floats(min_value=0, max_value=10, allow_nan=False, allow_infinity=False)
leaves = st.one_of(
    st.builds(Pulse, kind=st.sampled_from(["SET", "RESET", "FORM"]), amplitude=finite, v_gate=finite,
              width=st.floats(min_value=1e-9, max_value=1)),
    st.builds(Read, v_read=st.floats(min_value=0.01, max_value=0.5)),
    st.builds(Delay, seconds=finite),
)  # fmt: skip
steps = st.recursive(
    leaves, lambda inner: st.builds(Loop, repeat=st.integers(1, 5), steps=st.lists(inner, min_size=1, max_size=3)),
    max_leaves=12,
)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(steps, min_size=1, max_size=4), name=st.text(min_size=1, max_size=20))
def test_any_valid_sequence_round_trips_through_both_formats(steps: list[Step], name: str) -> None:
    sequence = PulseSequence(name=name, targets=Targets(cells=[[0, 0]]), steps=steps)
    assert sequence_from_text(sequence.to_json(), "json") == sequence
    assert sequence_from_text(sequence.to_toml(), "toml") == sequence


# ----------------------------------------------------------------------------- malformed files


BAD_TOML = """
name = "bad"
targets = { cells = [[0, 0], [1, -1]] }

[[steps]]
type = "pulse"
kind = "SET"
amplitude = 2.0
v_gate = 1.0
width = 1e-6

[[steps]]
type = "read"
v_read = "0.2"

[[steps]]
type = "loop"
repeat = 3

[[steps.steps]]
type = "pulse"
kind = "SET"
amplitude = 2.0
v_gate = 1.0
width = -1e-6

[[steps.steps]]
type = "pulse"
kind = "ZAP"
amplitude = 2.0
v_gate = 1.0
width = 1e-6
colour = "red"

[[steps.steps]]
type = "delay"
"""


def test_malformed_file_names_the_path_of_every_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BAD_TOML)
    with pytest.raises(SequenceFileError) as info:
        load_sequence(path)
    error = info.value
    assert dict(error.errors).keys() == {
        "targets.cells.1.1", "steps.1.v_read", "steps.2.steps.0.width", "steps.2.steps.1.kind",
        "steps.2.steps.1.colour", "steps.2.steps.2.seconds",
    }  # fmt: skip
    text = str(error)
    assert text.startswith(f"{path}: 6 errors in the sequence:")
    assert "steps.2.steps.0.width: Input should be greater than 0 (got -1e-06)" in text
    assert "steps.2.steps.1.kind: Input should be 'SET', 'RESET' or 'FORM' (got 'ZAP')" in text
    assert "steps.2.steps.1.colour: Extra inputs are not permitted" in text
    assert "steps.2.steps.2.seconds: Field required" in text


def test_unknown_or_missing_step_type_is_named() -> None:
    data = valid_dict() | {"steps": [{"type": "jump"}, {"v_read": 0.2}, 7]}
    with pytest.raises(SequenceFileError) as info:
        parse_sequence(data)
    paths = [p for p, _ in info.value.errors]
    assert paths == ["steps.0", "steps.1", "steps.2"]
    assert "'jump'" in str(info.value) and "'pulse', 'read', 'delay', 'loop'" in str(info.value)


def test_top_level_not_a_table() -> None:
    error = errors_of("[1, 2]")
    assert str(error) == "<sequence>: Input should be a valid dictionary or instance of PulseSequence"
    assert error.errors == [("", "Input should be a valid dictionary or instance of PulseSequence")]


def test_malformed_toml_reports_line_and_column() -> None:
    error = errors_of('name = "x"\nsteps = [\n  {type = "read" v_read = 0.2},\n]\n', "toml")
    assert str(error).startswith("<sequence>: malformed TOML:")
    assert "line 3" in str(error)


def test_malformed_json_reports_line_and_column() -> None:
    error = errors_of('{\n  "name": "x",\n  "steps": [,]\n}')
    assert "malformed JSON at line 3, column 13" in str(error)


def test_duplicate_json_key_is_refused_not_silently_overwritten() -> None:
    error = errors_of('{"name": "a", "name": "b"}')
    assert "duplicate key 'name'" in str(error)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SequenceFileError) as info:
        load_sequence(tmp_path / "nope.toml")
    assert str(info.value) == f"{tmp_path / 'nope.toml'}: no such file"
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_directory_unknown_suffix_and_binary_files_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(SequenceFileError, match="is a directory"):
        load_sequence(tmp_path / "dir.json")
    with pytest.raises(SequenceFileError, match=r"unknown file type '\.yaml'; use \.json or \.toml"):
        load_sequence(tmp_path / "seq.yaml")
    (tmp_path / "bin.json").write_bytes(b'{"name": "\xff"}')
    with pytest.raises(SequenceFileError, match="not UTF-8 text"):
        load_sequence(tmp_path / "bin.json")


def test_many_errors_are_all_kept_but_the_message_stays_bounded() -> None:
    data = valid_dict() | {"steps": [{"type": "delay", "seconds": -1.0}] * (MAX_LISTED_ERRORS + 50)}
    with pytest.raises(SequenceFileError) as info:
        parse_sequence(data)
    assert len(info.value.errors) == MAX_LISTED_ERRORS + 50
    assert str(info.value).endswith("... and 50 more")
    assert f"steps.{MAX_LISTED_ERRORS - 1}.seconds" in str(info.value)


# ----------------------------------------------------------------------------- hostile input


def loop_json(repeat: int, inner: object) -> dict[str, object]:
    return {"type": "loop", "repeat": repeat, "steps": [inner]}


@pytest.mark.parametrize(
    ("step", "path", "message"),
    [
        (loop_json(10**12, {"type": "delay", "seconds": 0}), "steps.0", "loop expands to 1,000,000,000,000 steps"),
        (loop_json(1000, loop_json(1000, loop_json(1000, {"type": "delay", "seconds": 0}))), "steps.0",
         "loop expands to 1,000,000,000 steps"),
        (loop_json(0, {"type": "delay", "seconds": 0}), "steps.0.repeat", "greater than or equal to 1"),
        (loop_json(True, {"type": "delay", "seconds": 0}), "steps.0.repeat", "valid integer"),
        (loop_json(2.5, {"type": "delay", "seconds": 0}), "steps.0.repeat", "valid integer"),  # type: ignore[arg-type]
        ({"type": "loop", "repeat": 2, "steps": []}, "steps.0.steps", "at least 1 item"),
        ({"type": "pulse", "kind": "SET", "amplitude": float("nan"), "v_gate": 1, "width": 1e-6},
         "steps.0.amplitude", "finite number"),
        ({"type": "pulse", "kind": "SET", "amplitude": 1, "v_gate": float("inf"), "width": 1e-6},
         "steps.0.v_gate", "finite number"),
        ({"type": "pulse", "kind": "SET", "amplitude": -1, "v_gate": 1, "width": 1e-6}, "steps.0.amplitude",
         "greater than or equal to 0"),
        ({"type": "pulse", "kind": "SET", "amplitude": 1, "v_gate": 1, "width": 0}, "steps.0.width",
         "greater than 0"),
        ({"type": "pulse", "kind": "SET", "amplitude": "2", "v_gate": 1, "width": 1e-6}, "steps.0.amplitude",
         "valid number"),
        ({"type": "pulse", "kind": "SET", "amplitude": [2], "v_gate": 1, "width": 1e-6}, "steps.0.amplitude",
         "valid number"),
        ({"type": "read", "v_read": 0}, "steps.0.v_read", "must be non-zero"),
        ({"type": "delay", "seconds": -5}, "steps.0.seconds", "greater than or equal to 0"),
    ],
)  # fmt: skip
def test_hostile_steps_are_refused_with_their_path(step: dict[str, object], path: str, message: str) -> None:
    with pytest.raises(SequenceFileError) as info:
        parse_sequence(valid_dict() | {"steps": [step]})
    errors = dict(info.value.errors)
    assert path in errors, info.value
    assert message in errors[path]


def test_many_sibling_loops_are_capped_in_total() -> None:
    half = loop_json(MAX_EXPANDED_STEPS // 2 + 1, {"type": "delay", "seconds": 0})
    with pytest.raises(SequenceFileError, match=r"^<sequence>: sequence expands to 1,000,002 steps; at most 1,000,000"):
        parse_sequence(valid_dict() | {"steps": [half, half]})


def test_nan_in_a_json_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nan.json"
    path.write_text('{"name": "x", "targets": {"cells": [[0, 0]]}, "steps": [{"type": "delay", "seconds": NaN}]}')
    with pytest.raises(SequenceFileError, match=r"steps\.0\.seconds: Input should be a finite number"):
        load_sequence(path)


def test_loops_nested_past_the_cap_are_refused() -> None:
    step: object = {"type": "read", "v_read": 0.2}
    for _ in range(MAX_LOOP_DEPTH + 1):
        step = loop_json(1, step)
    with pytest.raises(SequenceFileError, match=f"loops nest {MAX_LOOP_DEPTH + 1} deep; at most {MAX_LOOP_DEPTH}"):
        parse_sequence(valid_dict() | {"steps": [step]})
    with pytest.raises(ValueError, match="nest"):  # built in Python too, not only from files
        Loop.model_validate(step)


@pytest.mark.parametrize(
    ("depth", "message"),
    [(MAX_LOOP_DEPTH, None), (200, "loops nest 200 deep"), (50_000, "malformed JSON: nested too deeply to parse")],
)
def test_deeply_nested_json_fails_cleanly_not_with_a_recursion_error(depth: int, message: str | None) -> None:
    head = '{"name": "x", "targets": {"cells": [[0, 0]]}, "steps": ['
    text = head + '{"type": "loop", "repeat": 1, "steps": [' * depth + '{"type": "read", "v_read": 0.2}'
    text += "]}" * depth + "]}"
    if message is None:
        assert sequence_from_text(text, "json").n_steps == 1
    else:
        assert message in str(errors_of(text))


def test_deeply_nested_toml_fails_cleanly() -> None:
    error = errors_of("x = " + "[" * 50_000 + "]" * 50_000, "toml")
    assert str(error).startswith("<sequence>: malformed TOML")


def test_an_integer_of_thousands_of_digits_is_a_clear_error() -> None:
    error = errors_of('{"name": "x", "repeat": ' + "9" * 5000 + "}")
    assert str(error).startswith("<sequence>: malformed JSON")


def test_oversized_file_is_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("protocols.sequences.MAX_FILE_BYTES", 100)
    path = tmp_path / "big.json"
    path.write_text(json.dumps(valid_dict() | {"description": "x" * 200}))
    with pytest.raises(SequenceFileError, match="at most 100 are read"):
        load_sequence(path)


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        ({}, "no target cells"),
        ({"cells": [[1, 2], [1, 2]]}, "cell [1, 2] is targeted twice"),
        ({"region": {"row0": 0, "col0": 0, "nrows": 2, "ncols": 2}, "cells": [[1, 1]]},
         "cell [1, 1] is targeted twice"),
        ({"region": {"row0": 0, "col0": 0, "nrows": 100_000, "ncols": 100_000}}, "10,000,000,000 target cells"),
        ({"cells": [[10**30, 0]]}, "less than or equal to 1048575"),
        ({"region": {"row0": 2**63, "col0": 0, "nrows": 1, "ncols": 1}}, "less than or equal to 1048575"),
        ({"cells": [[1, 2, 3]]}, "at most 2 items"),
        ({"cells": [[-1, 2]]}, "greater than or equal to 0"),
        ({"region": {"row0": 0, "col0": 0, "nrows": 0, "ncols": 2}}, "greater than or equal to 1"),
    ],
)  # fmt: skip
def test_bad_targets_are_refused(targets: dict[str, object], message: str) -> None:
    with pytest.raises(SequenceFileError) as info:
        parse_sequence(valid_dict() | {"targets": targets})
    assert all(path.startswith("targets") for path, _ in info.value.errors)
    assert message in str(info.value)


def test_models_are_frozen() -> None:
    pulse = Pulse(kind="SET", amplitude=1.0, v_gate=1.0, width=1e-6)
    with pytest.raises(ValueError, match="frozen"):
        pulse.width = -1.0  # type: ignore[misc]
