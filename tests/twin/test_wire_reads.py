"""The twin's conductance figures are the devices', not the map reads' (which lose ``G^2 r`` to the wires)."""

from __future__ import annotations

import numpy as np
import pytest

from drivers import open_board
from hil.twin.fit import fit_twin
from hil.twin.suite_runner import run_suite_in_memory
from hil.twin.wire_reads import device_conductance
from mock_hardware.array_model import CrossbarArray
from mock_hardware.device_params import preset
from protocols.characterization.figures import read_figures

# Long enough lines that a read at the gate window's top loses about 2 % (r * segments * G).
WIRES = {"rows": 128, "cols": 64, "line_resistance": 0.5, "read_noise": 0.0, "write_noise": 4e-6}
CHIP = "emulator://?preset=umass-ta-hfo2&seed=5&" + "&".join(f"{k}={v}" for k, v in WIRES.items())


@pytest.mark.parametrize(("nonlinearity", "tolerance"), [(0.0, 1e-9), (1.5, 3e-3)])
def test_device_conductance_undoes_the_emulators_series_read(nonlinearity: float, tolerance: float) -> None:
    # Exact for ohmic cells; the preset's I-V, a little lower below the read voltage than at it,
    # leaves under 0.3 % at 1 mS.
    array = CrossbarArray(preset("umass-ta-hfo2", **WIRES, iv_nonlinearity=nonlinearity), seed=3)
    g = array.conductance
    reads = array.read_conductance(0, 0, 128, 64, 0.2)
    assert np.max(np.abs(reads / g - 1)) > 0.03  # what the wires take from a shorted cell far from the ends
    np.testing.assert_allclose(device_conductance(reads, 0.5, (128, 64)), g, rtol=tolerance)
    # A region's cells keep their place on the array.
    g = array.conductance  # drifted a little while the first map was read
    region = array.read_conductance(40, 10, 20, 20, 0.2)
    np.testing.assert_allclose(device_conductance(region, 0.5, (128, 64), 40, 10), g[40:60, 10:30], rtol=tolerance)


def test_the_twin_fits_the_devices_line_and_noise_not_the_reads() -> None:
    with open_board(CHIP) as board:
        runs = run_suite_in_memory(board, {"retention": {"t_last": 10.0}})
    twin = fit_twin(runs, cell_map=False)
    figures = read_figures(next(r for r in runs if r.procedure == "gate-calibration").attrs["calibration"])
    true_k = 98e-6
    assert figures["k"].value < 0.975 * true_k  # the reads' slope
    assert abs(twin.parameters["set_slope"] / true_k - 1) < 0.005
    assert abs(twin.parameters["g_stuck_high"] / 1e-3 - 1) < 0.01
    assert abs(twin.parameters["write_noise"] / 4e-6 - 1) < 0.02
    assert "less the wires' series resistance" in twin.sources["set_slope"].figure
