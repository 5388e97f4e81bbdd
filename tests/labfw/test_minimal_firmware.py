"""A lab's own firmware, written from the documents only, passes the conformance kit; the
documents' example exchanges are what drivers/codec reads and writes."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from drivers import codec
from drivers.conformance import CHECKS, ConformanceOptions, Report, run_conformance
from drivers.conformance import checks as _registered  # noqa: F401  (fills CHECKS)

ROOT = Path(__file__).resolve().parents[2]
CELLS = ConformanceOptions(cells=((0, 0), (0, 1)), max_amplitude=1.5, max_gate=1.0, max_pulses=20)
# The checks that wait for the board to count the link quiet (1 s and more each): the slow test runs them.
QUIET_WAITS = {"error-223-oversized-block", "incomplete-command-times-out"}


@contextmanager
def firmware(*args: str) -> Iterator[str]:
    """The lab firmware as a separate process; yields the resource it prints."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.labfw.minimal_firmware", *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=env, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        ready = process.stdout.readline().split()
        assert ready[:1] == ["READY"], (
            f"no READY line: {ready}; stderr: {process.stderr.read() if process.stderr else ''}"
        )
        yield ready[1]
    finally:
        process.kill()  # this process only, by its handle
        _out, err = process.communicate(timeout=10)
        assert "Traceback" not in err, err


def fast_checks() -> tuple[str, ...]:
    assert CHECKS
    return tuple(c.name for c in CHECKS.values() if c.group != "blocks" and c.name not in QUIET_WAITS)


def assert_passes(report: Report) -> None:
    assert report.passed, report.text()


def test_the_kit_passes_on_the_lab_firmware_over_tcp() -> None:
    with firmware("--tcp", "127.0.0.1:0") as resource:
        report = run_conformance(resource, ConformanceOptions(**{**CELLS.__dict__, "stress": True}), fast_checks())
    assert_passes(report)
    assert report.protocol == "1.3"
    assert report.counts()["skip"] == 0, report.text()  # framed, compact, pulses, stress, second client: all ran


@pytest.mark.parametrize(
    "variant",
    [("--numbers", "printf-e"), ("--numbers", "printf-g"), ("--chunk", "5")],
    ids=["printf-e", "printf-g", "5-byte-pieces"],
)
def test_a_firmware_legal_by_the_spec_but_unlike_ours_conforms_and_drives(variant: tuple[str, ...]) -> None:
    """Reply numbers in any form of the `number` rule ('+1.0000000000000001E-05', '3'), replies written
    in 5-byte pieces: the kit passes them and the host reads them as the shortest form."""
    groups = {"description", "errors", "grammar", "framed", "compact", "pulses", "primitives", "refusals"}
    with firmware("--tcp", "127.0.0.1:0", *variant) as resource:
        report = run_conformance(resource, CELLS, tuple(c for c in fast_checks() if CHECKS[c].group in groups))
        assert_passes(report)
        from drivers.resources import open_board

        board = open_board(resource)
        try:
            board.set_dac("GATE", 3, 1.2)
            assert board.dac_voltage("GATE", 3) == pytest.approx(1.2, abs=2e-4)
            assert board.limits.pulse_width.min == 1e-8 and board.limits.v_gate.max == 5.5
            g = board.read_map(v_read=0.2)
            assert g.shape == (128, 64) and np.allclose(g[1:], 100e-6, rtol=1e-3)  # row 0: the kit pulsed it
            assert board.read_cell(5, 5, v_read=0.2) == pytest.approx(100e-6, rel=1e-3)
        finally:
            board.close()


@pytest.mark.parametrize(
    ("variant", "named", "received"),
    [
        (
            ("--numbers", "padded"),
            "SYST:LIM? VROW field ' 4.00000e+00' is not a number",
            "b'-4.00000e+00, 4.00000e+00\\n'",
        ),
        (("--crlf",), "the reply to SYST:ARR? ends in CR LF", "b'128,64\\r\\n'"),
    ],
    ids=["printf-padding", "crlf"],
)
def test_a_firmware_whose_replies_break_the_grammar_fails_the_kit_naming_the_reply(
    variant: tuple[str, ...], named: str, received: str
) -> None:
    """Shown to fail: printf's padding (' 4.00000e+00' is not a `number`), and replies ending in CR LF
    (a reply line ends in LF alone); the kit names the command and the bytes. The host reads both."""
    with firmware("--tcp", "127.0.0.1:0", *variant) as resource:
        report = run_conformance(resource, CELLS, ("replies-follow-the-grammar",))
        from drivers.resources import open_board

        with open_board(resource) as board:
            assert board.shape == (128, 64) and board.limits.v_row.max == 4.0
    (result,) = report.results
    assert result.status == "fail", report.text()
    assert named in result.message, result.message
    assert f"received: {received}" in report.text(), report.text()


def test_a_1_2_board_without_framed_mode_conforms() -> None:
    """A board that stopped before the guide's steps 8 and 10 conforms: the kit asks it only for its commands."""
    with firmware("--tcp", "127.0.0.1:0", "--protocol", "1.2", "--plain") as resource:
        groups = {"errors", "framed", "compact", "description"}
        report = run_conformance(resource, CELLS, tuple(c for c in fast_checks() if CHECKS[c].group in groups))
    assert_passes(report)
    skipped = {r.name: r.message for r in report.results if r.status == "skip"}
    assert "framed-basics" in skipped and "codes-read-what-floats-read" in skipped
    assert next(r for r in report.results if r.name == "error-108-109-parameter-count").status == "pass"


@pytest.mark.parametrize("fault", [(), ("--drop-link",)], ids=["reply-lost", "connection-closed"])
def test_a_pulse_whose_reply_is_lost_is_applied_once(fault: tuple[str, ...]) -> None:
    """The driver's framed recovery against a board it was not written with (after a reconnect when the
    board closed the connection): SYST:DONE?, then the kept reply, never the pulse again."""
    from drivers.resources import open_board

    with firmware("--tcp", "127.0.0.1:0", "--lose-reply", "3", *fault) as resource:
        board = open_board(resource, timeout=0.5)
        try:
            before = board.pulse_count()
            for _ in range(5):
                board.set_pulse(0, 0, 1.5, 1.0, 1e-6)
            assert board.pulse_count() - before == 5
        finally:
            board.close()


@pytest.mark.slow
@pytest.mark.parametrize("link", ["tcp", "pty"])
def test_the_whole_kit_passes_on_the_lab_firmware(link: str) -> None:
    args = ("--tcp", "127.0.0.1:0") if link == "tcp" else ("--pty",)
    with firmware(*args) as resource:
        report = run_conformance(resource, CELLS)
    assert_passes(report)
    assert report.counts()["pass"] >= (38 if link == "tcp" else 32), report.text()


# ---------------------------------------------------------------------------- the documents' transcripts

TRANSCRIPT = re.compile(r"^([<>]) (.*?)(?:\s{2,}\(.*\))?$")
PLACEHOLDER = re.compile(r"#(\d)(\d+)<(\d+) bytes[^>]*>")


def transcripts(page: str) -> list[list[tuple[str, bytes]]]:
    """Each code block's ``> sent`` / ``< received`` lines, escapes (``\\n``) decoded."""
    found: list[list[tuple[str, bytes]]] = []
    inside = False
    for raw in (ROOT / "docs" / page).read_text().splitlines():
        if raw.startswith("```"):
            inside = not inside
            found.append([])
            continue
        match = TRANSCRIPT.match(raw) if inside else None
        if match:
            found[-1].append((match[1], match[2].replace("\\n", "\n").encode("ascii")))
    return [block for block in found if block]


def transcript_lines(page: str) -> list[tuple[str, bytes]]:
    return [line for block in transcripts(page) for line in block]


def payload_for(line: bytes) -> bytes:
    """A ``#216<16 bytes: ...>`` placeholder made into that many bytes (zeros)."""
    match = PLACEHOLDER.search(line.decode("ascii"))
    if match is None:
        return line
    assert len(match[2]) == int(match[1]) and int(match[2]) == int(match[3]), match[0]
    return line[: match.start()] + f"#{match[1]}{match[2]}".encode() + bytes(int(match[3])) + line[match.end() :]


def test_the_wire_protocol_transcripts_parse_with_the_codec() -> None:
    lines = transcript_lines("wire-protocol.md")
    sent = [data for way, data in lines if way == ">"]
    received = [data for way, data in lines if way == "<"]
    assert len(sent) >= 10 and len(received) >= 10  # the plain session and the framed recovery
    for data in sent:
        items = codec.CommandParser().feed(data if data.endswith(b"\n") else data + b"\n")
        assert len(items) == 1, (data, items)
        item = items[0]
        if isinstance(item, codec.Framed):
            assert item.intact, (data, item)  # the checksum printed in the page holds
            item = item.item
        assert isinstance(item, codec.Command), (data, item)
    for data in received:
        data = payload_for(data)
        if data.startswith(b"!"):
            head, _, body = data.partition(b"\n")
            header = codec.parse_frame_header(head + b"\n")
            assert header.checks(body), data
            data = body
        reply = codec.parse_reply(data if data.endswith(b"\n") else data + b"\n")
        assert reply.kind in {"value", "ok", "error", "block"}, data


def test_the_lab_firmware_answers_the_plain_session_in_kind() -> None:
    """The plain session of the wire protocol page, sent to the lab firmware: the same kinds of reply."""
    session = next(b for b in transcripts("wire-protocol.md") if (">", b"*IDN?") in b)
    sent = [d for w, d in session if w == ">"]
    expected = [payload_for(d) for w, d in session if w == "<"]

    with firmware("--tcp", "127.0.0.1:0") as resource:
        _, host, port, _ = resource.split("::")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            stream = sock.makefile("rb")
            for command, want in zip(sent, expected, strict=True):
                sock.sendall(command + b"\n")
                got = codec.read_reply(stream.read, stream.readline)
                wanted = codec.parse_reply(want if want.endswith(b"\n") else want + b"\n")
                assert (got.kind, got.code) == (wanted.kind, wanted.code), (command, got, wanted)


def test_every_check_the_firmware_guide_names_is_one_the_kit_runs() -> None:
    """The guide names checks as the report prints them (``errors/error-113-*``); ``--only`` takes them."""
    guide = (ROOT / "docs" / "firmware-guide.md").read_text()
    named = set(re.findall(r"`((?:[a-z]+/)?(?:error-[0-9a-z*-]+|[a-z]+-[a-z0-9*-]+|\*))`", guide))
    named = {n for n in named if "/" in n or n.startswith("error-")}
    assert len(named) >= 15, named
    for pattern in named:
        assert any(c.matches(pattern) for c in CHECKS.values()), f"the guide names {pattern!r}; no check matches"


# ---------------------------------------------------------------------------- the platform on the lab's board


def hil(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "hil.cli", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=120)  # fmt: skip


@pytest.mark.slow
def test_train_and_characterize_run_on_the_lab_firmware(tmp_path: Path) -> None:
    """A short training (its gate calibration needs cells whose SET level follows the gate) and a procedure."""
    config = tmp_path / "train.toml"
    config.write_text("v_input = 0.05\n")  # 128 rows x 0.05 V x 1.2 mS stays within the board's 10 mA ICOL
    with firmware("--tcp", "127.0.0.1:0", "--gate-coded") as resource:
        train = hil("train", "--model", "mlp", "--config", str(config), "--updates", "3", "--batch-size", "10",
                    "--eval-every", "3", "--board", resource, "--out", str(tmp_path / "mlp.h5"),
                    cwd=tmp_path)  # fmt: skip
        procedure = hil("characterize", "pulse-response", resource, "--nrows", "2", "--ncols", "2", "--n-pulses", "3",
                        "--out", str(tmp_path / "pulses.h5"), cwd=tmp_path)  # fmt: skip
    assert train.returncode == 0, train.stderr[-2000:]
    assert "after 3 updates" in train.stdout, train.stdout[-2000:]
    assert procedure.returncode == 0 and "status completed" in procedure.stderr, procedure.stderr[-2000:]


@pytest.mark.slow
def test_a_board_with_only_the_guides_training_set_trains_as_the_whole_firmware(tmp_path: Path) -> None:
    """docs/firmware-guide.md: training needs the description, *RST, MAP?, VMM? and PULS:BATC only.
    A board with nothing else (every primitive, READ?, single pulses, SWEEP? and SYST:WAIT answer
    -113; 1.2, plain) trains, and to the same journal as the whole firmware."""
    import h5py

    config = tmp_path / "train.toml"
    config.write_text("v_input = 0.05\n")
    journals = {}
    for name, extra in (("whole", ()), ("training-only", ("--training-only",))):
        with firmware("--tcp", "127.0.0.1:0", "--gate-coded", "--protocol", "1.2", "--plain", *extra) as resource:
            out = tmp_path / f"{name}.h5"
            train = hil("train", "--model", "mlp", "--config", str(config), "--updates", "3", "--batch-size", "10",
                        "--eval-every", "3", "--board", resource, "--out", str(out), cwd=tmp_path)  # fmt: skip
        assert train.returncode == 0, train.stderr[-2000:]
        with h5py.File(out) as f:
            journals[name] = f["data/train/journal"][:, :-1]  # the last column is seconds
    assert np.array_equal(journals["whole"], journals["training-only"])


@pytest.mark.slow
def test_training_on_cells_that_ignore_the_gate_stops_in_one_line(tmp_path: Path) -> None:
    """Fixed-step cells fail the gate calibration: one clear line (the firmware guide says what to set)."""
    config = tmp_path / "train.toml"
    config.write_text("v_input = 0.05\n")
    with firmware("--tcp", "127.0.0.1:0") as resource:
        train = hil("train", "--model", "mlp", "--config", str(config), "--updates", "3", "--board", resource,
                    "--out", str(tmp_path / "mlp.h5"), cwd=tmp_path)  # fmt: skip
    assert train.returncode != 0
    assert train.stderr.strip().splitlines()[-1] == (
        "error: the calibration has no responsive cell: no cell's conductance followed the gate"
    ), train.stderr[-2000:]
