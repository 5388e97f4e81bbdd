"""The twin's ``g_min``: the RESET floor the yield map measures, less what the model adds at that amplitude."""

from __future__ import annotations

from pathlib import Path

from drivers import open_board
from hil.storage import RunData
from hil.twin.fit import fit_twin, write_twin
from protocols.characterization.figures import read_figures
from protocols.characterization.yield_map import measure_yield_map
from protocols.recording import MemoryRecorder

G_MIN = 20e-6  # a low floor: the excess at 1.8 V (about 2 uS) is 11 % of it
CHIP = (f"emulator://?preset=umass-ta-hfo2&seed=3&rows=32&cols=16&g_min={G_MIN}&set_slope=45e-6"
        "&set_intercept=45e-6&g_initial_mean=60e-6&stuck_low_fraction=0.1")  # fmt: skip


def yield_map_run(resource: str) -> RunData:
    recorder = MemoryRecorder()
    with open_board(resource) as board:
        measure_yield_map(board, recorder)
    root = {"procedure": "yield-map", "status": "completed", "resource": resource}
    return RunData(Path("<memory:yield-map>"), root, dict(recorder.datasets), dict(recorder.attrs))


def test_the_twin_reproduces_the_measured_reset_floor_not_the_floor_plus_its_excess(tmp_path: Path) -> None:
    chip_run = yield_map_run(CHIP)
    measured_floor = read_figures(chip_run.attrs["yield"])["g_reset"].value
    # What the yield map sees is not g_min: the floor at a finite RESET amplitude sits above it.
    assert measured_floor > 1.08 * G_MIN

    twin = fit_twin([chip_run])
    assert abs(twin.parameters["g_min"] - G_MIN) < 0.02 * G_MIN
    assert "less the model's excess" in twin.sources["g_min"].figure

    # The same yield map on the twin lands where it landed on the chip (taking the measured floor
    # for g_min would land it about 2 uS, 11 %, higher).
    path = write_twin(twin, tmp_path / "chip.toml")
    twin_floor = read_figures(yield_map_run(f"emulator://?params={path}&seed=4").attrs["yield"])["g_reset"].value
    assert abs(twin_floor - measured_floor) < 0.02 * measured_floor
