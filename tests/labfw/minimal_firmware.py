"""A minimal board firmware a lab could write from docs/firmware-guide.md and docs/wire-protocol.md.

Written from those two documents only (not from mock_hardware/), to check that they are enough:
a plain byte-stream server (TCP, or a pty standing in for a UART) with the guide's parsing state
machine, protocol 1.3 (framed mode and the compact encodings included), and ideal devices: a
SET or FORM pulse at or above ``SWITCH_V`` raises a cell's conductance by ``G_STEP``, a RESET
lowers it by as much (within ``G_MIN``..``G_MAX``), and a read gives ``I = G * V``. With
``--gate-coded`` the gate sets the level a SET reaches instead (what ``hil train`` calibrates).

    python -m tests.labfw.minimal_firmware --tcp 127.0.0.1:0    # prints READY TCPIP::...::SOCKET
    python -m tests.labfw.minimal_firmware --pty                # prints READY ASRL/dev/pts/N::INSTR
    ... --protocol 1.2 --plain     # a board that stopped before the guide's steps 8 and 10

It serves until signalled, or until stdin closes when stdin is a pipe or a terminal.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import re
import select
import socket
import stat
import sys
import threading
import time
import tty
import zlib
from collections.abc import Callable, Iterator

import numpy as np

# --- the board (an ideal 1T1R array) --------------------------------------------------------------
ROWS, COLS = 128, 64
IDN = "LABFW,MINI-1T1R,SN-0042,0.3"
VERSION = "1.3"  # every step of the guide
LIMITS = {"VROW": (-4.0, 4.0), "VCOL": (-4.0, 4.0), "VGATE": (0.0, 5.5), "VREAD": (-0.5, 0.5),
          "WIDTH": (1e-8, 1e-3), "ICOL": (-0.01, 0.01)}  # fmt: skip
LINE_LIMIT = {"ROW": "VROW", "COL": "VCOL", "GATE": "VGATE"}
DAC_BITS, DAC_RANGE = 16, (-6.0, 6.0)
DAC_STEP: float = (DAC_RANGE[1] - DAC_RANGE[0]) / (2**DAC_BITS - 1)
ADC_BITS, ADC_RANGE = 16, (-1.0, 1.0)
ADC_LSB: float = (ADC_RANGE[1] - ADC_RANGE[0]) / 2**ADC_BITS
TIA_GAINS = (100.0, 1000.0, 10000.0, 100000.0)
V_READ_GATE = 3.0  # SYST:VGRE?: transistors fully on
V_THRESHOLD = 0.5  # a gate above this conducts
G_MIN, G_MAX, G_START, G_STEP = 10e-6, 900e-6, 100e-6, 5e-6
SWITCH_V = 1.0  # a pulse below this amplitude reads the cell and leaves it as it was
G_PER_GATE_V = 200e-6  # --gate-coded: SET reaches G = G_PER_GATE_V * (v_gate - V_THRESHOLD); RESET goes to G_MIN

# --- the protocol's sizes ---------------------------------------------------------------------------
MAX_LINE = 4096
MAX_BLOCK = 16 * 1024 * 1024
QUIET_S = 1.0  # silence that ends an incomplete command, or a drain
BUSY = b'ERR -221,"busy: another client is using this board; one client at a time"\n'
NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
INDEX = re.compile(r"[+-]?\d{1,18}")
COUNT = re.compile(r"\d{1,18}")
HEADER = re.compile(r"[A-Za-z0-9*:?_]+")
NOT_FINITE = {"nan", "inf", "infinity"}


class Refused(Exception):
    """A command refused: its one error line, and nothing changed."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def line(self) -> bytes:
        text = self.message.replace('"', "'")
        text = "".join(ch if 0x20 <= ord(ch) <= 0x7E else "?" for ch in text)[:3000]
        return f'ERR -{self.code},"{text}"\n'.encode("ascii")


class Gone(Exception):
    """The client went away (or was released)."""


# --- parameters ----------------------------------------------------------------------------------------
def number(field: str, name: str) -> float:
    if NUMBER.fullmatch(field):
        value = float(field)
        if math.isinf(value):
            raise Refused(222, f"{name} = {field} is beyond the largest double")
        return 0.0 if value == 0 else value
    if field.lstrip("+-").lower() in NOT_FINITE:
        raise Refused(222, f"{name} = {field} is not finite")
    raise Refused(104, f"{name} = {field!r} is not a number")


def index(field: str, name: str, size: int) -> int:
    if not INDEX.fullmatch(field):
        raise Refused(104, f"{name} = {field!r} is not an index")
    value = int(field)
    if not 0 <= value < size:
        raise Refused(222, f"{name} = {value} outside [0, {size - 1}]")
    return value


def count(field: str, name: str) -> int:
    if not COUNT.fullmatch(field):
        raise Refused(104, f"{name} = {field!r} is not a count")
    return int(field)


def word(field: str, name: str, allowed: tuple[str, ...]) -> str:
    value = field.upper()
    if value not in allowed:
        raise Refused(224, f"{name} = {field!r} is not one of {'|'.join(allowed)}")
    return value


def within(value: float, name: str, limit: str, unit: str) -> float:
    lo, hi = LIMITS[limit]
    if not math.isfinite(value):
        raise Refused(222, f"{name} = {value} is not finite")
    if not lo <= value <= hi:
        raise Refused(222, f"{name} = {value:g} {unit} outside {limit} [{lo:g}, {hi:g}] {unit}")
    return value


# How reply numbers are written (--numbers): the spec asks for the shortest round-trip decimal, and the
# host must accept any `number` of the grammar; a C firmware's printf writes them otherwise.
NUMBER_STYLES: dict[str, Callable[[float], str]] = {
    "shortest": lambda v: repr(float(v)),
    "printf-e": lambda v: f"{float(v):+.16E}",  # '+1.0000000000000001E-05': sign, capital E, 17 digits
    "printf-g": lambda v: f"{float(v):.17G}".replace("E", "e"),  # '1.0000000000000001e-05', '3' (no point)
    "padded": lambda v: f"{float(v):12.5e}",  # ' 1.00000e-05': NOT legal (a value line has no spaces)
}
NUMBER_STYLE = "shortest"


def fmt(value: float) -> str:
    return NUMBER_STYLES[NUMBER_STYLE](value)


def block(payload: bytes) -> bytes:
    size = str(len(payload))
    return f"#{len(size)}{size}".encode() + payload + b"\n"


def floats(payload: bytes, shape: tuple[int, ...], what: str) -> np.ndarray:
    expected = int(np.prod(shape)) * 4
    if len(payload) != expected:
        raise Refused(160, f"{what} block holds {len(payload)} bytes, expected {expected}")
    return np.frombuffer(payload, dtype="<f4").astype(np.float64).reshape(shape)


def reply_block(values: np.ndarray) -> bytes:
    if values.size * 4 > MAX_BLOCK:
        raise Refused(223, f"reply of {values.size * 4} bytes exceeds {MAX_BLOCK}")
    return block(np.ascontiguousarray(values, dtype="<f4").tobytes())


# --- the board's state and commands --------------------------------------------------------------------
class Board:
    def __init__(self, gate_coded: bool = False) -> None:
        self.gate_coded = gate_coded
        self.version = VERSION
        self.g = np.full((ROWS, COLS), G_START)
        self.pulses = 0
        self.start = time.monotonic()
        self.v = {"ROW": np.zeros(ROWS), "COL": np.zeros(COLS), "GATE": np.zeros(ROWS)}
        self.row_on = np.zeros(ROWS, dtype=bool)
        self.col_on = np.zeros(COLS, dtype=bool)
        self.sessions: dict[str, Session] = {}
        self.once_run = 0  # framed at-most-once commands run, for --lose-reply
        self.lose_reply = 0
        self.drop_link = False
        self.link = LinkState()  # the connected client's (one at a time)

    def idle(self) -> None:
        for levels in self.v.values():
            levels[:] = 0.0
        self.row_on[:] = False
        self.col_on[:] = False

    # The column currents a state would cause: selected rows whose gate conducts, selected columns.
    def currents(self, v: dict[str, np.ndarray], row_on: np.ndarray, col_on: np.ndarray) -> np.ndarray:
        rows = row_on & (v["GATE"] > V_THRESHOLD)
        drive = v["ROW"][rows][:, None] - v["COL"][None, :]
        return np.where(col_on, (drive * self.g[rows]).sum(axis=0), 0.0)

    def guard(self, v: dict[str, np.ndarray], row_on: np.ndarray, col_on: np.ndarray) -> None:
        """-240 before a level change that would drive a column beyond ICOL (turning down is always fine)."""
        before = np.abs(self.currents(self.v, self.row_on, self.col_on))
        after = np.abs(self.currents(v, row_on, col_on))
        bad = np.flatnonzero((after > LIMITS["ICOL"][1]) & (after > before))
        if bad.size:
            c = int(bad[0])
            raise Refused(240, f"column {c} current {after[c]:g} A would exceed ICOL {LIMITS['ICOL'][1]:g} A")

    @staticmethod
    def icol(currents: np.ndarray, what: str) -> None:
        worst = float(np.max(np.abs(currents))) if currents.size else 0.0
        if worst > LIMITS["ICOL"][1]:
            raise Refused(240, f"{what} current {worst:g} A would exceed ICOL {LIMITS['ICOL'][1]:g} A")

    @staticmethod
    def quantize(v: float) -> float:
        code = round(v / DAC_STEP)
        level = code * DAC_STEP
        if abs(level) > abs(v):  # one code toward 0 V: the limit the request was checked against holds
            level = (code - (1 if code > 0 else -1)) * DAC_STEP
        return level

    def region(self, p: list[str]) -> tuple[int, int, int, int]:
        row0, col0 = index(p[0], "row0", ROWS), index(p[1], "col0", COLS)
        nrows, ncols = count(p[2], "nrows"), count(p[3], "ncols")
        if nrows < 1 or row0 + nrows > ROWS:
            raise Refused(222, f"rows {row0}..{row0 + nrows - 1} outside the array's {ROWS}")
        if ncols < 1 or col0 + ncols > COLS:
            raise Refused(222, f"columns {col0}..{col0 + ncols - 1} outside the array's {COLS}")
        return row0, col0, nrows, ncols

    def pulse(self, kind: str, r: int, c: int, amplitude: float, gate: float) -> None:
        if amplitude >= SWITCH_V:
            if self.gate_coded and kind == "RES":
                self.g[r, c] = G_MIN
            elif self.gate_coded:  # the gate's compliance current sets the level SET reaches
                self.g[r, c] = max(self.g[r, c], min(G_MAX, G_PER_GATE_V * max(0.0, gate - V_THRESHOLD)))
            else:
                step = -G_STEP if kind == "RES" else G_STEP
                self.g[r, c] = min(G_MAX, max(G_MIN, self.g[r, c] + step))
        self.pulses += 1

    def check_pulse(self, kind: str, where: str, amplitude: float, gate: float, width: float) -> None:
        if amplitude < 0 or not math.isfinite(amplitude):
            raise Refused(222, f"amplitude{where} = {amplitude} V is not a magnitude >= 0")
        within(amplitude, f"amplitude{where}", "VCOL" if kind == "RES" else "VROW", "V")
        within(gate, f"v_gate{where}", "VGATE", "V")
        within(width, f"width{where}", "WIDTH", "s")


# --- framed mode: sessions kept by token, replies of at-most-once commands kept by number ------------------
AT_MOST_ONCE = {"PULS:SET", "PULS:RES", "PULS:FORM", "PULS:BATC", "SWEEP?", "SYST:WAIT", "PULS:SPAR"}
SESSIONS_KEPT, REPLIES_KEPT = 4, 8
TOKEN = re.compile(r"[A-Za-z0-9_-]{1,32}")
FRAME_HEADER = re.compile(rb"!(\d{1,18}),(\d{1,10}),([0-9a-f]{8})\r?\n")
MAX_FRAME_BODY = MAX_BLOCK + MAX_LINE + 64
MAX_FRAME_HEADER = 64


class Session:
    def __init__(self) -> None:
        self.highest = 0  # the highest number run (not refused)
        self.kept: dict[int, tuple[bytes, bytes]] = {}  # number -> (body, reply) of at-most-once commands
        self.forgotten = 0  # the highest number whose reply is no longer kept

    def keep(self, seq: int, body: bytes, reply: bytes) -> None:
        self.kept[seq] = (body, reply)
        while len(self.kept) > REPLIES_KEPT:
            oldest = min(self.kept)
            del self.kept[oldest]
            self.forgotten = max(self.forgotten, oldest)


class LinkState:
    """This link's mode: the session it took up (framed), or none (plain)."""

    def __init__(self) -> None:
        self.session: Session | None = None


def frame(seq: int, body: bytes) -> bytes:
    head = f"{seq},{len(body)},".encode()
    return b"!" + head + f"{zlib.crc32(head + body):08x}\n".encode() + body


# Each command: (number of parameters, takes a block, handler). The handler gets the fields and the block.
Handler = Callable[[Board, list[str], bytes], bytes]
COMMANDS: dict[str, tuple[int, bool, Handler]] = {}


def command(name: str, nparams: int = 0, takes_block: bool = False) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        COMMANDS[name] = (nparams, takes_block, handler)
        return handler

    return register


OK = b"OK\n"


def line(*fields: object) -> bytes:
    return (",".join(str(f) for f in fields) + "\n").encode("ascii")


command("*IDN?")(lambda b, p, x: line(IDN))
command("*OPC?")(lambda b, p, x: line(1))
command("SYST:VERS?")(lambda b, p, x: line(b.version))
command("SYST:ARR?")(lambda b, p, x: line(ROWS, COLS))
command("SYST:VGRE?")(lambda b, p, x: line(fmt(V_READ_GATE)))
command("SYST:PCNT?")(lambda b, p, x: line(b.pulses))
command("SYST:TIME?")(lambda b, p, x: line(fmt(time.monotonic() - b.start)))
command("DAC:RES?")(lambda b, p, x: line(DAC_BITS))
command("ADC:RES?")(lambda b, p, x: line(ADC_BITS))
command("ADC:RANG?")(lambda b, p, x: line(fmt(ADC_RANGE[0]), fmt(ADC_RANGE[1])))
command("TIA:GAIN?")(lambda b, p, x: line(*(fmt(g) for g in TIA_GAINS)))


@command("*RST")
def _rst(b: Board, p: list[str], x: bytes) -> bytes:
    b.idle()
    return OK


@command("SYST:LIM?", 1)
def _lim(b: Board, p: list[str], x: bytes) -> bytes:
    lo, hi = LIMITS[word(p[0], "name", tuple(LIMITS))]
    return line(fmt(lo), fmt(hi))


@command("DAC:RANG?", 1)
def _rang(b: Board, p: list[str], x: bytes) -> bytes:
    word(p[0], "line", tuple(LINE_LIMIT))
    return line(fmt(DAC_RANGE[0]), fmt(DAC_RANGE[1]))


@command("SYST:WAIT", 1)
def _wait(b: Board, p: list[str], x: bytes) -> bytes:
    seconds = number(p[0], "seconds")
    if not 0 <= seconds <= 1e7:
        raise Refused(222, f"seconds = {seconds:g} outside [0, 1e7]")
    b.idle()
    time.sleep(seconds)
    return OK


@command("SYST:FRAM", 1)
def _fram(b: Board, p: list[str], x: bytes) -> bytes:
    if p[0].upper() == "OFF":
        b.link.session = None
        return OK
    if not TOKEN.fullmatch(p[0]):
        raise Refused(224, f"session = {p[0]!r} is not a token of 1 to 32 letters, digits, _ or -")
    session = b.sessions.pop(p[0], None) or Session()
    b.sessions[p[0]] = session  # the most recently taken up last
    while len(b.sessions) > SESSIONS_KEPT:
        del b.sessions[next(iter(b.sessions))]
    b.link.session = session
    return line(session.highest)


@command("SYST:SEQ?")
def _seq(b: Board, p: list[str], x: bytes) -> bytes:
    return line(b.link.session.highest if b.link.session else 0)


@command("SYST:DONE?", 1)
def _done(b: Board, p: list[str], x: bytes) -> bytes:
    seq = count(p[0], "seq")
    session = b.link.session
    if session is None:
        raise Refused(221, "SYST:DONE? on a link without a session: send SYST:FRAM first")
    if seq in session.kept:
        return line(1)
    if seq <= session.forgotten:
        raise Refused(221, f"command {seq} is older than the {REPLIES_KEPT} replies this board keeps")
    return line(0)


@command("DAC:VOLT", 3)
def _dac_volt(b: Board, p: list[str], x: bytes) -> bytes:
    kind = word(p[0], "line", tuple(LINE_LIMIT))
    ch = index(p[1], "channel", COLS if kind == "COL" else ROWS)
    volts = within(number(p[2], "volts"), "volts", LINE_LIMIT[kind], "V")
    v = {k: a.copy() for k, a in b.v.items()}
    v[kind][ch] = Board.quantize(volts)
    b.guard(v, b.row_on, b.col_on)
    b.v = v
    return OK


@command("DAC:VOLT?", 2)
def _dac_volt_q(b: Board, p: list[str], x: bytes) -> bytes:
    kind = word(p[0], "line", tuple(LINE_LIMIT))
    ch = index(p[1], "channel", COLS if kind == "COL" else ROWS)
    return line(fmt(b.v[kind][ch]))


def _mux(b: Board, p: list[str], lines: str) -> bytes:
    ch = index(p[0], "channel", ROWS if lines == "ROW" else COLS)
    state = word(p[1], "state", ("0", "1")) == "1"
    row_on, col_on = b.row_on.copy(), b.col_on.copy()
    (row_on if lines == "ROW" else col_on)[ch] = state
    b.guard(b.v, row_on, col_on)
    b.row_on, b.col_on = row_on, col_on
    return OK


command("MUX:ROW", 2)(lambda b, p, x: _mux(b, p, "ROW"))
command("MUX:COL", 2)(lambda b, p, x: _mux(b, p, "COL"))


@command("MUX:OPEN")
def _mux_open(b: Board, p: list[str], x: bytes) -> bytes:
    b.row_on[:] = False
    b.col_on[:] = False
    return OK


@command("ADC:SAMP?", 2)
def _samp(b: Board, p: list[str], x: bytes) -> bytes:
    col = index(p[0], "column", COLS)
    gain = number(p[1], "gain")
    if gain not in TIA_GAINS:
        raise Refused(224, f"gain = {gain:g} ohm is not one of TIA:GAIN?")
    if not b.col_on[col]:
        raise Refused(221, f"column {col} is not selected")
    current = float(b.currents(b.v, b.row_on, b.col_on)[col])
    Board.icol(np.array([current]), f"column {col}")
    top = 2 ** (ADC_BITS - 1)
    raw = round(current * gain / ADC_LSB)
    code = min(top - 1, max(-top, raw))
    return line(fmt(code * ADC_LSB / gain), code, int(code != raw))


@command("READ?", 3)
def _read(b: Board, p: list[str], x: bytes) -> bytes:
    r, c = index(p[0], "row", ROWS), index(p[1], "col", COLS)
    v = within(number(p[2], "v_read"), "v_read", "VREAD", "V")
    if v == 0:
        raise Refused(222, "v_read = 0 V: a read needs a non-zero voltage")
    Board.icol(np.array([v * b.g[r, c]]), f"column {c}")
    b.idle()
    return line(fmt(b.g[r, c]))


def _single_pulse(b: Board, p: list[str], kind: str) -> bytes:
    r, c = index(p[0], "row", ROWS), index(p[1], "col", COLS)
    amplitude, gate, width = (number(f, n) for f, n in zip(p[2:], ("amplitude", "v_gate", "width"), strict=True))
    b.check_pulse(kind, "", amplitude, gate, width)
    b.pulse(kind, r, c, amplitude, gate)
    b.idle()
    return OK


for _kind in ("SET", "RES", "FORM"):
    command(f"PULS:{_kind}", 5)(functools.partial(lambda k, b, p, x: _single_pulse(b, p, k), _kind))


@command("MAP?", 6)
def _map(b: Board, p: list[str], x: bytes) -> bytes:
    row0, col0, nrows, ncols = b.region(p)
    v = within(number(p[4], "v_read"), "v_read", "VREAD", "V")
    quantity = word(p[5], "quantity", ("COND", "CURR"))
    if v == 0:
        raise Refused(222, "v_read = 0 V: a read needs a non-zero voltage")
    g = b.g[row0 : row0 + nrows, col0 : col0 + ncols]
    Board.icol(g * v, "a cell's")
    reply = reply_block(g if quantity == "COND" else g * v)
    b.idle()
    return reply


@command("VMM?", 6, takes_block=True)
def _vmm(b: Board, p: list[str], x: bytes) -> bytes:
    row0, col0, nrows, ncols = b.region(p)
    nvec = count(p[4], "nvec")
    if nvec < 1:
        raise Refused(222, "nvec = 0: at least one vector")
    if nvec * ncols * 4 > MAX_BLOCK:
        raise Refused(223, f"reply of {nvec * ncols * 4} bytes exceeds {MAX_BLOCK}")
    volts = floats(x, (nvec, nrows), "VMM?")
    bad = np.argwhere(~np.isfinite(volts) | (volts < LIMITS["VREAD"][0]) | (volts > LIMITS["VREAD"][1]))
    if bad.size:
        k, i = (int(n) for n in bad[0])
        within(volts[k, i], f"V[{k}, {i}]", "VREAD", "V")
    currents = volts @ b.g[row0 : row0 + nrows, col0 : col0 + ncols]
    Board.icol(currents, "a column")
    b.idle()
    return reply_block(currents)


@command("PULS:BATC", 6, takes_block=True)
def _batch(b: Board, p: list[str], x: bytes) -> bytes:
    kind = word(p[0], "kind", ("SET", "RES", "FORM"))
    row0, col0, nrows, ncols = b.region(p[1:])
    planes = floats(x, (4, nrows, ncols), "PULS:BATC")
    amplitude, gate, width, mask = planes
    bad = np.argwhere(~np.isfinite(mask))
    if bad.size:
        i, j = (int(n) for n in bad[0])
        raise Refused(222, f"mask[{i}, {j}] = {mask[i, j]} is not finite")
    cells = [(int(i), int(j)) for i, j in np.argwhere(mask != 0)]
    for i, j in cells:  # every masked cell checked before any pulse
        b.check_pulse(kind, f"[{i}, {j}]", amplitude[i, j], gate[i, j], width[i, j])
    for i, j in cells:
        b.pulse(kind, row0 + i, col0 + j, amplitude[i, j], gate[i, j])
    b.idle()
    return line(len(cells))


@command("SWEEP?", 6, takes_block=True)
def _sweep(b: Board, p: list[str], x: bytes) -> bytes:
    r, c = index(p[0], "row", ROWS), index(p[1], "col", COLS)
    gate = within(number(p[2], "v_gate"), "v_gate", "VGATE", "V")
    within(number(p[3], "width"), "width", "WIDTH", "s")  # an ideal cell switches at once
    npts = count(p[4], "npts")
    if npts < 1:
        raise Refused(222, "npts = 0: at least one point")
    volts = floats(x, (npts,), "SWEEP?")
    for k, v in enumerate(volts):
        if not math.isfinite(v):
            raise Refused(222, f"V[{k}] = {v} is not finite")
        if v >= 0:
            within(v, f"V[{k}]", "VROW", "V")
        else:
            within(-v, f"|V[{k}]|", "VCOL", "V")
    currents = np.zeros(npts)
    for k, v in enumerate(volts):
        b.pulse("SET" if v >= 0 else "RES", r, c, abs(v), gate)
        currents[k] = b.g[r, c] * v
    b.idle()
    return reply_block(currents)


# --- compact encodings (1.3): ADC codes with gain indices, row DAC codes in, sparse pulse batches --------
def adc_codes(currents: np.ndarray) -> bytes:
    """int16 codes, then one 4-bit gain index per value (two a byte, low nibble first), at the best gain."""
    flat = currents.ravel()
    top = 2 ** (ADC_BITS - 1) - 1
    gains = np.zeros(flat.size, dtype=np.uint8)
    for k, g in enumerate(TIA_GAINS):  # ascending: the highest gain that does not saturate wins
        gains[np.abs(flat) * g / ADC_LSB <= top] = k
    scale = np.array(TIA_GAINS)[gains] / ADC_LSB
    codes = np.clip(np.round(flat * scale), -top - 1, top).astype("<i2")
    padded = np.append(gains, 0) if gains.size % 2 else gains
    nibbles = (padded[0::2] | (padded[1::2] << 4)).astype(np.uint8)
    size = codes.nbytes + nibbles.nbytes
    if size > MAX_BLOCK:
        raise Refused(223, f"reply of {size} bytes exceeds {MAX_BLOCK}")
    return block(codes.tobytes() + nibbles.tobytes())


def bitmap(data: bytes, size: int, what: str) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    if bits[size:].any():
        raise Refused(222, f"{what} bitmap selects past its {size} entries")
    return bits[:size].astype(bool)


class Cursor:
    """Reads a block's parts in order; a block of another length than the arguments imply is -160."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.at, self.what = data, 0, what

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise Refused(160, f"{self.what} block holds {len(self.data)} bytes, too few for its arguments")
        part = self.data[self.at : self.at + n]
        self.at += n
        return part

    def done(self) -> None:
        if self.at != len(self.data):
            raise Refused(160, f"{self.what} block holds {len(self.data)} bytes, expected {self.at}")


@command("MAP:CODE?", 5)
def _map_code(b: Board, p: list[str], x: bytes) -> bytes:
    row0, col0, nrows, ncols = b.region(p)
    v = within(number(p[4], "v_read"), "v_read", "VREAD", "V")
    if v == 0:
        raise Refused(222, "v_read = 0 V: a read needs a non-zero voltage")
    currents = b.g[row0 : row0 + nrows, col0 : col0 + ncols] * v
    Board.icol(currents, "a cell's")
    reply = adc_codes(currents)
    b.idle()
    return reply


@command("VMM:CODE?", 7, takes_block=True)
def _vmm_code(b: Board, p: list[str], x: bytes) -> bytes:
    row0, col0, nrows, ncols = b.region(p)
    nvec = count(p[4], "nvec")
    inputs = word(p[5], "inputs", ("ALL", "NZ"))
    if nvec < 1:
        raise Refused(222, "nvec = 0: at least one vector")
    data = Cursor(x, "VMM:CODE?")
    rows = bitmap(data.take((nrows + 7) // 8), nrows, "row")
    cols = bitmap(data.take((ncols + 7) // 8), ncols, "column")
    if not rows.any() or not cols.any():
        raise Refused(222, "the row and column bitmaps must each select at least one")
    d = int(rows.sum())
    codes = np.zeros(nvec * d, dtype=np.int64)
    if inputs == "ALL":
        codes[:] = np.frombuffer(data.take(2 * nvec * d), dtype="<i2")
    else:
        nz = np.unpackbits(np.frombuffer(data.take((nvec * d + 7) // 8), dtype=np.uint8), bitorder="little")
        if nz[nvec * d :].any():
            raise Refused(160, "the non-zero bitmap sets bits past the last input")
        nz = nz[: nvec * d].astype(bool)
        codes[nz] = np.frombuffer(data.take(2 * int(nz.sum())), dtype="<i2")
    data.done()
    volts = codes.reshape(nvec, d) * DAC_STEP
    for k, i in np.argwhere((volts < LIMITS["VREAD"][0]) | (volts > LIMITS["VREAD"][1]))[:1]:
        within(volts[k, i], f"V[{k}, {i}]", "VREAD", "V")
    g = b.g[row0 : row0 + nrows, col0 : col0 + ncols][rows][:, cols]
    currents = volts @ g
    Board.icol(currents, "a column")
    reply = adc_codes(currents)
    b.idle()
    return reply


def _spar_values(data: Cursor, field: str, name: str, n: int, line_: str) -> np.ndarray:
    kind = field.upper()
    if kind == "F32":
        return np.frombuffer(data.take(4 * n), dtype="<f4").astype(np.float64)
    if kind == "DAC" and line_:
        return np.asarray(np.frombuffer(data.take(2 * n), dtype="<u2") * DAC_STEP)
    if field.isalpha() and kind not in NOT_FINITE:
        raise Refused(224, f"{name} = {field!r} is not a number, F32{' or DAC' if line_ else ''}")
    return np.full(n, float(np.float32(number(field, name))))


@command("PULS:SPAR", 11, takes_block=True)
def _spar(b: Board, p: list[str], x: bytes) -> bytes:
    kind = word(p[0], "kind", ("SET", "RES", "FORM"))
    row0, col0, nrows, ncols = b.region(p[1:])
    select_ = word(p[5], "select", ("IDX", "BITS"))
    n = count(p[6], "count")
    if n < 1:
        raise Refused(222, "count = 0: at least one cell")
    cells = nrows * ncols
    data = Cursor(x, "PULS:SPAR")
    if select_ == "IDX":
        dtype = "<u2" if cells <= 65536 else "<u4"
        chosen = np.frombuffer(data.take(n * np.dtype(dtype).itemsize), dtype=dtype).astype(np.int64)
        if (np.diff(chosen) <= 0).any() or chosen[-1] >= cells:
            raise Refused(222, f"cell indices must ascend strictly and lie below {cells}")
    else:
        chosen = np.flatnonzero(bitmap(data.take((cells + 7) // 8), cells, "cell"))
        if chosen.size != n:
            raise Refused(222, f"the bitmap selects {chosen.size} cells, count = {n}")
    amp_line = "COL" if kind == "RES" else "ROW"
    amplitude = _spar_values(data, p[7], "amplitude", n, amp_line)
    gate = _spar_values(data, p[8], "v_gate", n, "GATE")
    width = _spar_values(data, p[9], "width", n, "")
    data.done()
    where = [(int(c) // ncols, int(c) % ncols) for c in chosen]
    for k, (i, j) in enumerate(where):  # every pulsed cell checked before any pulse
        b.check_pulse(kind, f"[{i}, {j}]", amplitude[k], gate[k], width[k])
    for k, (i, j) in enumerate(where):
        b.pulse(kind, row0 + i, col0 + j, amplitude[k], gate[k])
    b.idle()
    return line(n)


def run(board: Board, text: bytes, payload: bytes | None, in_frame: bool = False) -> bytes:
    """One command line (and its block) -> its one reply."""
    try:
        if text.endswith(b"\r") and payload is None:
            text = text[:-1]
        if any(ch < 0x20 or ch > 0x7E for ch in text):
            raise Refused(102, "a control byte or a byte above 0x7E in the line")
        body = text.decode("ascii").strip(" ")
        if not body:
            raise Refused(102, "a line without a header")
        header, _sp, rest = body.partition(" ")
        if not HEADER.fullmatch(header):
            raise Refused(102, f"{header!r} is not a header")
        entry = COMMANDS.get(header.upper())
        if entry is None:
            raise Refused(113, f"undefined header '{header}'")
        nparams, takes_block, handler = entry
        rest = rest.strip(" ")
        if payload is not None:
            if not takes_block:
                raise Refused(102, f"{header} takes no block")
            if rest.endswith(","):
                rest = rest[:-1].rstrip(" ")
            elif rest:
                raise Refused(102, "a block must follow a comma")
        fields = [f.strip(" ") for f in rest.split(",")] if rest else []
        if not all(fields):  # a space inside a parameter is part of its value: its type check refuses it
            raise Refused(102, "an empty parameter")
        if takes_block and payload is None:  # before the count: a block command without its block is -102
            raise Refused(102, f"{header} needs a block as its last parameter")
        given = len(fields) + (payload is not None)
        if given > nparams:
            raise Refused(108, f"{header} takes {nparams} parameters, got {given}")
        if given < nparams:
            raise Refused(109, f"{header} takes {nparams} parameters, got {given}")
        if header.upper() in AT_MOST_ONCE and board.link.session is not None and not in_frame:
            raise Refused(221, f"{header} must not run twice: on a framed link it runs only in a frame")
        return handler(board, fields, payload or b"")
    except Refused as refusal:
        return refusal.line()


# --- the link: a byte stream with the guide's parsing state machine ---------------------------------------
class Link:
    """Bytes in with a timeout, bytes out; TCP socket or pty."""

    def __init__(self, fd_in: int, send: Callable[[bytes], None]) -> None:
        self.fd = fd_in
        self.send = send
        self.buf = bytearray()
        self.last = time.monotonic()

    def _fill(self, timeout: float | None) -> bool:
        ready, _w, _x = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        try:
            chunk = os.read(self.fd, 65536)
        except OSError as exc:
            raise Gone() from exc
        if not chunk:
            raise Gone()
        self.buf += chunk
        self.last = time.monotonic()
        return True

    def byte(self, timeout: float | None) -> int | None:
        if not self.buf and not self._fill(timeout):
            return None
        value = self.buf[0]
        del self.buf[0]
        return value

    def take(self, n: int, timeout: float) -> bytes | None:
        """Exactly n bytes, or None after `timeout` of silence."""
        out = bytearray()
        while len(out) < n:
            if not self.buf and not self._fill(timeout):
                return None
            part = self.buf[: n - len(out)]
            out += part
            del self.buf[: len(part)]
        return bytes(out)

    def drain(self) -> None:
        self.buf.clear()
        while self._fill(QUIET_S):
            self.buf.clear()


def read_command(link: Link, quiet: bool = False) -> tuple[bytes, bytes | None] | None:
    """The next command (line text, block payload), or None after replying an error for it.

    ``quiet``: the body of a damaged frame, read to be skipped; its errors are not replied (the frame's was).
    """
    if quiet:
        send = link.send
        link.send = lambda data: None
        try:
            return read_command(link)
        finally:
            link.send = send
    text = bytearray()
    overrun = False
    first = True
    while True:
        b = link.byte(None if first and not text else QUIET_S)
        first = False
        if b is None:
            if not overrun:
                link.send(Refused(160, "incomplete command timed out after 1 s of silence").line())
            return None
        if b == 0x0A:
            return None if overrun else (bytes(text), None)
        if b == 0x23:  # '#'
            if overrun:
                link.drain()
                return None
            return read_block(link, bytes(text))
        if overrun:
            continue
        if len(text) >= MAX_LINE:
            overrun = True
            link.send(Refused(363, f"command line longer than {MAX_LINE} bytes").line())
            continue
        text.append(b)


def read_block(link: Link, text: bytes) -> tuple[bytes, bytes | None] | None:
    digits = link.byte(QUIET_S)
    if digits is None:
        link.send(Refused(160, "block header timed out").line())
        return None
    if not 0x31 <= digits <= 0x39:
        link.send(Refused(160, f"malformed block header: #{chr(digits)!r}").line())
        link.drain()
        return None
    size_text = link.take(digits - 0x30, QUIET_S)
    if size_text is None:
        link.send(Refused(160, "block header timed out").line())
        return None
    if not size_text.isdigit():
        link.send(Refused(160, f"malformed block length {size_text!r}").line())
        link.drain()
        return None
    size = int(size_text)
    if size > MAX_BLOCK:
        link.send(Refused(223, f"block of {size} bytes exceeds {MAX_BLOCK}").line())
        if link.take(size, QUIET_S) is not None and not _line_end(link):
            link.drain()
        return None
    payload = link.take(size, QUIET_S)
    if payload is None:
        link.send(Refused(160, f"block payload of {size} bytes timed out").line())
        return None
    if not _line_end(link):
        link.send(Refused(160, "block payload not followed by its line end").line())
        link.drain()
        return None
    return text, payload


def _line_end(link: Link) -> bool:
    b = link.byte(QUIET_S)
    if b == 0x0D:
        b = link.byte(QUIET_S)
    return b == 0x0A


class BodyLink(Link):
    """A frame's body, parsed with the same machine; its error replies are collected, not sent."""

    def __init__(self, body: bytes) -> None:
        self.errors: list[bytes] = []
        super().__init__(-1, self.errors.append)
        self.buf = bytearray(body)

    def _fill(self, timeout: float | None) -> bool:
        return False

    def drain(self) -> None:
        self.buf.clear()


def read_frame(link: Link) -> tuple[int, bytes] | None:
    """After '!': (seq, body), or None once the frame's one reply (numbered 0) was sent."""
    head = bytearray(b"!")
    while not head.endswith(b"\n"):
        if len(head) >= MAX_FRAME_HEADER:
            link.send(frame(0, Refused(160, "frame header without a line end within 64 bytes").line()))
            link.drain()
            return None
        b = link.byte(QUIET_S)
        if b is None:
            link.send(frame(0, Refused(160, "incomplete frame header timed out").line()))
            return None
        head.append(b)
    match = FRAME_HEADER.fullmatch(bytes(head))
    if match is None or int(match[2]) > MAX_FRAME_BODY:
        link.send(frame(0, Refused(160, f"damaged frame header {bytes(head)[:40]!r}").line()))
        b = link.byte(None)  # the next command is that frame's body: read it, never run it
        if b is not None:
            link.buf.insert(0, b)
            read_command(link, quiet=True)
        return None
    seq, length = int(match[1]), int(match[2])
    body = link.take(length, QUIET_S)
    if body is None:
        link.send(frame(0, Refused(160, "incomplete frame body timed out").line()))
        return None
    if zlib.crc32(f"{seq},{length},".encode() + body) != int(match[3], 16):
        link.send(frame(0, Refused(160, "frame checksum mismatch").line()))
        return None
    return seq, body


def run_frame(board: Board, seq: int, body: bytes) -> bytes:
    """A framed command's reply body: kept replies answered again, never run twice."""
    session = board.link.session
    if session is None:
        return Refused(221, "a frame on a link without a session: send SYST:FRAM first").line()
    if seq in session.kept:
        kept_body, kept_reply = session.kept[seq]
        if kept_body != body:
            return Refused(221, f"number {seq} was used for another command").line()
        return kept_reply
    if seq <= session.forgotten:
        return Refused(221, f"number {seq} is older than the replies this board keeps: it may have run").line()
    if not body.endswith(b"\n"):  # empty, or a command without its line end: not exactly one command
        return Refused(102, "a frame's body must be exactly one command with its line end").line()
    inner = BodyLink(body)
    parsed = read_command(inner)
    if parsed is None:
        return inner.errors[0] if inner.errors else Refused(102, "an empty frame").line()
    if inner.buf:
        return Refused(102, "a frame holds exactly one command").line()
    reply = run(board, *parsed, in_frame=True)
    if not reply.startswith(b"ERR"):
        session.highest = max(session.highest, seq)
        if _header(parsed[0]) in AT_MOST_ONCE:
            session.keep(seq, body, reply)
            board.once_run += 1
            if board.once_run == board.lose_reply:  # a test fault: the reply lost on the way back
                return b""
    return reply


def _header(text: bytes) -> str:
    return text.decode("ascii", "replace").strip(" \r").partition(" ")[0].upper()


def serve(board: Board, link: Link, busy: threading.Event) -> None:
    """Commands in, one reply each, in order, until the client goes."""
    board.link = LinkState()  # a new connection starts plain
    try:
        while True:
            first = link.byte(None)
            if first is None:
                continue
            link.buf.insert(0, first)
            if first == 0x21:  # '!': a frame
                del link.buf[0]
                framed = read_frame(link)
                if framed is None:
                    continue
                busy.set()
                try:
                    reply = run_frame(board, *framed)
                    if reply:
                        link.send(frame(framed[0], reply))
                    elif board.drop_link:  # the test fault closes the connection instead
                        raise Gone()
                finally:
                    busy.clear()
                continue
            command_ = read_command(link)
            if command_ is None:
                continue
            busy.set()
            try:
                link.send(run(board, *command_))
            finally:
                busy.clear()
    except Gone:
        pass
    finally:
        board.idle()


# --- TCP: one client at a time --------------------------------------------------------------------------
def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the client has closed its end (its FIN waits unread), though the serving loop has not seen it yet."""
    try:
        readable, _w, _x = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""  # readable: the peek does not wait
    except OSError:
        return True


class TcpServer:
    def __init__(self, host: str, port: int, board: Board) -> None:
        self.listener = socket.create_server((host, port))
        self.board = board
        self.lock = threading.Lock()
        self.current: tuple[socket.socket, Link] | None = None
        self.waiting: list[socket.socket] = []
        self.busy = threading.Event()
        self.ready = threading.Event()

    def resource(self) -> str:
        host, port = self.listener.getsockname()[:2]
        return f"TCPIP::{host}::{port}::SOCKET"

    def accept_forever(self) -> None:
        while True:
            conn, _addr = self.listener.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                current = self.current
                if current is not None:
                    sock, link = current
                    silent = time.monotonic() - link.last >= 5.0 and not self.busy.is_set() and not link.buf
                    if not silent and not _closed_by_peer(
                        sock
                    ):  # a client that closed and came back is not a second one
                        conn.sendall(BUSY)
                        conn.close()
                        continue
                    sock.shutdown(socket.SHUT_RDWR)  # a half-open old connection: release it
                self.waiting.append(conn)
                self.ready.set()

    def serve_forever(self) -> None:
        threading.Thread(target=self.accept_forever, daemon=True).start()
        while True:
            self.ready.wait()
            with self.lock:
                if not self.waiting:
                    self.ready.clear()
                    continue
                conn = self.waiting.pop(0)
                conn.settimeout(10.0)  # a client that stops reading is released after 10 s

                def send(data: bytes, conn: socket.socket = conn) -> None:
                    try:
                        for piece in pieces(data):
                            conn.sendall(piece)
                    except OSError as exc:
                        raise Gone() from exc

                link = Link(conn.fileno(), send)
                self.current = (conn, link)
            serve(self.board, link, self.busy)
            with self.lock:
                self.current = None
                conn.close()


# A microcontroller writes a reply as its buffer fills (--chunk, --chunk-delay): the host must join the pieces.
CHUNK, CHUNK_DELAY = 0, 0.0
CRLF = False  # --crlf: plain replies end in \r\n, as many SCPI instruments' do (not the spec's LF)


def pieces(data: bytes) -> Iterator[bytes]:
    """``data`` cut into ``CHUNK``-byte pieces, pausing ``CHUNK_DELAY`` s before each piece after the first."""
    if CRLF and not data.startswith(b"!") and data.endswith(b"\n") and not data.endswith(b"\r\n"):
        data = data[:-1] + b"\r\n"
    if CHUNK <= 0:
        yield data
        return
    for start in range(0, len(data), CHUNK):
        if start and CHUNK_DELAY:
            time.sleep(CHUNK_DELAY)
        yield data[start : start + CHUNK]


# --- a pty standing in for a UART ------------------------------------------------------------------------
def serve_pty(board: Board) -> None:
    master, slave = os.openpty()
    tty.setraw(slave)  # a binary link: no echo, no line discipline, no XON/XOFF
    print(f"READY ASRL{os.ttyname(slave)}::INSTR", flush=True)

    def send(data: bytes) -> None:
        for piece in pieces(data):
            view = memoryview(piece)
            while view:
                view = view[os.write(master, view) :]

    link = Link(master, send)
    while True:  # a serial port has one client by construction and no disconnect the board can see
        try:
            serve(board, link, threading.Event())
        except Gone:
            time.sleep(0.05)
        time.sleep(0.05)  # the host closed the pty (EIO): wait for it to open it again


def _exit_when_stdin_closes() -> None:
    mode = os.fstat(0).st_mode
    if stat.S_ISFIFO(mode) or os.isatty(0):

        def watch() -> None:
            while os.read(0, 4096):
                pass
            os._exit(0)

        threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", metavar="HOST:PORT", help="listen on HOST:PORT (port 0: any free one)")
    where.add_argument("--pty", action="store_true", help="serve on a new pseudo-terminal")
    parser.add_argument(
        "--gate-coded",
        action="store_true",
        help="SET reaches a level set by the gate, RESET goes to the lowest (default: fixed steps)",
    )
    parser.add_argument("--protocol", choices=("1.2", "1.3"), default=VERSION,
                        help="1.2: without the compact encodings (the guide's steps 1-9)")  # fmt: skip
    parser.add_argument("--plain", action="store_true", help="without framed mode (SYST:FRAM is -113)")
    parser.add_argument("--lose-reply", type=int, default=0, metavar="N",
                        help="a test fault: the reply of the Nth framed pulse (or wait) is never sent")  # fmt: skip
    parser.add_argument("--drop-link", action="store_true", help="with --lose-reply: close the connection instead")
    parser.add_argument("--array", default="128x64", metavar="ROWSxCOLS", help="array size (default 128x64)")
    parser.add_argument("--crlf", action="store_true", help="end plain replies in \\r\\n (not the spec's \\n)")
    parser.add_argument("--training-only", action="store_true",
                        help="only the guide's minimal set for training: the description, *RST, MAP?, VMM?, "
                             "PULS:BATC (and their compact forms); the rest is -113")  # fmt: skip
    parser.add_argument("--numbers", choices=tuple(NUMBER_STYLES), default="shortest",
                        help="how reply numbers are written (default: the spec's shortest round trip)")  # fmt: skip
    parser.add_argument("--chunk", type=int, default=0, metavar="BYTES",
                        help="write every reply in pieces of BYTES (default: whole)")  # fmt: skip
    parser.add_argument("--chunk-delay", type=float, default=0.0, metavar="SECONDS",
                        help="with --chunk: the pause before each piece after the first")  # fmt: skip
    args = parser.parse_args(argv)
    global ROWS, COLS, NUMBER_STYLE, CHUNK, CHUNK_DELAY, CRLF  # the commands read these at call time
    NUMBER_STYLE, CHUNK, CHUNK_DELAY, CRLF = args.numbers, args.chunk, args.chunk_delay, args.crlf
    ROWS, COLS = (int(n) for n in args.array.lower().split("x"))
    _exit_when_stdin_closes()
    if args.protocol == "1.2":
        for name in ("MAP:CODE?", "VMM:CODE?", "PULS:SPAR"):
            del COMMANDS[name]
    if args.plain:
        for name in ("SYST:FRAM", "SYST:DONE?", "SYST:SEQ?"):
            del COMMANDS[name]
    if args.training_only:  # docs/firmware-guide.md, "The minimal command set for training"
        for name in ("DAC:VOLT", "DAC:VOLT?", "MUX:ROW", "MUX:COL", "MUX:OPEN", "ADC:SAMP?", "READ?", "PULS:SET",
                     "PULS:RES", "PULS:FORM", "SWEEP?", "SYST:WAIT"):  # fmt: skip
            del COMMANDS[name]
    if args.pty:
        board = Board(args.gate_coded)
        board.version, board.lose_reply, board.drop_link = args.protocol, args.lose_reply, args.drop_link
        serve_pty(board)
        return 0
    host, _sep, port = args.tcp.rpartition(":")
    board = Board(args.gate_coded)
    board.version, board.lose_reply, board.drop_link = args.protocol, args.lose_reply, args.drop_link
    server = TcpServer(host, int(port), board)
    print(f"READY {server.resource()}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
