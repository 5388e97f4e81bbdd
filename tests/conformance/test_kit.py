"""The conformance kit passes on the emulator over TCP and the pty (separate processes) and in
process, and fails, naming the check, on deliberately broken firmware."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest

from drivers import codec, compact
from drivers.codec import CommandParser, ErrorCode, ParseError
from drivers.conformance import CHECKS, ConformanceOptions, Report, run_checks, run_conformance
from hil import cli
from mock_hardware.emulator import build_firmware
from mock_hardware.firmware import CommandFailure, Firmware
from mock_hardware.sessions import SessionStore
from tests.conftest import EmulatorFactory
from tests.emulator_thread import serving_in_thread
from tests.firmware_transport import FirmwareTransport

CELLS = ConformanceOptions(cells=((3, 4), (5, 6)), max_amplitude=3.0, max_gate=1.5, max_pulses=20)
SMALL = {"rows": "16", "cols": "8"}


def assert_conforms(report: Report) -> None:
    assert report.passed, report.text()
    assert report.counts()["pass"] >= 30


# ----------------------------------------------------------------------------- it passes


def test_the_kit_passes_in_process_with_every_check_run() -> None:
    report = run_conformance("emulator://?seed=1", ConformanceOptions(**{**CELLS.__dict__, "stress": True}))
    assert_conforms(report)
    skipped = {r.name for r in report.results if r.status == "skip"}
    tcp_only = {"session-belongs-to-its-link", "second-client-refused-at-once", "client-reconnecting-at-once-is-served"}
    assert skipped == tcp_only


def test_the_kit_passes_over_tcp(emulator_process: EmulatorFactory) -> None:
    emulator = emulator_process("tcp", seed=1)
    report = run_conformance(emulator.resource, CELLS)
    assert_conforms(report)
    assert [r.name for r in report.results if r.status == "skip"] == ["error-240-column-current"]  # --stress only
    assert "Traceback" not in emulator.stderr()


def test_the_kit_passes_over_the_pty(emulator_process: EmulatorFactory) -> None:
    emulator = emulator_process("pty", seed=1)
    report = run_conformance(emulator.serial_resource, CELLS)
    assert_conforms(report)
    skipped = {r.name for r in report.results if r.status == "skip"}
    assert "malformed-block-header-drains" not in skipped and "framed-at-most-once" not in skipped


def test_the_kit_covers_every_command_and_error_code() -> None:
    """Every header of the table and every error code appears in what the kit sends or expects."""
    from drivers.conformance import checks

    with open(checks.__file__) as file:
        source = file.read()
    missing = [h for h in codec.ErrorCode if f"-{abs(int(h))}" not in source]
    assert not missing
    from drivers import commands as cmd

    assert [h for h in cmd.TABLE if h not in source and h.rstrip("?") not in source] == []
    assert len(CHECKS) >= 30


# ----------------------------------------------------------------------------- it is safe by default


class Recording(FirmwareTransport):
    def __init__(self, firmware: Firmware) -> None:
        super().__init__(firmware)
        self.sent: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.sent.append(data)
        super().write(data)


def firmware(kind: type[Firmware] = Firmware, **fields: str) -> Firmware:
    base = build_firmware("ideal", 1, {**SMALL, **fields})
    return kind(base.array, base.spec)


def test_by_default_the_kit_applies_no_pulse() -> None:
    board = firmware()
    g = board.array.conductance
    report = run_checks(Recording(board), ConformanceOptions(quiet_wait=0))
    assert report.passed, report.text()
    assert board.pulses_applied == 0
    np.testing.assert_array_equal(board.array.conductance, g)  # not one cell changed


def test_the_kit_pulses_only_the_named_cells_and_within_its_budget() -> None:
    board = firmware()
    g = board.array.conductance
    report = run_checks(Recording(board), ConformanceOptions(cells=((2, 3),), max_amplitude=2.5, max_pulses=14,
                                                             quiet_wait=0))  # fmt: skip
    assert report.passed, report.text()
    assert 0 < board.pulses_applied <= 14
    changed = np.argwhere(board.array.conductance != g)
    assert {tuple(int(i) for i in c) for c in changed} <= {(2, 3)}


def test_a_pulse_budget_too_small_skips_instead_of_overrunning() -> None:
    board = firmware()
    report = run_checks(Recording(board), ConformanceOptions(cells=((2, 3),), max_amplitude=2.5, max_pulses=2,
                                                             quiet_wait=0))  # fmt: skip
    assert board.pulses_applied <= 2
    assert any("--max-pulses" in r.message for r in report.results if r.status == "skip")


# ----------------------------------------------------------------------------- it fails on broken boards


class Clamps(Firmware):
    """Sets a level beyond its limit to the limit, instead of refusing it."""

    def _set_dac(self, command: codec.Command) -> bytes:
        from drivers.commands import LINE_LIMIT, Line

        line = Line(command.args[0].upper())
        low, high = getattr(self.spec.limits, LINE_LIMIT[line])
        value = min(max(float(command.args[2]), low), high)
        return super()._set_dac(codec.Command(command.header, (*command.args[:2], repr(value)), None))


class OldParser(CommandParser):
    """Resynchronises at the next line end after a malformed block header (protocol 1.1's emulator)."""

    def _bad_block(self, hash_at: int, message: str) -> ParseError:
        del self._buffer[: hash_at + 1]
        self._skipping = True
        return ParseError(ErrorCode.BLOCK_DATA, message)


class RunsRefusedPayload(Firmware):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.parser = OldParser()


class ForgetsSessions(Firmware):
    """Keeps one session: taking up another forgets the first."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.sessions = SessionStore(capacity=1)


class IdlesOnRefusal(Firmware):
    """Goes idle before checking a pulse's parameters: a refused pulse still changes the board."""

    def _check_pulse(self, *args: object, **kwargs: object) -> None:
        self._go_idle()
        super()._check_pulse(*args, **kwargs)  # type: ignore[arg-type]


class DescendingGainIndex(Firmware):
    """Numbers its ADC codes' gains from the highest down: every compact reading is off by decades."""

    def _adc_code_reply(self, current: np.ndarray) -> bytes:
        codes, index = self.spec.electronics.measure_autoranged_codes(current)
        payload = compact.encode_adc_codes(codes, len(self.spec.electronics.tia_gains) - 1 - index)
        return codec.block_header(len(payload)) + payload + codec.TERMINATOR


def _with_selection(command: codec.Command, change: Callable[[bytes], bytes]) -> codec.Command:
    """A PULS:SPAR with its selection bytes changed."""
    nrows, ncols, select, count = int(command.args[3]), int(command.args[4]), command.args[5], int(command.args[6])
    size = compact.selection_bytes(compact.Selection(select.upper()), nrows * ncols, count)
    block = command.block or b""
    return codec.Command(command.header, command.args, change(block[:size]) + block[size:])


class SortsIndices(Firmware):
    """Puts a sparse batch's indices in order instead of refusing them out of order."""

    def _pulse_sparse(self, command: codec.Command) -> bytes:
        if command.args[5].upper() == "IDX":
            command = _with_selection(command, lambda b: np.sort(np.frombuffer(b, "<u2")).astype("<u2").tobytes())
        return super()._pulse_sparse(command)


class BigEndianBits(Firmware):
    """Reads a sparse batch's bitmap most significant bit first."""

    def _pulse_sparse(self, command: codec.Command) -> bytes:
        if command.args[5].upper() == "BITS":
            flip = lambda b: np.packbits(np.unpackbits(np.frombuffer(b, np.uint8)), bitorder="little").tobytes()  # noqa: E731
            command = _with_selection(command, flip)
        return super()._pulse_sparse(command)


class NearGains(Firmware):
    """Takes a gain within 1 part in 10^6 of a listed one (what the emulator did before session 11)."""

    def _sample(self, command: codec.Command) -> bytes:
        gain = float(command.args[1])
        listed = min(self.spec.electronics.tia_gains, key=lambda g: abs(g - gain))
        if abs(gain - listed) <= 1e-6 * listed:
            command = codec.Command(command.header, (command.args[0], repr(listed)), None)
        return super()._sample(command)


class GainsAsText(Firmware):
    """Compares the gain's text with the listed text: 1.000000E+02 is not 100.0 there."""

    def _sample(self, command: codec.Command) -> bytes:
        if command.args[1].strip() not in {codec.format_number(g) for g in self.spec.electronics.tia_gains}:
            raise CommandFailure(ErrorCode.ILLEGAL_VALUE, f"gain {command.args[1]} is not listed")
        return super()._sample(command)


class CrLfReplies(Firmware):
    """Ends its reply lines in CR LF, as a C library's line end might (the host reads them; the contract says LF)."""

    def feed(self, data: bytes) -> bytes:
        replies = super().feed(data)
        return replies if replies.startswith(b"#") else replies.replace(b"\n", b"\r\n")


class UpperCaseChecksums(Firmware):
    """Writes its framed replies' checksums in upper-case hex (printf %08X)."""

    def feed(self, data: bytes) -> bytes:
        replies = super().feed(data)
        if not replies.startswith(b"!"):
            return replies
        head, _, rest = replies.partition(b"\n")
        return head.upper() + b"\n" + rest


BROKEN = {
    "clamps": (Clamps, "levels-refused-not-clamped"),
    "runs-refused-payload": (RunsRefusedPayload, "malformed-block-header-drains"),
    "forgets-sessions": (ForgetsSessions, "sessions-kept"),
    "idles-on-refusal": (IdlesOnRefusal, "pulses-refused-before-any-effect"),
    "descending-gain-index": (DescendingGainIndex, "codes-read-what-floats-read"),
    "sorts-indices": (SortsIndices, "sparse-batches-refused-whole"),
    "big-endian-bits": (BigEndianBits, "sparse-batch-pulses-the-named-cells"),
    "near-gains": (NearGains, "error-224-illegal-value"),
    "gains-as-text": (GainsAsText, "error-224-illegal-value"),
    "crlf-replies": (CrLfReplies, "replies-follow-the-grammar"),
    "upper-case-checksums": (UpperCaseChecksums, "framed-basics"),
}


@pytest.mark.parametrize(("kind", "check"), BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_board_fails_the_kit_naming_the_check(kind: type[Firmware], check: str) -> None:
    options = ConformanceOptions(cells=((3, 4),), max_amplitude=2.5, quiet_wait=0)  # the pulse checks run too
    report = run_checks(FirmwareTransport(firmware(kind)), options)
    assert not report.passed
    failed = {r.name: r for r in report.failed()}
    assert check in failed, report.text()
    assert failed[check].exchanges and all("sent" in e and "received" in e for e in failed[check].exchanges)
    assert "FAIL  " in report.text() and check in report.text() and "sent:" in report.text()
    if kind is CrLfReplies:  # named as what it is, not as a malformed reply
        assert "ends in CR LF" in failed[check].message, failed[check].message
    if kind is UpperCaseChecksums:
        assert "checksum is upper-case hex" in failed[check].message, failed[check].message


def test_hil_conformance_reports_a_broken_board_over_tcp_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    with serving_in_thread(firmware(Clamps)) as (_, resource):
        code = cli.main(["conformance", resource, "--json", "--only", "refusals", "description"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["passed"] is False
    failed = [c for c in out["checks"] if c["status"] == "fail"]
    assert [c["name"] for c in failed] == ["levels-refused-not-clamped"]
    assert "clamp" in failed[0]["message"] and failed[0]["exchanges"]


def test_hil_conformance_prints_one_line_per_check_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["conformance", "emulator://?preset=ideal&rows=16&cols=8", "--only", "errors", "grammar"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    ran = [line for line in out if line.startswith(("PASS", "FAIL", "SKIP"))]
    assert len(ran) == sum(1 for c in CHECKS.values() if c.group in ("errors", "grammar"))
    assert out[-1].startswith("CONFORMS")


def test_hil_conformance_refuses_a_cell_outside_the_array(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["conformance", "emulator://?preset=ideal&rows=16&cols=8", "--cells", "99,0",
                     "--max-amplitude", "1"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "99" in err and "outside" in err and "Traceback" not in err


def test_an_unknown_check_name_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["conformance", "emulator://?preset=ideal&rows=16&cols=8", "--only", "no-such"]) == 2
    assert "unknown check" in capsys.readouterr().err


def test_a_1_2_board_skips_the_compact_checks_and_a_1_3_board_runs_them() -> None:
    from tests.drivers.test_versions import Board12

    older = run_checks(FirmwareTransport(firmware(Board12)), CELLS, only=("compact",))
    assert {r.status for r in older.results} == {"skip"} and len(older.results) == 3
    assert all("1.3" in r.message for r in older.results), older.text()
    newer = run_checks(FirmwareTransport(firmware()), CELLS, only=("compact",))
    assert [r.status for r in newer.results] == ["pass"] * 3, newer.text()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_amplitude": float("nan")}, "max_amplitude (--max-amplitude) = nan V: must be a finite number >= 0"),
        ({"max_amplitude": -3.0}, "max_amplitude (--max-amplitude) = -3 V"),
        ({"max_gate": float("inf")}, "max_gate (--max-gate) = inf V"),
        ({"max_pulses": -5}, "max_pulses (--max-pulses) = -5"),
        ({"quiet_wait": -1.0}, "quiet_wait = -1 s"),
        ({"cells": ((-1, 0),)}, "cells: (-1, 0) has a negative index"),
    ],
)
def test_options_outside_their_range_are_refused_before_the_board_is_opened(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match="nothing was sent") as refused:
        ConformanceOptions(**fields)  # type: ignore[arg-type]
    assert message in str(refused.value)


def test_a_nan_amplitude_is_one_line_and_never_reaches_the_wire(capsys: pytest.CaptureFixture[str]) -> None:
    # Was: 'PULS:SPAR SET,...,nan,...' sent, the board's -224 reported as the board not conforming.
    argv = ["conformance", "emulator://?preset=ideal&rows=16&cols=8", "--cells", "0,0", "--max-amplitude", "nan"]
    assert cli.main(argv) == cli.EXIT_ERROR
    out, err = capsys.readouterr()
    assert out == ""
    expected = "error: max_amplitude (--max-amplitude) = nan V: must be a finite number >= 0; nothing was sent"
    assert err.strip() == expected
    with pytest.raises(SystemExit):
        cli.main(["conformance", "emulator://?preset=ideal&rows=16&cols=8", "--timeout", "nan"])
    assert "--timeout: nan s is outside (0, 3600] s" in capsys.readouterr().err
