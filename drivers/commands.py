"""The protocol's vocabulary, declared once: every command, its arguments, blocks, reply and safety flags.

The host (:mod:`drivers.link`, :mod:`drivers.board`), the emulated firmware's dispatch, the
conformance kit and the command tables of docs/wire-protocol.md all come from (or are checked
against) :data:`TABLE`. Adding a command is one :class:`CommandSpec` row here, one firmware
handler and one ``Board`` method.

A row says what a command *is* on the wire; how values are encoded stays in :mod:`drivers.codec`.
(A later compact or negotiated form of a command is another row, or another ``encoding`` of the
same row, without touching the flags.)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Line(StrEnum):
    """A kind of line, as the protocol names it."""

    ROW = "ROW"
    COL = "COL"
    GATE = "GATE"


class PulseKind(StrEnum):
    """A kind of pulse, as the protocol names it (``PULS:<kind>``, ``PULS:BATC <kind>,...``)."""

    SET = "SET"
    RESET = "RES"
    FORM = "FORM"


class LimitName(StrEnum):
    """The firmware's absolute limits, as ``SYST:LIM? <name>`` names them."""

    VROW = "VROW"
    VCOL = "VCOL"
    VGATE = "VGATE"
    VREAD = "VREAD"
    WIDTH = "WIDTH"
    ICOL = "ICOL"


LIMIT_MEANINGS: dict[LimitName, str] = {
    LimitName.VROW: "voltage on any row (bit) line, V",
    LimitName.VCOL: "voltage on any column (source) line, V",
    LimitName.VGATE: "voltage on any gate (word) line, V",
    LimitName.VREAD: "row voltage during a read or VMM, V",
    LimitName.WIDTH: "pulse width, s",
    LimitName.ICOL: "current into one column's TIA, A",
}
LINE_LIMIT: dict[Line, LimitName] = {Line.ROW: LimitName.VROW, Line.COL: LimitName.VCOL, Line.GATE: LimitName.VGATE}
"""the limit that bounds each kind of line"""


class Arg(StrEnum):
    """What one argument of a command is (docs/wire-protocol.md, "Grammar")."""

    ROW = "row"  # a row index, 0 .. rows-1
    COL = "col"  # a column index, 0 .. cols-1
    COUNT = "count"  # a whole number >= 0
    NUMBER = "number"  # a decimal number
    LINE = "line"  # ROW | COL | GATE
    PULSE = "pulse"  # SET | RES | FORM
    LIMIT = "limit"  # one of LimitName
    STATE = "state"  # 0 | 1
    QUANTITY = "quantity"  # COND | CURR
    TOKEN = "token"  # a session token (1-32 of A-Z a-z 0-9 _ -) or OFF
    SELECT = "select"  # IDX | BITS: how PULS:SPAR names its cells (1.3)
    INPUTS = "inputs"  # ALL | NZ: how VMM:CODE? carries its input codes (1.3)
    PULSE_VALUE = "pulse value"  # a number shared by every pulsed cell, or F32 | DAC: per cell in the block (1.3)


WORDS: dict[Arg, tuple[str, ...]] = {
    Arg.LINE: tuple(Line),
    Arg.PULSE: tuple(PulseKind),
    Arg.LIMIT: tuple(LimitName),
    Arg.STATE: ("0", "1"),
    Arg.QUANTITY: ("COND", "CURR"),
    Arg.SELECT: ("IDX", "BITS"),
    Arg.INPUTS: ("ALL", "NZ"),
}
"""the words an enumerated argument takes"""


class ReplyShape(StrEnum):
    OK = "OK"  # the line OK
    VALUE = "value"  # one line of comma-separated fields
    BLOCK = "block"  # a definite-length block (float32, or the compact layouts of 1.3) and a line end


@dataclass(frozen=True)
class CommandSpec:
    """One command of the protocol."""

    header: str
    args: tuple[tuple[str, Arg], ...]
    """(name, kind) of each argument, in order; a block, if any, follows them"""
    reply: ReplyShape
    fields: int | None = None
    """how many fields a value reply has (``None``: any number)"""
    block_in: bool = False
    """the command's last argument is a binary block"""
    repeat_safe: bool = True
    """sending it twice is the same as once (a query, a level): the host may resend it"""
    at_most_once: bool = False
    """it must never run twice (a pulse, a wait): on a framed link it runs only in a frame, and its
    reply is kept to answer a resend"""
    idles: bool = False
    """the board is idle when it completes (every line at 0 V, every multiplexer open)"""
    sets_level: bool = False
    """it sets a line level or a multiplexer that stays until changed (a primitive)"""
    summary: str = ""
    since: tuple[int, int] = (1, 0)
    """the protocol version that introduced it (a host asks an older board only for older commands)"""

    def __post_init__(self) -> None:
        if self.at_most_once == self.repeat_safe:
            raise ValueError(f"{self.header}: a command is either safe to repeat or runs at most once")
        if self.idles and self.sets_level:
            raise ValueError(f"{self.header}: a command cannot both idle the board and set a level")

    @property
    def nargs(self) -> int:
        """Parameters before the block."""
        return len(self.args)

    @property
    def syntax(self) -> str:
        """``HEADER <a>,<b>,<block>`` as the docs write it."""
        names = [f"<{name}>" for name, _ in self.args] + (["<block>"] if self.block_in else [])
        return f"{self.header} {','.join(names)}" if names else self.header


_REGION = (("row0", Arg.ROW), ("col0", Arg.COL), ("nrows", Arg.COUNT), ("ncols", Arg.COUNT))
_CELL = (("row", Arg.ROW), ("col", Arg.COL))
_PULSE_ARGS = (*_CELL, ("amplitude", Arg.NUMBER), ("v_gate", Arg.NUMBER), ("width", Arg.NUMBER))
_ONCE: dict[str, Any] = {"repeat_safe": False, "at_most_once": True}


def _q(header: str, *args: tuple[str, Arg], fields: int | None = 1, summary: str = "") -> CommandSpec:
    """A query answered with a value line, changing nothing."""
    return CommandSpec(header, args, ReplyShape.VALUE, fields=fields, summary=summary)


IDN = _q("*IDN?", fields=4, summary="identity: maker, model, serial, firmware version")
RST = CommandSpec("*RST", (), ReplyShape.OK, idles=True, summary="reset to the idle state; cells unchanged")
OPC = _q("*OPC?", summary="1: all previous commands are complete")
VERS = _q("SYST:VERS?", summary="protocol version")
ARR = _q("SYST:ARR?", fields=2, summary="rows, cols")
LIM = _q("SYST:LIM?", ("name", Arg.LIMIT), fields=2, summary="min, max of a firmware limit")
VGRE = _q("SYST:VGRE?", summary="gate voltage during reads and VMM, V")
PCNT = _q("SYST:PCNT?", summary="pulses applied since power-up")
TIME = _q("SYST:TIME?", summary="seconds on the board's clock since power-up")
WAIT = CommandSpec("SYST:WAIT", (("seconds", Arg.NUMBER),), ReplyShape.OK, idles=True, **_ONCE,
                   summary="hold the idle state for the given seconds")  # fmt: skip
FRAM = _q("SYST:FRAM", ("session", Arg.TOKEN), summary="framed mode: highest number run in the session (OK for OFF)")
DONE = _q("SYST:DONE?", ("seq", Arg.COUNT), summary="1 if framed command seq ran in this session, else 0")
SEQ = _q("SYST:SEQ?", summary="highest sequence number run in this session")
DAC_RES = _q("DAC:RES?", summary="DAC resolution, bits")
DAC_RANG = _q("DAC:RANG?", ("line", Arg.LINE), fields=2, summary="output range of a kind of DAC channel, V")
ADC_RES = _q("ADC:RES?", summary="ADC resolution, bits")
ADC_RANG = _q("ADC:RANG?", fields=2, summary="ADC input range, V")
TIA_GAIN = _q("TIA:GAIN?", fields=None, summary="TIA gains, ohm, ascending")
DAC_VOLT = CommandSpec("DAC:VOLT", (("line", Arg.LINE), ("ch", Arg.COUNT), ("volts", Arg.NUMBER)), ReplyShape.OK,
                       sets_level=True, summary="set a DAC channel (quantized toward 0 V)")  # fmt: skip
DAC_VOLT_Q = _q("DAC:VOLT?", ("line", Arg.LINE), ("ch", Arg.COUNT), summary="a channel's present output, V")
MUX_ROW = CommandSpec("MUX:ROW", (("ch", Arg.ROW), ("state", Arg.STATE)), ReplyShape.OK, sets_level=True,
                      summary="connect a row and its gate line to their DACs")  # fmt: skip
MUX_COL = CommandSpec("MUX:COL", (("ch", Arg.COL), ("state", Arg.STATE)), ReplyShape.OK, sets_level=True,
                      summary="connect a column to its TIA")  # fmt: skip
MUX_OPEN = CommandSpec("MUX:OPEN", (), ReplyShape.OK, sets_level=True, summary="disconnect every line")
ADC_SAMP = _q("ADC:SAMP?", ("col", Arg.COL), ("gain", Arg.NUMBER), fields=3, summary="current, code, saturated")
READ = CommandSpec("READ?", (*_CELL, ("v_read", Arg.NUMBER)), ReplyShape.VALUE, fields=1, idles=True,
                   summary="conductance of one cell, S")  # fmt: skip
PULS_SET = CommandSpec("PULS:SET", _PULSE_ARGS, ReplyShape.OK, idles=True, **_ONCE, summary="SET pulse on one cell")
PULS_RES = CommandSpec("PULS:RES", _PULSE_ARGS, ReplyShape.OK, idles=True, **_ONCE, summary="RESET pulse on one cell")
PULS_FORM = CommandSpec("PULS:FORM", _PULSE_ARGS, ReplyShape.OK, idles=True, **_ONCE, summary="FORM pulse on one cell")
MAP = CommandSpec("MAP?", (*_REGION, ("v_read", Arg.NUMBER), ("quantity", Arg.QUANTITY)), ReplyShape.BLOCK,
                  idles=True, summary="every cell of a region read one at a time")  # fmt: skip
VMM = CommandSpec("VMM?", (*_REGION, ("nvec", Arg.COUNT)), ReplyShape.BLOCK, block_in=True, idles=True,
                  summary="vector-matrix multiply: nvec vectors of row voltages in, column currents out")  # fmt: skip
PULS_BATC = CommandSpec("PULS:BATC", (("kind", Arg.PULSE), *_REGION), ReplyShape.VALUE, fields=1, block_in=True,
                        idles=True, **_ONCE, summary="one pulse on every masked cell of a region")  # fmt: skip
SWEEP = CommandSpec("SWEEP?", (*_CELL, ("v_gate", Arg.NUMBER), ("width", Arg.NUMBER), ("npts", Arg.COUNT)),
                    ReplyShape.BLOCK, block_in=True, idles=True, **_ONCE,
                    summary="quasi-static I-V sweep of one cell")  # fmt: skip
# 1.3: compact encodings (drivers/compact.py has their block layouts)
MAP_CODE = CommandSpec("MAP:CODE?", (*_REGION, ("v_read", Arg.NUMBER)), ReplyShape.BLOCK, idles=True,
                       summary="MAP? as ADC codes and TIA gain indices", since=(1, 3))  # fmt: skip
VMM_CODE = CommandSpec("VMM:CODE?", (*_REGION, ("nvec", Arg.COUNT), ("inputs", Arg.INPUTS)), ReplyShape.BLOCK,
                       block_in=True, idles=True,
                       summary="VMM? with row DAC codes in, ADC codes and gain indices out", since=(1, 3))  # fmt: skip
PULS_SPAR = CommandSpec(
    "PULS:SPAR",
    (("kind", Arg.PULSE), *_REGION, ("select", Arg.SELECT), ("count", Arg.COUNT), ("amplitude", Arg.PULSE_VALUE),
     ("v_gate", Arg.PULSE_VALUE), ("width", Arg.PULSE_VALUE)),
    ReplyShape.VALUE, fields=1, block_in=True, idles=True, **_ONCE,
    summary="PULS:BATC naming only the pulsed cells, shared values once", since=(1, 3),
)  # fmt: skip

PULSE_COMMANDS: dict[PulseKind, CommandSpec] = {
    PulseKind.SET: PULS_SET, PulseKind.RESET: PULS_RES, PulseKind.FORM: PULS_FORM,
}  # fmt: skip

TABLE: dict[str, CommandSpec] = {
    spec.header: spec
    for spec in (
        IDN, RST, OPC, VERS, ARR, LIM, VGRE, PCNT, TIME, WAIT, FRAM, DONE, SEQ, DAC_RES, DAC_RANG, ADC_RES,
        ADC_RANG, TIA_GAIN, DAC_VOLT, DAC_VOLT_Q, MUX_ROW, MUX_COL, MUX_OPEN, ADC_SAMP, READ, PULS_SET,
        PULS_RES, PULS_FORM, MAP, VMM, PULS_BATC, SWEEP, MAP_CODE, VMM_CODE, PULS_SPAR,
    )
}  # fmt: skip
"""every command, by header"""


def lookup(header: str) -> CommandSpec | None:
    """The row of ``header`` (case-insensitive), or ``None`` for a header the protocol does not have."""
    return TABLE.get(header.upper())


def repeat_safe(header: str) -> bool:
    """Whether the host may send ``header`` again after a link failure (unknown headers: no)."""
    spec = lookup(header)
    return spec is not None and spec.repeat_safe


def at_most_once(header: str) -> bool:
    """Whether ``header`` must never run twice (unknown headers: treated as such, the safe side)."""
    spec = lookup(header)
    return spec is None or spec.at_most_once


def idles(header: str) -> bool:
    spec = lookup(header)
    return spec is not None and spec.idles


def sets_level(header: str) -> bool:
    spec = lookup(header)
    return spec is not None and spec.sets_level


def _flag(on: bool) -> str:
    return "yes" if on else ""


def markdown_index() -> str:
    """The command index of docs/wire-protocol.md, generated from :data:`TABLE` (a test keeps them equal)."""
    rows = [
        "| command | reply | safe to repeat | at most once | leaves idle | sets a level |",
        "|---|---|---|---|---|---|",
    ]
    for spec in TABLE.values():
        reply = {ReplyShape.OK: "`OK`", ReplyShape.BLOCK: "block"}.get(
            spec.reply, f"{spec.fields} field{'s' if spec.fields != 1 else ''}" if spec.fields else "fields"
        )
        rows.append(
            f"| `{spec.syntax}` | {reply} | {_flag(spec.repeat_safe)} | {_flag(spec.at_most_once)} | "
            f"{_flag(spec.idles)} | {_flag(spec.sets_level)} |"
        )
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # python -m drivers.commands: print the docs' command index
    print(markdown_index(), end="")
