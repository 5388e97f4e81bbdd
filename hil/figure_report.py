"""What a characterization found, as the lines ``hil characterize`` prints after a run.

A procedure's result may carry ``figures`` (name -> :class:`~protocols.characterization.figures.
Figure`) and ``notes`` (short sentences); :func:`reporting` wraps a procedure so both are printed
once it returns.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

from protocols.characterization.figures import Figure


def report_lines(result: object) -> list[str]:
    """The figures and notes of a procedure's result, one per line (none if it has neither)."""
    figures: Mapping[str, Figure] = getattr(result, "figures", {}) or {}
    notes: tuple[str, ...] = getattr(result, "notes", ()) or ()
    width = max((len(name) for name in figures), default=0)
    return [f"  {name:>{width}}: {figure}" for name, figure in figures.items()] + [f"  {note}" for note in notes]


def reporting(run: Callable[..., object]) -> Callable[..., object]:
    """``run`` that prints its result's figures and notes when it returns."""

    @functools.wraps(run)
    def wrapped(*args: object, **options: object) -> object:
        result = run(*args, **options)
        lines = report_lines(result)
        if lines:
            print("\n".join(["found:", *lines]), flush=True)
        return result

    return wrapped
