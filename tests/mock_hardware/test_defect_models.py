"""Defects a real chip has and the twin needs: bad lines, partial forming, absolute offset spread,
gate saturation; and parameter files for ``serve --params`` and ``emulator://?params=``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from drivers import LinkError, open_board
from mock_hardware.array_model import CrossbarArray, PulseKind
from mock_hardware.device_params import PRESETS, DeviceParameters, preset
from mock_hardware.emulator import build_firmware
from mock_hardware.params_file import load_params_file
from tests.conftest import EmulatorFactory


def test_new_fields_at_their_defaults_leave_the_presets_unchanged() -> None:
    for name, params in PRESETS.items():
        explicit = preset(name, unformed_fraction=0.0, bad_rows="", bad_cols="", set_intercept_spread_abs=0.0,
                          v_gate_saturation=0.0, rows=16, cols=8)  # fmt: skip
        plain = preset(name, rows=16, cols=8)
        a, b = CrossbarArray(explicit, seed=5), CrossbarArray(plain, seed=5)
        assert np.array_equal(a.conductance, b.conductance), name
        assert params.unformed_fraction == 0 and params.v_gate_saturation == 0


def test_bad_lines_are_stuck_low_whole() -> None:
    array = CrossbarArray(preset("ideal", rows=8, cols=6, bad_rows="2,5", bad_cols="1"), seed=0)
    expected = np.zeros((8, 6), dtype=bool)
    expected[[2, 5], :] = True
    expected[:, 1] = True
    assert np.array_equal(array.stuck_low, expected)
    array.apply_pulses(PulseKind.SET, 0, 0, np.full((8, 6), 2.5), np.full((8, 6), 2.0), np.full((8, 6), 1e-6),
                       np.ones((8, 6), dtype=bool))  # fmt: skip
    assert np.all(array.conductance[expected] < 10e-6) and np.all(array.conductance[~expected] > 100e-6)


def test_a_fraction_of_cells_starts_unformed() -> None:
    params = preset("umass-ta-hfo2", rows=20, cols=10, unformed_fraction=0.25)
    array = CrossbarArray(params, seed=1)
    virgin = ~array.formed
    assert int(virgin.sum()) == 50
    assert not np.any(virgin & (array.stuck_low | array.stuck_high))  # a stuck cell is not also virgin
    assert np.all(array.conductance[virgin] < 2e-6)


def test_absolute_offset_spread_and_gate_saturation() -> None:
    params = preset("ideal", rows=40, cols=40, set_intercept=20e-6, set_intercept_spread_abs=8e-6,
                    v_gate_saturation=1.5)  # fmt: skip
    array = CrossbarArray(params, seed=2)
    assert array.cells.set_intercept.std() == pytest.approx(8e-6, rel=0.1)
    shape, ones = (40, 40), np.ones((40, 40), dtype=bool)
    levels = []
    for gate in (1.0, 1.5, 2.5):
        array.apply_pulses(PulseKind.RESET, 0, 0, np.full(shape, 1.8), np.full(shape, 5.0), np.full(shape, 1e-6), ones)
        array.apply_pulses(PulseKind.SET, 0, 0, np.full(shape, 2.5), np.full(shape, gate), np.full(shape, 1e-6), ones)
        levels.append(array.conductance.mean())
    assert levels[1] - levels[0] == pytest.approx(98e-6 * 0.5, rel=0.05)
    assert levels[2] == pytest.approx(levels[1], rel=1e-9)  # the plateau above saturation


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"bad_rows": "3,x"}, "comma-separated"),
        ({"bad_rows": "200"}, "outside the array"),
        ({"bad_cols": "1,1"}, "twice"),
        ({"unformed_fraction": 1.5}, "less than or equal"),
        ({"set_intercept_spread_abs": -1e-6}, "greater than or equal"),
        ({"v_gate_saturation": 50}, "less than or equal"),
    ],
)
def test_defect_parameters_are_validated(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        DeviceParameters(rows=16, cols=8, **fields)  # type: ignore[arg-type]


def _params_file(tmp_path: Path) -> Path:
    path = tmp_path / "chip.toml"
    path.write_text('preset = "ideal"\n[parameters]\nrows = 12\ncols = 6\nbad_rows = [4]\nset_slope = 50e-6\n'
                    '[sources.set_slope]\nfile = "cal.h5"\n', encoding="utf-8")  # fmt: skip
    return path


def test_a_parameter_file_loads_in_process_and_fields_override_it(tmp_path: Path) -> None:
    path = _params_file(tmp_path)
    assert load_params_file(path) == ("ideal", {"rows": "12", "cols": "6", "bad_rows": "4", "set_slope": "5e-05"})
    with open_board(f"emulator://?params={path}&cols=5") as board:
        assert board.shape == (12, 5)
        g = board.read_map()
        assert np.all(g[4] < 10e-6) and np.all(np.delete(g, 4, axis=0) > 100e-6)
    firmware = build_firmware("ideal", 0, {"set_slope": "5e-05"})
    assert firmware.array.params.set_slope == 50e-6


def test_a_bad_parameter_file_is_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "none.toml"
    with pytest.raises(LinkError, match="cannot read parameter file"):
        open_board(f"emulator://?params={missing}")
    broken = tmp_path / "broken.toml"
    broken.write_text("[parameters]\nrows = 0\n", encoding="utf-8")
    with pytest.raises(LinkError, match="rows"):
        open_board(f"emulator://?params={broken}")


def test_serve_loads_a_parameter_file_over_tcp(tmp_path: Path, emulator_process: EmulatorFactory) -> None:
    emulator = emulator_process("tcp", extra=("--params", str(_params_file(tmp_path))))
    with open_board(emulator.resource) as board:
        assert board.shape == (12, 6)
        assert np.all(board.read_map()[4] < 10e-6)
