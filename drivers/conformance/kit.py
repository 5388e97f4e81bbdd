"""The conformance kit's runner: options, the facts a board states about itself, the check registry
and the report (text, one line per check, and JSON)."""

from __future__ import annotations

import contextlib
import fnmatch
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from drivers import codec
from drivers import commands as cmd
from drivers.conformance.probe import CheckFailed, Probe, shorten
from drivers.errors import BoardError, InvalidRequest
from drivers.transports.base import Transport


@dataclass(frozen=True)
class ConformanceOptions:
    """What the kit may do to the chip. By default it never pulses: pulse checks need ``cells``
    and a ``max_amplitude``; checks that would stress a chip need ``stress``."""

    cells: tuple[tuple[int, int], ...] = ()
    """the only cells pulse checks may pulse (and refused pulses may target)"""
    max_amplitude: float = 0.0
    """V: the largest pulse amplitude the kit applies (0: no pulse checks)"""
    max_gate: float = 1.0
    """V: the gate voltage of the kit's pulses (sets their compliance current)"""
    max_pulses: int = 20
    """the most pulses the whole run applies"""
    stress: bool = False
    """run the checks that could stress a chip (currents up to ICOL through the named cells' column)"""
    large_transfers: bool = True
    """send 16 MiB blocks (the size-limit checks); off by default on serial links, where it takes minutes"""
    quiet_wait: float = 1.3
    """s of silence the kit waits for the board to count the link quiet (0 for an in-process board)"""
    reconnect: Callable[[], Transport] | None = None
    """opens a second link to the same board (TCP): for the session and concurrent-client checks"""

    def __post_init__(self) -> None:
        # Checked before the kit opens the board: a NaN amplitude went out on the wire as 'nan' and the
        # board's refusal was reported as its non-conformance.
        for name, value, unit in (("max_amplitude", self.max_amplitude, "V"), ("max_gate", self.max_gate, "V"),
                                  ("quiet_wait", self.quiet_wait, "s")):  # fmt: skip
            if not (math.isfinite(value) and value >= 0):
                flag = "" if name == "quiet_wait" else f" (--{name.replace('_', '-')})"  # hil conformance's flags
                raise InvalidRequest(f"{name}{flag} = {value:g} {unit}: must be a finite number >= 0; "
                                     "nothing was sent")  # fmt: skip
        if self.max_pulses < 0:
            raise InvalidRequest(f"max_pulses (--max-pulses) = {self.max_pulses}: must be >= 0; nothing was sent")
        for row, col in self.cells:
            if row < 0 or col < 0:
                raise InvalidRequest(f"cells: ({row}, {col}) has a negative index; nothing was sent")


@dataclass
class Facts:
    """What the board says about itself (the kit checks these first)."""

    rows: int = 0
    cols: int = 0
    limits: dict[str, tuple[float, float]] = field(default_factory=dict)
    gains: tuple[float, ...] = ()
    dac_bits: int = 0
    dac_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    read_gate: float = 0.0
    version: tuple[int, int] = (0, 0)
    adc_bits: int = 0
    adc_range: tuple[float, float] = (0.0, 0.0)


@dataclass
class Context:
    probe: Probe
    options: ConformanceOptions
    facts: Facts
    pulses_left: int
    seq: int = 0

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def spend_pulses(self, count: int) -> None:
        if count > self.pulses_left:
            raise Skipped(f"needs {count} pulses, {self.pulses_left} left of --max-pulses")
        self.pulses_left -= count

    def limit(self, name: str) -> tuple[float, float]:
        return self.facts.limits[name]

    def cell(self) -> tuple[int, int]:
        if not self.options.cells or self.options.max_amplitude <= 0:
            raise Skipped("pulses only cells you name, at an amplitude you allow: pass --cells and --max-amplitude")
        return self.options.cells[0]

    def amplitude(self, limit: str = "VROW") -> float:
        return min(self.options.max_amplitude, self.limit(limit)[1])


class Skipped(Exception):
    """A check that cannot run with these options or on this link; the reason says which."""


CheckFunction = Callable[[Context], None]


@dataclass(frozen=True)
class Check:
    name: str
    group: str
    run: CheckFunction
    doc: str
    drains: bool = False
    """it may leave the board discarding input until the link is quiet: the kit waits for that after it"""

    def matches(self, pattern: str) -> bool:
        """``pattern`` names it: its name, its group, or ``group/name`` as the report prints it, each
        also as a shell pattern (``error-113-*``, ``errors/*``), as the firmware guide names checks."""
        return any(fnmatch.fnmatchcase(key, pattern) for key in (self.name, self.group, f"{self.group}/{self.name}"))


CHECKS: dict[str, Check] = {}


def check(group: str, drains: bool = False) -> Callable[[CheckFunction], CheckFunction]:
    """Register a check; its name is the function's, its description its docstring's first line."""

    def register(function: CheckFunction) -> CheckFunction:
        name = function.__name__.removeprefix("check_").replace("_", "-")
        doc = (function.__doc__ or "").strip().splitlines()[0] if function.__doc__ else name
        CHECKS[name] = Check(name, group, function, doc, drains)
        return function

    return register


@dataclass
class CheckResult:
    name: str
    group: str
    status: str  # "pass", "fail", "skip"
    message: str = ""
    exchanges: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Report:
    resource: str
    protocol: str
    results: list[CheckResult]

    @property
    def passed(self) -> bool:
        return all(r.status != "fail" for r in self.results)

    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "fail"]

    def counts(self) -> dict[str, int]:
        return {s: sum(r.status == s for r in self.results) for s in ("pass", "fail", "skip")}

    def text(self) -> str:
        lines = [f"conformance of {self.resource} (protocol {self.protocol or '?'}) to wire protocol "
                 f"{codec.PROTOCOL_VERSION}"]  # fmt: skip
        for r in self.results:
            lines.append(f"{r.status.upper():4}  {r.group}/{r.name}" + (f": {r.message}" if r.message else ""))
            if r.status == "fail":
                for exchange in r.exchanges:
                    lines.append(f"        sent:     {exchange['sent']}")
                    lines.append(f"        received: {exchange['received']}")
        c = self.counts()
        verdict = "CONFORMS" if self.passed else "DOES NOT CONFORM"
        lines.append(f"{verdict}: {c['pass']} passed, {c['fail']} failed, {c['skip']} skipped")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(
            {"resource": self.resource, "protocol": self.protocol, "contract": codec.PROTOCOL_VERSION,
             "passed": self.passed, "counts": self.counts(), "checks": [asdict(r) for r in self.results]},
            indent=2,
        )  # fmt: skip


def _learn(probe: Probe) -> Facts:
    """The board's description; a board that cannot say it fails the whole run."""
    facts = Facts()
    rows, cols = probe.value("SYST:ARR?")
    facts.rows, facts.cols = int(rows), int(cols)
    for name in cmd.LimitName:
        low, high = probe.value(f"SYST:LIM? {name}")
        facts.limits[name] = (float(low), float(high))
    facts.gains = tuple(float(g) for g in probe.value("TIA:GAIN?"))
    facts.dac_bits = int(probe.value("DAC:RES?")[0])
    for line in cmd.Line:
        low, high = probe.value(f"DAC:RANG? {line}")
        facts.dac_ranges[line] = (float(low), float(high))
    facts.read_gate = float(probe.value("SYST:VGRE?")[0])
    facts.adc_bits = int(probe.value("ADC:RES?")[0])
    low, high = probe.value("ADC:RANG?")
    facts.adc_range = (float(low), float(high))
    return facts


def run_checks(
    transport: Transport, options: ConformanceOptions, only: tuple[str, ...] = (), resource: str | None = None
) -> Report:
    """Run the kit's checks (``only``: these names or groups) over an open transport."""
    from drivers.conformance import checks as _registered  # noqa: F401  (registers every check)

    probe = Probe(transport, options.quiet_wait)
    resource = resource or transport.resource
    selected = [c for c in CHECKS.values() if not only or any(c.matches(pattern) for pattern in only)]
    unknown = {pattern for pattern in only if not any(c.matches(pattern) for c in CHECKS.values())}
    if unknown:
        raise ValueError(f"unknown check(s) {', '.join(sorted(unknown))}; known groups: "
                         f"{', '.join(sorted({c.group for c in CHECKS.values()}))}")  # fmt: skip
    try:
        probe.clean()
        protocol = probe.value("SYST:VERS?")[0]
        facts = _learn(probe)
        major, _, minor = protocol.partition(".")
        facts.version = (int(major), int(minor or 0)) if major.isdigit() and minor.isdigit() else (0, 0)
    except (CheckFailed, BoardError, ValueError) as exc:
        result = CheckResult("describe", "description", "fail", f"the board cannot describe itself: {exc}",
                             _exchanges(probe))  # fmt: skip
        return Report(resource, "", [result])
    for cell in options.cells:
        if not (0 <= cell[0] < facts.rows and 0 <= cell[1] < facts.cols):
            raise ValueError(f"cell {cell} is outside the {facts.rows} x {facts.cols} array")
    context = Context(probe, options, facts, options.max_pulses)
    results = []
    for item in selected:
        results.append(_run_one(item, context))
    with contextlib.suppress(BoardError, CheckFailed, OSError):  # leave the board idle and plain
        probe.clean()
        probe.ask("SYST:FRAM OFF")
        probe.ask("*RST")
    if probe.transport is not transport:  # a check went on over a second link it opened: close that one
        with contextlib.suppress(Exception):
            probe.transport.close()
    return Report(resource, protocol, results)


def _run_one(item: Check, context: Context) -> CheckResult:
    probe = context.probe
    started = time.monotonic()
    try:
        probe.clean()
        probe.ask("*RST")
        probe.transcript.clear()
        item.run(context)
        status, message = "pass", ""
    except Skipped as why:
        status, message = "skip", str(why)
    except CheckFailed as failure:
        status, message = "fail", str(failure)
    except (BoardError, OSError) as exc:
        status, message = "fail", f"the link failed: {exc}"
    exchanges = _exchanges(probe) if status == "fail" else []
    if status != "skip":
        with contextlib.suppress(BoardError, CheckFailed, OSError):  # every check ends plain and idle
            if item.drains or status == "fail":
                probe.wait_quiet()
            if status == "fail":  # a broken board may still be answering what it should not have run
                probe.resynchronise()
            probe.clean()
            probe.ask("SYST:FRAM OFF")
            probe.ask("*RST")
    return CheckResult(item.name, item.group, status, message, exchanges, round(time.monotonic() - started, 3))


def _exchanges(probe: Probe, last: int = 3) -> list[dict[str, str]]:
    return [{"sent": shorten(e.sent), "received": shorten(bytes(e.received))} for e in probe.transcript[-last:]]
