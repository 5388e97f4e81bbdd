"""Campaign files: cells, stable keys, emulator parameters, errors that name the field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hil.config import ConfigError
from hil.sweep.campaign import check_cells, emulator_resource, expand, load_campaign, parse_campaign
from hil.sweep.keys import cell_key

BASE: dict[str, Any] = {
    "name": "t", "kind": "train", "seeds": 2,
    "base": {"model": "mlp", "updates": 5, "optimizer": {"name": "sgd", "lr": 0.1}},
    "axes": {"update": ["gate-coded", "write-verify"], "emulator.write_noise": [1e-6, 4e-6, 8e-6]},
}  # fmt: skip


def test_cells_are_axes_times_seeds_with_the_emulator_parameters_in_the_resource() -> None:
    cells = expand(parse_campaign(BASE))
    assert len(cells) == 2 * 3 * 2
    assert len({c.key for c in cells}) == len(cells)
    cell = cells[3]  # gate-coded, 4 uS, seed 1
    assert cell.values == {"update": "gate-coded", "emulator.write_noise": 4e-6}
    assert cell.seed == 1 and cell.config["seed"] == 1 and cell.config["update"] == "gate-coded"
    assert cell.resource == "emulator://?preset=umass-ta-hfo2&seed=1&write_noise=4e-06"
    assert cell.run_config(cell.resource)["boards"] == {"board0": {"resource": cell.resource}}
    check_cells(cells)


def test_keys_are_stable_across_orderings_and_processes() -> None:
    key = cell_key({"b": [1, 2.5], "a": {"y": "s", "x": None}})
    assert key == cell_key({"a": {"x": None, "y": "s"}, "b": [1, 2.5]})
    assert key != cell_key({"a": {"x": None, "y": "s"}, "b": [1, 2.6]})
    keys = [c.key for c in expand(parse_campaign(BASE))]
    assert keys == [c.key for c in expand(parse_campaign(json.loads(json.dumps(BASE))))]
    # Another interpreter with another hash seed derives the same keys (nothing depends on hash()).
    code = ("import json,sys; from hil.sweep.campaign import expand, parse_campaign; "
            "print(json.dumps([c.key for c in expand(parse_campaign(json.loads(sys.argv[1])))]))")  # fmt: skip
    env = os.environ | {"PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code, json.dumps(BASE)], capture_output=True, text=True, env=env,
                         check=True)  # fmt: skip
    assert json.loads(out.stdout) == keys


def test_a_changed_base_field_changes_every_key_and_a_new_axis_value_adds_cells() -> None:
    keys = {c.key for c in expand(parse_campaign(BASE))}
    changed = json.loads(json.dumps(BASE))
    changed["base"]["updates"] = 6
    assert keys.isdisjoint(c.key for c in expand(parse_campaign(changed)))
    grown = json.loads(json.dumps(BASE))
    grown["axes"]["emulator.write_noise"].append(16e-6)
    assert keys < {c.key for c in expand(parse_campaign(grown))}


def test_emulator_resources_are_spelled_the_same_whatever_the_order() -> None:
    assert emulator_resource("emulator://?seed=3&preset=ideal", {"write_noise": 1e-6}) == emulator_resource(
        "emulator://?preset=ideal", {"write_noise": 1e-6, "seed": 3}
    )


@pytest.mark.parametrize(
    "change, words",
    [
        (
            {"axes": {"optimizer.lr": [0.1, -1.0]}},
            r"(?s)lr=-1.0.*lr: Input should be greater than 0",
        ),
        ({"axes": {"bogus_field": [1]}}, "bogus_field: Extra inputs are not permitted"),
        ({"pool": ["TCPIP::h::1::SOCKET"], "emulator": "emulator://?preset=ideal"}, "not both"),
        ({"pool": ["TCPIP::h::1::SOCKET"]}, "a pool of real boards has no emulator parameters"),
        ({"base": {"boards": {"b": "x"}}}, "base.boards"),
        ({"zip": [["update", "nope"]]}, "not an axis"),
        # found only after each cell's calibration and programming before:
        ({"base": BASE["base"] | {"dataset": "mnist28"}}, r"samples of shape \(28, 28\) do not fit"),
        ({"seeds": 10**9}, "less than or equal to 100000"),  # was: a list of 10**9 seeds built first
        ({"name": "a\x00b"}, "name: String should match pattern"),  # was "embedded null byte", no field
        ({"name": "../../etc"}, "name: String should match pattern"),  # its folder outside runs/sweep-*
        ({"name": "noise."}, "name: String should match pattern"),  # Windows drops the dot: the folder of "noise"
        ({"name": "noise "}, "name: String should match pattern"),
        ({"seeds": 20_000}, "6 combinations of the axes x 20,000 seeds make 120,000 cells; at most 100,000"),
        # one run file written by two workers at once: left unreadable ("wrong B-tree signature")
        (
            {"seeds": [1, 1]},
            r"write_noise=1e-06, seed 1\) is the same run as cell .* a seed or an axis value is "
            "given twice",
        ),
        ({"axes": {"update": ["gate-coded", "write-verify", "gate-coded"]}}, "is the same run as"),
    ],
)
def test_a_bad_campaign_is_refused_naming_the_field(change: dict[str, Any], words: str) -> None:
    data = BASE | change
    with pytest.raises(ConfigError, match=words):
        check_cells(expand(parse_campaign(data)))


def test_a_campaign_file_names_its_problems(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('kind = "nonsense"\nseeds = "x"\n')
    with pytest.raises(ConfigError) as caught:
        load_campaign(path)
    assert "kind" in str(caught.value) and "seeds" in str(caught.value)


@pytest.mark.parametrize(
    ("axis", "message"),
    [
        # were each form's errors of the union: "axes.batch_size.list[union[bool,int,float,str]]: Input
        # should be a valid list; axes.batch_size.function-after[_one_spacing(), AxisRange]: step 20 ..."
        (
            "batch_size = { start = 50, stop = 10, step = 20 }",
            "axes.batch_size.range: step 20 does not lead from 50 to 10",
        ),
        ('"emulator.write_noise" = [0.0, inf]', "axes.emulator.write_noise.values.1: inf is not a finite number"),
        ("batch_size = 5", "axes.batch_size.values: Input should be a valid list (got 5)"),
        ("batch_size = []", "axes.batch_size.values: List should have at least 1 item"),  # was "axes: an axis needs"
    ],
)
def test_a_bad_axis_is_one_problem_in_the_form_given(tmp_path: Path, axis: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'kind = "train"\n[base]\nmodel = "mlp"\n[axes]\n{axis}\n')
    with pytest.raises(ConfigError) as caught:
        load_campaign(path)
    problems = str(caught.value).splitlines()[1:]
    assert len(problems) == 1 and message in problems[0], problems


def test_characterize_and_sequence_cells_are_checked(tmp_path: Path) -> None:
    sequence = tmp_path / "seq.toml"
    step = 'type = "pulse"\nkind = "SET"\namplitude = 1.0\nv_gate = 1.0\nwidth = 1e-6\n'
    sequence.write_text(f'name = "s"\ntargets = {{ cells = [[0, 0]] }}\n[[steps]]\n{step}')
    campaign = tmp_path / "c.toml"
    campaign.write_text('kind = "sequence"\n[base]\nsequence = "seq.toml"\n[axes]\n"sequence.steps.0.amplitude" = '
                        '[1.0, "high"]\n')  # fmt: skip
    with pytest.raises(ConfigError, match=r"steps\.0\.amplitude"):
        check_cells(expand(load_campaign(campaign)))
    bad = parse_campaign({"kind": "characterize", "base": {"procedure": "no-such"}})
    with pytest.raises(ConfigError, match=r"base\.procedure"):
        check_cells(expand(bad))
