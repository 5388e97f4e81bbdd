"""The board as a QCoDeS instrument (``pip install memristor-hil[qcodes]``).

Written as QCoDeS drivers are: parameters with units and validators that snapshot into a
``Station`` (array size, safety limits, read voltage, every DAC channel as a channel list), the
conductance map as a ``ParameterWithSetpoints`` over row and column indices, and methods for a
cell read and a VMM. Every request still passes the driver's safety checks before a byte is sent.

    >>> board = MemristorBoard("xbar", "TCPIP::192.168.1.20::5025::SOCKET")
    >>> station = qcodes.Station(board)
    >>> board.v_read(0.1); g = board.conductance_map()
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from qcodes.instrument import ChannelList, Instrument, InstrumentChannel
from qcodes.parameters import ParameterWithSetpoints
from qcodes.validators import Arrays, Ints, Numbers

from drivers import Board, FirmwareError, InvalidRequest, open_board
from drivers.commands import Line

T = TypeVar("T")
LIMIT_UNITS = {"v_row": "V", "v_col": "V", "v_gate": "V", "v_read": "V", "pulse_width": "s", "i_col": "A"}


class DacChannel(InstrumentChannel):
    """One DAC channel of a line kind (a row, column or gate line)."""

    def __init__(self, parent: MemristorBoard, name: str, line: Line, index: int) -> None:
        super().__init__(parent, name)
        self.line, self.index = line, index
        limit = getattr(parent.board.limits, {Line.ROW: "v_row", Line.COL: "v_col", Line.GATE: "v_gate"}[line])
        self.voltage = self.add_parameter(
            "voltage", label=f"{line.value} {index} DAC level", unit="V", vals=Numbers(limit.min, limit.max),
            get_cmd=lambda: parent.board.dac_voltage(line, index), set_cmd=self._set,
        )  # fmt: skip

    def _set(self, voltage: float) -> None:
        parent: MemristorBoard = self.parent  # type: ignore[assignment]
        parent.board.set_dac(self.line, self.index, voltage)
        parent._held[self.short_name] = self


class MemristorBoard(Instrument):
    """A memristor crossbar test board (or its emulator) as a QCoDeS instrument."""

    def __init__(self, name: str, resource: str | None = None, board: Board | None = None, **kwargs: Any) -> None:
        if (resource is None) == (board is None):
            raise ValueError("give either a resource string or an open board")
        self.board = board if board is not None else open_board(str(resource))
        super().__init__(name, **kwargs)
        rows, cols = self.board.shape
        limits = self.board.limits
        self.rows = self.add_parameter("rows", label="array rows", get_cmd=lambda: rows, vals=Ints())
        self.cols = self.add_parameter("cols", label="array columns", get_cmd=lambda: cols, vals=Ints())
        for field, unit in LIMIT_UNITS.items():
            limit = getattr(limits, field)
            for end in ("min", "max"):
                self.add_parameter(f"limit_{field}_{end}", label=f"{field} limit ({end})", unit=unit,
                                   get_cmd=partial(float, getattr(limit, end)))  # fmt: skip
        self.limit_g_cell_max = self.add_parameter(
            "limit_g_cell_max", label="highest cell conductance", unit="S", get_cmd=lambda: limits.g_cell_max
        )
        self._v_read = 0.2
        self._held: dict[str, DacChannel] = {}  # channels set since the board last idled
        self.v_read = self.add_parameter(
            "v_read", label="read voltage", unit="V", vals=Numbers(limits.v_read.min, limits.v_read.max),
            get_cmd=lambda: self._v_read, set_cmd=self._set_v_read,
        )  # fmt: skip
        self.row_index = self.add_parameter("row_index", label="row", get_cmd=lambda: np.arange(rows),
                                            vals=Arrays(shape=(rows,)))  # fmt: skip
        self.col_index = self.add_parameter("col_index", label="column", get_cmd=lambda: np.arange(cols),
                                            vals=Arrays(shape=(cols,)))  # fmt: skip
        self.conductance_map = self.add_parameter(
            "conductance_map", parameter_class=ParameterWithSetpoints, label="conductance", unit="S",
            setpoints=(self.row_index, self.col_index), vals=Arrays(shape=(rows, cols)),
            get_cmd=lambda: self._idling(self.board.read_map, v_read=self._v_read), snapshot_value=False,
        )  # fmt: skip
        for line, count in ((Line.ROW, rows), (Line.COL, cols), (Line.GATE, rows)):
            channels = ChannelList(self, f"{line.value.lower()}_dacs", DacChannel)
            for index in range(count):
                channel = DacChannel(self, f"{line.value.lower()}{index}", line, index)
                channels.append(channel)
                self.add_submodule(channel.short_name, channel)
            self.add_submodule(f"{line.value.lower()}_dacs", channels.to_channel_tuple())

    def _idling(self, operation: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a board operation that leaves the board idle (every DAC at 0 V), and say so in the DAC
        channels' caches: a snapshot taken after it (a dataset's, a station's) records 0 V, not the
        level set before it. A request refused (by the driver, before a byte is sent, or by the
        board) changes nothing; after a lost link the levels are unknown until read again."""
        try:
            result = operation(*args, **kwargs)
        except (InvalidRequest, FirmwareError):
            raise
        except BaseException:
            for channel in self._held.values():
                channel.voltage.cache.invalidate()
            raise
        held, self._held = self._held, {}
        for channel in held.values():
            channel.voltage.cache.set(0.0)
        return result

    def _set_v_read(self, value: float) -> None:
        self._v_read = self.board.check_read_voltage(value)

    def get_idn(self) -> dict[str, str | None]:
        identity = self.board.identity
        return {"vendor": identity.maker, "model": identity.model, "serial": identity.serial,
                "firmware": identity.firmware}  # fmt: skip

    def read_cell(self, row: int, col: int) -> float:
        """One cell's conductance at the read voltage, S."""
        return self._idling(self.board.read_cell, row, col, v_read=self._v_read)

    def vmm(self, v_rows: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Column currents (A) for row-voltage vectors: ``(n, rows)`` V in, ``(n, cols)`` A out."""
        return self._idling(self.board.vmm, v_rows)

    def close(self) -> None:
        """Idle and close the board, then the instrument."""
        self.board.close()
        super().close()
