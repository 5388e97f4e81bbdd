"""The board as an ophyd-async device for Bluesky plans (``pip install memristor-hil[bluesky]``).

Written as ophyd-async devices are: a ``StandardReadable`` whose ``trigger`` reads the array once,
after which ``conductance_map`` (the whole map, S) and ``cell`` (the cell at ``row``, ``col``, S)
are read; ``v_read``, ``row``, ``col``, ``dac_line`` and ``dac_channel`` are its configuration;
``dac_level`` sets and reads the DAC channel named by ``dac_line`` and ``dac_channel`` (a plan moves
it with ``bps.mv``) and is read with every reading, as the board holds it then: the board idles
(every DAC at 0 V) after each map, so a level holds only until the next trigger. Board calls
block, so they run one at a time in a worker thread, never in the event loop; each still passes
the driver's safety checks before a byte is sent. Connected in mock mode (``init_devices(mock=True)``)
the device sends nothing to the board: its signals hold what ``set_mock_value`` gives them, and
``dac_level`` what the plan last set.

    >>> with init_devices():
    ...     xbar = CrossbarDevice(open_board("TCPIP::192.168.1.20::5025::SOCKET"))
    >>> RE(bp.count([xbar], num=5))
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
from ophyd_async.core import (
    AsyncStatus,
    StandardReadable,
    StrictEnum,
    get_mock,
    soft_signal_r_and_setter,
    soft_signal_rw,
)
from ophyd_async.core import StandardReadableFormat as Format

from drivers import Board
from drivers.commands import Line

T = TypeVar("T")


class DacLine(StrictEnum):
    ROW = "ROW"
    COL = "COL"
    GATE = "GATE"


class CrossbarDevice(StandardReadable):
    """An open :class:`~drivers.Board` as an ophyd-async device."""

    def __init__(self, board: Board, name: str = "") -> None:
        self.board = board
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="board")  # one request at a time
        self._mock_level = 0.0  # mock mode: dac_level's value (the board is never asked)
        rows, cols = board.shape
        with self.add_children_as_readables(Format.CONFIG_SIGNAL):
            self.v_read = soft_signal_rw(float, 0.2, units="V")
            self.row = soft_signal_rw(int, 0)
            self.col = soft_signal_rw(int, 0)
        with self.add_children_as_readables():
            self.conductance_map, self._set_map = soft_signal_r_and_setter(
                np.ndarray, np.zeros((rows, cols)), units="S"
            )
        with self.add_children_as_readables(Format.HINTED_SIGNAL):
            self.cell, self._set_cell = soft_signal_r_and_setter(float, 0.0, units="S")
        with self.add_children_as_readables(Format.CONFIG_SIGNAL):
            self.dac_line = soft_signal_rw(DacLine, DacLine.GATE)
            self.dac_channel = soft_signal_rw(int, 0)
        # Read with every reading: a plan that scans it (a child of this device, so Bluesky reads the
        # device, not the signal) records the level the board had, not the one asked for.
        with self.add_children_as_readables(Format.UNCACHED_SIGNAL):
            self.dac_level = soft_signal_rw(float, 0.0, units="V", getter=self._get_dac, setter=self._set_dac)
        super().__init__(name=name)

    @property
    def mocked(self) -> bool:
        """Connected in mock mode: nothing is sent to the board. (ophyd-async's public test for it:
        ``get_mock`` refuses a device not connected in mock mode.)"""
        try:
            get_mock(self)
        except RuntimeError:
            return False
        return True

    async def _call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, lambda: function(*args, **kwargs))

    @AsyncStatus.wrap
    async def trigger(self) -> None:
        """Read the whole array once; ``conductance_map`` and ``cell`` then hold it."""
        if self.mocked:
            return  # the mock's values stand; a dry run of a plan never reads the chip
        v_read, row, col = await self.v_read.get_value(), await self.row.get_value(), await self.col.get_value()
        rows, cols = self.board.shape
        if not (0 <= row < rows and 0 <= col < cols):
            raise ValueError(f"cell ({row}, {col}) is outside the {rows} x {cols} array")
        conductance = await self._call(self.board.read_map, v_read=v_read)
        self._set_map(conductance)
        self._set_cell(float(conductance[row, col]))

    async def _get_dac(self) -> float:
        if self.mocked:
            return self._mock_level  # what the plan last set
        line, channel = await self.dac_line.get_value(), await self.dac_channel.get_value()
        return await self._call(self.board.dac_voltage, Line(line.value), channel)

    async def _set_dac(self, voltage: float | None) -> None:
        if voltage is None:
            raise ValueError("dac_level: a voltage is needed")
        if self.mocked:
            self._mock_level = voltage  # a dry run never sets a level on the chip
            return
        line, channel = await self.dac_line.get_value(), await self.dac_channel.get_value()
        await self._call(self.board.set_dac, Line(line.value), channel, voltage)

    def close(self) -> None:
        """Idle and close the board."""
        self._worker.submit(self.board.close).result()
        self._worker.shutdown()
