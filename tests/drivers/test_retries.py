"""Link failures: commands safe to repeat are retried; a pulse is never sent twice."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from drivers import LinkTimeout, open_board
from mock_hardware.faults import FaultInjector, FaultPlan

LOSSY = "emulator://?preset=ideal&rows=8&cols=8&fault_drop_reply=0.1&fault_seed=11"


def test_reads_survive_lost_replies_by_retrying() -> None:
    with open_board(LOSSY) as board:
        maps = [board.read_map() for _ in range(40)]
        vmm = board.vmm(np.full((5, 8), 0.1))
        assert board.link_retries >= 3  # about 10 % of replies were lost, and every read completed
    assert all(m.shape == (8, 8) for m in maps)
    assert vmm.shape == (5, 8)


def test_a_pulse_whose_reply_is_lost_is_not_sent_again() -> None:
    with open_board("emulator://?preset=ideal&rows=8&cols=8") as board:
        firmware: Any = board._transport._endpoint.firmware  # type: ignore[attr-defined]
        applied: list[int] = []
        original = firmware.array.apply_pulses
        firmware.array.apply_pulses = lambda *args: applied.append(1) or original(*args)
        firmware.faults = FaultInjector(FaultPlan(drop_reply=1.0))
        with pytest.raises(LinkTimeout, match=r"PULS:SET 1,1"):
            board.set_pulse(1, 1, 2.5, 2.0, 1e-6)
        assert applied == [1]  # applied once by the board; the host did not resend it
        with pytest.raises(LinkTimeout):
            board.apply_pulses("SET", 2.5, 2.0, 1e-6, mask=np.eye(8, dtype=bool))
        assert applied == [1, 1]
        firmware.faults = None
        assert board.read_cell(1, 1) > 0  # the link is back in step for the next command
        assert board.link_retries == 0  # pulses were never retried


def test_retries_can_be_switched_off() -> None:
    from drivers import Board, open_transport

    board = Board(open_transport("emulator://?preset=ideal&rows=4&cols=4"), retries=0)
    firmware: Any = board._transport._endpoint.firmware  # type: ignore[attr-defined]
    firmware.faults = FaultInjector(FaultPlan(drop_reply=1.0))
    with pytest.raises(LinkTimeout):
        board.read_cell(0, 0)
    firmware.faults = None
    board.close()
    assert board.link_retries == 0
