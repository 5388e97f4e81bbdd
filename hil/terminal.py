"""What the terminal shows while a run works: one line or bar per phase, messages that never
collide with a bar, and a log file beside each run file.

A run goes through phases (checking, calibrating, placing, programming, evaluating, training); each
gets its own bar (a count and the time left, once the count is known) that stays on its own
line when the next begins. Messages go through :func:`say` and logging goes through
:class:`BarSafeHandler`, both of which print above the live bar instead of into it.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from drivers import Progress
from protocols.recording import DiscardingRecorder, Recorder

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Without a terminal (a log file, nohup, cron, CI) a bar is written as whole lines: one as it
# begins, then at most one every LINE_INTERVAL_S with its count and time left, and its final state.
# A terminal's redraws (ten a second, each after a \r) would fill a log with half-lines.
LINE_INTERVAL_S = 30.0
# ... and a long transfer's bar (a split map, VMM or pulse batch) only once it has taken this long:
# a run on a slow link splits many short ones.
TRANSFER_DELAY_S = 5.0


def say(message: str, err: bool = False) -> None:
    """Print a line above any live progress bar (never into it)."""
    tqdm.write(message, file=sys.stderr if err else sys.stdout)


class BarSafeHandler(logging.Handler):
    """Log records printed above the live bar, on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


def configure_logging(verbosity: int) -> None:
    """Console at WARNING (0), INFO (-v) or DEBUG with the wire traffic (-vv); the run's log file
    beside its run file keeps INFO, or DEBUG with -vv."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, BarSafeHandler)]:
        root.removeHandler(handler)
    console = BarSafeHandler({0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG))
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(console)
    root.setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO)


class _OwnRunOnly(logging.Filter):
    """A run log's filter: while other runs' logs are open in this process too (a sweep's cells in
    threads), only the records of the thread that opened this run; alone, every record (a board's
    helper threads included)."""

    def __init__(self, thread: int) -> None:
        super().__init__()
        self.thread = thread

    def filter(self, record: logging.LogRecord) -> bool:
        with _OPEN_LOCK:
            alone = len(_OPEN_LOGS) <= 1
        return alone or record.thread == self.thread


_OPEN_LOGS: set[logging.Handler] = set()
_OPEN_LOCK = threading.Lock()


def open_run_log(run_path: Path) -> logging.Handler:
    """A log file beside the run file (``RUN.log``, appended across sessions), at the level the
    command line asked for (INFO; DEBUG, with every command on the wire, under -vv); it takes only
    its own run's records when several runs share the process."""
    handler = logging.FileHandler(run_path.with_suffix(".log"), encoding="utf-8", delay=True)
    root = logging.getLogger()
    handler.setLevel(root.level or logging.INFO)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(_OwnRunOnly(threading.get_ident()))
    with _OPEN_LOCK:
        _OPEN_LOGS.add(handler)
    root.addHandler(handler)
    return handler


def close_run_log(handler: logging.Handler) -> None:
    logging.getLogger().removeHandler(handler)
    with _OPEN_LOCK:
        _OPEN_LOGS.discard(handler)
    handler.close()


def is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (OSError, ValueError):  # a closed stream
        return False


class _Lines:
    """A stream for tqdm without a terminal: each redraw one whole line, no \\r; blank and repeated ones dropped."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.last = ""

    def write(self, text: str) -> int:
        line = text.replace("\r", "").rstrip()
        if line and line != self.last:  # a bar closed where it began (a phase with no count) is one line
            self.out.write(line + "\n")
            self.last = line
        return len(text)

    def flush(self) -> None:
        self.out.flush()


def progress_bar(
    desc: str,
    total: int | None,
    unit: str = "step",
    leave: bool = True,
    file: TextIO | None = None,
    transfer: bool = False,
) -> tqdm[Any]:
    """A bar on ``file`` (default stderr): redrawn in place on a terminal, written as whole lines
    (:data:`LINE_INTERVAL_S` apart; a ``transfer`` only after :data:`TRANSFER_DELAY_S`) otherwise."""
    out = file if file is not None else sys.stderr
    if is_terminal(out):
        return tqdm(desc=desc, total=total, unit=unit, leave=leave, dynamic_ncols=True, file=out)
    first = TRANSFER_DELAY_S if transfer else LINE_INTERVAL_S
    return tqdm(desc=desc, total=total, unit=unit, leave=leave, file=_Lines(out), mininterval=first,
                maxinterval=LINE_INTERVAL_S, delay=TRANSFER_DELAY_S if transfer else 0.0)  # fmt: skip


def phase(recorder: Recorder, name: str, total: int | None = None) -> None:
    """Begin a phase of a run on the recorder's terminal (a recorder without one ignores it)."""
    begin = getattr(recorder, "phase", None)
    if callable(begin):
        begin(name, total)


class ProgressOnly(DiscardingRecorder):
    """A recorder that passes a step's progress to the run's bar and stores nothing (a protocol
    called inside a phase whose data the run stores its own way)."""

    def __init__(self, inner: Recorder) -> None:
        self.inner = inner

    def progress(self, advance: int = 0, total: int | None = None, **status: Any) -> None:
        self.inner.progress(advance, total, **status)


class TransferBar:
    """A :attr:`drivers.Board.progress` hook: a transient bar for each operation the board splits
    over several commands (a map, VMM batch or pulse batch on a slow link), so a long transfer is
    seen to move. Without a terminal, written as lines once a transfer takes a while (:func:`progress_bar`)."""

    def __init__(self, label: str, file: TextIO | None = None) -> None:
        self.label = label
        self.file = file
        self.bar: tqdm[Any] | None = None
        self.desc = ""

    def __call__(self, progress: Progress) -> None:
        desc = f"{self.label}: {progress.operation}"
        if self.bar is None or self.desc != desc or self.bar.total != progress.total or progress.done < self.bar.n:
            self.close()
            self.bar = progress_bar(desc, progress.total, progress.unit, leave=False, file=self.file, transfer=True)
            self.desc = desc
        self.bar.update(progress.done - self.bar.n)
        lines = self.bar.mininterval < LINE_INTERVAL_S and not is_terminal(self.bar.fp)
        if lines and self.bar.format_dict["elapsed"] >= TRANSFER_DELAY_S:  # this update wrote the first line:
            self.bar.mininterval = LINE_INTERVAL_S  # the next ones as far apart as a phase's
        if progress.done >= progress.total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
