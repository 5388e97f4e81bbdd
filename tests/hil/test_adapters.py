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


def test_a_qcodes_snapshot_after_a_map_records_the_levels_the_board_idled_to(station_board: Any) -> None:
    """Every map, cell read and VMM leaves the board idle (every DAC at 0 V): a snapshot taken after
    one (as every QCoDeS dataset takes) must not record the level set before it."""
    import qcodes

    station = qcodes.Station(station_board)
    for operation in (station_board.conductance_map, lambda: station_board.read_cell(1, 1),
                      lambda: station_board.vmm(np.full((1, 8), 0.05))):  # fmt: skip
        station_board.gate2.voltage(1.25)
        station_board.row_dacs[4].voltage(0.3)
        operation()
        submodules = station.snapshot()["instruments"]["xbar"]["submodules"]
        for name, line, channel in (("gate2", "GATE", 2), ("row4", "ROW", 4)):
            assert station_board.board.dac_voltage(line, channel) == 0.0
            assert submodules[name]["parameters"]["voltage"]["value"] == 0.0, name
    station_board.gate2.voltage(1.25)
    with pytest.raises(LimitError):
        station_board.vmm(np.full((1, 8), 99.0))  # refused before a byte is sent: nothing idled
    assert station_board.board.dac_voltage("GATE", 2) == pytest.approx(1.25, abs=2e-3)
    assert station_board.gate2.voltage.cache.get() == 1.25
    from drivers import LinkError

    def lost(**_: Any) -> None:
        raise LinkError("TCPIP::lab::5025::SOCKET", "the link went down mid-map", "MAP?")

    station_board.board.read_map = lost  # type: ignore[method-assign]
    with pytest.raises(LinkError):
        station_board.conductance_map()
    assert not station_board.gate2.voltage.cache.valid  # unknown until read again
    assert station_board.gate2.voltage() == pytest.approx(1.25, abs=2e-3)  # read from the board


def test_a_bluesky_scan_of_a_dac_level_records_the_level_the_board_held() -> None:
    """Bluesky reads a device, not its scanned child signal: the level must be in the device's reading,
    as the board held it (a map idles the board, so 0 V after each trigger)."""
    import bluesky.plan_stubs as bps
    import bluesky.plans as bp
    from bluesky.run_engine import RunEngine
    from ophyd_async.core import init_devices

    from hil.adapters.bluesky import CrossbarDevice, DacLine

    engine = RunEngine({}, call_returns_result=True)
    documents: list[tuple[str, dict[str, Any]]] = []
    board = open_board(EMULATOR)
    try:
        with init_devices():
            xbar = CrossbarDevice(board)
        engine(bps.mv(xbar.dac_line, DacLine.GATE, xbar.dac_channel, 2))
        engine(bp.scan([xbar], xbar.dac_level, 0.5, 1.0, 2), lambda name, doc: documents.append((name, doc)))
        descriptor = next(doc for name, doc in documents if name == "descriptor")
        assert descriptor["data_keys"]["xbar-dac_level"]["units"] == "V"
        assert descriptor["configuration"]["xbar"]["data"]["xbar-dac_channel"] == 2
        events = [doc["data"] for name, doc in documents if name == "event"]
        assert [event["xbar-dac_level"] for event in events] == [0.0, 0.0]  # the map idled the board
        engine(bps.mv(xbar.dac_level, 0.75))
        reading = engine(bps.rd(xbar.dac_level)).plan_result
        assert reading == pytest.approx(0.75, abs=2e-3) == board.dac_voltage("GATE", 2)
    finally:
        xbar.close()


def test_a_bluesky_device_in_mock_mode_never_touches_the_board() -> None:
    """ophyd-async's mock mode is a dry run: a plan run against it must send nothing to the chip."""
    import bluesky.plan_stubs as bps
    import bluesky.plans as bp
    from bluesky.run_engine import RunEngine
    from ophyd_async.core import init_devices, set_mock_value

    from hil.adapters.bluesky import CrossbarDevice

    engine = RunEngine({}, call_returns_result=True)
    documents: list[tuple[str, dict[str, Any]]] = []
    board = open_board(EMULATOR)
    sent: list[str] = []
    exchange = board.link.exchange

    def counted(header: str, *args: Any, **kwargs: Any) -> Any:
        sent.append(header)
        return exchange(header, *args, **kwargs)

    board.link.exchange = counted  # type: ignore[method-assign]
    try:
        with init_devices(mock=True):
            xbar = CrossbarDevice(board)
        set_mock_value(xbar.cell, 1e-4)
        engine(bps.mv(xbar.dac_level, 1.0))
        engine(bp.count([xbar], num=2), lambda name, doc: documents.append((name, doc)))
        assert [doc["data"]["xbar-cell"] for name, doc in documents if name == "event"] == [1e-4, 1e-4]
        assert [doc["data"]["xbar-dac_level"] for name, doc in documents if name == "event"] == [1.0, 1.0]
        assert sent == []
        assert board.dac_voltage("GATE", 0) == 0.0  # asked directly: the level was never set
    finally:
        xbar.close()
