"""SIGTERM and SIGHUP end a run as Ctrl-C does: the boards idled, the run file marked interrupted.

The handler raises :class:`Terminated` at once; should that exception land somewhere Python
swallows exceptions (a finalizer, a library's cleanup), the request stays pending and the run's
next step raises it again (:func:`raise_if_stopped`, called by the run file at every step).
"""

from __future__ import annotations

import signal
import weakref
from types import FrameType

STOP_SIGNALS = ("SIGTERM", "SIGHUP")  # SIGHUP: the terminal closed (no such signal on Windows)
_pending: list[int] = []


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: unwinds like Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop(signum: int, frame: FrameType | None) -> None:
    _pending.append(signum)
    if frame is not None and frame.f_code.co_filename == weakref.__file__:
        # Inside a weakref callback (h5py's object registry, say) Python would only print the
        # exception as "ignored", with a traceback: leave it pending for the run's next step.
        return
    raise Terminated(signum)


def install() -> None:
    """Turn SIGTERM and SIGHUP into :class:`Terminated` in this (main) thread."""
    _pending.clear()
    for name in STOP_SIGNALS:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _stop)


def raise_if_stopped() -> None:
    """Raise the stop a signal asked for, if its first raise was lost."""
    if _pending:
        raise Terminated(_pending[-1])
