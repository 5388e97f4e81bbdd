"""Link failures in process: what is sent again, and proof that no pulse is ever applied twice.

Plain mode resends only commands safe to repeat; a pulse whose reply is lost is an error. Framed
mode resends anything under its sequence number, and the board runs a number at most once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from drivers import Board, LinkError, LinkTimeout, open_board, open_transport
from drivers.transports.base import PassThrough
from mock_hardware.faults import FaultInjector, FaultPlan

SMALL = "emulator://?preset=ideal&rows=8&cols=8"
LOSSY = SMALL + "&fault_drop_reply=0.1&fault_seed=11"


def firmware_of(board: Board) -> Any:
    transport = getattr(board._transport, "inner", board._transport)
    return transport._endpoint.firmware


class NextReplies(FaultInjector):
    """Loses (or damages) exactly the next ``count`` replies, then none."""

    def __init__(self, count: int, damage: bool = False) -> None:
        super().__init__(FaultPlan())
        self.count, self.damage = count, damage

    def reply(self, data: bytes) -> bytes:
        if self.count <= 0:
            return data
        self.count -= 1
        return data[:-5] + bytes([data[-5] ^ 0x20]) + data[-4:] if self.damage else b""


class FlakyWrites(PassThrough):
    """An in-process link whose next write is lost on the way (or arrives with one byte flipped)."""

    def __init__(self, resource: str = SMALL) -> None:
        super().__init__(open_transport(resource))
        self.lose_next = self.damage_next = False

    def write(self, data: bytes) -> None:
        if self.lose_next:
            self.lose_next = False
            return
        if self.damage_next:
            self.damage_next = False
            data = data[:-3] + bytes([data[-3] ^ 0x01]) + data[-2:]
        self.inner.write(data)


def pulses_applied(board: Board) -> int:
    return int(firmware_of(board).pulses_applied)


@pytest.mark.parametrize("framing", [False, True], ids=["plain", "framed"])
def test_reads_survive_lost_replies_by_retrying(framing: bool) -> None:
    with open_board(LOSSY, framing=framing) as board:
        assert board.link.framed is framing
        maps = [board.read_map() for _ in range(40)]
        vmm = board.vmm(np.full((5, 8), 0.1))
        assert board.link.stats.retries >= 3  # about 10 % of replies were lost, and every read completed
    assert all(m.shape == (8, 8) for m in maps)
    assert vmm.shape == (5, 8)


def test_plain_mode_never_resends_a_pulse_whose_reply_is_lost() -> None:
    with open_board(SMALL, framing=False) as board:
        firmware_of(board).faults = FaultInjector(FaultPlan(drop_reply=1.0))
        with pytest.raises(LinkTimeout, match=r"PULS:SET 1,1"):
            board.set_pulse(1, 1, 2.5, 2.0, 1e-6)
        assert pulses_applied(board) == 1  # applied once by the board; the host did not resend it
        with pytest.raises(LinkTimeout):
            board.apply_pulses("SET", 2.5, 2.0, 1e-6, mask=np.eye(8, dtype=bool))
        assert pulses_applied(board) == 9
        firmware_of(board).faults = None
        assert board.read_cell(1, 1) > 0  # the link is back in step for the next command
        assert board.link.stats.retries == 0  # pulses were never retried


def test_framed_mode_fetches_the_reply_of_a_pulse_applied_before_its_reply_was_lost() -> None:
    with open_board(SMALL) as board:
        assert board.link.framed
        firmware_of(board).faults = NextReplies(1)
        assert board.apply_pulses("SET", 2.5, 2.0, 1e-6, mask=np.eye(8, dtype=bool)) == 8
        assert pulses_applied(board) == 8  # not 16: the resent batch was answered, not run again
        assert board.link.stats.applied_before_loss == 1
        assert board.link.stats.retries == 1
        assert firmware_of(board).replayed == 1


def test_framed_mode_resends_a_pulse_that_never_reached_the_board() -> None:
    link = FlakyWrites()
    board = Board(link)
    link.lose_next = True
    board.set_pulse(1, 1, 2.5, 2.0, 1e-6)
    assert pulses_applied(board) == 1  # lost on the way, then sent again and applied once
    assert board.link.stats.applied_before_loss == 0 and board.link.stats.retries == 1
    board.close()


def test_a_command_damaged_on_the_way_is_refused_by_the_board_and_sent_again() -> None:
    link = FlakyWrites()
    board = Board(link)
    firmware = firmware_of(board)
    link.damage_next = True
    board.apply_pulses("SET", 2.5, 2.0, 1e-6, mask=np.eye(8, dtype=bool))
    assert firmware.pulses_applied == 8
    assert board.link.stats.retries == 1
    board.close()


def test_a_damaged_reply_fails_its_checksum_and_is_fetched_again() -> None:
    with open_board(SMALL) as board:
        clean = board.read_map()
        firmware_of(board).faults = NextReplies(1, damage=True)  # one bit of a float in the block
        np.testing.assert_array_equal(board.read_map(), clean)
        assert board.link.stats.retries == 1


def test_plain_mode_cannot_see_a_damaged_value() -> None:
    """Why framed mode exists: in plain mode a damaged digit is a silently wrong number."""
    with open_board(SMALL, framing=False, compact=False) as board:  # float32 blocks: every byte is a value
        clean = board.read_map()
        firmware_of(board).faults = NextReplies(1, damage=True)
        assert not np.array_equal(board.read_map(), clean)
        assert board.link.stats.retries == 0


def test_retries_can_be_switched_off() -> None:
    board = Board(open_transport("emulator://?preset=ideal&rows=4&cols=4"), retries=0)
    firmware_of(board).faults = FaultInjector(FaultPlan(drop_reply=1.0))
    with pytest.raises(LinkTimeout):
        board.read_cell(0, 0)
    firmware_of(board).faults = None
    board.close()
    assert board.link.stats.retries == 0


def test_a_link_that_stays_broken_gives_up_after_the_retry_budget() -> None:
    with open_board(SMALL) as board:
        firmware_of(board).faults = FaultInjector(FaultPlan(drop_reply=1.0))
        with pytest.raises(LinkError, match=r"PULS:SET 1,1|SYST:DONE\?"):
            board.set_pulse(1, 1, 2.5, 2.0, 1e-6)
        assert pulses_applied(board) == 1  # every attempt after the first was answered from the kept reply
        assert board.link.stats.retries == board.link.retries
        firmware_of(board).faults = None
