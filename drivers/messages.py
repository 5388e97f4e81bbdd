"""How a bad value is shown in a one-line error, the same in the host and the emulator."""

from __future__ import annotations

from typing import Any

_LONGEST = 60  # characters of a value shown; longer ones are cut with "..."


def value_given(value: object) -> str:
    """`` (got 0)``: the value given, where it is a scalar that fits on a line; else nothing."""
    if isinstance(value, bool | int | float | str) or value is None:
        shown = repr(value)
        return f" (got {shown if len(shown) <= _LONGEST else shown[: _LONGEST - 3] + '...'})"
    return ""


def validation_message(error: Any) -> str:
    """One of pydantic's ``ValidationError.errors()`` as its message and the value given."""
    return str(error["msg"]).removeprefix("Value error, ") + value_given(error.get("input"))
