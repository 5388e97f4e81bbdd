"""``hil characterize all`` checks every step against the board's limits before the suite's first pulse.

Each step checks its own limits when it starts; before these checks, a limit only a later step
meets (its read voltage, its pulses, the wire-resistance step's all-rows VMM) stopped the suite
after the steps before it had spent their pulses (about 166 a cell on the default suite).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pytest_mock import MockerFixture

from drivers import InvalidRequest, LimitError, SafetyLimits, open_board
from hil.cli import main
from hil.twin.suite_runner import check_plan, plan, run_suite_in_memory
from protocols.characterization.wire_resistance import WireResistanceOptions, check_wire_resistance

CHIP = "emulator://?preset=umass-ta-hfo2&seed=6&rows=16&cols=8"
QUICK = ["--set", "retention.t_last=100", "--set", "write-noise.cycles=4"]


def _limits_config(tmp_path: Path, **tighter: dict[str, float]) -> Path:
    """A board config whose host limits are the emulator's, with ``tighter`` ones replaced."""
    with open_board(CHIP) as board:
        limits = board.limits.model_dump() | tighter
    path = tmp_path / "board.json"
    path.write_text(json.dumps({"resource": CHIP, "limits": limits}))
    return path


@pytest.mark.parametrize(("setting", "named"), [
    ("retention.set_amplitude=99", "retention: "),  # the last step's pulse
    ("wire-resistance.v_read=9", "wire-resistance: "),  # a read voltage past the board's
    ("gate-calibration.v_gate_max=99", "gate-calibration: "),  # the highest gate of the calibration
])  # fmt: skip
def test_a_later_step_past_a_limit_refuses_the_suite_before_its_first_pulse(
    setting: str, named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "run"
    assert main(["characterize", "all", CHIP, "--out-dir", str(out_dir), "--yes", *QUICK, "--set", setting]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {named}") and "nothing was sent" in err and "\n" not in err
    assert not out_dir.exists()  # no step ran: no file, not even the folder


def test_the_all_rows_vmm_past_the_column_limit_is_refused_first_with_the_read_voltage_that_fits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _limits_config(tmp_path, i_col={"min": -1e-3, "max": 1e-3})
    out_dir = tmp_path / "run"
    assert main(["characterize", "all", "--config", str(config), "--out-dir", str(out_dir), "--yes", *QUICK]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: wire-resistance: predicted column current of the all-rows VMM")
    assert not out_dir.exists()
    # The read voltage the message names, as printed, is one the check takes under the same limits.
    fits = float(re.search(r"a v_read of at most ([0-9.e+-]+) V", err)[1])  # type: ignore[index]
    limits = SafetyLimits.model_validate(json.loads(config.read_text())["limits"])
    with open_board(CHIP, limits=limits) as board:
        assert 0.95 * 1e-3 / (16 * board.limits.g_cell_max) < fits
        check_plan(board, plan(board.shape, {"wire-resistance": {"v_read": fits}}))  # raises if not


def test_the_read_voltage_named_is_taken_from_the_column_limit_s_top_alone(tmp_path: Path) -> None:
    # A column limit of [0, 1 mA] (currents flow one way): the fit is 1 mA over 16 rows at g_cell_max,
    # not 0 V from the limit's bottom.
    config = _limits_config(tmp_path, i_col={"min": 0.0, "max": 1e-3})
    limits = SafetyLimits.model_validate(json.loads(config.read_text())["limits"])
    with open_board(CHIP, limits=limits) as board:
        with pytest.raises(LimitError, match=r"a v_read of at most ([0-9.e+-]+) V") as caught:
            check_wire_resistance(board, WireResistanceOptions(v_read=0.2))
        fits = float(re.search(r"at most ([0-9.e+-]+) V", str(caught.value))[1])  # type: ignore[index]
        assert 0 < fits <= 1e-3 / (16 * board.limits.g_cell_max)
        check_wire_resistance(board, WireResistanceOptions(v_read=fits))


def test_check_wire_resistance_sends_nothing_and_names_the_fix(tmp_path: Path, mocker: MockerFixture) -> None:
    config = _limits_config(tmp_path, i_col={"min": -1e-3, "max": 1e-3})
    limits = SafetyLimits.model_validate(json.loads(config.read_text())["limits"])
    with open_board(CHIP, limits=limits) as board:
        g_cell_max = board.limits.g_cell_max
        too_high = 1.01 * 1e-3 / (16 * g_cell_max)
        exchanges = mocker.spy(board.link, "exchange")
        with pytest.raises(LimitError, match=r"nothing was sent \(a v_read of at most") as caught:
            check_wire_resistance(board, WireResistanceOptions(v_read=too_high))
        assert caught.value.value == pytest.approx(16 * too_high * g_cell_max)
        assert exchanges.call_count == 0


def test_run_suite_in_memory_checks_the_plan_too() -> None:
    with open_board(CHIP) as board, pytest.raises(InvalidRequest, match=r"^retention: "):
        run_suite_in_memory(board, {"retention": {"set_amplitude": 99.0}})
