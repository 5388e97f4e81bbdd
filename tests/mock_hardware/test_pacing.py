"""The emulator's links paced as slow as real ones (``serve --baud N`` / ``--bytes-per-second N``), both
directions, over TCP and a pty; and ``ASRL`` resources read through pyserial with their VISA names."""

from __future__ import annotations

import time

import numpy as np
import pytest

from drivers import open_board
from drivers.resources import link_rate_of
from drivers.transports.serial_port import SerialTransport
from mock_hardware.__main__ import main as serve_main
from mock_hardware.pacing import Pacer, bytes_per_second
from tests.conftest import EmulatorFactory
from tests.drivers.test_compact import Exchanges


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_pacer_releases_bytes_at_its_rate_and_saves_nothing_up_while_idle() -> None:
    clock = FakeClock()
    pacer = Pacer(1000.0, clock)  # 1 ms a byte
    assert pacer.allowed(10) == 0  # the first byte has not crossed yet
    clock.now += 0.0045
    assert pacer.allowed(10) == 4
    assert pacer.wait() == pytest.approx(0.0005)
    clock.now += 0.010
    assert pacer.allowed(6) == 6  # the rest; the link goes idle
    clock.now += 5.0  # a long idle spell buys no burst
    assert pacer.allowed(100) == 0
    clock.now += 0.002
    assert pacer.allowed(100) == 2
    pacer.refund(2)  # the OS took none of them: they cross later
    assert pacer.allowed(100) == 2


def test_link_speeds_from_a_baud_rate_or_a_byte_rate() -> None:
    assert bytes_per_second(115200) == 11520.0  # 8N1: ten bits a byte
    assert bytes_per_second(rate=1e6) == 1e6
    assert bytes_per_second() is None
    with pytest.raises(ValueError, match="not both"):
        bytes_per_second(9600, 960.0)
    with pytest.raises(ValueError, match="positive"):
        bytes_per_second(0)
    assert link_rate_of("serial:///dev/ttyUSB0?baudrate=921600", None) == 92160.0
    assert link_rate_of("serial:///dev/ttyUSB0", None) is None  # not stated: a USB board's speed is its own
    assert link_rate_of("ASRL/dev/ttyUSB0::INSTR", 115200) == 11520.0
    assert link_rate_of("TCPIP::10.0.0.5::5025::SOCKET", 115200) is None


def test_serve_refuses_a_baud_rate_of_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert serve_main(["serve", "--tcp", "127.0.0.1:0", "--baud", "0"]) == 2
    assert "baud rate 0 must be positive" in capsys.readouterr().err


RATE = 20_000.0  # bytes/s: a 2 kB exchange takes 0.1 s


@pytest.mark.parametrize("link", ["tcp", "pty"])
def test_a_paced_link_is_no_faster_than_its_rate_both_ways(emulator_process: EmulatorFactory, link: str) -> None:
    emulator = emulator_process(link=link, preset="ideal",
                                extra=("--rows", "8", "--cols", "8", "--bytes-per-second", str(RATE)))  # fmt: skip
    with open_board(emulator.resource) as board:  # ASRL on the pty: read through pyserial, named as VISA names it
        if link == "pty":
            assert isinstance(board.link.transport, SerialTransport) and board.resource.startswith("ASRL")
        counted = Exchanges(board.link.transport)
        board.link.transport = counted
        for inputs, outputs in ((board.vmm, np.full((100, 8), 0.1)), (board.read_map, None)):
            start = time.perf_counter()
            inputs() if outputs is None else inputs(outputs)  # type: ignore[operator]
            elapsed = time.perf_counter() - start
            # Command and reply cross one after the other, each at RATE (the floor; the machine only adds).
            assert elapsed >= 0.9 * counted.sizes[-1] / RATE, (counted.sizes[-1], elapsed)
        assert counted.sizes[0] > 2000  # 1,600 B of inputs out, 2,400 B of codes back
