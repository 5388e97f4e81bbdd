"""The conformance kit's checks: each one rule of docs/wire-protocol.md, tried on the wire.

Safety on a real chip: no check pulses a cell the user did not name or beyond the amplitude the user
allowed; a refusal check that a broken board would turn into a pulse pulses only named cells (or
sends amplitude 0 with another parameter out of range); levels the kit sets itself are gate levels
with the rows at 0 V, which drive no current. Checks that could stress a chip need ``stress``.
"""

from __future__ import annotations

import math
import re
import time

import numpy as np

from drivers import codec, compact
from drivers import commands as cmd
from drivers.conformance.kit import Context, Skipped, check
from drivers.conformance.probe import CheckFailed, Probe

ERROR_LINE = re.compile(rb'ERR -[0-9]{3},"[ !#-~]*"\n')
NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
MARK_CHANNEL = 0  # the gate channel whose level tells whether a command idled the board or changed nothing
PROBE_CHANNEL = 1  # the gate channel a payload's embedded command would set if it ran
RECONNECTS = 100  # close-and-reconnect cycles: a board racing its own disconnect said busy in 1 to 15 of 100


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def _gate_level(ctx: Context) -> float:
    """A gate level the kit may set (rows at 0 V: no current flows), well inside VGATE and the DAC."""
    low, high = ctx.limit("VGATE")
    return round(min(1.0, high * 0.5, ctx.facts.dac_ranges["GATE"][1] * 0.5), 3) if high > 0 else low


def _step(ctx: Context, line: str) -> float:
    low, high = ctx.facts.dac_ranges[line]
    return (high - low) / (2**ctx.facts.dac_bits - 1) if ctx.facts.dac_bits else 0.0


def _level(probe: Probe, line: str, channel: int) -> float:
    return probe.number(f"DAC:VOLT? {line},{channel}")


def _set_mark(ctx: Context) -> float:
    """Set the marker gate level and return it as read back."""
    ctx.probe.ok(f"DAC:VOLT GATE,{MARK_CHANNEL},{_gate_level(ctx)}")
    return _level(ctx.probe, "GATE", MARK_CHANNEL)


def _mark_unchanged(ctx: Context, mark: float, after: str) -> None:
    now = _level(ctx.probe, "GATE", MARK_CHANNEL)
    _expect(now == mark, f"after {after} the gate level set before is {now} V, not {mark} V: a refused command "
            "must change nothing (not even idle the board)")  # fmt: skip


def _pulse_count(ctx: Context) -> int:
    fields = ctx.probe.value("SYST:PCNT?")
    _expect(fields[0].isdigit(), f"SYST:PCNT? answered {fields[0]!r}, not a count")
    return int(fields[0])


def _not_run(ctx: Context, what: str) -> None:
    """The probe gate channel is still at 0 V: the command a payload held did not run."""
    level = _level(ctx.probe, "GATE", PROBE_CHANNEL)
    _expect(level == 0.0, f"{what}: GATE,{PROBE_CHANNEL} is at {level} V: a command inside it ran")


def _probe_command(ctx: Context) -> bytes:
    return f"DAC:VOLT GATE,{PROBE_CHANNEL},{_gate_level(ctx)}\n".encode()


def _one_reply_only(ctx: Context, what: str) -> None:
    extra = ctx.probe.extra_bytes()
    _expect(not extra, f"{what}: {extra} more bytes came: one command, one reply")


def _width(ctx: Context) -> float:
    low, high = ctx.limit("WIDTH")
    return min(max(1e-6, low), high)


def _gate(ctx: Context) -> float:
    low, high = ctx.limit("VGATE")
    return min(max(ctx.options.max_gate, low), high)


def _gain(ctx: Context) -> float:
    return ctx.facts.gains[0]


def _read_voltage(ctx: Context) -> float:
    return min(0.1, ctx.limit("VREAD")[1] / 2)


# ============================================================================ description


@check("description")
def check_identity(ctx: Context) -> None:
    """*IDN? has four fields; SYST:VERS? is a 1.x version; headers are case-insensitive."""
    fields = ctx.probe.value("*IDN?")
    _expect(len(fields) == 4 and all(f.strip() for f in fields), f"*IDN? gave {fields}, not four fields")
    version = ctx.probe.value("SYST:VERS?")[0]
    _expect(re.fullmatch(r"1\.[0-9]+", version) is not None, f"SYST:VERS? gave {version!r}, not 1.<minor>")
    _expect(ctx.probe.value("*idn?") == fields, "*idn? differs from *IDN?: headers are case-insensitive")


@check("description")
def check_description(ctx: Context) -> None:
    """Array size, limits, converters and gains are well formed; *OPC?, SYST:TIME? and SYST:PCNT? answer."""
    f = ctx.facts
    _expect(f.rows > 0 and f.cols > 0, f"SYST:ARR? gave {f.rows} x {f.cols}")
    for name, (low, high) in f.limits.items():
        _expect(low <= high, f"SYST:LIM? {name} gave min {low} above max {high}")
        if name in ("VROW", "VCOL", "VGATE"):
            _expect(low <= 0 <= high, f"{name} [{low}, {high}] does not hold the idle level 0 V")
    _expect(list(f.gains) == sorted(f.gains) and all(g > 0 for g in f.gains), f"TIA:GAIN? not ascending: {f.gains}")
    _expect(f.dac_bits > 0 and int(ctx.probe.number("ADC:RES?")) > 0, "DAC:RES? / ADC:RES? not positive")
    _expect(len(ctx.probe.value("ADC:RANG?")) == 2, "ADC:RANG? does not give min,max")
    low, high = ctx.limit("VGATE")
    _expect(low <= f.read_gate <= high, f"SYST:VGRE? {f.read_gate} V outside VGATE")
    _expect(ctx.probe.value("*OPC?") == ["1"], "*OPC? does not answer 1")
    t0 = ctx.probe.number("SYST:TIME?")
    _expect(t0 >= 0 and ctx.probe.number("SYST:TIME?") >= t0, "SYST:TIME? is negative or runs backwards")
    _pulse_count(ctx)


@check("description")
def check_replies_follow_the_grammar(ctx: Context) -> None:
    """Value replies are comma-separated numbers; an error line is ERR <code>,"<printable, no quote>"."""
    for query in ("SYST:ARR?", "SYST:LIM? VROW", "TIA:GAIN?", "DAC:RANG? GATE", "ADC:RANG?", "SYST:VGRE?",
                  "DAC:VOLT? ROW,0", "SYST:TIME?", "SYST:PCNT?"):  # fmt: skip
        for field in ctx.probe.value(query):
            _expect(NUMBER.fullmatch(field) is not None, f"{query} field {field!r} is not a number of the grammar")
        _line_end(query, bytes(ctx.probe.transcript[-1].received))
    ctx.probe.ask('NO:"QUOTE?')
    raw = bytes(ctx.probe.transcript[-1].received)
    _line_end('NO:"QUOTE?', raw)
    _expect(ERROR_LINE.fullmatch(raw) is not None, f"error line {raw!r} is not ERR <code>,\"<message>\"")


def _line_end(query: str, raw: bytes) -> None:
    """A reply line ends in LF alone: a CR before it (a C library's line end) is named as such, not as a
    malformed reply."""
    _expect(not raw.endswith(b"\r\n"), f"the reply to {query} ends in CR LF ({raw[-12:]!r}): a reply line ends "
            "in LF alone (wire-protocol.md, Grammar: value-line, error-line)")  # fmt: skip


# ============================================================================ error codes


@check("errors")
def check_error_102_syntax(ctx: Context) -> None:
    """An empty parameter, a blank line, a block where none is taken and none where one is needed are -102."""
    ctx.probe.refused(f"READ? 0,,{_read_voltage(ctx)}", -102, "an empty parameter")
    ctx.probe.refused(b"\n", -102, "a blank line")
    ctx.probe.refused(b"*OPC? #14abcd\n", -102, "a block after a command that takes none")
    ctx.probe.refused(b"VMM? 0,0,1,1,1\n", -102, "VMM? without its block (whatever its parameter count)")
    ctx.probe.refused(b"VMM?\n", -102, "VMM? without parameters or block")


@check("errors")
def check_error_104_data_type(ctx: Context) -> None:
    """A word where a number goes, a fraction where an index goes, and a number with a space inside are -104."""
    ctx.probe.refused(f"READ? a,0,{_read_voltage(ctx)}", -104, "a row that is not a number")
    ctx.probe.refused(f"READ? 0,0.5,{_read_voltage(ctx)}", -104, "a column index that is not whole")
    ctx.probe.refused(f"READ? 0 0,0,{_read_voltage(ctx)}", -104, "a row with a space inside (part of its value)")


def _framed_mode_offered(ctx: Context) -> bool:
    """Framed mode is optional: a board without it answers every SYST:FRAM (OFF too) with -113."""
    reply = ctx.probe.ask("SYST:FRAM OFF")
    return not (reply.kind == "error" and reply.code == -113)


def _offers(ctx: Context, spec: cmd.CommandSpec) -> bool:
    """Whether the board has the command: its version has it and, for framed mode's, it offers framed mode."""
    if spec.since > ctx.facts.version:
        return False
    return spec not in (cmd.FRAM, cmd.DONE, cmd.SEQ) or _framed_mode_offered(ctx)


@check("errors")
def check_error_108_109_parameter_count(ctx: Context) -> None:
    """Every command the board offers with too many (-108) or too few (-109) parameters is refused."""
    for spec in cmd.TABLE.values():
        if not _offers(ctx, spec):
            continue
        extra = ",".join(["0"] * (spec.nargs + 1)) + (",#10" if spec.block_in else "")
        ctx.probe.refused(f"{spec.header} {extra}", -108, f"{spec.header} with {spec.nargs + 1} parameters")
        if spec.nargs:
            fewer = ",".join(["0"] * (spec.nargs - 1))
            line = f"{spec.header} {fewer}".rstrip() + ((", #10" if fewer else " #10") if spec.block_in else "")
            ctx.probe.refused(line, -109, f"{spec.header} with {spec.nargs - 1} parameters")


@check("errors")
def check_error_113_undefined_header(ctx: Context) -> None:
    """An unknown header is -113."""
    ctx.probe.refused("NO:SUCH?", -113, "an undefined header")
    ctx.probe.refused("*IDN", -113, "a header without its ?")


@check("errors")
def check_error_160_block_length(ctx: Context) -> None:
    """A block whose length is not what the other parameters imply is -160."""
    ctx.probe.refused(b"VMM? 0,0,1,1,2,#14" + bytes(4) + b"\n", -160, "2 vectors in a block of 4 bytes")


@check("errors")
def check_error_221_settings_conflict(ctx: Context) -> None:
    """Sampling a column that is not selected is -221."""
    ctx.probe.ok("MUX:OPEN")
    ctx.probe.refused(f"ADC:SAMP? 0,{codec.format_number(_gain(ctx))}", -221, "sampling an unselected column")


@check("errors")
def check_error_222_out_of_range(ctx: Context) -> None:
    """An index outside the array and a value outside a limit are -222."""
    ctx.probe.refused(f"READ? {ctx.facts.rows},0,{_read_voltage(ctx)}", -222, "a row outside the array")
    ctx.probe.refused(f"DAC:VOLT? COL,{ctx.facts.cols}", -222, "a channel outside the array")
    high = ctx.limit("VREAD")[1]
    ctx.probe.refused(f"READ? 0,0,{codec.format_number(high * 2 + 1)}", -222, "v_read beyond VREAD")
    ctx.probe.refused("SYST:WAIT -1", -222, "a negative wait")


@check("errors")
def check_error_223_oversized_block(ctx: Context) -> None:
    """A block declared over 16 MiB is -223, and the board serves again once the link is quiet."""
    ctx.probe.refused(b"VMM? 0,0,1,1,1,#9999999999\n", -223, "a block of 999,999,999 bytes")
    ctx.probe.wait_quiet()
    _expect(ctx.probe.value("*OPC?") == ["1"], "not served after the link went quiet")


@check("errors")
def check_error_224_illegal_value(ctx: Context) -> None:
    """An unknown word, and a TIA gain the board does not have, are -224."""
    ctx.probe.refused("DAC:RANG? BODY", -224, "an unknown line word")
    ctx.probe.refused("SYST:LIM? VMAX", -224, "an unknown limit name")
    ctx.probe.ok("MUX:COL 0,1")
    odd = _gain(ctx) * 1.37
    ctx.probe.refused(f"ADC:SAMP? 0,{codec.format_number(odd)}", -224, "a gain TIA:GAIN? does not list")
    # A listed gain is one number however it is written; close to one is not one (a float32 table
    # still tells 1 part in 10^6 apart: 8 of its steps).
    near = _gain(ctx) * (1 + 1e-6)
    ctx.probe.refused(f"ADC:SAMP? 0,{codec.format_number(near)}", -224, "a gain 1 part in 10^6 off a listed one")
    for written in (f"{_gain(ctx):E}", f"{_gain(ctx):.6e}", f"{_gain(ctx):f}"):
        if float(written) == _gain(ctx):
            reply = ctx.probe.ask(f"ADC:SAMP? 0,{written}")
            _expect(reply.kind == "value", f"ADC:SAMP? 0,{written} (a listed gain, written another way) got {reply}")


@check("errors")
def check_error_240_column_current(ctx: Context) -> None:
    """(--stress) Rows driven on one by one into a named cell's column: refused with -240 before ICOL is passed."""
    if not ctx.options.stress:
        raise Skipped("drives many rows at --max-amplitude into one column: pass --stress to run it")
    _, col = ctx.cell()
    amplitude, gate = ctx.amplitude(), ctx.limit("VGATE")[1]
    ctx.probe.ok(f"MUX:COL {col},1")
    for row in range(ctx.facts.rows):
        for line in (f"DAC:VOLT GATE,{row},{gate}", f"MUX:ROW {row},1", f"DAC:VOLT ROW,{row},{amplitude}"):
            reply = ctx.probe.ask(line)
            if reply.kind == "error":
                _expect(reply.code == -240, f"{line} refused with {reply.code}, not -240 (ICOL)")
                return
    current, _, saturated = ctx.probe.value(f"ADC:SAMP? {col},{codec.format_number(_gain(ctx))}")
    low, high = ctx.limit("ICOL")
    _expect(saturated.strip() == "0" and low <= float(current) <= high,
            f"every row on, nothing refused, and column {col} reads {current} A (saturated {saturated})")  # fmt: skip


@check("errors")
def check_error_363_line_overrun(ctx: Context) -> None:
    """A line of 4096 bytes is taken; one of 4097 is -363 and the next command is served."""
    _expect(ctx.probe.value(b"*OPC?" + b" " * (codec.MAX_LINE_BYTES - 5) + b"\n") == ["1"],
            "a command line of exactly 4096 bytes was not taken")  # fmt: skip
    ctx.probe.refused(b"*OPC?" + b" " * (codec.MAX_LINE_BYTES - 4) + b"\n", -363, "a line of 4097 bytes")
    _expect(ctx.probe.value("*OPC?") == ["1"], "the command after an overlong line was not served")


# ============================================================================ refusal before effect


@check("refusals")
def check_levels_refused_not_clamped(ctx: Context) -> None:
    """DAC:VOLT beyond each line's limit is refused (-222), not clamped; the level stays as it was."""
    for line in cmd.Line:
        limit = cmd.LINE_LIMIT[line]
        low, high = ctx.limit(limit)
        before = _level(ctx.probe, line, 0)
        for beyond in (high + max(0.5, abs(high) * 0.1), low - max(0.5, abs(low) * 0.1)):
            reply = ctx.probe.ask(f"DAC:VOLT {line},0,{codec.format_number(beyond)}")
            if reply.kind == "ok":
                shown = _level(ctx.probe, line, 0)
                raise CheckFailed(f"DAC:VOLT {line} at {beyond:g} V (beyond {limit} [{low:g}, {high:g}]) was "
                                  f"accepted (it reads back {shown} V): refuse, never clamp")  # fmt: skip
            _expect(reply.code == -222, f"DAC:VOLT {line} beyond {limit}: ERR {reply.code}, not -222")
            after = _level(ctx.probe, line, 0)
            _expect(after == before, f"a refused DAC:VOLT {line} changed the level from {before} to {after} V")


@check("refusals")
def check_pulses_refused_before_any_effect(ctx: Context) -> None:
    """Pulses with a parameter out of range are -222: no pulse counted, no level changed, no idling."""
    row, col = ctx.options.cells[0] if ctx.options.cells else (0, 0)
    amp_ok = ctx.amplitude() if ctx.options.cells and ctx.options.max_amplitude > 0 else 0.0
    gate, width = _gate(ctx), _width(ctx)
    (_g_low, g_high), (w_low, w_high) = ctx.limit("VGATE"), ctx.limit("WIDTH")
    cases = [
        (f"PULS:SET {row},{col},{amp_ok},{gate},{codec.format_number(w_high * 10)}", "width beyond WIDTH"),
        (f"PULS:SET {row},{col},{amp_ok},{gate},{codec.format_number(w_low / 10)}", "width below WIDTH"),
        (f"PULS:FORM {row},{col},{amp_ok},{codec.format_number(g_high + 1)},{width}", "v_gate beyond VGATE"),
        (f"PULS:RES {row},{col},-1,{gate},{width}", "a negative amplitude"),
        (f"PULS:SET {row},{col},0,{gate},nan", "a NaN width"),
    ]
    if ctx.options.cells:  # a broken board would apply these: only on a cell the user gave up
        cases.append((f"PULS:SET {row},{col},{codec.format_number(ctx.limit('VROW')[1] + 1)},{gate},{width}",
                      "amplitude beyond VROW"))  # fmt: skip
        cases.append((f"PULS:RES {row},{col},{codec.format_number(ctx.limit('VCOL')[1] + 1)},{gate},{width}",
                      "amplitude beyond VCOL"))  # fmt: skip
    _refused_without_effect(ctx, [(line.encode() + b"\n", why) for line, why in cases])


def _refused_without_effect(ctx: Context, cases: list[tuple[bytes, str]]) -> None:
    """Each command is refused with -222, and neither the pulse count nor a level set before moves."""
    mark, count = _set_mark(ctx), _pulse_count(ctx)
    for data, why in cases:
        ctx.probe.refused(data, -222, why)
        _expect(_pulse_count(ctx) == count, f"{why}: refused, yet SYST:PCNT? counted pulses")
        _mark_unchanged(ctx, mark, f"a refused command ({why})")


@check("refusals")
def check_batches_and_sweeps_refused_whole(ctx: Context) -> None:
    """One bad element refuses a whole PULS:BATC / SWEEP? / VMM? (-222, NaN included) before anything runs."""
    row, col = ctx.options.cells[0] if ctx.options.cells else (0, 0)
    amp = ctx.amplitude() if ctx.options.cells and ctx.options.max_amplitude > 0 else 0.0
    planes = np.array([[[amp]], [[_gate(ctx)]], [[ctx.limit("WIDTH")[1] * 10]], [[1.0]]], dtype="<f4")
    nan_mask = np.array([[[0.0]], [[_gate(ctx)]], [[_width(ctx)]], [[np.nan]]], dtype="<f4")
    sweep_args = (row, col, _gate(ctx), _width(ctx))
    cases = [
        (codec.encode_command("PULS:BATC", ("SET", row, col, 1, 1), planes), "a batch with a width beyond WIDTH"),
        (codec.encode_command("PULS:BATC", ("SET", row, col, 1, 1), nan_mask), "a batch with a NaN mask"),
        (codec.encode_command("SWEEP?", (*sweep_args, 2), np.array([0.0, np.nan], "<f4")), "a NaN sweep step"),
        (codec.encode_command("SWEEP?", (*sweep_args, 1), np.array([-np.nan], "<f4")), "a -NaN sweep step"),
        (codec.encode_command("SWEEP?", (*sweep_args, 0), np.zeros(0, "<f4")), "a sweep of 0 points"),
        (codec.encode_command("VMM?", (0, 0, 1, 1, 1), np.array([[ctx.limit("VREAD")[1] * 2 + 1]], "<f4")),
         "a VMM input beyond VREAD"),
        (codec.encode_command("VMM?", (0, 0, 1, 1, 0), np.zeros((0, 1), "<f4")), "a VMM of 0 vectors"),
    ]  # fmt: skip
    _refused_without_effect(ctx, cases)


@check("refusals")
def check_dac_quantization_within_limits(ctx: Context) -> None:
    """A level reads back within one DAC step of the request, never beyond it in magnitude; 0 V is 0 V."""
    for line in cmd.Line:
        low, high = ctx.limit(cmd.LINE_LIMIT[line])
        step = _step(ctx, line)
        for wanted in (high, low, 0.0, high / 3, low / 7):
            ctx.probe.ok(f"DAC:VOLT {line},0,{codec.format_number(wanted)}")
            got = _level(ctx.probe, line, 0)
            _expect(low <= got <= high, f"DAC:VOLT {line},0,{wanted:g} reads back {got} V, outside [{low}, {high}]")
            _expect(abs(got) <= abs(wanted) and abs(got - wanted) <= step * 1.001 + 1e-12,
                    f"DAC:VOLT {line},0,{wanted:g} reads back {got} V: over a step toward 0 V")  # fmt: skip


@check("primitives")
def check_primitives_answer(ctx: Context) -> None:
    """MUX:COL, MUX:ROW, MUX:OPEN and ADC:SAMP? work: a sample of a selected column is current,code,saturated."""
    gain = codec.format_number(ctx.facts.gains[-1])
    ctx.probe.ok("MUX:COL 0,1")
    ctx.probe.ok("MUX:ROW 0,1")  # its row line at 0 V: no current
    fields = ctx.probe.value(f"ADC:SAMP? 0,{gain}")
    _expect(len(fields) == 3, f"ADC:SAMP? gave {fields}, not current,code,saturated")
    current, code, saturated = fields
    _expect(NUMBER.fullmatch(current) is not None and re.fullmatch(r"[+-]?[0-9]+", code) is not None
            and saturated in ("0", "1"), f"ADC:SAMP? fields {fields} are not a number, a code and 0|1")  # fmt: skip
    ctx.probe.ok("MUX:OPEN")
    ctx.probe.refused(f"ADC:SAMP? 0,{gain}", -221, "sampling a column after MUX:OPEN")


# ============================================================================ idle state


def _arm(ctx: Context) -> None:
    """Levels and selections an idling command must clear (gate on, rows at 0 V: no current)."""
    ctx.probe.ok(f"DAC:VOLT GATE,{MARK_CHANNEL},{_gate_level(ctx)}")
    ctx.probe.ok(f"MUX:ROW {MARK_CHANNEL},1")
    ctx.probe.ok("MUX:COL 0,1")


def _idle(ctx: Context, after: str) -> None:
    level = _level(ctx.probe, "GATE", MARK_CHANNEL)
    _expect(level == 0.0, f"after {after} the gate line is at {level} V: the board must be idle")
    reply = ctx.probe.ask(f"ADC:SAMP? 0,{codec.format_number(_gain(ctx))}")
    _expect(reply.kind == "error" and reply.code == -221,
            f"after {after} column 0 is still selected (ADC:SAMP? did not refuse with -221)")  # fmt: skip


@check("idle")
def check_idle_after_every_operation(ctx: Context) -> None:
    """*RST, READ?, MAP?, VMM?, SYST:WAIT (and pulses, batches, sweeps on named cells) leave the board idle."""
    v = _read_voltage(ctx)
    operations: list[tuple[bytes, str]] = [
        (b"*RST\n", "*RST"),
        (f"READ? 0,0,{v}\n".encode(), "READ?"),
        (f"MAP? 0,0,1,1,{v},COND\n".encode(), "MAP?"),
        (codec.encode_command("VMM?", (0, 0, 1, 1, 1), np.array([[v]], "<f4")), "VMM?"),
        (b"SYST:WAIT 0\n", "SYST:WAIT"),
    ]
    if ctx.options.cells and ctx.options.max_amplitude > 0:
        row, col = ctx.options.cells[0]
        a, g, w = ctx.amplitude(), _gate(ctx), _width(ctx)
        ctx.spend_pulses(6)
        for header in ("PULS:SET", "PULS:RES", "PULS:FORM"):
            operations.append((f"{header} {row},{col},{a},{g},{w}\n".encode(), header))
        planes = np.array([[[a]], [[g]], [[w]], [[1.0]]], "<f4")
        operations.append((codec.encode_command("PULS:BATC", ("SET", row, col, 1, 1), planes), "PULS:BATC"))
        operations.append((codec.encode_command("SWEEP?", (row, col, g, w, 2), np.array([a / 2, -a / 2], "<f4")),
                           "SWEEP?"))  # fmt: skip
    for data, name in operations:
        _arm(ctx)
        reply = ctx.probe.ask(data)
        _expect(reply.kind != "error", f"{name} was refused: ERR {reply.code} {reply.text[:80]}")
        _idle(ctx, name)


# ============================================================================ blocks and resynchronisation


@check("blocks")
def check_malformed_block_header_drains(ctx: Context) -> None:
    """After a malformed block header (-160) nothing runs until the link is quiet: one reply, no payload run."""
    for header in (b"#0", b"#3ab"):
        ctx.probe.send(b"VMM? 0,0,1,1,1," + header + b"\n" + _probe_command(ctx) + b"*OPC?\n")
        reply = ctx.probe.reply()
        _expect(reply.kind == "error" and reply.code == -160, f"malformed block header {header!r}: not -160")
        _one_reply_only(ctx, f"a malformed block header {header!r}")
        ctx.probe.wait_quiet()
        _not_run(ctx, f"a malformed block header {header!r}")


@check("blocks")
def check_overlong_block_drains(ctx: Context) -> None:
    """A block followed by more bytes than it declared is -160, and those bytes never run."""
    ctx.probe.send(b"VMM? 0,0,1,1,1,#14" + bytes(4) + b"EXTRA\n" + _probe_command(ctx))
    reply = ctx.probe.reply()
    _expect(reply.kind == "error" and reply.code == -160, "a block longer than declared: not -160")
    _one_reply_only(ctx, "a block longer than declared")
    ctx.probe.wait_quiet()
    _not_run(ctx, "the bytes after a block longer than declared")


@check("blocks")
def check_oversized_block_discarded_exactly(ctx: Context) -> None:
    """(16 MiB) After -223 the board discards exactly the declared payload: nothing inside runs, the next does."""
    if not ctx.options.large_transfers:
        raise Skipped("sends 16 MiB: off on serial links (pass --stress to send it anyway)")
    length = codec.MAX_BLOCK_BYTES + 4
    inner = b"\n" + _probe_command(ctx)
    payload = (inner * (length // len(inner) + 1))[:length]
    ctx.probe.send(b"VMM? 0,0,1,1,1,#8%d" % length + payload + b"\n*OPC?\n")
    reply = ctx.probe.reply()
    _expect(reply.kind == "error" and reply.code == -223, "a 16 MiB + 4 block was not refused with -223")
    _expect(ctx.probe.reply().text == "1", "the command right after the discarded payload was not served")
    _one_reply_only(ctx, "an oversized block")
    _not_run(ctx, "an oversized block's payload")


@check("blocks")
def check_largest_blocks(ctx: Context) -> None:
    """(16 MiB) A 16 MiB block is taken; a reply that would exceed 16 MiB is refused (-223) before running."""
    if not ctx.options.large_transfers:
        raise Skipped("sends 16 MiB: off on serial links (pass --stress to send it anyway)")
    rows, cols = ctx.facts.rows, ctx.facts.cols
    nvec = codec.MAX_BLOCK_BYTES // 4 // rows
    saved = ctx.probe.transport.timeout
    ctx.probe.transport.timeout = max(saved, 1 + nvec * 1e-3)  # the contract's reply time for nvec vectors
    try:
        reply = ctx.probe.ask(codec.encode_command("VMM?", (0, 0, rows, cols, nvec), np.zeros((nvec, rows), "<f4")))
    finally:
        ctx.probe.transport.timeout = saved
    _expect(reply.kind == "block" and len(reply.payload) == nvec * cols * 4,
            f"VMM? of a 16 MiB block: expected a block of {nvec * cols} values")  # fmt: skip
    if cols > 1:
        wide = codec.MAX_BLOCK_BYTES // 4
        reply = ctx.probe.ask(codec.encode_command("VMM?", (0, 0, 1, cols, wide), np.zeros((wide, 1), "<f4")))
        _expect(reply.kind == "error" and reply.code == -223,
                f"a VMM? whose reply would be {wide * cols * 4} bytes was not refused with -223")  # fmt: skip


@check("blocks")
def check_incomplete_command_times_out(ctx: Context) -> None:
    """A command left without its line end is discarded with -160 once the link is quiet (1 s)."""
    ctx.probe.send(b"*OPC")
    ctx.probe.wait_quiet()
    saved = ctx.probe.transport.timeout
    ctx.probe.transport.timeout = 3.0
    try:
        reply = ctx.probe.reply()
    finally:
        ctx.probe.transport.timeout = saved
    _expect(reply.kind == "error" and reply.code == -160, "an incomplete command was not discarded with -160")
    _expect(ctx.probe.value("*OPC?") == ["1"], "the next command was not served (or was glued to the discarded one)")


# ============================================================================ grammar


@check("grammar")
def check_numbers_of_the_grammar(ctx: Context) -> None:
    """+1, .5, 5., 2.5E-1, -0.0, 1e-400 are numbers; 0_1, 0x1, 1e, 1.2.3 are not (-104); nan, inf, 1e400 are -222."""
    top = _gate_level(ctx)
    for text, volts in (("+" + str(top), top), (".5", 0.5), ("1.", 1.0), ("2.5E-1", 0.25), ("-0.0", 0.0),
                        ("1e-400", 0.0), (f"  {top} ", top)):  # fmt: skip
        if volts > ctx.limit("VGATE")[1]:
            continue
        ctx.probe.ok(f"DAC:VOLT GATE,{PROBE_CHANNEL},{text}")
        got = _level(ctx.probe, "GATE", PROBE_CHANNEL)
        _expect(abs(got - volts) <= _step(ctx, "GATE") * 1.001 + 1e-12, f"{text!r} was taken as {got} V, not {volts}")
    mark = _set_mark(ctx)
    for text in ("0_1", "1_000", "0x1", "1e", "e5", "1.2.3", "--1"):
        ctx.probe.refused(f"DAC:VOLT GATE,{MARK_CHANNEL},{text}", -104, f"{text!r} is not a number")
    for text in ("nan", "-NaN", "inf", "-Infinity", "1e400"):
        ctx.probe.refused(f"DAC:VOLT GATE,{MARK_CHANNEL},{text}", -222, f"{text!r} is not finite")
    _mark_unchanged(ctx, mark, "numbers outside the grammar")


@check("grammar")
def check_line_endings_and_spaces(ctx: Context) -> None:
    """CR LF ends a line like LF; spaces around the header and parameters are ignored."""
    _expect(ctx.probe.value(b"*OPC?\r\n") == ["1"], "*OPC? ended by CR LF was not taken")
    _expect(ctx.probe.value(b"  SYST:LIM?   VGATE  \n") == ctx.probe.value("SYST:LIM? VGATE"),
            "spaces around the header and parameter changed the command")  # fmt: skip
    ctx.probe.refused(b"*OPC?\t\n", -102, "a tab (a control byte)")


# ============================================================================ framed mode


def _open_session(ctx: Context, token: str) -> int:
    reply = ctx.probe.ask(f"SYST:FRAM {token}")
    if reply.kind == "error" and reply.code == -113:
        raise Skipped("the board has no framed mode (SYST:FRAM is -113): plain lines only")
    _expect(reply.kind == "value" and reply.text.isdigit(), f"SYST:FRAM {token} answered {reply}, not a number")
    return int(reply.text)


def _token(ctx: Context, name: str) -> str:
    return f"kit-{name}-{int(time.time() * 1000) % 10**9}"


def _framed_ok(ctx: Context, seq: int, command: str | bytes, what: str) -> codec.Reply:
    number, reply = ctx.probe.ask_framed(seq, command)
    _expect(number == seq, f"{what}: the reply is numbered {number}, not {seq}")
    _expect(reply.kind != "error", f"{what}: refused with ERR {reply.code} {reply.text[:80]}")
    return reply


@check("framed")
def check_framed_basics(ctx: Context) -> None:
    """SYST:FRAM starts a session at 0; frames are answered under their numbers; SYST:SEQ? and OFF work."""
    _expect(_open_session(ctx, _token(ctx, "basic")) == 0, "a new session's SYST:FRAM is not 0")
    _expect(_framed_ok(ctx, 1, "*OPC?", "framed *OPC?").text == "1", "framed *OPC? is not 1")
    _expect(_framed_ok(ctx, 2, "SYST:SEQ?", "framed SYST:SEQ?").text == "1", "SYST:SEQ? is not the last number run")
    ctx.probe.refused("SYST:FRAM bad.token", -224, "a session token with a dot")
    ctx.probe.ok("SYST:FRAM OFF")
    _expect(ctx.probe.value("*OPC?") == ["1"], "plain lines after SYST:FRAM OFF")
    ctx.probe.refused("SYST:DONE? 1", -221, "SYST:DONE? on a link without a session")


@check("framed")
def check_framed_damage_never_runs(ctx: Context) -> None:
    """A frame failing its checksum, and the body after a damaged header, are refused (-160, numbered 0), not run."""
    _open_session(ctx, _token(ctx, "damage"))
    body = _probe_command(ctx)
    frame = bytearray(codec.encode_frame(5, body))
    frame[-3] ^= 0x01  # a digit of the level
    ctx.probe.send(bytes(frame))
    seq, reply = ctx.probe.framed_reply()
    _expect(seq == 0 and reply.kind == "error" and reply.code == -160, "a frame failing its checksum: not 0/-160")
    _not_run(ctx, "a frame failing its checksum")
    ctx.probe.send(b"!1x,%d,00000000\n" % len(body) + body)
    seq, reply = ctx.probe.framed_reply()
    _expect(seq == 0 and reply.kind == "error" and reply.code == -160, "a damaged frame header: not 0/-160")
    _one_reply_only(ctx, "a damaged frame header and its body")
    _not_run(ctx, "the body of a frame whose header is damaged")


@check("framed")
def check_framed_at_most_once(ctx: Context) -> None:
    """On a framed link a command that must not run twice is refused plain (-221); resent framed, its kept reply."""
    _open_session(ctx, _token(ctx, "once"))
    ctx.probe.refused("SYST:WAIT 0", -221, "SYST:WAIT sent plain on a framed link")
    frame = codec.encode_frame(1, b"SYST:WAIT 0\n")
    ctx.probe.send(frame)
    first = _framed_reply_bytes(ctx.probe)
    ctx.probe.send(frame)
    _expect(_framed_reply_bytes(ctx.probe) == first, "a resent frame's reply differs from the first, byte for byte")
    _expect(ctx.probe.value("SYST:DONE? 1") == ["1"], "SYST:DONE? 1 is not 1 after command 1 ran")
    _expect(ctx.probe.value("SYST:DONE? 2") == ["0"], "SYST:DONE? 2 is not 0 for a number never sent")
    if ctx.options.cells and ctx.options.max_amplitude > 0:
        ctx.spend_pulses(1)
        row, col = ctx.options.cells[0]
        count = _pulse_count(ctx)
        pulse = f"PULS:SET {row},{col},{ctx.amplitude()},{_gate(ctx)},{_width(ctx)}"
        _framed_ok(ctx, 2, pulse, "a framed pulse")
        _framed_ok(ctx, 2, pulse, "the same framed pulse sent again")
        _expect(_pulse_count(ctx) == count + 1, "a framed pulse sent twice under one number was applied twice")


def _framed_reply_bytes(probe: Probe) -> bytes:
    start = len(probe.transcript[-1].received)
    probe.framed_reply()
    return bytes(probe.transcript[-1].received[start:])


@check("framed")
def check_framed_numbers_and_refusals(ctx: Context) -> None:
    """A number reused for another command is refused (-221); refused commands do not advance SYST:SEQ?."""
    _open_session(ctx, _token(ctx, "numbers"))
    _framed_ok(ctx, 1, "SYST:WAIT 0", "framed SYST:WAIT")
    seq, reply = ctx.probe.ask_framed(1, "SYST:WAIT 0.0")
    _expect(seq == 1 and reply.kind == "error" and reply.code == -221,
            "number 1 sent again with another command was not refused with -221")  # fmt: skip
    seq, reply = ctx.probe.ask_framed(2, "SYST:WAIT -1")
    _expect(reply.kind == "error" and reply.code == -222, "a framed SYST:WAIT -1 was not refused")
    _expect(_framed_ok(ctx, 3, "SYST:SEQ?", "SYST:SEQ?").text == "1", "a refused frame advanced SYST:SEQ?")
    _expect(ctx.probe.value("SYST:DONE? 2") == ["0"], "SYST:DONE? of a refused command is not 0")
    for number, body, what in ((4, b"SYST:WAIT 0\nSYST:WAIT 0\n", "two commands"), (5, b"SYST:WAIT 0", "a command "
                               "without its line end")):  # fmt: skip
        seq, reply = ctx.probe.ask_framed(number, body)
        _expect(seq == number and reply.kind == "error" and reply.code == -102,
                f"a frame holding {what} was not refused with -102 under its number")  # fmt: skip
    _expect(_framed_ok(ctx, 6, "SYST:SEQ?", "SYST:SEQ?").text == "3", "a frame refused for its body advanced SYST:SEQ?")


@check("framed")
def check_sessions_kept(ctx: Context) -> None:
    """At least 4 sessions are kept by token: taking up another and coming back keeps the first's history."""
    tokens = [_token(ctx, f"s{k}") for k in range(4)]
    for token in tokens:
        _open_session(ctx, token)
        _framed_ok(ctx, 1, "SYST:WAIT 0", f"session {token}")
    _expect(_open_session(ctx, tokens[0]) == 1, "the first of 4 sessions was forgotten (SYST:FRAM is not 1)")
    _expect(ctx.probe.value("SYST:DONE? 1") == ["1"], "the first session forgot that its command 1 ran")
    ctx.probe.send(codec.encode_frame(1, b"SYST:WAIT 0\n"))
    seq, reply = ctx.probe.framed_reply()
    _expect(seq == 1 and reply.kind == "ok", "a resend in a session taken up again did not get its kept reply")


@check("framed")
def check_session_belongs_to_its_link(ctx: Context) -> None:
    """(TCP) A new connection without SYST:FRAM gets no other link's kept replies (-221); it resumes by token."""
    if ctx.options.reconnect is None:
        raise Skipped("needs a second connection to the same board (TCP)")
    token = _token(ctx, "link")
    _open_session(ctx, token)
    _framed_ok(ctx, 1, "SYST:WAIT 0", "framed SYST:WAIT")
    ctx.probe.transport.close()
    ctx.probe.transport = ctx.options.reconnect()
    _seq, reply = ctx.probe.ask_framed(1, "*IDN?")
    _expect(reply.kind == "error" and reply.code == -221,
            "a frame on a new connection without SYST:FRAM was answered (another link's session)")  # fmt: skip
    _expect(_open_session(ctx, token) == 1, "the session did not go on after a reconnect")


@check("clients")
def check_second_client_refused_at_once(ctx: Context) -> None:
    """(TCP) A second client is told the board is busy at once (an ERR line) while the first is active."""
    if ctx.options.reconnect is None:
        raise Skipped("needs a second connection to the same board (TCP)")
    _expect(ctx.probe.value("*OPC?") == ["1"], "*OPC?")
    second = ctx.options.reconnect()
    second.timeout = 2.0
    try:
        line = second.read_line()
    except Exception as exc:  # any failure to answer at once is the finding
        raise CheckFailed(f"a second client got no reply within 2 s ({exc}): it must be refused at once") from exc
    finally:
        second.close()
    _expect(line.startswith(b"ERR -221"), f"a second client got {line[:80]!r}, not ERR -221")
    _expect(ctx.probe.value("*OPC?") == ["1"], "the first client is no longer served")


@check("clients")
def check_client_reconnecting_at_once_is_served(ctx: Context) -> None:
    """(TCP) A client that closes and connects again at once is served, not told busy (the host reconnects so)."""
    if ctx.options.reconnect is None:
        raise Skipped("needs a second connection to the same board (TCP)")
    for attempt in range(RECONNECTS):
        ctx.probe.transport.close()
        ctx.probe.transport = ctx.options.reconnect()
        reply = ctx.probe.ask("*OPC?")
        _expect(reply.kind == "value" and reply.fields == ["1"],
                f"reconnection {attempt + 1} of {RECONNECTS}, right after closing: *OPC? answered {reply}")  # fmt: skip


@check("timing")
def check_reply_times(ctx: Context) -> None:
    """The whole-array map and a VMM answer within the contract's reply times."""
    rows, cols = ctx.facts.rows, ctx.facts.cols
    v = _read_voltage(ctx)
    for data, bound, name in (
        (f"MAP? 0,0,{rows},{cols},{v},COND\n".encode(), 1 + 1e-4 * rows * cols, "MAP? of the whole array"),
        (codec.encode_command("VMM?", (0, 0, rows, cols, 8), np.zeros((8, rows), "<f4")), 1 + 8e-3, "VMM? of 8"),
        (b"SYST:TIME?\n", 1.0, "SYST:TIME?"),
    ):
        took = []
        for _ in range(3):  # the best of three: a host's own hiccup (or a first call's set-up) is not the board's
            started = time.monotonic()
            reply = ctx.probe.ask(data)
            took.append(time.monotonic() - started)
            _expect(reply.kind != "error", f"{name} was refused: {reply.text[:80]}")
        _expect(min(took) <= bound, f"{name} took {min(took):.2f} s (best of 3), over its bound of {bound:.2f} s")


# ============================================================================ pulses (named cells only)


@check("pulses")
def check_pulses_counted(ctx: Context) -> None:
    """PULS:SET/RES/FORM, PULS:BATC and SWEEP? on a named cell each count exactly their pulses in SYST:PCNT?."""
    row, col = ctx.cell()
    ctx.spend_pulses(6)
    a, g, w = ctx.amplitude(), _gate(ctx), _width(ctx)
    count = _pulse_count(ctx)
    for header in ("PULS:SET", "PULS:FORM"):
        ctx.probe.ok(f"{header} {row},{col},{a},{g},{w}")
    ctx.probe.ok(f"PULS:RES {row},{col},{ctx.amplitude('VCOL')},{g},{w}")
    _expect(_pulse_count(ctx) == count + 3, "three single pulses did not count three")
    planes = np.array([[[a]], [[g]], [[w]], [[1.0]]], "<f4")
    _expect(ctx.probe.value(codec.encode_command("PULS:BATC", ("SET", row, col, 1, 1), planes)) == ["1"],
            "a batch of one masked cell did not answer 1")  # fmt: skip
    reply = ctx.probe.ask(codec.encode_command("SWEEP?", (row, col, g, w, 2), np.array([a / 2, -a / 2], "<f4")))
    _expect(reply.kind == "block" and len(reply.payload) == 8, "a sweep of 2 points did not answer 2 currents")
    values = codec.decode_block(reply.payload)
    _expect(all(math.isfinite(float(x)) for x in values), "a sweep answered non-finite currents")
    _expect(_pulse_count(ctx) == count + 6, f"SYST:PCNT? rose by {_pulse_count(ctx) - count}, not 6")


# ============================================================================ compact encodings (1.3)


def _compact(ctx: Context) -> compact.Scales:
    """The board's scales, for a board that says it speaks 1.3 or later (older ones skip these checks)."""
    if ctx.facts.version < compact.COMPACT_SINCE:
        raise Skipped(f"protocol {ctx.facts.version[0]}.{ctx.facts.version[1]} has no compact encodings (1.3)")
    ranges = {cmd.Line(line): rng for line, rng in ctx.facts.dac_ranges.items()}
    return compact.Scales(ctx.facts.dac_bits, ranges, ctx.facts.adc_bits, ctx.facts.adc_range, ctx.facts.gains)


def _code_currents(ctx: Context, scales: compact.Scales, reply: codec.Reply, count: int, what: str) -> np.ndarray:
    _expect(reply.kind == "block", f"{what} should answer a block, got {reply.kind} {reply.text[:80]!r}")
    try:
        return scales.currents(*compact.decode_adc_codes(reply.payload, count))
    except ValueError as exc:
        raise CheckFailed(f"{what}: {exc}") from None


def _agree(codes: np.ndarray, floats: np.ndarray, what: str) -> None:
    """Two readings of the same cells (read noise apart): within 10 % or 1 % of the largest."""
    worst = float(np.abs(floats).max()) if floats.size else 0.0
    off = np.abs(codes - floats) > 0.1 * np.abs(floats) + 0.01 * worst
    _expect(not off.any(), f"{what}: {codes[off][:3]} A where the float32 form reads {floats[off][:3]} A "
            "(codes at the wrong scale, byte order or gain index?)")  # fmt: skip


@check("compact")
def check_codes_read_what_floats_read(ctx: Context) -> None:
    """MAP:CODE? and VMM:CODE? read what MAP? and VMM? read, at the scales the board reports, and VMM:CODE?
    drives only the rows and returns only the columns it names (1.3)."""
    scales = _compact(ctx)
    nrows, ncols = min(ctx.facts.rows, 4), min(ctx.facts.cols, 4)
    v = _read_voltage(ctx)
    floats = ctx.probe.ask(f"MAP? 0,0,{nrows},{ncols},{v},CURR")
    _expect(floats.kind == "block", f"MAP? should answer a block, got {floats.kind}")
    codes = _code_currents(ctx, scales, ctx.probe.ask(f"MAP:CODE? 0,0,{nrows},{ncols},{v}"), nrows * ncols,
                           "MAP:CODE?")  # fmt: skip
    _agree(codes, codec.decode_block(floats.payload).astype(np.float64), "MAP:CODE?")
    step = scales.dac_step(cmd.Line.ROW)
    dac = np.array([[round(v / step), -round(v / step / 2)] * (nrows // 2) + [0] * (nrows % 2)], dtype=np.int64)
    inputs = (dac * step).astype("<f4")
    floats = ctx.probe.ask(codec.encode_command("VMM?", (0, 0, nrows, ncols, 1), inputs))
    _expect(floats.kind == "block", f"VMM? should answer a block, got {floats.kind}")
    every = compact.encode_vmm_selection(np.ones(nrows, bool), np.ones(ncols, bool))
    block = every + dac.astype(compact.VMM_CODE_DTYPE).tobytes()
    reply = ctx.probe.ask(codec.encode_command("VMM:CODE?", (0, 0, nrows, ncols, 1, "ALL"), block))
    codes = _code_currents(ctx, scales, reply, ncols, "VMM:CODE?")
    _agree(codes, codec.decode_block(floats.payload).astype(np.float64), "VMM:CODE?")
    form, sparse = compact.encode_inputs(np.concatenate([dac[:, :1], np.zeros((1, nrows - 1), np.int64)], axis=1))
    _expect(form is compact.Inputs.NONZERO, "one non-zero input of several travels as NZ")
    first = np.zeros_like(inputs)
    first[0, 0] = inputs[0, 0]
    floats = ctx.probe.ask(codec.encode_command("VMM?", (0, 0, nrows, ncols, 1), first))
    reply = ctx.probe.ask(codec.encode_command("VMM:CODE?", (0, 0, nrows, ncols, 1, "NZ"), every + sparse))
    codes = _code_currents(ctx, scales, reply, ncols, "VMM:CODE? with NZ inputs")
    _agree(codes, codec.decode_block(floats.payload).astype(np.float64), "VMM:CODE?")
    # Row 0 alone driven, the last column alone wanted: the others held at 0 V and not sent.
    rows, cols = np.zeros(nrows, bool), np.zeros(ncols, bool)
    rows[0], cols[-1] = True, True
    alone = (dac[:, :1] * 1).astype(compact.VMM_CODE_DTYPE).tobytes()
    reply = ctx.probe.ask(codec.encode_command("VMM:CODE?", (0, 0, nrows, ncols, 1, "ALL"),
                                               compact.encode_vmm_selection(rows, cols) + alone))  # fmt: skip
    single = _code_currents(ctx, scales, reply, 1, "VMM:CODE? of one row and one column")
    inputs_alone = np.zeros_like(inputs)
    inputs_alone[0, 0] = inputs[0, 0]
    floats = ctx.probe.ask(codec.encode_command("VMM?", (0, 0, nrows, ncols, 1), inputs_alone))
    _agree(single, codec.decode_block(floats.payload).astype(np.float64)[-1:], "VMM:CODE? of one row and column")


@check("compact")
def check_sparse_batches_refused_whole(ctx: Context) -> None:
    """A malformed PULS:SPAR (indices out of order, a bitmap that miscounts, a DAC width, a level beyond its
    limit, a block of the wrong length) is refused before anything runs (1.3)."""
    scales = _compact(ctx)
    row, col = ctx.options.cells[0] if ctx.options.cells else (0, 0)
    gate, width = _gate(ctx), codec.format_number(_width(ctx))
    region = f"{row},{col},1,{min(2, ctx.facts.cols - col)}"
    cells = 2 if ctx.facts.cols - col >= 2 else 1
    backwards = np.array([1, 0], "<u2").tobytes()
    over = round((ctx.limit("VGATE")[1] + 0.5) / scales.dac_step(cmd.Line.GATE))
    cases = [
        (codec.encode_command("PULS:SPAR", (f"SET,{region},IDX,2,0,{gate},{width}",), backwards), -222,
         "indices out of order"),
        (codec.encode_command("PULS:SPAR", (f"SET,{region},BITS,2,0,{gate},{width}",), b"\x01"), -222,
         "a bitmap selecting 1 cell where the count says 2"),
        (codec.encode_command("PULS:SPAR", (f"SET,{region},IDX,1,0,{gate},DAC",), np.array([0, 5], "<u2").tobytes()),
         -224, "a width as a DAC code"),
        (codec.encode_command("PULS:SPAR", (f"SET,{region},IDX,1,0,DAC,{width}",),
                              np.array([0, min(over, 65535)], "<u2").tobytes()), -222, "a gate code beyond VGATE"),
        (codec.encode_command("PULS:SPAR", (f"SET,{region},IDX,1,0,{gate},{width}",), b"\x00\x00\x00"), -160,
         "a block one byte too long"),
    ]  # fmt: skip
    if cells < 2:
        cases = cases[2:]
    mark, count = _set_mark(ctx), _pulse_count(ctx)
    for data, code, why in cases:
        ctx.probe.refused(data, code, why)
        _expect(_pulse_count(ctx) == count, f"{why}: refused, yet SYST:PCNT? counted pulses")
        _mark_unchanged(ctx, mark, f"a refused PULS:SPAR ({why})")


@check("compact")
def check_sparse_batch_pulses_the_named_cells(ctx: Context) -> None:
    """PULS:SPAR pulses exactly the cells it names, by index and by bitmap, with shared and DAC-coded
    values, and SYST:PCNT? counts them (1.3)."""
    scales = _compact(ctx)
    row, col = ctx.cell()
    ctx.spend_pulses(2)
    a, w = ctx.amplitude(), codec.format_number(_width(ctx))
    ncols = min(3, ctx.facts.cols - col)
    gate = compact.dac_codes(np.array([_gate(ctx)]), scales.dac_step(cmd.Line.GATE)).astype(compact.PULSE_CODE_DTYPE)
    count = _pulse_count(ctx)
    block = np.array([0], "<u2").tobytes() + gate.tobytes()
    reply = ctx.probe.value(codec.encode_command("PULS:SPAR", (f"SET,{row},{col},1,{ncols},IDX,1,{a},DAC,{w}",),
                                                  block))  # fmt: skip
    _expect(reply == ["1"], f"PULS:SPAR of one indexed cell answered {reply}, not 1")
    bits = compact.encode_selection(np.array([[True] + [False] * (ncols - 1)]), compact.Selection.BITS)
    reply = ctx.probe.value(codec.encode_command("PULS:SPAR", (f"SET,{row},{col},1,{ncols},BITS,1,{a},F32,{w}",),
                                                  bits + np.array([_gate(ctx)], "<f4").tobytes()))  # fmt: skip
    _expect(reply == ["1"], f"PULS:SPAR of one cell by bitmap answered {reply}, not 1")
    _expect(_pulse_count(ctx) == count + 2, f"SYST:PCNT? rose by {_pulse_count(ctx) - count}, not 2")
