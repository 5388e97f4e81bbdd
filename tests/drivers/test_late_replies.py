"""Plain mode after a timeout: a reply that comes late is dropped, never taken for another's.

Plain lines carry no sequence number, so once a query has timed out its reply may still be on
the way; if the link sent the next command at once, that late reply would be read as the next
command's answer, and every answer after it would be one behind (a wrong cell's conductance,
silently). The link owes the board that reply and waits for it, for a while, before it sends
anything else.
"""

from __future__ import annotations

import numpy as np

from drivers import open_board
from tests.conftest import EmulatorFactory

# Cells of distinct conductances read exactly (no read noise, drift or I-V curvature): a reply read
# for the wrong cell shows. A delayed reply comes after twice the timeout, within the link's wait.
CELLS = ("--rows", "6", "--cols", "5", *(f"--set={field}=0" for field in ("read_noise", "drift_mean", "drift_spread",
                                                                          "iv_nonlinearity")))  # fmt: skip
TIMEOUT = 0.5
DELAY = 1.0


def test_late_replies_in_plain_mode_are_never_taken_for_the_next_commands(emulator_process: EmulatorFactory) -> None:
    clean = emulator_process(seed=3, extra=CELLS)
    with open_board(clean.resource, framing=False) as board:
        expected = np.array([[board.read_cell(r, c) for c in range(5)] for r in range(6)])
    assert len(np.unique(expected)) == expected.size

    slow = emulator_process(seed=3, extra=(*CELLS, "--fault", "delay_reply=0.2", "--fault",
                                                           f"delay_seconds={DELAY}", "--fault", "seed=4"))  # fmt: skip
    with open_board(slow.resource, framing=False, timeout=TIMEOUT) as board:
        board.link.retries = 5  # a read whose every attempt is delayed is rare, not impossible
        read = np.array([[board.read_cell(r, c) for c in range(5)] for r in range(6)])
        stats = board.link.stats
    assert stats.retries >= 3 and stats.stale_replies >= 3  # replies came late, and were waited for and dropped
    np.testing.assert_array_equal(read, expected)
