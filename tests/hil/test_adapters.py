"""The QCoDeS instrument and the ophyd-async device, with the real libraries, on the emulator."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from drivers import LimitError, open_board
from tests.conftest import EmulatorFactory

EMULATOR = "emulator://?preset=umass-ta-hfo2&seed=1&rows=8&cols=4"


@pytest.fixture
def station_board() -> Iterator[Any]:
    from hil.adapters.qcodes import MemristorBoard

    board = MemristorBoard("xbar", EMULATOR)
    yield board
    board.close()


def test_a_qcodes_station_snapshots_the_board_and_reads_its_map(station_board: Any) -> None:
    import qcodes

    station = qcodes.Station(station_board)
    station_board.v_read(0.1)
    station_board.gate2.voltage(1.25)
    snapshot = station.snapshot()["instruments"]["xbar"]
    parameters = snapshot["parameters"]
    assert parameters["IDN"]["value"]["serial"] == "SN-0001"
    assert parameters["rows"]["value"] == 8 and parameters["cols"]["value"] == 4
    assert parameters["v_read"]["value"] == 0.1 and parameters["v_read"]["unit"] == "V"
    assert parameters["limit_v_row_max"]["unit"] == "V" and parameters["limit_v_row_max"]["value"] > 0
    assert snapshot["submodules"]["gate2"]["parameters"]["voltage"]["value"] == pytest.approx(1.25, abs=2e-3)
    g = station_board.conductance_map()
    assert g.shape == (8, 4) and np.all(g > 0)
    assert station_board.read_cell(3, 2) == pytest.approx(g[3, 2], rel=0.2)
    assert station_board.vmm(np.full((2, 8), 0.1)).shape == (2, 4)
    with pytest.raises(ValueError, match="v_read"):
        station_board.v_read(3.0)  # the validator, before the board is asked
    with pytest.raises(LimitError):
        station_board.board.set_dac("ROW", 0, 99.0)


def test_a_qcodes_instrument_over_tcp(emulator_process: EmulatorFactory) -> None:
    from hil.adapters.qcodes import MemristorBoard

    emulator = emulator_process(seed=1, extra=("--rows", "4", "--cols", "4"))
    board = MemristorBoard("lan", emulator.resource)
    try:
        assert board.IDN()["serial"] == "SN-0001" and board.conductance_map().shape == (4, 4)
    finally:
        board.close()


def test_a_bluesky_count_plan_reads_the_map_and_a_plan_sets_a_dac_level() -> None:
    import bluesky.plan_stubs as bps
    import bluesky.plans as bp
    from bluesky.run_engine import RunEngine
    from ophyd_async.core import init_devices

    from hil.adapters.bluesky import CrossbarDevice, DacLine

    engine = RunEngine({}, call_returns_result=True)
    documents: list[tuple[str, dict[str, Any]]] = []
    board = open_board(EMULATOR)
    try:
        with init_devices(mock=False):
            xbar = CrossbarDevice(board)
        engine(bps.mv(xbar.row, 3, xbar.col, 2, xbar.v_read, 0.15))
        engine(bp.count([xbar], num=3), lambda name, doc: documents.append((name, doc)))
        events = [doc for name, doc in documents if name == "event"]
        descriptor = next(doc for name, doc in documents if name == "descriptor")
        assert len(events) == 3
        assert descriptor["data_keys"]["xbar-conductance_map"]["shape"] == [8, 4]
        assert descriptor["data_keys"]["xbar-cell"]["units"] == "S"
        assert descriptor["configuration"]["xbar"]["data"]["xbar-v_read"] == 0.15
        for event in events:
            g = np.asarray(event["data"]["xbar-conductance_map"])
            assert g.shape == (8, 4) and event["data"]["xbar-cell"] == g[3, 2] > 0
        engine(bps.mv(xbar.dac_line, DacLine.ROW, xbar.dac_channel, 5, xbar.dac_level, 0.3))
        assert board.dac_voltage("ROW", 5) == pytest.approx(0.3, abs=2e-3)
        with pytest.raises(Exception, match="limit"):
            engine(bps.mv(xbar.dac_level, 99.0))
        assert board.dac_voltage("ROW", 5) == pytest.approx(0.3, abs=2e-3)  # nothing applied
    finally:
        xbar.close()
