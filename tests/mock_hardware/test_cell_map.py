"""A chip's measured cells (a twin's cell map): loaded in place of the drawn ones, named relative to
a parameter file, refused with one line naming the file and the array when malformed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from drivers import open_board
from mock_hardware.array_model import CrossbarArray, PulseKind
from mock_hardware.device_params import preset

SHAPE = (12, 8)


def write_map(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def measured_cells() -> dict[str, np.ndarray]:
    stuck_low = np.zeros(SHAPE, dtype=bool)
    stuck_low[2, 3] = stuck_low[7, 0] = True
    stuck_high = np.zeros(SHAPE, dtype=bool)
    stuck_high[5, 5] = True
    unformed = np.zeros(SHAPE, dtype=bool)
    unformed[0, 1] = True
    k = np.full(SHAPE, np.nan)
    k[1, :] = 150e-6  # one row measured: its cells' own slope; the rest drawn
    return {"stuck_low": stuck_low, "stuck_high": stuck_high, "unformed": unformed, "set_slope": k,
            "g_stuck": np.where(stuck_high, 0.9e-3, np.nan)}  # fmt: skip


def test_the_map_replaces_drawn_defects_and_values_where_given(tmp_path: Path) -> None:
    cells = measured_cells()
    path = write_map(tmp_path / "chip.cells.npz", **cells)
    params = preset("umass-ta-hfo2", rows=SHAPE[0], cols=SHAPE[1], stuck_low_fraction=0.2, cell_map=str(path))
    array = CrossbarArray(params, seed=3)
    drawn = CrossbarArray(preset("umass-ta-hfo2", rows=SHAPE[0], cols=SHAPE[1], stuck_low_fraction=0.2), seed=3)
    assert np.array_equal(array.stuck_low, cells["stuck_low"])
    assert np.array_equal(array.stuck_high, cells["stuck_high"])
    assert np.array_equal(~array.formed, cells["unformed"])
    assert np.all(array.cells.set_slope[1] == 150e-6)
    others = np.arange(SHAPE[0]) != 1
    assert np.array_equal(array.cells.set_slope[others], drawn.cells.set_slope[others])
    assert array.conductance[5, 5] == pytest.approx(0.9e-3)
    # A measured slope is the cell's: a SET at 2 V lands on 150 uS/V x 2 V + c.
    ones = np.ones(SHAPE, dtype=bool)
    array.apply_pulses(PulseKind.SET, 0, 0, np.full(SHAPE, 2.5), np.full(SHAPE, 2.0), np.full(SHAPE, 1e-6), ones)
    expected = 150e-6 * 2.0 + array.cells.set_intercept[1]
    assert np.allclose(array.conductance[1], expected, atol=4 * params.write_noise)


def test_bad_lines_stay_stuck_low_over_a_map(tmp_path: Path) -> None:
    path = write_map(tmp_path / "m.npz", stuck_high=np.ones(SHAPE, dtype=bool))
    array = CrossbarArray(preset("ideal", rows=SHAPE[0], cols=SHAPE[1], bad_rows="4", cell_map=str(path)), seed=0)
    assert array.stuck_low[4].all() and not array.stuck_high[4].any() and array.stuck_high[3].all()


def test_a_parameter_file_names_its_map_relative_to_itself(tmp_path: Path) -> None:
    folder = tmp_path / "chip7"
    folder.mkdir()
    write_map(folder / "chip7.cells.npz", **measured_cells())
    (folder / "chip7.toml").write_text(
        f'preset = "umass-ta-hfo2"\n[parameters]\nrows = {SHAPE[0]}\ncols = {SHAPE[1]}\ncell_map = "chip7.cells.npz"\n'
    )
    with open_board(f"emulator://?params={folder / 'chip7.toml'}&seed=2") as board:
        g = board.read_map(0.2)
    assert g[5, 5] > 0.8e-3 and g[0, 1] < 2e-6  # the map's short and its virgin cell


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"stuck_low": np.zeros((3, 3), dtype=bool)}, "stuck_low has shape (3, 3); the array is (12, 8)"),
        ({"stuck_hi": np.zeros(SHAPE, dtype=bool)}, "unknown array 'stuck_hi'"),
        ({"unformed": np.zeros(SHAPE)}, "unformed must be boolean"),
        ({"set_slope": np.full(SHAPE, np.inf)}, "set_slope must hold finite floats"),
        ({"set_slope": np.full(SHAPE, -1e-6)}, "set_slope[0, 0] = -1e-06 is outside (0, 0.1]"),
    ],
)
def test_a_malformed_map_is_refused_naming_file_and_array(
    tmp_path: Path, arrays: dict[str, np.ndarray], message: str
) -> None:
    path = write_map(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=r"cell map .*bad\.npz") as error:
        CrossbarArray(preset("ideal", rows=SHAPE[0], cols=SHAPE[1], cell_map=str(path)), seed=0)
    assert message in str(error.value)


def test_a_missing_map_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot read cell map .*nothing\.npz"):
        CrossbarArray(preset("ideal", rows=4, cols=4, cell_map=str(tmp_path / "nothing.npz")), seed=0)
