"""The emulated board's firmware: interprets the wire protocol over the board and array models.

It enforces its own absolute limits (refusing, never clamping), answers every command with
exactly one reply, and survives any byte sequence: malformed input gets an ``ERR`` reply and the
next command is served.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from pydantic import ConfigDict, Field

from drivers import codec, compact
from drivers import commands as cmd
from drivers.codec import Command, ErrorCode, Framed, ParseError
from drivers.commands import CommandSpec, LimitName, Line
from drivers.config_model import ConfigModel
from mock_hardware.array_model import CrossbarArray, PulseKind
from mock_hardware.electronics import Electronics
from mock_hardware.faults import FaultInjector
from mock_hardware.physics.iv import IVCurve
from mock_hardware.sessions import FramedSession, SessionStore

log = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float64]
MAX_WAIT = 1e7  # s: the longest SYST:WAIT


class FirmwareLimits(ConfigModel):
    """The firmware's absolute maxima, reported by ``SYST:LIM?``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    VROW: tuple[float, float] = (-4.0, 4.0)
    VCOL: tuple[float, float] = (-4.0, 4.0)
    VGATE: tuple[float, float] = (0.0, 5.5)
    VREAD: tuple[float, float] = (-0.5, 0.5)
    WIDTH: tuple[float, float] = (1e-8, 1e-3)
    ICOL: tuple[float, float] = (-0.05, 0.05)


class FirmwareSpec(ConfigModel):
    """What the firmware knows about its board beyond the array."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    maker: str = "MEMHIL"
    model: str = "EMU-1T1R"
    serial: str = "SN-0001"
    version: str = "0.1.0"
    read_gate_voltage: float = 5.0
    transistor_beta: float = Field(
        1e-3, gt=0, description="saturation current per squared gate overdrive, A/V^2: the SWEEP compliance"
    )
    command_latency: float = Field(50e-6, ge=0, description="simulated time each command takes, s")
    electronics: Electronics = Electronics()
    limits: FirmwareLimits = FirmwareLimits()


class CommandFailure(Exception):
    """A refused command; becomes an ``ERR`` reply."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


Handler = Callable[["Firmware", Command], bytes]
_HandlerT = TypeVar("_HandlerT", bound=Handler)


def handles(spec: CommandSpec) -> Callable[[_HandlerT], _HandlerT]:
    """Mark a method as the handler of the command ``spec`` (a row of drivers/commands.py).

    The firmware's dispatch is built from these marks and the table: the table says how many
    parameters and whether a block, the handler does the rest.
    """

    def mark(handler: _HandlerT) -> _HandlerT:
        headers: tuple[str, ...] = getattr(handler, "wire_headers", ())
        handler.wire_headers = (*headers, spec.header)  # type: ignore[attr-defined]
        return handler

    return mark


_SESSION_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,32}")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NOT_FINITE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)
_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")
_COUNT = re.compile(r"[0-9]{1,18}")
_ARRAY_PULSE = {kind: PulseKind(kind.value) for kind in cmd.PulseKind}


VMM_SELECTIONS_KEPT = 64
"""decoded ``VMM:CODE?`` row and column selections kept (a network's tiles use a few)"""
VMM_INPUT_SPACES_KEPT = 8
"""batch sizes whose input space a firmware keeps (see ``Firmware._input_space_of``)"""


def _frozen(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    array.flags.writeable = False  # kept and shared between commands: nobody may change it
    return array


@dataclass(frozen=True)
class VmmSelection:
    """The rows a ``VMM:CODE?`` drives and the columns it wants, decoded once for every command that
    names them: the flags and their positions."""

    driven: npt.NDArray[np.bool_]
    wanted: npt.NDArray[np.bool_]
    rows: npt.NDArray[np.intp]
    measured: npt.NDArray[np.intp]
    others: npt.NDArray[np.intp]
    """the columns not wanted"""

    @classmethod
    def of(cls, driven: npt.NDArray[np.bool_], wanted: npt.NDArray[np.bool_]) -> VmmSelection:
        parts = (driven, wanted, np.flatnonzero(driven), np.flatnonzero(wanted), np.flatnonzero(~wanted))
        return cls(*(_frozen(a) for a in parts))

    @property
    def ndriven(self) -> int:
        return len(self.rows)

    @property
    def nwanted(self) -> int:
        return len(self.measured)

    @property
    def every_row(self) -> bool:
        return len(self.rows) == len(self.driven)


class Firmware:
    """A byte-in, byte-out command interpreter for one emulated board."""

    def __init__(
        self, array: CrossbarArray, spec: FirmwareSpec | None = None, faults: FaultInjector | None = None
    ) -> None:
        self.array = array
        self.spec = spec or FirmwareSpec()
        self.faults = faults
        self.parser = codec.CommandParser()
        rows, cols = array.rows, array.cols
        self.dac: dict[Line, FloatArray] = {line: np.zeros(cols if line is Line.COL else rows) for line in Line}
        self.row_selected = np.zeros(rows, dtype=bool)
        self.col_selected = np.zeros(cols, dtype=bool)
        self.commands_served = 0
        self.pulses_applied = 0  # since power-up: what SYST:PCNT? reports
        self.sessions = SessionStore()  # framed mode's memory of the hosts' sessions
        self.session: FramedSession | None = None  # the session this link took up with SYST:FRAM
        self.replayed = 0  # framed commands answered from a kept reply instead of run again
        self._vmm_selections: dict[tuple[bytes, int, int], VmmSelection] = {}  # see _vmm_selection
        self._input_space: dict[int, npt.NDArray[np.float32]] = {}  # see _input_space_of
        self._iv = IVCurve(array.params.iv_nonlinearity, array.params.v_iv_reference)  # to model currents ahead
        # header -> handler, from the @handles marks; an override in a subclass (marked or not) is the one bound
        self._handlers: dict[str, Callable[[Command], bytes]] = {}
        for cls in reversed(type(self).__mro__):
            for name, attribute in vars(cls).items():
                for header in getattr(attribute, "wire_headers", ()):
                    self._handlers[header] = getattr(self, name)

    @property
    def framed_link(self) -> bool:
        """SYST:FRAM was sent on this link: commands that must not run twice need a frame."""
        return self.session is not None

    @property
    def handled_headers(self) -> frozenset[str]:
        """The headers this firmware has a handler for (a test holds them equal to the table's)."""
        return frozenset(self._handlers)

    # ------------------------------------------------------------------ byte interface

    def feed(self, data: bytes) -> bytes:
        """Bytes in from the link; the replies to every command they complete."""
        return b"".join(self.run(item) for item in self.parser.feed(data))

    def run(self, item: Command | ParseError | Framed) -> bytes:
        """The reply (as it reaches the link) to one parsed item."""
        reply = self._execute_framed(item) if isinstance(item, Framed) else self._execute_plain(item)
        return self.faults.reply(reply) if self.faults is not None else reply

    def link_quiet(self) -> bytes:
        """The link went quiet mid-command: discard it and answer with an error."""
        error = self.parser.discard_partial()
        if isinstance(error, Framed):
            return self.run(error)
        return codec.encode_error(error.code, error.message) if error else b""

    def disconnected(self) -> None:
        """The client went away: forget its partial input, go idle; the next client starts plain
        (the sessions stay with the board, for a client that takes its own up again)."""
        self.glitched()
        self.session = None

    def glitched(self) -> None:
        """The link lost bytes (a serial glitch the board cannot tell from silence): forget the
        partial input and go idle, as a board's watchdog does; the link stays as it was."""
        self.parser.discard_partial()
        self._go_idle()

    def _execute_plain(self, item: Command | ParseError) -> bytes:
        # On a framed link, a plain command that must not run twice may be the body of a frame
        # whose header was damaged: it runs only inside a frame whose checksum holds.
        if self.framed_link and isinstance(item, Command) and cmd.at_most_once(item.header):
            self.commands_served += 1
            return codec.encode_error(
                ErrorCode.SETTINGS_CONFLICT,
                f"{item.header} runs only in a frame on a framed link (SYST:FRAM OFF returns to plain commands)",
            )
        return self.execute(item)

    def _refuse_frame(self, seq: int, message: str) -> bytes:
        self.commands_served += 1
        return codec.encode_frame(seq, codec.encode_error(ErrorCode.SETTINGS_CONFLICT, message))

    def _execute_framed(self, frame: Framed) -> bytes:
        """A framed command runs at most once: a sequence number seen before gets its kept reply."""
        if not frame.intact:  # its sequence number cannot be trusted either: answer as number 0
            return codec.encode_frame(0, self.execute(frame.item))
        session = self.session
        if session is None:
            return self._refuse_frame(frame.seq, "a framed command needs a session on this link (a new connection, "
                                      "or has the board restarted?): send SYST:FRAM <session>")  # fmt: skip
        if (kept := session.kept(frame.seq)) is not None:
            if not session.same_command(frame.seq, frame.body):
                return self._refuse_frame(frame.seq, f"command {frame.seq} ran already as another command; "
                                          "a number is never reused: not run")  # fmt: skip
            self.replayed += 1
            return codec.encode_frame(frame.seq, kept)
        if session.forgotten(frame.seq):
            return self._refuse_frame(frame.seq, f"command {frame.seq} is older than the commands this board "
                                      "remembers; not run")  # fmt: skip
        reply = self.execute(frame.item)
        if not reply.startswith(b"ERR "):  # a refused command did not run: it is not counted
            once = isinstance(frame.item, Command) and cmd.at_most_once(frame.item.header)
            session.record(frame.seq, frame.body, reply, keep=once)
        return codec.encode_frame(frame.seq, reply)

    @handles(cmd.SEQ)
    def _last_seq(self, command: Command) -> bytes:
        """``SYST:SEQ?``: the highest sequence number run in this session before this command."""
        return codec.encode_value(self.session.last_seq if self.session is not None else 0)

    @handles(cmd.DONE)
    def _done(self, command: Command) -> bytes:
        """``SYST:DONE? <seq>``: 1 if framed command ``seq`` (one that must not run twice) ran in this
        session, 0 if it did not."""
        seq = self._count(command.args[0], "sequence number")
        if self.session is None:
            raise CommandFailure(ErrorCode.SETTINGS_CONFLICT, "no framed session: send SYST:FRAM <session> first")
        if self.session.kept(seq) is not None:
            return codec.encode_value(1)
        if self.session.forgotten(seq):
            raise CommandFailure(
                ErrorCode.SETTINGS_CONFLICT, f"command {seq} is older than the commands this board remembers"
            )
        return codec.encode_value(0)

    def execute(self, item: Command | ParseError) -> bytes:
        """One reply for one parsed command (or parse error)."""
        self.commands_served += 1
        if isinstance(item, ParseError):
            return codec.encode_error(item.code, item.message)
        spec = cmd.lookup(item.header)
        handler = self._handlers.get(item.header)
        try:
            if spec is None or handler is None:
                raise CommandFailure(ErrorCode.UNDEFINED_HEADER, f"undefined header {item.header[:40]!r}")
            if spec.block_in != (item.block is not None):
                needs = "needs a binary block as its last parameter" if spec.block_in else "takes no binary block"
                raise CommandFailure(ErrorCode.SYNTAX, f"{item.header} {needs}")
            if len(item.args) < spec.nargs:
                raise CommandFailure(
                    ErrorCode.MISSING_PARAMETER, f"{item.header} takes {spec.nargs} parameters, got {len(item.args)}"
                )
            if len(item.args) > spec.nargs:
                raise CommandFailure(
                    ErrorCode.TOO_MANY_PARAMETERS,
                    f"{item.header} takes {spec.nargs} parameters, got {len(item.args)}",
                )
            self._advance(self.spec.command_latency)
            if self.faults is not None and self.faults.refuse_command():
                raise CommandFailure(ErrorCode.HARDWARE, "injected fault: the command was not executed")
            reply = handler(item)
        except CommandFailure as failure:
            return codec.encode_error(failure.code, str(failure))
        except Exception as exc:  # a firmware bug must not kill the board: report it
            log.exception("firmware fault on %s", item.header)
            return codec.encode_error(ErrorCode.HARDWARE, f"internal fault: {type(exc).__name__}: {exc}")
        if len(reply) > codec.MAX_REPLY_BYTES:  # handlers refuse these before running; this is the backstop
            log.error("%s made a reply of %d bytes", item.header, len(reply))
            return codec.encode_error(ErrorCode.HARDWARE, "internal fault: reply over the size limit")
        return reply

    # ------------------------------------------------------------------ argument parsing

    @staticmethod
    def _number(text: str, name: str) -> float:
        """A number in the protocol's grammar (docs/wire-protocol.md, "Grammar"); never Python's."""
        if _NOT_FINITE.fullmatch(text):
            raise CommandFailure(ErrorCode.OUT_OF_RANGE, f"{name} {text[:40]!r} is not finite")
        if not _NUMBER.fullmatch(text):
            raise CommandFailure(ErrorCode.DATA_TYPE, f"{name} {text[:40]!r} is not a number")
        value = float(text)
        if not math.isfinite(value):  # 1e400: beyond any float
            raise CommandFailure(ErrorCode.OUT_OF_RANGE, f"{name} {text[:40]!r} is not finite")
        return value

    @staticmethod
    def _index(text: str, name: str, size: int) -> int:
        if not _INTEGER.fullmatch(text):
            raise CommandFailure(ErrorCode.DATA_TYPE, f"{name} {text[:40]!r} is not a whole number")
        value = int(text)
        if not 0 <= value < size:
            raise CommandFailure(ErrorCode.OUT_OF_RANGE, f"{name} {value} outside 0..{size - 1}")
        return value

    @staticmethod
    def _count(text: str, name: str) -> int:
        if not _COUNT.fullmatch(text):
            raise CommandFailure(ErrorCode.DATA_TYPE, f"{name} {text[:40]!r} is not a whole number")
        return int(text)

    @staticmethod
    def _word(text: str, name: str, choices: tuple[str, ...]) -> str:
        word = text.upper()
        if word not in choices:
            raise CommandFailure(ErrorCode.ILLEGAL_VALUE, f"{name} {text[:40]!r} is not one of {', '.join(choices)}")
        return word

    def _within(self, name: str, value: float, limit: LimitName, unit: str) -> None:
        low, high = getattr(self.spec.limits, limit)
        if not low <= value <= high:
            raise CommandFailure(
                ErrorCode.OUT_OF_RANGE, f"{name} {value:g} {unit} outside {limit} [{low:g}, {high:g}] {unit}"
            )

    def _within_array(
        self, name: str, values: npt.NDArray[np.floating], limit: LimitName, unit: str, origin: tuple[int, int]
    ) -> None:
        low, high = getattr(self.spec.limits, limit)
        if values.dtype == np.float32:  # block values meet the limits as float32 expresses them
            low, high = codec.block_bounds(low, high)
        if not values.size or (low <= values.min() and values.max() <= high):
            return  # every value inside (NaN fails both comparisons: min and max propagate it)
        bad = ~np.isfinite(values) | (values < low) | (values > high)
        if bad.any():
            r, c = (int(i) for i in np.argwhere(bad)[0])
            raise CommandFailure(
                ErrorCode.OUT_OF_RANGE,
                f"{name}[{r + origin[0]}, {c + origin[1]}] = {values[r, c]:g} {unit} "
                f"outside {limit} [{low:g}, {high:g}] {unit}",
            )

    def _region(self, args: tuple[str, ...]) -> tuple[int, int, int, int]:
        row0 = self._index(args[0], "row0", self.array.rows)
        col0 = self._index(args[1], "col0", self.array.cols)
        nrows = self._index(args[2], "nrows", self.array.rows - row0 + 1)
        ncols = self._index(args[3], "ncols", self.array.cols - col0 + 1)
        if nrows == 0 or ncols == 0:
            raise CommandFailure(ErrorCode.OUT_OF_RANGE, "region must have at least one row and one column")
        return row0, col0, nrows, ncols

    def _block(self, command: Command, shape: tuple[int, ...]) -> npt.NDArray[np.float32]:
        payload = command.block or b""
        expected = int(np.prod(shape)) * codec.BLOCK_DTYPE.itemsize
        if len(payload) != expected:
            raise CommandFailure(
                ErrorCode.BLOCK_DATA, f"block holds {len(payload)} bytes; {shape} float32 needs {expected}"
            )
        return codec.decode_block(payload, shape)

    def _read_voltage(self, text: str) -> float:
        v_read = self._number(text, "v_read")
        self._within("v_read", v_read, LimitName.VREAD, "V")
        if v_read == 0:
            raise CommandFailure(ErrorCode.OUT_OF_RANGE, "v_read must be non-zero")
        return v_read

    def _check_column_currents(self, currents: FloatArray) -> None:
        low, high = self.spec.limits.ICOL
        if currents.size and (currents.min() < low or currents.max() > high):
            worst = float(currents.flat[np.argmax(np.abs(currents))])
            raise CommandFailure(
                ErrorCode.HARDWARE,
                f"column current {worst:g} A outside ICOL [{low:g}, {high:g}] A: TIA protection tripped",
            )

    # ------------------------------------------------------------------ state

    def _go_idle(self) -> None:
        for levels in self.dac.values():
            levels[:] = 0.0
        self.row_selected[:] = False
        self.col_selected[:] = False

    def _advance(self, seconds: float) -> None:
        self.array.advance_time(seconds)

    def _clock(self) -> float:
        return float(self.array.time)

    @property
    def _transistor_threshold(self) -> float:
        # One transistor: the array's physics and the firmware's current limit use one threshold.
        return float(self.array.params.v_gate_threshold)

    # ------------------------------------------------------------------ handlers

    @handles(cmd.IDN)
    def _idn(self, command: Command) -> bytes:
        s = self.spec
        return codec.encode_value(s.maker, s.model, s.serial, s.version)

    @handles(cmd.RST)
    def _rst(self, command: Command) -> bytes:
        self._go_idle()
        return codec.encode_ok()

    @handles(cmd.OPC)
    def _opc(self, command: Command) -> bytes:
        return codec.encode_value(1)

    @handles(cmd.VERS)
    def _version(self, command: Command) -> bytes:
        return codec.encode_value(codec.PROTOCOL_VERSION)

    @handles(cmd.ARR)
    def _array_size(self, command: Command) -> bytes:
        return codec.encode_value(self.array.rows, self.array.cols)

    @handles(cmd.VGRE)
    def _read_gate(self, command: Command) -> bytes:
        return codec.encode_value(self.spec.read_gate_voltage)

    @handles(cmd.PCNT)
    def _pulse_count(self, command: Command) -> bytes:
        return codec.encode_value(self.pulses_applied)

    @handles(cmd.TIME)
    def _time(self, command: Command) -> bytes:
        return codec.encode_value(self._clock())

    @handles(cmd.DAC_RES)
    def _dac_bits(self, command: Command) -> bytes:
        return codec.encode_value(self.spec.electronics.dac_bits)

    @handles(cmd.ADC_RES)
    def _adc_bits(self, command: Command) -> bytes:
        return codec.encode_value(self.spec.electronics.adc_bits)

    @handles(cmd.ADC_RANG)
    def _adc_range(self, command: Command) -> bytes:
        return codec.encode_value(*self.spec.electronics.adc_range)

    @handles(cmd.TIA_GAIN)
    def _tia_gains(self, command: Command) -> bytes:
        return codec.encode_value(*self.spec.electronics.tia_gains)

    @handles(cmd.FRAM)
    def _open_session(self, command: Command) -> bytes:
        """``SYST:FRAM <session>``: framed mode for this link; a session the board remembers continues
        its numbering. ``OFF``: plain lines again (the board still remembers the session)."""
        token = command.args[0]
        if token.upper() == "OFF":
            self.session = None
            return codec.encode_ok()
        if not _SESSION_TOKEN.fullmatch(token):
            raise CommandFailure(ErrorCode.ILLEGAL_VALUE, f"session {token[:40]!r} is not 1-32 letters, digits, _ or -")
        self.session = self.sessions.take_up(token)
        return codec.encode_value(self.session.last_seq)

    @handles(cmd.LIM)
    def _limit(self, command: Command) -> bytes:
        name = self._word(command.args[0], "limit name", tuple(LimitName))
        return codec.encode_value(*getattr(self.spec.limits, name))

    @handles(cmd.WAIT)
    def _wait(self, command: Command) -> bytes:
        seconds = self._number(command.args[0], "seconds")
        if not 0 <= seconds <= MAX_WAIT:
            raise CommandFailure(ErrorCode.OUT_OF_RANGE, f"seconds {seconds:g} outside [0, {MAX_WAIT:g}]")
        self._go_idle()
        self.array.wait(seconds)  # simulated clock: jumps ahead; wall clock: really waits
        return codec.encode_ok()

    @handles(cmd.DAC_RANG)
    def _dac_range(self, command: Command) -> bytes:
        line = Line(self._word(command.args[0], "line", tuple(Line)))
        return codec.encode_value(*self._dac_range_of(line))

    def _dac_range_of(self, line: Line) -> tuple[float, float]:
        e = self.spec.electronics
        return {Line.ROW: e.dac_row_range, Line.COL: e.dac_col_range, Line.GATE: e.dac_gate_range}[line]

    def _line_channel(self, args: tuple[str, ...]) -> tuple[Line, int]:
        line = Line(self._word(args[0], "line", tuple(Line)))
        return line, self._index(args[1], f"{line} channel", len(self.dac[line]))

    @handles(cmd.DAC_VOLT)
    def _set_dac(self, command: Command) -> bytes:
        line, channel = self._line_channel(command.args)
        voltage = self._number(command.args[2], "voltage")
        limit = cmd.LINE_LIMIT[line]
        self._within(f"{line} voltage", voltage, limit, "V")
        output = self.spec.electronics.quantize_dac(voltage, self._dac_range_of(line))
        self._within(f"{line} voltage as the DAC outputs it", output, limit, "V")  # quantization rounds toward 0 V
        levels = dict(self.dac)
        levels[line] = levels[line].copy()
        levels[line][channel] = output
        self._check_levels(levels=levels)
        self.dac[line][channel] = output
        return codec.encode_ok()

    @handles(cmd.DAC_VOLT_Q)
    def _get_dac(self, command: Command) -> bytes:
        line, channel = self._line_channel(command.args)
        return codec.encode_value(float(self.dac[line][channel]))

    def _mux(self, selected: npt.NDArray[np.bool_], name: str, command: Command) -> bytes:
        channel = self._index(command.args[0], name, len(selected))
        state = self._word(command.args[1], "state", cmd.WORDS[cmd.Arg.STATE])
        new = selected.copy()
        new[channel] = state == "1"
        if selected is self.row_selected:
            self._check_levels(rows=new)
        else:
            self._check_levels(cols=new)
        selected[channel] = state == "1"
        return codec.encode_ok()

    @handles(cmd.MUX_ROW)
    def _mux_row(self, command: Command) -> bytes:
        return self._mux(self.row_selected, "row", command)

    @handles(cmd.MUX_COL)
    def _mux_col(self, command: Command) -> bytes:
        return self._mux(self.col_selected, "col", command)

    @handles(cmd.MUX_OPEN)
    def _mux_open(self, command: Command) -> bytes:
        self.row_selected[:] = False
        self.col_selected[:] = False
        return codec.encode_ok()

    def _primitive_currents(
        self, rows: npt.NDArray[np.bool_], cols: npt.NDArray[np.bool_], levels: dict[Line, FloatArray]
    ) -> FloatArray:
        """The current into each selected column with these levels and selections, as the firmware
        models it before applying them: the cells' I-V curve without line resistance (which only
        lowers currents), no noise, no time."""
        v_rows = np.where(rows, levels[Line.ROW], 0.0)
        gate_on = rows & (levels[Line.GATE] > self._transistor_threshold)
        drop = v_rows[:, None] - levels[Line.COL][None, :]
        currents = (self.array.conductance * gate_on[:, None] * drop * self._iv.factor(drop)).sum(axis=0)
        return np.asarray(np.where(cols, currents, 0.0))

    def _check_levels(
        self, rows: npt.NDArray[np.bool_] | None = None, cols: npt.NDArray[np.bool_] | None = None,
        levels: dict[Line, FloatArray] | None = None,
    ) -> None:  # fmt: skip
        """Refuse a primitive whose levels would drive a column's current beyond ICOL (nothing is applied).

        A change that lowers every column's current is let through even if one is still beyond
        ICOL (the cells drifted): a technician must always be able to turn a level down.
        """
        after = self._primitive_currents(
            self.row_selected if rows is None else rows, self.col_selected if cols is None else cols,
            self.dac if levels is None else levels,
        )  # fmt: skip
        if rows is None and cols is None and levels is None:  # no change: the present levels as they are now
            self._check_column_currents(after)
            return
        before = self._primitive_currents(self.row_selected, self.col_selected, self.dac)
        low, high = self.spec.limits.ICOL
        beyond = (after < low) | (after > high)
        self._check_column_currents(np.where(beyond & (np.abs(after) > np.abs(before)), after, 0.0))

    @handles(cmd.ADC_SAMP)
    def _sample(self, command: Command) -> bytes:
        col = self._index(command.args[0], "col", self.array.cols)
        gain = self._number(command.args[1], "gain")
        gains = self.spec.electronics.tia_gains
        # The contract (docs/wire-protocol.md, ADC:SAMP?): the number sent, exactly one TIA:GAIN? lists
        # (1e3 and 1000.0 are one number); close is not enough, as on a board comparing what it was sent.
        if gain not in gains:
            raise CommandFailure(
                ErrorCode.ILLEGAL_VALUE, f"gain {gain!r} ohm is not one of {', '.join(repr(g) for g in gains)}"
            )
        if not self.col_selected[col]:
            raise CommandFailure(ErrorCode.SETTINGS_CONFLICT, f"column {col} is not selected (MUX:COL {col},1)")
        self._check_levels()  # the cells may have drifted since the levels were set
        v_rows = np.where(self.row_selected, self.dac[Line.ROW], 0.0)
        gate_on = self.row_selected & (self.dac[Line.GATE] > self._transistor_threshold)
        currents = self.array.column_currents(v_rows, self.dac[Line.COL], gate_on)
        current, code, saturated = self.spec.electronics.digitize(np.array([currents[col]]), gain)
        return codec.encode_value(float(current[0]), int(code[0]), int(saturated[0]))

    @handles(cmd.READ)
    def _read(self, command: Command) -> bytes:
        row = self._index(command.args[0], "row", self.array.rows)
        col = self._index(command.args[1], "col", self.array.cols)
        v_read = self._read_voltage(command.args[2])
        conductance = self.array.read_conductance(row, col, 1, 1, v_read)
        current = self.spec.electronics.measure_autoranged(conductance * v_read)
        self._go_idle()
        return codec.encode_value(float(current[0, 0] / v_read))

    @handles(cmd.PULS_SET)
    @handles(cmd.PULS_RES)
    @handles(cmd.PULS_FORM)
    def _pulse(self, command: Command) -> bytes:
        kind = _ARRAY_PULSE[cmd.PulseKind(command.header.split(":")[1])]
        row = self._index(command.args[0], "row", self.array.rows)
        col = self._index(command.args[1], "col", self.array.cols)
        amplitude, v_gate, width = (
            self._number(a, n) for a, n in zip(command.args[2:], ("amplitude", "v_gate", "width"), strict=True)
        )
        self._check_pulse(kind, np.array([[amplitude]]), np.array([[v_gate]]), np.array([[width]]), (row, col))
        self.array.apply_pulses(
            kind, row, col, np.array([[amplitude]]), np.array([[v_gate]]), np.array([[width]]), np.ones((1, 1), bool)
        )
        self.pulses_applied += 1
        self._go_idle()
        return codec.encode_ok()

    def _check_pulse(
        self, kind: PulseKind, amplitude: FloatArray, v_gate: FloatArray, width: FloatArray, origin: tuple[int, int]
    ) -> None:
        if (amplitude < 0).any():
            r, c = (int(i) for i in np.argwhere(amplitude < 0)[0])
            raise CommandFailure(
                ErrorCode.OUT_OF_RANGE,
                f"amplitude[{r + origin[0]}, {c + origin[1]}] is negative: amplitudes are magnitudes",
            )
        line_limit = LimitName.VCOL if kind is PulseKind.RESET else LimitName.VROW
        self._within_array("amplitude", amplitude, line_limit, "V", origin)
        self._within_array("v_gate", v_gate, LimitName.VGATE, "V", origin)
        self._within_array("width", width, LimitName.WIDTH, "s", origin)

    def _reply_block_fits(self, values: int, itemsize: float = codec.BLOCK_DTYPE.itemsize) -> None:
        if values * itemsize > codec.MAX_BLOCK_BYTES:
            raise CommandFailure(
                ErrorCode.TOO_MUCH_DATA,
                f"the reply would hold {values} values ({values * itemsize:.0f} bytes), over the "
                f"{codec.MAX_BLOCK_BYTES}-byte block limit: split the command",
            )

    @handles(cmd.MAP)
    def _map(self, command: Command) -> bytes:
        row0, col0, nrows, ncols = self._region(command.args[:4])
        v_read = self._read_voltage(command.args[4])
        quantity = self._word(command.args[5], "quantity", cmd.WORDS[cmd.Arg.QUANTITY])
        self._reply_block_fits(nrows * ncols)
        conductance = self.array.read_conductance(row0, col0, nrows, ncols, v_read)
        current = self.spec.electronics.measure_autoranged(conductance * v_read)
        self._go_idle()
        return codec.encode_block_reply(current / v_read if quantity == "COND" else current)

    @handles(cmd.VMM)
    def _vmm(self, command: Command) -> bytes:
        row0, col0, nrows, ncols = self._region(command.args[:4])
        nvec = self._count(command.args[4], "nvec")
        if nvec == 0:
            raise CommandFailure(ErrorCode.OUT_OF_RANGE, "nvec 0 outside 1..: a VMM needs at least one vector")
        self._reply_block_fits(nvec * ncols)
        v_rows = self._block(command, (nvec, nrows))
        self._within_array("v_rows", v_rows, LimitName.VREAD, "V", (0, 0))
        currents = self.array.vmm(v_rows.astype(np.float64), row0, col0, ncols)
        self._check_column_currents(currents)
        self._go_idle()
        return codec.encode_block_reply(self.spec.electronics.measure_autoranged(currents))

    @handles(cmd.PULS_BATC)
    def _pulse_batch(self, command: Command) -> bytes:
        word = self._word(command.args[0], "pulse kind", cmd.WORDS[cmd.Arg.PULSE])
        kind = _ARRAY_PULSE[cmd.PulseKind(word)]
        row0, col0, nrows, ncols = self._region(command.args[1:5])
        amplitude, v_gate, width, mask_plane = self._block(command, (4, nrows, ncols))
        if not np.isfinite(mask_plane).all():
            r, c = (int(i) for i in np.argwhere(~np.isfinite(mask_plane))[0])
            raise CommandFailure(ErrorCode.OUT_OF_RANGE, f"mask[{r + row0}, {c + col0}] is not finite")
        return self._apply_batch(kind, (row0, col0), amplitude, v_gate, width, mask_plane != 0)

    def _apply_batch(
        self, kind: PulseKind, origin: tuple[int, int], amplitude: npt.NDArray[np.floating],
        v_gate: npt.NDArray[np.floating], width: npt.NDArray[np.floating], mask: npt.NDArray[np.bool_],
        inside: bool = False,
    ) -> bytes:  # fmt: skip
        """Check every masked cell's values, then pulse them all (PULS:BATC and PULS:SPAR). ``inside``: the
        caller found every masked cell's values inside the limits already (the planes' check would pass)."""
        if not inside:
            self._check_pulse(
                kind, np.where(mask, amplitude, 0).astype(amplitude.dtype),
                np.where(mask, v_gate, self.spec.limits.VGATE[0]).astype(v_gate.dtype),
                np.where(mask, width, self.spec.limits.WIDTH[0]).astype(width.dtype), origin,
            )  # fmt: skip
        amplitude, v_gate, width = (plane.astype(np.float64) for plane in (amplitude, v_gate, width))
        applied = self.array.apply_pulses(kind, *origin, amplitude, v_gate, width, mask)
        self.pulses_applied += applied
        self._go_idle()
        return codec.encode_value(applied)

    # ------------------------------------------------------------------ compact encodings (1.3)

    def _dac_step(self, line: Line) -> float:
        return self.spec.electronics.dac_step(self._dac_range_of(line))

    def _adc_code_reply(self, current: FloatArray) -> bytes:
        from mock_hardware import _kernels  # numba

        codes, index = self.spec.electronics.measure_autoranged_codes(current)
        count = codes.size
        payload = np.empty(compact.adc_block_bytes(count), dtype=np.uint8)
        # the codes' part as int16 in the host's order (numba's hosts are little-endian, as the wire is)
        wire_codes = payload[: count * compact.ADC_CODE_DTYPE.itemsize].view(np.int16)
        _kernels.adc_block(codes.ravel(), index.ravel(), wire_codes, payload[wire_codes.nbytes :])
        return b"".join((codec.block_header(payload.size), payload.data, codec.TERMINATOR))  # one copy of the payload

    def _codes_fit(self) -> None:
        e = self.spec.electronics
        if e.adc_bits > 16 or len(e.tia_gains) > compact.MAX_GAINS:
            raise CommandFailure(ErrorCode.SETTINGS_CONFLICT, f"ADC codes of {e.adc_bits} bits or {len(e.tia_gains)} "
                                 "gains do not fit int16 codes and 4-bit gain indices: use MAP? / VMM?")  # fmt: skip

    @handles(cmd.MAP_CODE)
    def _map_codes(self, command: Command) -> bytes:
        row0, col0, nrows, ncols = self._region(command.args[:4])
        v_read = self._read_voltage(command.args[4])
        self._codes_fit()
        self._reply_block_fits(nrows * ncols, compact.BYTES_PER_ADC_VALUE)
        conductance = self.array.read_conductance(row0, col0, nrows, ncols, v_read)
        self._go_idle()
        return self._adc_code_reply(conductance * v_read)

    @handles(cmd.VMM_CODE)
    def _vmm_codes(self, command: Command) -> bytes:
        row0, col0, nrows, ncols = self._region(command.args[:4])
        nvec = self._count(command.args[4], "nvec")
        if nvec == 0:
            raise CommandFailure(ErrorCode.OUT_OF_RANGE, "nvec 0 outside 1..: a VMM needs at least one vector")
        self._codes_fit()
        form = compact.Inputs(self._word(command.args[5], "inputs", cmd.WORDS[cmd.Arg.INPUTS]))
        payload = memoryview(command.block or b"")  # slices below without copying the block
        heads = (nrows + 7) // 8, (ncols + 7) // 8
        if len(payload) < sum(heads):
            raise CommandFailure(ErrorCode.BLOCK_DATA, f"block holds {len(payload)} bytes, fewer than the row and "
                                 f"column bitmaps' {sum(heads)}")  # fmt: skip
        selection = self._vmm_selection(bytes(payload[: sum(heads)]), nrows, ncols)
        driven, wanted = selection.driven, selection.wanted
        self._reply_block_fits(nvec * selection.nwanted, compact.BYTES_PER_ADC_VALUE)
        count = nvec * selection.ndriven
        block = payload[sum(heads) :]
        step = self._dac_step(Line.ROW)
        try:
            if form is compact.Inputs.ALL:
                values = compact.every_input_code(block, count)
                # float32, the block precision the array computes in: one pass to cast and scale
                levels = np.multiply(values, np.float32(step), dtype=np.float32)
                first, last = (int(values.min()), int(values.max())) if values.size else (0, 0)
            else:
                from mock_hardware import _kernels  # numba: loaded by the first batch in this form

                bitmap = compact.nonzero_bitmap(block, count)
                sent, past = _kernels.count_bits(bitmap, count)
                codes = compact.nonzero_codes(block, count, sent, past).view(np.uint8)
                # Every input's level, the codes sent scaled in float32 and zeros between them (the same
                # numbers as scaling every code: 0 * step is 0), written over the kept input space.
                levels = self._input_space_of(count)
                first, last = _kernels.levels_from_bitmap(bitmap, codes, np.float32(step), levels)
                if sent < count:  # the codes not sent are 0
                    first, last = min(first, 0), max(last, 0)
        except ValueError as exc:
            raise CommandFailure(ErrorCode.BLOCK_DATA, f"block after the row and column bitmaps: {exc}") from None
        low, high = self.spec.limits.VREAD
        # The levels are code * step, monotonic in the code: the extreme codes decide; a level outside
        # is named element by element (the undriven rows are at 0 V). Nothing has reached the array yet.
        if not low <= first * step <= last * step <= high or (not selection.every_row and not low <= 0.0 <= high):
            every = compact.decode_inputs(block, form, count).reshape(nvec, -1)
            v_rows = np.zeros((nvec, nrows))
            v_rows[:, driven] = every.astype(np.float64) * step
            self._within_array("v_rows", v_rows, LimitName.VREAD, "V", (0, 0))
        v_driven = levels.reshape(nvec, -1)
        rows, measured, others = selection.rows, selection.measured, selection.others
        protected = min(-self.spec.limits.ICOL[0], self.spec.limits.ICOL[1])
        if len(others) and not self.array.vmm_bound(v_driven, row0, col0, ncols, rows, others) <= protected:
            measured = np.arange(ncols)  # the columns not sent back might trip the TIA protection: measure them too
        currents = self.array.vmm(v_driven, row0, col0, ncols, rows=rows, columns=measured)
        self._check_column_currents(currents)
        self._go_idle()
        return self._adc_code_reply(currents if len(measured) == selection.nwanted else currents[:, wanted])

    def _input_space_of(self, count: int) -> npt.NDArray[np.float32]:
        """Space for a ``VMM:CODE?``'s ``count`` input levels, which the caller overwrites whole: the
        space of the last few batch sizes kept (a fresh 3 MB array cost a page fault a page in a
        training run). The array only reads it during the VMM (no reference is kept), so the next
        command may reuse it."""
        space = self._input_space.get(count)
        if space is None:
            if len(self._input_space) >= VMM_INPUT_SPACES_KEPT:
                self._input_space.clear()
            space = self._input_space[count] = np.empty(count, dtype=np.float32)
        return space

    def _vmm_selection(self, head: bytes, nrows: int, ncols: int) -> VmmSelection:
        """``VMM:CODE?``'s row and column bitmaps (``head``), checked and decoded; kept by their bytes,
        since a training run sends the same few selections (its tiles') with every batch."""
        key = (head, nrows, ncols)
        selection = self._vmm_selections.get(key)
        if selection is None:
            split = (nrows + 7) // 8
            try:
                driven = compact.decode_bitmap(head[:split], nrows, "row")
                wanted = compact.decode_bitmap(head[split:], ncols, "column")
            except ValueError as exc:
                raise CommandFailure(ErrorCode.OUT_OF_RANGE, str(exc)) from None
            selection = VmmSelection.of(driven, wanted)
            if len(self._vmm_selections) >= VMM_SELECTIONS_KEPT:
                self._vmm_selections.clear()
            self._vmm_selections[key] = selection
        return selection

    def _pulse_value(self, text: str, name: str, dac: Line | None) -> float | compact.ValueForm:
        """A PULS:SPAR value argument: a number shared by every cell, or how the block carries it per cell."""
        word = text.upper()
        if word == compact.ValueForm.FLOAT or (word == compact.ValueForm.DAC and dac is not None):
            return compact.ValueForm(word)
        if word.isalpha():
            forms = "F32 or DAC" if dac is not None else "F32"
            raise CommandFailure(ErrorCode.ILLEGAL_VALUE, f"{name} {text[:40]!r} is not a number, {forms}")
        return self._number(text, name)

    @handles(cmd.PULS_SPAR)
    def _pulse_sparse(self, command: Command) -> bytes:
        args = command.args
        kind = _ARRAY_PULSE[cmd.PulseKind(self._word(args[0], "pulse kind", cmd.WORDS[cmd.Arg.PULSE]))]
        row0, col0, nrows, ncols = self._region(args[1:5])
        select = compact.Selection(self._word(args[5], "select", cmd.WORDS[cmd.Arg.SELECT]))
        count = self._count(args[6], "count")
        if not 1 <= count <= nrows * ncols:
            raise CommandFailure(ErrorCode.OUT_OF_RANGE, f"count {count} outside 1..{nrows * ncols} (the cells)")
        amplitude_line = Line.COL if kind is PulseKind.RESET else Line.ROW
        lines = (amplitude_line, Line.GATE, None)
        forms = [self._pulse_value(a, n, line) for a, n, line in zip(args[7:10], ("amplitude", "v_gate", "width"),
                                                                       lines, strict=True)]  # fmt: skip
        item = {compact.ValueForm.FLOAT: compact.F32.itemsize, compact.ValueForm.DAC: compact.PULSE_CODE_DTYPE.itemsize}
        selected = compact.selection_bytes(select, nrows * ncols, count)
        sizes = [count * item[f] if isinstance(f, compact.ValueForm) else 0 for f in forms]
        payload = command.block or b""
        if len(payload) != selected + sum(sizes):
            raise CommandFailure(ErrorCode.BLOCK_DATA, f"block holds {len(payload)} bytes; this selection and these "
                                 f"value forms need {selected + sum(sizes)}")  # fmt: skip
        try:
            mask = compact.decode_selection(payload[:selected], select, (nrows, ncols), count)
        except ValueError as exc:
            raise CommandFailure(ErrorCode.OUT_OF_RANGE, str(exc)) from None
        planes: list[npt.NDArray[np.floating]] = []
        sent: list[npt.NDArray[np.floating]] = []  # each parameter's values at the pulsed cells
        at = selected
        for form, size, line in zip(forms, sizes, lines, strict=True):
            plane: npt.NDArray[np.floating]
            values: npt.NDArray[np.floating]
            if isinstance(form, float):  # shared: taken as float32, as block values are
                plane = np.full((nrows, ncols), form, dtype=np.float32)
                values = plane[:1, 0]
            elif form is compact.ValueForm.FLOAT:
                plane = np.zeros((nrows, ncols), dtype=np.float32)
                values = np.frombuffer(payload[at : at + size], compact.F32)
                plane[mask] = values
            else:
                assert line is not None  # a width is never a DAC code (refused above)
                codes = np.frombuffer(payload[at : at + size], compact.PULSE_CODE_DTYPE).astype(np.float64)
                plane = np.zeros((nrows, ncols), dtype=np.float64)
                values = codes * self._dac_step(line)
                plane[mask] = values
            at += size
            planes.append(plane)
            sent.append(values)
        amplitude, v_gate, width = planes
        inside = self._pulse_values_inside(kind, *sent)
        return self._apply_batch(kind, (row0, col0), amplitude, v_gate, width, mask, inside=inside)

    def _pulse_values_inside(
        self, kind: PulseKind, amplitude: npt.NDArray[np.floating], v_gate: npt.NDArray[np.floating],
        width: npt.NDArray[np.floating],
    ) -> bool:  # fmt: skip
        """Whether the values a pulse batch sent (only its pulsed cells', in the planes' types) all pass
        :meth:`_check_pulse`: then the checks over whole planes would find nothing (the cells not
        pulsed hold values inside every limit there). ``False`` leaves the finding and the naming
        of the offending cell to those checks."""
        line_limit = LimitName.VCOL if kind is PulseKind.RESET else LimitName.VROW
        for values, limit in ((amplitude, line_limit), (v_gate, LimitName.VGATE), (width, LimitName.WIDTH)):
            low, high = getattr(self.spec.limits, limit)
            if values.dtype == np.float32:  # as _within_array compares block values
                low, high = codec.block_bounds(low, high)
            if limit is line_limit:
                low = max(low, 0.0)  # amplitudes are magnitudes
            if not (low <= values.min() and values.max() <= high):  # NaN fails both
                return False
        return True

    @handles(cmd.SWEEP)
    def _sweep(self, command: Command) -> bytes:
        row = self._index(command.args[0], "row", self.array.rows)
        col = self._index(command.args[1], "col", self.array.cols)
        v_gate = self._number(command.args[2], "v_gate")
        width = self._number(command.args[3], "width")
        npts = self._count(command.args[4], "npts")
        if npts == 0:
            raise CommandFailure(ErrorCode.OUT_OF_RANGE, "npts 0 outside 1..: a sweep needs at least one step")
        voltages = self._block(command, (npts,))
        self._within("v_gate", v_gate, LimitName.VGATE, "V")
        self._within("width", width, LimitName.WIDTH, "s")
        if not np.isfinite(voltages).all():  # NaN is neither >= 0 nor < 0: refuse it before splitting by sign
            raise CommandFailure(
                ErrorCode.OUT_OF_RANGE, f"sweep voltage[{int(np.argmax(~np.isfinite(voltages)))}] is not finite"
            )
        positive, negative = np.where(voltages >= 0, voltages, 0.0), np.where(voltages < 0, -voltages, 0.0)
        self._within_array("sweep voltage", positive[None, :], LimitName.VROW, "V", (0, 0))
        self._within_array("sweep voltage magnitude", negative[None, :], LimitName.VCOL, "V", (0, 0))
        overdrive = max(v_gate - self._transistor_threshold, 0.0)
        compliance = self.spec.transistor_beta * overdrive**2
        one = np.ones((1, 1), dtype=bool)
        currents = np.empty(len(voltages))
        # Steps are sequential in time: each one's switching sets the state the next one sees.
        for i, v in enumerate(voltages.astype(np.float64)):
            kind = PulseKind.SET if v >= 0 else PulseKind.RESET
            self.array.apply_pulses(kind, row, col, np.full((1, 1), abs(v)), np.full((1, 1), v_gate),
                                    np.full((1, 1), width), one)  # fmt: skip
            g = self.array.read_conductance(row, col, 1, 1, abs(v)) if v != 0 else np.zeros((1, 1))
            currents[i] = np.clip(v * g[0, 0], -compliance, compliance)
        self.pulses_applied += len(voltages)
        self._go_idle()
        return codec.encode_block_reply(self.spec.electronics.measure_autoranged(currents))
