"""Talking to test boards: one ``Board`` API over VISA, serial and in-process transports."""

from __future__ import annotations

from drivers.board import AdcSample, Board, Identity, Progress, PulseBatch, Region
from drivers.commands import Line, PulseKind
from drivers.errors import BoardError, FirmwareError, InvalidRequest, LimitError, LinkError, LinkLost, LinkTimeout
from drivers.limits import Range, SafetyLimits
from drivers.link import Link, LinkStats
from drivers.lock import BoardBusy
from drivers.resources import open_board, open_transport

__all__ = [
    "AdcSample", "Board", "BoardBusy", "BoardError", "FirmwareError", "Identity", "InvalidRequest", "LimitError",
    "Line", "Link", "LinkError", "LinkLost", "LinkStats", "LinkTimeout", "Progress", "PulseBatch", "PulseKind",
    "Range", "Region", "SafetyLimits", "open_board", "open_transport",
]  # fmt: skip
