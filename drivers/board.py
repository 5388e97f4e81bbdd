"""The Board driver: typed methods for every protocol operation, with safety checks first.

Every request is checked element by element against :class:`SafetyLimits` before a byte is
sent; a violation raises :class:`LimitError` naming the parameter, value and limit. The board is
put in its idle state on close, on any exception inside ``with``, on Ctrl-C and at exit.
"""

from __future__ import annotations

import atexit
import functools
import logging
import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, TypeVar

import numpy as np
import numpy.typing as npt

from drivers import codec, pulse_forms
from drivers import commands as cmd
from drivers import compact as layouts
from drivers.codec import block_bounds
from drivers.commands import CommandSpec, LimitName, Line, PulseKind
from drivers.errors import BoardError, InvalidRequest, LimitError, LinkError
from drivers.limits import Range, SafetyLimits, check_array, check_index, check_value
from drivers.link import Link
from drivers.lock import ResourceLock
from drivers.transports.base import Transport

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
ArrayLikeFloat = float | npt.ArrayLike


@dataclass(frozen=True)
class Identity:
    maker: str
    model: str
    serial: str
    firmware: str

    def __str__(self) -> str:
        return f"{self.maker} {self.model} (serial {self.serial}, firmware {self.firmware})"


@dataclass(frozen=True)
class Region:
    """Rows ``row0 .. row0+nrows-1`` by columns ``col0 .. col0+ncols-1``."""

    row0: int
    col0: int
    nrows: int
    ncols: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.nrows, self.ncols)

    def args(self) -> tuple[int, int, int, int]:
        return (self.row0, self.col0, self.nrows, self.ncols)


@dataclass(frozen=True)
class Progress:
    """How far a split operation has got: passed to :attr:`Board.progress` after each of its commands."""

    operation: str
    """``map``, ``vmm`` or ``pulses``"""
    done: int
    total: int
    unit: str
    """what ``done`` and ``total`` count: ``rows``, ``vectors``"""


@dataclass(frozen=True)
class AdcSample:
    current: float
    """column current computed from the code, A"""
    code: int
    """raw ADC code"""
    saturated: bool
    """whether the TIA or the ADC was at its rail"""


@dataclass(frozen=True)
class PulseBatch:
    """A checked batch: what :meth:`Board.apply_pulses` sends. Build it with :meth:`Board.check_pulses`."""

    kind: PulseKind
    region: Region
    planes: npt.NDArray[np.float32]  # (4, nrows, ncols): amplitude, v_gate, width, mask

    @property
    def count(self) -> int:
        return int(np.count_nonzero(self.planes[3]))


LIMIT_FIELDS: dict[str, LimitName] = {
    "v_row": LimitName.VROW, "v_col": LimitName.VCOL, "v_gate": LimitName.VGATE, "v_read": LimitName.VREAD,
    "pulse_width": LimitName.WIDTH, "i_col": LimitName.ICOL,
}  # fmt: skip
"""each field of :class:`SafetyLimits` and the firmware limit it mirrors"""
_OPEN_BOARDS: weakref.WeakSet[Board] = weakref.WeakSet()
MAX_IDLE = Range(min=0.0, max=1e7)  # s: the protocol's SYST:WAIT bound
MAX_COMMAND_TIME = 2.0
"""s: on a link of known speed, work is split so that no command's bytes take longer than this to cross
it (a single row or vector is never split)"""
# The longest single SYST:WAIT sent: its reply timeout (wait + link timeout) must stay within
# what every transport can express (pyvisa takes whole milliseconds below 2**32, about 49 days).
MAX_WAIT_CHUNK = 1e5  # s
VMM_REQUESTS_KEPT = 64
"""checked VMM row and column selections a board keeps of each (see :func:`_keep`)"""
_VMM_CODES = np.iinfo(layouts.VMM_CODE_DTYPE)
_T = TypeVar("_T", bound=np.generic)


def wait_chunks(seconds: float, chunk: float = MAX_WAIT_CHUNK) -> list[float]:
    """``seconds`` as consecutive waits of at most ``chunk`` each (one wait if it is short)."""
    count = max(1, math.ceil(seconds / chunk))
    return [seconds / count] * count


def _idle_open_boards() -> None:
    """At interpreter exit, idle every board a script forgot to close."""
    for board in list(_OPEN_BOARDS):
        board.close()


def _track_open_board(board: Board) -> None:
    # atexit runs the newest hook first. pyvisa registers a hook that closes its sessions when a
    # ResourceManager is made, so ours is re-registered after each open to run before it.
    _OPEN_BOARDS.add(board)
    atexit.unregister(_idle_open_boards)
    atexit.register(_idle_open_boards)


class Board:
    """One test board, over any transport.

    Args:
        transport: the open byte stream to the board.
        limits: the host's safety limits; default: the firmware's own absolute limits. Limits
            beyond the firmware's are refused at connect.
        lock: the resource lock to release on close (``open_board`` takes it).
        retries: how many times a command is sent again after a link failure (in plain mode, only
            a command that is safe to repeat).
        framing: numbered, checksummed frames (``True``), plain lines (``False``), or frames when the
            firmware offers them (``None``). See docs/wire-protocol.md, "Framed mode".
        reopen: opens the link again after it drops (``open_board`` passes one for LAN and serial).
        reconnect_attempts: how many times ``reopen`` is tried, with growing pauses, before giving up.
        compact: the compact encodings of protocol 1.3 (``True``), the 1.2 forms only (``False``), or
            the compact ones when the board offers them (``None``).
        link_rate: the link's speed, bytes per second (a UART: baud / 10), when known: maps, VMM
            batches and pulse batches are then split so that no command takes longer than
            ``max_command_time`` to cross it. ``None``: split only by the protocol's block limit.
    """

    def __init__(
        self,
        transport: Transport,
        limits: SafetyLimits | None = None,
        lock: ResourceLock | None = None,
        retries: int = 2,
        framing: bool | None = None,
        reopen: Callable[[], Transport] | None = None,
        reconnect_attempts: int = 5,
        compact: bool | None = None,
        link_rate: float | None = None,
        max_command_time: float = MAX_COMMAND_TIME,
    ) -> None:
        self.link = Link(transport, retries, reconnect_attempts)
        """the exchanges with the board: framing, retries, reconnects, and what they cost (``link.stats``)"""
        # checked VMM row and column selections, by value (see _keep)
        self._vmm_rows_kept: dict[tuple[int, bytes | None], npt.NDArray[np.intp]] = {}
        self._vmm_columns_kept: dict[tuple[int, bytes | None], npt.NDArray[np.bool_]] = {}
        self._lock = lock
        self.pulses_applied = 0  # pulses the board confirmed applying (cells of batches, sweep steps)
        self.resource = transport.resource
        self._closed = False
        self.link_rate = link_rate
        self.max_command_time = max_command_time
        self.progress: Callable[[Progress], None] | None = None
        """called after each command of a map, VMM batch or pulse batch split over several (a progress bar's hook)"""
        try:
            self.identity = self._identify()
            self.protocol = _version(self._ask(cmd.VERS).text)  # before framing: a 1.0 board has none
            if framing is not False:
                self.link.start_framing()
            rows, cols = (int(f) for f in self._ask(cmd.ARR).fields)
            self.shape: tuple[int, int] = (rows, cols)
            self.pulses_by_cell: dict[str, npt.NDArray[np.int64]] = {}
            """pulses the board confirmed applying since this session opened, per cell, by kind (``set``,
            ``reset``, ``form``, ``sweep``): what a chip's ledger adds to its device history"""
            self.firmware_limits = self._query_limits()
            self.read_gate_voltage = float(self._ask(cmd.VGRE).text)
            self.tia_gains: tuple[float, ...] = tuple(float(f) for f in self._ask(cmd.TIA_GAIN).fields)
            offered = self.protocol >= layouts.COMPACT_SINCE
            self.scales: layouts.Scales | None = self._query_scales() if offered and compact is not False else None
            """the converter scales of the compact encodings; ``None``: the 1.2 forms only"""
        except (ValueError, IndexError) as exc:
            transport.close()
            raise LinkError(self.resource, f"the board's description is malformed: {exc}") from exc
        except BaseException:
            transport.close()
            raise
        if compact is True and self.scales is None:
            transport.close()
            raise InvalidRequest(f"{self.resource}: the compact encodings were required, but the board speaks "
                                 f"protocol {'.'.join(map(str, self.protocol))} (they came in 1.3)")  # fmt: skip
        if framing is True and not self.link.framed:
            transport.close()
            raise InvalidRequest(f"{self.resource}: framing was required, but the firmware has no framed mode "
                                 "(it does not know SYST:FRAM)")  # fmt: skip
        self.limits = limits if limits is not None else self.firmware_limits
        beyond = self.limits.within(self.firmware_limits)
        if beyond:
            transport.close()
            raise InvalidRequest(
                f"{self.resource}: configured limits {', '.join(beyond)} reach beyond the firmware's "
                f"absolute limits {self.firmware_limits.model_dump(include=set(beyond))}"
            )
        self.link.reopen = reopen  # only now: a failed open is reported at once, not retried
        _track_open_board(self)

    @property
    def _transport(self) -> Transport:
        return self.link.transport

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Board:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Put the board in its idle state (best effort) and close the link."""
        if self._closed:
            return
        self._closed = True
        _OPEN_BOARDS.discard(self)
        try:
            if self.link.unreachable:
                log.error("%s: the board is unreachable and could not be idled; a LAN board idles itself when "
                          "its client goes, a serial board needs *RST or a power cycle", self.resource)  # fmt: skip
            else:
                self.idle()
                self.link.end_framing()
        except BoardError as exc:
            log.error("%s: could not idle the board on close: %s", self.resource, exc)
        finally:
            self.link.close()
            if self._lock is not None:
                self._lock.release()

    @property
    def closed(self) -> bool:
        return self._closed

    def idle(self) -> None:
        """All lines to 0 V, gates off, multiplexers open (``*RST``)."""
        self._ask(cmd.RST)

    def _ask(self, command: CommandSpec, *args: str | int | float) -> codec.Reply:
        return self.link.exchange(command.header, args)

    def _ask_block(
        self, command: CommandSpec, args: Sequence[str | int | float], values: int,
        block: npt.ArrayLike | None = None,
    ) -> npt.NDArray[np.float32]:  # fmt: skip
        """A command whose reply is a block of ``values`` float32."""
        return codec.decode_block(self.link.exchange(command.header, args, block, values=values).payload)

    def query(self, command: str) -> str:
        """Send one raw command line and return its reply text (for debugging by hand)."""
        header, _, rest = command.strip().partition(" ")
        reply = self.link.exchange(header, (rest,) if rest else ())
        return "OK" if reply.kind == "ok" else reply.text

    # ------------------------------------------------------------------ description

    def _identify(self) -> Identity:
        reply = self._ask(cmd.IDN)
        self.link.identity = reply.text
        fields = reply.fields
        if len(fields) != 4:
            raise ValueError(f"*IDN? gave {len(fields)} fields, expected 4")
        return Identity(*(f.strip() for f in fields))

    def _query_limits(self) -> SafetyLimits:
        ranges = {}
        for name, wire in LIMIT_FIELDS.items():
            low, high = (float(f) for f in self._ask(cmd.LIM, wire).fields)
            ranges[name] = Range(min=low, max=high)
        return SafetyLimits.model_validate(ranges)

    def _query_scales(self) -> layouts.Scales:
        ranges = {line: _pair(self._ask(cmd.DAC_RANG, line.value).fields) for line in Line}
        return layouts.Scales(
            dac_bits=int(self._ask(cmd.DAC_RES).text), dac_ranges=ranges, adc_bits=int(self._ask(cmd.ADC_RES).text),
            adc_range=_pair(self._ask(cmd.ADC_RANG).fields), gains=self.tia_gains,
        )  # fmt: skip

    @property
    def _adc_codes(self) -> bool:
        """Whether maps and VMM outputs come as ADC codes (the board offers them and they fit int16)."""
        scales = self.scales
        return scales is not None and scales.adc_bits <= 16 and len(scales.gains) <= layouts.MAX_GAINS

    def _command_bytes(self) -> int:
        """The most bytes one command and its reply may move: the block limit, and on a link of known
        speed what crosses it in ``max_command_time``."""
        if self.link_rate is None:
            return codec.MAX_BLOCK_BYTES
        return max(1, min(codec.MAX_BLOCK_BYTES, int(self.link_rate * self.max_command_time)))

    def _chunks(
        self, count: int, bytes_per_item: float, block_bytes_per_item: float | None = None
    ) -> list[tuple[int, int]]:
        """``count`` items in runs that fit one block (``block_bytes_per_item`` each, default
        ``bytes_per_item``) and the time bound (``bytes_per_item`` each way together)."""
        per_chunk = int(min(
            codec.MAX_BLOCK_BYTES // max(1.0, block_bytes_per_item or bytes_per_item),
            self._command_bytes() // max(1.0, bytes_per_item),
        ))  # fmt: skip
        per_chunk = max(1, per_chunk)
        return [(start, min(per_chunk, count - start)) for start in range(0, count, per_chunk)]

    def _report(self, operation: str, done: int, total: int, unit: str, parts: int) -> None:
        if self.progress is not None and parts > 1:
            self.progress(Progress(operation, done, total, unit))

    def describe(self) -> dict[str, object]:
        """Identity, size, electronics and limits, for ``hil info``."""
        dac_range = {line.value: list(_pair(self._ask(cmd.DAC_RANG, line.value).fields)) for line in Line}
        return {
            "resource": self.resource,
            "identity": str(self.identity),
            "protocol": self._ask(cmd.VERS).text,
            "rows": self.shape[0],
            "cols": self.shape[1],
            "dac_bits": int(self._ask(cmd.DAC_RES).text),
            "dac_range_V": dac_range,
            "adc_bits": int(self._ask(cmd.ADC_RES).text),
            "adc_range_V": list(_pair(self._ask(cmd.ADC_RANG).fields)),
            "tia_gains_ohm": list(self.tia_gains),
            "read_gate_voltage_V": self.read_gate_voltage,
            "limits": self.limits.model_dump(),
            "firmware_limits": self.firmware_limits.model_dump(),
        }

    # ------------------------------------------------------------------ checks

    def _check_cell(self, row: int, col: int) -> None:
        check_index("row", row, self.shape[0])
        check_index("col", col, self.shape[1])

    def _region(self, region: Region | None) -> Region:
        if region is None:
            return Region(0, 0, *self.shape)
        rows, cols = self.shape
        check_index("region.row0", region.row0, rows)
        check_index("region.col0", region.col0, cols)
        if 1 <= region.nrows <= rows - region.row0 and 1 <= region.ncols <= cols - region.col0:
            return region  # inside: the checks below would pass (they build two validated Ranges a call)
        check_value("region.nrows", region.nrows, Range(min=1, max=rows - region.row0), "")
        check_value("region.ncols", region.ncols, Range(min=1, max=cols - region.col0), "")
        return region

    def check_read_voltage(self, v_read: float) -> float:
        """Refuse a read voltage outside the limits, zero, or able to overload a column; return it."""
        v = float(v_read)
        check_value("v_read", v, self.limits.v_read, "V")
        if v == 0:
            raise InvalidRequest("v_read = 0 V: a read needs a non-zero voltage")
        self._check_column_current("predicted column current", abs(v) * self.limits.g_cell_max)
        return v

    def _check_column_current(self, parameter: str, current: float) -> None:
        check_value(parameter, current, self.limits.i_col, "A")

    def predicted_column_current(self, rows: int, v: float) -> float:
        """The most current ``rows`` rows driven at ``v`` volts can put into one column, A: every cell
        at ``g_cell_max`` (what the VMM's own check assumes of cells it has not read)."""
        return rows * abs(float(v)) * self.limits.g_cell_max

    def largest_vmm_input(self, rows: int) -> float:
        """The largest input magnitude, V, at which ``rows`` driven rows keep every column within
        ``i_col`` (:meth:`predicted_column_current`), rounded down to three significant digits so that
        the value as printed passes the check too."""
        exact = self.limits.i_col.max / (rows * self.limits.g_cell_max)
        if exact <= 0:
            return 0.0
        unit = 10.0 ** (math.floor(math.log10(exact)) - 2)
        return math.floor(exact / unit) * unit

    def _amplitude_limit(self, kind: PulseKind) -> tuple[str, Range]:
        line = self.limits.v_col if kind is PulseKind.RESET else self.limits.v_row
        return ("v_col" if kind is PulseKind.RESET else "v_row"), _magnitudes_up_to(line.max)

    def _check_pulse_values(
        self, kind: PulseKind, amplitude: FloatArray, v_gate: FloatArray, width: FloatArray,
        where: npt.NDArray[np.bool_] | None = None, origin: tuple[int, int] = (0, 0),
    ) -> None:  # fmt: skip
        line_name, amplitude_range = self._amplitude_limit(kind)
        check_array(f"{kind.name} amplitude ({line_name})", amplitude, amplitude_range, "V", where, origin)
        check_array(f"{kind.name} v_gate", v_gate, self.limits.v_gate, "V", where, origin)
        check_array(f"{kind.name} width", width, self.limits.pulse_width, "s", where, origin)

    # ------------------------------------------------------------------ low-level primitives

    def set_dac(self, line: Line | str, channel: int, voltage: float) -> None:
        """Set one DAC channel; the channel is a row (ROW, GATE) or column (COL) index."""
        line = Line(line)
        check_index(f"{line.value} channel", channel, self.shape[1] if line is Line.COL else self.shape[0])
        limit = {Line.ROW: self.limits.v_row, Line.COL: self.limits.v_col, Line.GATE: self.limits.v_gate}[line]
        v = float(voltage)
        check_value(f"{line.value} voltage", v, limit, "V")
        self._ask(cmd.DAC_VOLT, line.value, channel, v)

    def dac_voltage(self, line: Line | str, channel: int) -> float:
        line = Line(line)
        check_index(f"{line.value} channel", channel, self.shape[1] if line is Line.COL else self.shape[0])
        return float(self._ask(cmd.DAC_VOLT_Q, line.value, channel).text)

    def select_row(self, row: int, connected: bool = True) -> None:
        """Connect (or disconnect) a row line and its gate line to their DACs."""
        check_index("row", row, self.shape[0])
        self._ask(cmd.MUX_ROW, row, int(connected))

    def select_column(self, col: int, connected: bool = True) -> None:
        """Connect (or disconnect) a column line to its TIA."""
        check_index("col", col, self.shape[1])
        self._ask(cmd.MUX_COL, col, int(connected))

    def open_muxes(self) -> None:
        self._ask(cmd.MUX_OPEN)

    def sample_adc(self, col: int, tia_gain: float) -> AdcSample:
        """One ADC sample of a selected column's TIA at ``tia_gain`` ohm."""
        check_index("col", col, self.shape[1])
        listed = [g for g in self.tia_gains if np.isclose(tia_gain, g, rtol=1e-9)]
        if not listed:
            raise InvalidRequest(f"tia_gain = {tia_gain!r} ohm is not one of the board's gains {self.tia_gains}")
        # The board compares the number it is sent with those it lists (TIA:GAIN?): send the listed
        # one, not a caller's value that only rounds to it.
        current, code, saturated = self._ask(cmd.ADC_SAMP, col, listed[0]).fields
        return AdcSample(float(current), int(code), saturated.strip() == "1")

    # ------------------------------------------------------------------ time

    def idle_for(self, seconds: float) -> None:
        """Hold the idle state for ``seconds`` (an emulator with a simulated clock skips ahead)."""
        check_value("seconds", seconds, MAX_IDLE, "s")
        for chunk in wait_chunks(seconds):
            self._wait_once(chunk)

    def _wait_once(self, seconds: float) -> None:
        saved = self._transport.timeout
        self._transport.timeout = saved + seconds
        try:
            self._ask(cmd.WAIT, float(seconds))
        finally:
            self._transport.timeout = saved

    def pulse_count(self) -> int:
        """Pulses the board has applied since power-up (``SYST:PCNT?``): every masked cell of a batch and
        every sweep step counts one."""
        return int(self._ask(cmd.PCNT).text)

    def complete(self) -> bool:
        """Whether every command sent before has completed (``*OPC?``)."""
        return self._ask(cmd.OPC).text.strip() == "1"

    def clock(self) -> float:
        """Seconds on the board's clock since power-up."""
        return float(self._ask(cmd.TIME).text)

    # ------------------------------------------------------------------ cell operations

    def read_cell(self, row: int, col: int, v_read: float = 0.2) -> float:
        """Conductance of one cell, S."""
        self._check_cell(row, col)
        v = self.check_read_voltage(v_read)
        return float(self._ask(cmd.READ, row, col, v).text)

    def pulse(self, kind: PulseKind | str, row: int, col: int, amplitude: float, v_gate: float, width: float) -> None:
        """One SET, RESET or FORM pulse on one cell."""
        kind = _pulse_kind(kind)
        self._check_cell(row, col)
        values = np.array([amplitude, v_gate, width], dtype=np.float64)
        self._check_pulse_values(kind, *values)
        self._ask(cmd.PULSE_COMMANDS[kind], row, col, *(float(v) for v in values))
        self.pulses_applied += 1
        self._cell_counts(kind.name.lower())[row, col] += 1

    def set_pulse(self, row: int, col: int, amplitude: float, v_gate: float, width: float) -> None:
        self.pulse(PulseKind.SET, row, col, amplitude, v_gate, width)

    def reset_pulse(self, row: int, col: int, amplitude: float, v_gate: float, width: float) -> None:
        self.pulse(PulseKind.RESET, row, col, amplitude, v_gate, width)

    def form_pulse(self, row: int, col: int, amplitude: float, v_gate: float, width: float) -> None:
        self.pulse(PulseKind.FORM, row, col, amplitude, v_gate, width)

    # ------------------------------------------------------------------ bulk operations

    def read_map(
        self, v_read: float = 0.2, region: Region | None = None,
        quantity: Literal["conductance", "current"] = "conductance",
    ) -> FloatArray:  # fmt: skip
        """Every cell of ``region`` (default: the whole array) read at ``v_read``: S or A, (nrows, ncols)."""
        region = self._region(region)
        v = self.check_read_voltage(v_read)
        what = {"conductance": "COND", "current": "CURR"}[quantity]  # the words of Arg.QUANTITY
        per_cell = layouts.BYTES_PER_ADC_VALUE if self._adc_codes else codec.BLOCK_DTYPE.itemsize
        chunks = self._chunks(region.nrows, region.ncols * per_cell)
        parts = []
        for row0, nrows in chunks:
            sub = Region(region.row0 + row0, region.col0, nrows, region.ncols)
            if self._adc_codes:
                currents = self._ask_codes(cmd.MAP_CODE, (*sub.args(), v), nrows * region.ncols)
                parts.append(_as_read(currents / v if quantity == "conductance" else currents).reshape(sub.shape))
            else:
                values = self._ask_block(cmd.MAP, (*sub.args(), v, what), nrows * region.ncols)
                parts.append(values.reshape(sub.shape).astype(np.float64))
            self._report("map", row0 + nrows, region.nrows, "rows", len(chunks))
        return np.concatenate(parts)

    def _ask_codes(
        self, command: CommandSpec, args: Sequence[str | int | float], values: int, block: bytes | None = None
    ) -> FloatArray:
        """A command whose reply is ``values`` ADC codes with their gain indices, as currents (A)."""
        assert self.scales is not None
        reply = self.link.exchange(command.header, args, block, reply_bytes=layouts.adc_block_bytes(values))
        try:
            return self.scales.read(reply.payload, values)
        except ValueError as exc:
            raise LinkError(self.resource, f"garbled reply to {command.header}: {exc}", command.header) from exc

    def vmm(
        self, v_rows: npt.ArrayLike, region: Region | None = None, columns: npt.ArrayLike | None = None,
        rows: npt.ArrayLike | None = None, narrow: bool = False,
    ) -> FloatArray:  # fmt: skip
        """Column currents (A) for row-voltage vectors: ``(n, nrows)`` in, ``(n, ncols)`` out.

        ``columns``: the columns of the region (0-based within it) the caller needs; the others come
        back NaN, and a board with the compact forms neither measures nor sends them. ``narrow``:
        return only those columns, ascending, ``(n, number of columns named)`` (no NaN columns to
        build and skip). ``rows``: the
        rows of the region (0-based within it, ascending) the vectors drive, when not all of them:
        ``v_rows`` is then ``(n, len(rows))`` and the other rows are at 0 V (the same command as the
        whole-region batch with zeros there, without building or scanning those zeros). Rows that
        are 0 V in every vector are not sent either (the board holds them at 0 V).
        """
        region = self._region(region)
        # C-ordered (a copy only if the caller's is not): the passes below go vector by vector
        inputs = np.atleast_2d(np.asarray(v_rows, dtype=np.float32, order="C"))
        given = self._vmm_rows(region, rows)
        width = region.nrows if given is None else len(given)
        if inputs.ndim != 2 or inputs.shape[1] != width:
            what = "this region" if given is None else f"the {width} rows given"
            raise InvalidRequest(f"v_rows has shape {inputs.shape}; expected (n, {width}) for {what}")
        wanted = self._vmm_columns(region, columns)
        codes = self._takes_codes()
        if codes:
            # One compiled pass (drivers._kernels.scan) for what the checks below and the compact form
            # need: the non-zero inputs' count per vector, extremes and columns. The batch's extremes
            # are theirs and 0 V where any input is 0, so the checks need no pass of their own.
            from drivers import _kernels  # numba: loaded by the first VMM that sends codes

            row_counts = np.empty(len(inputs), dtype=np.int64)
            active = np.zeros(inputs.shape[1], dtype=bool)  # over the batch's rows (the region's, or those given)
            total, lo, hi = _kernels.scan(inputs, row_counts, active)
            ends = (lo, hi) if total else (0.0, 0.0)  # float32 values
            extremes = ends
            if total < inputs.size:
                extremes = (min(extremes[0], 0.0), max(extremes[1], 0.0))
        else:  # one pass each for the batch's extremes, shared by the two checks
            extremes = (float(inputs.min()), float(inputs.max())) if inputs.size else (0.0, 0.0)
        check_array("v_rows", inputs, self.limits.v_read, "V", extremes=extremes)
        if given is not None and len(given) < region.nrows:
            check_value("v_rows (the rows not given)", 0.0, self.limits.v_read, "V")
        self._check_vmm_current(inputs, max(extremes[1], -extremes[0]))
        if codes:
            if given is None:
                driven = active.copy()
            else:
                driven = np.zeros(region.nrows, dtype=bool)
                driven[given[active]] = True
            if driven.any():
                # The rows not driven hold no non-zero input: only the batch's driven columns are sent.
                sent = inputs if active.all() else np.compress(active, inputs, axis=1)
            else:  # every input is 0 V: one row still carries the vectors, all its inputs 0
                driven[0] = True
                sent = np.zeros((len(inputs), 1), dtype=np.float32)
            if self._vmm_codes_fit(ends if total else None, total == sent.size):
                return self._vmm_compact(region, wanted, driven, sent, row_counts, narrow=narrow)
        if given is not None:  # the float32 form carries every row of the region
            every = np.zeros((len(inputs), region.nrows), dtype=np.float32)
            every[:, given] = inputs
            inputs = every
        out = self._vmm_float(region, wanted, inputs)
        return out[:, wanted] if narrow else out

    def _vmm_rows(self, region: Region, rows: npt.ArrayLike | None) -> npt.NDArray[np.intp] | None:
        """The rows a :meth:`vmm` names, checked (``None``: every row of the region)."""
        if rows is None:
            return None
        given = np.asarray(rows, dtype=np.intp).ravel()
        key = (region.nrows, given.tobytes())
        kept = self._vmm_rows_kept.get(key)
        if kept is not None:
            return kept
        if not given.size or given[0] < 0 or given[-1] >= region.nrows or (np.diff(given) <= 0).any():
            raise InvalidRequest(f"rows {given.tolist()[:8]} must name rows 0..{region.nrows - 1} of the region, "
                                 "ascending, each once")  # fmt: skip
        return _keep(self._vmm_rows_kept, key, given.copy())

    def _vmm_columns(self, region: Region, columns: npt.ArrayLike | None) -> npt.NDArray[np.bool_]:
        """Which columns of the region a :meth:`vmm` wants, checked (``None``: all)."""
        picked = None if columns is None else np.asarray(columns, dtype=np.int64).ravel()
        key = (region.ncols, None if picked is None else picked.tobytes())
        kept = self._vmm_columns_kept.get(key)
        if kept is not None:
            return kept
        wanted = np.ones(region.ncols, dtype=bool)
        if picked is not None:
            if not picked.size or picked.min() < 0 or picked.max() >= region.ncols:
                raise InvalidRequest(f"columns {picked.tolist()[:8]} must name columns 0..{region.ncols - 1} of the "
                                     "region")  # fmt: skip
            wanted[:] = False
            wanted[picked] = True
        return _keep(self._vmm_columns_kept, key, wanted)

    def _check_vmm_current(self, inputs: npt.NDArray[np.float32], peak: float) -> None:
        """Refuse a vector whose column current could pass ``i_col`` were every driven cell at ``g_cell_max``.
        ``peak``: the batch's largest input magnitude (its inputs passed the read-voltage check)."""
        limit, g_max = self.limits.i_col, self.limits.g_cell_max
        # No vector's sum exceeds its length times the batch's largest input: when that bound is
        # inside the limit, so is every vector's (the sums are only needed when it is not; the
        # decision is the same either way, the margin covers the float64 sums' rounding).
        if inputs.size and limit.min <= 0.0 and inputs.shape[1] * peak * g_max * (1.0 + 1e-9) <= limit.max:
            return
        worst = np.add.reduce(np.abs(inputs), axis=1, dtype=np.float64) * g_max
        check_array("predicted column current of vector", worst, limit, "A")

    def _vmm_compact(
        self, region: Region, wanted: npt.NDArray[np.bool_], driven: npt.NDArray[np.bool_],
        inputs: npt.NDArray[np.float32], row_counts: npt.NDArray[np.int64], narrow: bool = False,
    ) -> FloatArray:  # fmt: skip
        """``VMM:CODE?``: the driven rows' inputs (``inputs``, C-ordered, a column per driven row, with
        ``row_counts`` non-zero inputs in each vector) as row DAC codes, in the smaller of the two forms."""
        from drivers import _kernels

        assert self.scales is not None
        step = self.scales.dac_step(Line.ROW)
        nvec, width = inputs.shape
        measured = int(wanted.sum())
        size_in, size_out = layouts.VMM_CODE_DTYPE.itemsize, layouts.BYTES_PER_ADC_VALUE
        per_vector = (width * size_in, measured * size_out)
        chunks = self._chunks(nvec, sum(per_vector), max(per_vector))
        # How many codes each chunk sends (one chunk: all of them).
        total = int(row_counts.sum())
        starts = np.concatenate([[0], np.cumsum(row_counts)]) if len(chunks) > 1 else {0: 0, nvec: total}
        selection = layouts.encode_vmm_selection(driven, wanted)
        parts = []
        for start, count in chunks:
            batch = inputs[start : start + count]
            nonzero = int(starts[start + count] - starts[start])
            form, _ = layouts.inputs_form(batch.size, nonzero)
            codes = np.empty(nonzero if form is layouts.Inputs.NONZERO else batch.size, dtype=np.int16)
            if form is layouts.Inputs.NONZERO:
                bitmap = np.empty((batch.size + 7) // 8, dtype=np.uint8)
                if _kernels.encode_nonzero(batch, step, bitmap, codes) != codes.size:
                    # the batch changed under the encoding (another thread): its checks no longer hold
                    raise InvalidRequest("the VMM inputs changed while they were being encoded; nothing was sent")
                # the codes' bytes as they are: int16 in the host's order, and numba's hosts are little-endian
                block = b"".join((selection, bitmap.data, codes.data))
            else:
                _kernels.encode_every(batch, step, codes)
                block = b"".join((selection, codes.data))
            args = (*region.args(), count, form.value)
            parts.append(self._ask_codes(cmd.VMM_CODE, args, count * measured, block).reshape(count, measured))
            self._report("vmm", start + count, nvec, "vectors", len(chunks))
        got = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if narrow:
            return got
        out = np.full((nvec, region.ncols), np.nan)
        out[:, wanted] = got
        return out

    def _vmm_float(self, region: Region, wanted: npt.NDArray[np.bool_], inputs: npt.NDArray[np.float32]) -> FloatArray:
        """``VMM?``: every input as float32, every column back."""
        size = codec.BLOCK_DTYPE.itemsize
        chunks = self._chunks(len(inputs), (region.nrows + region.ncols) * size, max(region.nrows, region.ncols) * size)
        out = np.full((len(inputs), region.ncols), np.nan)
        for start, count in chunks:
            batch = inputs[start : start + count]
            values32 = self._ask_block(cmd.VMM, (*region.args(), count), count * region.ncols, batch)
            out[start : start + count] = values32.reshape(count, region.ncols)
            self._report("vmm", start + count, len(inputs), "vectors", len(chunks))
        out[:, ~wanted] = np.nan
        return out

    def _takes_codes(self) -> bool:
        return self.scales is not None and self._adc_codes

    def _vmm_codes_fit(self, ends: tuple[float, float] | None, every_nonzero: bool) -> bool:
        """Whether a batch goes as row DAC codes: they fit int16 and every level they stand for, 0 V
        included (unless ``every_nonzero`` of the inputs sent is), is inside the read limit (else the
        float32 form). A non-zero input never becomes code 0 (codes round away from 0 V). ``ends``:
        the smallest and largest non-zero input (``None``: there are none)."""
        assert self.scales is not None
        step = self.scales.dac_step(Line.ROW)
        low, high = self.limits.v_read.min, self.limits.v_read.max
        zero_ok = low <= 0.0 <= high or every_nonzero
        if ends is None:
            return zero_ok
        # The codes are monotonic in the volts and code * step in the code: the codes of the smallest
        # and largest input are the extreme codes, and they decide both checks before any is made.
        first, last = (int(layouts.dac_level(end, step)) for end in ends)
        levels_ok = low <= first * step and last * step <= high
        fits = _VMM_CODES.min <= first and last <= _VMM_CODES.max
        return fits and levels_ok and zero_ok

    def iv_sweep(self, row: int, col: int, voltages: npt.ArrayLike, v_gate: float, width: float) -> FloatArray:
        """Quasi-static I-V sweep of one cell: the current (A) at the end of each voltage step.

        Positive voltages go on the row (SET polarity), negative ones on the column (RESET
        polarity); ``v_gate`` sets the transistor's compliance current. One round trip.
        """
        self._check_cell(row, col)
        steps = np.asarray(voltages, dtype=np.float32).ravel()
        if len(steps) * codec.BLOCK_DTYPE.itemsize > codec.MAX_BLOCK_BYTES:  # one block each way: not split
            most = codec.MAX_BLOCK_BYTES // codec.BLOCK_DTYPE.itemsize
            raise InvalidRequest(f"a sweep of {len(steps)} points is longer than one block carries ({most}); "
                                 "nothing was sent")  # fmt: skip
        v_row_max, v_col_max = block_bounds(self.limits.v_row.max, self.limits.v_col.max)
        line_max = np.where(steps >= 0, v_row_max, v_col_max)
        over = ~np.isfinite(steps) | (np.abs(steps) > line_max)
        if over.any():
            i = int(np.argmax(over))
            line = "v_row" if steps[i] >= 0 else "v_col"
            raise LimitError(
                f"sweep voltage[{i}] ({line})", float(steps[i]), -float(line_max[i]), float(line_max[i]), "V"
            )
        gate, step_width = float(v_gate), float(width)
        check_value("v_gate", gate, self.limits.v_gate, "V")
        check_value("width", step_width, self.limits.pulse_width, "s")
        if not len(steps):
            return np.zeros(0)
        currents = self._ask_block(cmd.SWEEP, (row, col, gate, step_width, len(steps)), len(steps), steps)
        self.pulses_applied += len(steps)
        self._cell_counts("sweep")[row, col] += len(steps)
        return currents.astype(np.float64)

    def check_pulses(
        self, kind: PulseKind | str, amplitude: ArrayLikeFloat, v_gate: ArrayLikeFloat, width: ArrayLikeFloat,
        mask: npt.ArrayLike | None = None, origin: tuple[int, int] = (0, 0),
    ) -> PulseBatch:  # fmt: skip
        """Dry run: check every pulse of a batch against the limits and return it ready to send.

        ``amplitude``, ``v_gate``, ``width`` and ``mask`` broadcast to one ``(nrows, ncols)``
        shape placed at ``origin`` (default: the whole array). Only masked cells are checked and
        pulsed. Raises :class:`LimitError` naming the first offending cell; nothing is sent.
        """
        kind = _pulse_kind(kind)
        arrays = [np.asarray(a, dtype=np.float64) for a in (amplitude, v_gate, width)]
        mask_array = np.ones((), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        shape = np.broadcast_shapes(*(a.shape for a in arrays), mask_array.shape)
        if shape == ():
            shape = (self.shape[0] - origin[0], self.shape[1] - origin[1])
        if len(shape) != 2:
            raise InvalidRequest(f"pulse parameters broadcast to shape {shape}; expected (rows, cols)")
        region = self._region(Region(origin[0], origin[1], *shape))
        planes = np.empty((4, *shape), dtype=np.float32)
        with np.errstate(over="ignore"):  # a value past float32 becomes inf, which the check below refuses
            for plane, values in zip(planes, [*arrays, mask_array], strict=True):
                plane[...] = values
        selected = planes[3] != 0
        self._check_pulse_values(kind, planes[0], planes[1], planes[2], where=selected, origin=origin)
        # unmasked cells carry nothing (copyto: 8x faster than a boolean-index assignment over 3 planes)
        np.copyto(planes[:3], np.float32(0.0), where=~selected)
        return PulseBatch(kind, region, planes)

    def apply_pulses(
        self, kind: PulseKind | str | PulseBatch, amplitude: ArrayLikeFloat = 0.0, v_gate: ArrayLikeFloat = 0.0,
        width: ArrayLikeFloat = 0.0, mask: npt.ArrayLike | None = None, origin: tuple[int, int] = (0, 0),
    ) -> int:  # fmt: skip
        """One pulse on every masked cell, checked whole before any is sent; returns pulses applied.

        Pass either the pulse parameters (as for :meth:`check_pulses`) or a checked batch.
        """
        batch = kind if isinstance(kind, PulseBatch) else self.check_pulses(
            kind, amplitude, v_gate, width, mask, origin)  # fmt: skip
        applied = 0
        forms = self._batch_forms(batch, 0, batch.region.nrows)
        for start, nrows, form in forms:
            sub = Region(batch.region.row0 + start, batch.region.col0, nrows, batch.region.ncols)
            reply = self.link.exchange(form.header, (batch.kind.value, *sub.args(), *form.args), form.block)
            applied += int(reply.text)
            self.pulses_applied += int(reply.text)
            counts = self._cell_counts(batch.kind.name.lower())
            pulsed = batch.planes[3, start : start + nrows] != 0
            counts[sub.row0 : sub.row0 + nrows, sub.col0 : sub.col0 + sub.ncols] += pulsed
            self._report("pulses", start + nrows, batch.region.nrows, "rows", len(forms))
        return applied

    def _cell_counts(self, kind: str) -> npt.NDArray[np.int64]:
        counts = self.pulses_by_cell.get(kind)
        if counts is None:
            counts = self.pulses_by_cell[kind] = np.zeros(self.shape, dtype=np.int64)
        return counts

    def _batch_forms(self, batch: PulseBatch, start: int, nrows: int) -> list[tuple[int, int, pulse_forms.BatchForm]]:
        """Rows ``start .. start+nrows-1`` of a batch as commands in their smaller form, halved until
        each fits one block and the time bound (rows with nothing to pulse are not sent)."""
        part = batch.planes[:, start : start + nrows]
        if not part[3].any():
            return []
        limits = (self._amplitude_limit(batch.kind)[1], self.limits.v_gate)
        form = pulse_forms.smallest_form(batch.kind, part, self.scales, limits, sparse=self.scales is not None)
        if nrows == 1 or form.block_bytes <= min(self._command_bytes(), codec.MAX_BLOCK_BYTES):
            return [(start, nrows, form)]
        half = nrows // 2
        return self._batch_forms(batch, start, half) + self._batch_forms(batch, start + half, nrows - half)


@functools.lru_cache(maxsize=16)
def _magnitudes_up_to(high: float) -> Range:
    """``[0, high]``: a pulse amplitude's range (made once: a validated model costs microseconds a pulse batch)."""
    return Range(min=0.0, max=high)


def _keep(
    kept: dict[tuple[int, bytes | None], npt.NDArray[_T]], key: tuple[int, bytes | None], checked: npt.NDArray[_T]
) -> npt.NDArray[_T]:
    """Keep a checked row or column selection of a VMM request: a training run names the same few (its
    tiles') with every batch, and checking them again was most of a small batch's host time. Kept
    read-only, by value (the bytes of the indices): a caller changing its array later changes nothing."""
    if len(kept) >= VMM_REQUESTS_KEPT:
        kept.clear()
    checked.flags.writeable = False
    kept[key] = checked
    return checked


def _pulse_kind(kind: PulseKind | str) -> PulseKind:
    if isinstance(kind, PulseKind):
        return kind
    names = {k.name: k for k in PulseKind} | {k.value: k for k in PulseKind}
    try:
        return names[str(kind).upper()]
    except KeyError:
        raise InvalidRequest(f"unknown pulse kind {kind!r}; expected SET, RESET or FORM") from None


def _as_read(values: FloatArray) -> FloatArray:
    """Readings decoded from ADC codes, held at float32 as the plain forms send them: the same
    numbers whichever form the link used, and stored narrow in a run file. (A 16-bit code resolves
    1.5e-5 of its range; float32 rounds at 6e-8 of a value, so nothing measured is lost.)"""
    return values.astype(np.float32).astype(np.float64)


def _version(text: str) -> tuple[int, int]:
    """``SYST:VERS?``'s ``<major>.<minor>``."""
    major, _, minor = text.strip().partition(".")
    return int(major), int(minor or 0)


def _pair(fields: list[str]) -> tuple[float, float]:
    low, high = (float(f) for f in fields)
    return low, high
