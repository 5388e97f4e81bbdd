"""Errors raised by the drivers; each names what went wrong and where."""

from __future__ import annotations


class BoardError(Exception):
    """Base of every error the drivers raise."""


class InvalidRequest(BoardError, ValueError):
    """A request the driver refuses before sending anything."""


class LimitError(InvalidRequest):
    """A request outside the board's safety limits; nothing was sent."""

    def __init__(
        self, parameter: str, value: float, low: float, high: float, unit: str = "", hint: str = ""
    ) -> None:
        self.parameter, self.value, self.low, self.high, self.unit = parameter, value, low, high, unit
        unit_text = f" {unit}" if unit else ""
        self.hint = hint
        fix = f" ({hint})" if hint else ""
        super().__init__(
            f"{parameter} = {value:g}{unit_text} is outside the limit [{low:g}, {high:g}]{unit_text}; "
            f"nothing was sent{fix}"
        )

    def __reduce__(self) -> tuple[type[LimitError], tuple[str, float, float, float, str, str]]:
        # Rebuilt from its fields, not its message (a Dask worker's error crosses processes pickled).
        return (type(self), (self.parameter, self.value, self.low, self.high, self.unit, self.hint))


class FirmwareError(BoardError):
    """The board refused a command with an ``ERR`` reply."""

    def __init__(self, code: int, message: str, command: str, resource: str) -> None:
        self.code, self.message, self.command, self.resource = code, message, command, resource
        super().__init__(f"{resource}: board refused {command!r}: error {code}: {message}")


class LinkError(BoardError):
    """The link to the board failed (closed, unreachable, garbled)."""

    def __init__(self, resource: str, detail: str, command: str | None = None) -> None:
        self.resource, self.command = resource, command
        during = f" during {command!r}" if command else ""
        super().__init__(f"{resource}: {detail}{during}")


class LinkLost(LinkError):
    """The link itself failed (closed by the other end, reset, unplugged), not just one reply."""


class LinkTimeout(LinkError, TimeoutError):
    """No (complete) reply within the timeout."""
