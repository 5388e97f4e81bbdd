"""Every pulse that reaches a board, counted in the run file across sessions, with what its link cost.

Used by training and characterization runs alike (``link/<board>`` in the run file, see
docs/data-format.md).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import fields

from drivers import Board, FirmwareError, LinkStats
from hil.ledger.facts import begin_sessions, record_sessions, write_wear
from hil.run_layout import COMPLETED, INTERRUPTED, link
from hil.storage import RunFile

STATS = tuple(f.name for f in fields(LinkStats))
"""the link's counters recorded (``dataclasses.asdict`` of them costs several times reading them)"""


def _board_pulse_counter(board: Board) -> int | None:
    """The board's own count of pulses since power-up (``SYST:PCNT?``), where the firmware keeps one."""
    try:
        return board.pulse_count()
    except (FirmwareError, ValueError):
        return None


@contextmanager
def record_link(boards: Mapping[str, Board], run: RunFile) -> Iterator[None]:
    """Count every pulse that reaches each board in the file, across sessions, and record what each
    link cost (retries, reconnects, ...); on disk with every flush and however the run ends.

    ``pulses_applied`` adds up the pulses of every session. A session killed outright (SIGKILL)
    cannot record its last pulses; where the board counts pulses (``SYST:PCNT?``), the next
    session adds what the board applied beyond what the file holds (``pulses_unrecorded``).
    """
    base: dict[str, dict[str, int]] = {}
    for name, board in boards.items():
        stored = run.read_attrs(link(name))
        counter = _board_pulse_counter(board)
        total = int(stored.get("pulses_applied", 0))
        unrecorded = int(stored.get("pulses_unrecorded", 0))
        expected = stored.get("counter_at_start")
        if counter is not None and isinstance(expected, int) and expected >= 0:
            expected += int(stored.get("session_pulses", 0))
            missing = counter - expected
            if missing > 0:  # pulses of a killed session after its last flush
                total += missing
                unrecorded += missing
        base[name] = {"pulses_applied": total, "pulses_unrecorded": unrecorded,
                      "counter_at_start": -1 if counter is None else counter,
                      "sessions": int(stored.get("sessions", 0)) + 1}  # fmt: skip

    writing = False
    recorded: dict[str, tuple[object, ...]] = {}

    def record() -> None:
        nonlocal writing
        if writing:  # writing the wear may flush, which calls this hook again
            return
        writing = True
        try:
            for name, board in boards.items():
                stats = tuple(getattr(board.link.stats, field) for field in STATS)
                # A training update flushes twice (its data, then the journal's mark); between the
                # two no command reaches the board, so the second finds nothing new to record.
                # The per-cell counts only grow, so their sums see any pulse counted.
                counted = tuple((kind, id(counts), int(counts.sum())) for kind, counts in board.pulses_by_cell.items())
                now = (run.clears, board.link.framed, board.pulses_applied, stats, counted)
                if recorded.get(name) == now:
                    continue
                start = base[name]
                run.set_attrs(link(name), framed=board.link.framed, session_pulses=board.pulses_applied,
                              **(start | {"pulses_applied": start["pulses_applied"] + board.pulses_applied}),
                              **dict(zip(STATS, stats, strict=True)))  # fmt: skip
                write_wear(run, name, board, start["sessions"])
                recorded[name] = now
        finally:
            writing = False

    begin_sessions(boards, run, {name: (start["sessions"], start["counter_at_start"]) for name, start in base.items()})
    for name in boards:
        run.require_group(link(name))
    record()
    run.flush()  # where the board's count started is on disk before the first pulse
    run.flush_hooks.append(record)
    status = COMPLETED
    try:
        yield
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM, SIGHUP
        status = INTERRUPTED
        raise
    except BaseException as exc:
        status = f"failed: {type(exc).__name__}"
        raise
    finally:
        run.flush_hooks.remove(record)
        record()
        record_sessions(boards, run, status)
