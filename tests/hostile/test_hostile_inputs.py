"""A careless or hurried technician: hundreds of hostile inputs, each refused in one line.

Every case runs ``hil`` in process against one emulator *process* over TCP, and must: exit with
status 2, print one error line (argparse: its usage line and one error line) and no traceback,
finish within a bounded time, leave no run file behind, and apply no pulse: the emulator's own
pulse counter (``SYST:PCNT?``) is read before and after each case. A handful run as real
subprocesses through the installed entry point, to show no traceback there either.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from drivers.lock import LOCK_DIR_ENV
from hil.cli import EXIT_ERROR, main
from tests.conftest import REPO_ROOT, EmulatorLauncher, EmulatorProcess

CASE_DEADLINE = 60  # s: a safety net against a hang, not a timing assertion
TCP = "{tcp}"  # replaced by the emulator's resource
TINY = """dataset = "digits"
network = { input_shape = [8, 8], n_classes = 10, layers = [{type = "maxpool", size = 2}, {type = "flatten"},
            {type = "dense", out = 10}] }
"""


class Hang(BaseException):
    """A case ran past its deadline (BaseException: nothing under test may swallow it)."""


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    launcher = EmulatorLauncher(tmp_path_factory.mktemp("hostile-emulator"))
    yield launcher(seed=1, preset="umass-ta-hfo2", extra=("--rows", "32", "--cols", "16"))
    launcher.stop_all()


@pytest.fixture(scope="module")
def refused_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(autouse=True)
def private_locks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path / "locks"))


def pulse_count(emulator: EmulatorProcess) -> int:
    """The emulator's own count of pulses applied since it started, asked over a plain TCP line."""
    with socket.create_connection(emulator.tcp_address, timeout=10) as link:
        link.sendall(b"SYST:PCNT?\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = link.recv(64)
            assert chunk, "the emulator closed the link"
            reply += chunk
    return int(reply)


def _deadline(signum: int, frame: FrameType | None) -> None:
    raise Hang(f"no answer within {CASE_DEADLINE} s")


def write_inputs(directory: Path) -> dict[str, str]:
    """Hostile files the cases name by ``{key}``."""
    files = {
        "deep_json": "[" * 100_000 + "]" * 100_000,
        "deep_toml": "a = " + "[" * 5000 + "]" * 5000 + "\n",
        "deep_json_board": '{"limits": ' * 5000 + "{}" + "}" * 5000,
        "big": "# padding\n" * 200_000,
        "list_top": "[1, 2, 3]",
        "huge_int": "timeout = " + "9" * 5000 + "\n",
        "not_toml": "this is = = not toml\n",
        "h5_text": "not an HDF5 file\n",
    }
    paths = {}
    for key, text in files.items():
        suffix = ".json" if key.endswith(("json", "json_board", "list_top")) else ".toml"
        path = directory / f"{key}{suffix}"
        path.write_text(text)
        paths[key] = str(path)
    bad_utf8 = directory / "bad_utf8.toml"
    bad_utf8.write_bytes(b'resource = "\xff\xfe"\n')
    paths["bad_utf8"] = str(bad_utf8)
    return paths


# --------------------------------------------------------------------------- the cases

BAD_RESOURCES = [
    "TCPIP::127.0.0.1::notaport::SOCKET", "TCPIP::127.0.0.1::99999::SOCKET", "TCPIP::127.0.0.1::0::SOCKET",
    "TCPIP::127.0.0.1::-1::SOCKET", "TCPIP::127.0.0.1::65536::SOCKET", "TCPIP::127.0.0.1::::SOCKET",
    "TCPIP::no.such.host.invalid::5025::SOCKET", "TCPIP::::5025::SOCKET", "TCPIP::", "TCPIP0::", "TCPIP",
    "TCPIP::127.0.0.1::5025", "TCPIP::127.0.0.1::5025::SOCKET::EXTRA", "GPIB0::1::INSTR", "GPIB::1::INSTR",
    "USB0::0x1234::0x5678::SN::INSTR", "VXI0::1::INSTR", "PXI0::1::INSTR", "nonsense", " ", "::::",
    "TCPIP::127.0.0.1::{refused}::SOCKET", "TCPIP0::localhost::{refused}::SOCKET", "TCPIP::127.1::{refused}::SOCKET",
    "serial:///dev/does-not-exist-hil", "serial://", "serial:///dev/null?baudrate=fast",
    "serial:///dev/null?parity=none", "ASRL/dev/does-not-exist-hil::INSTR", "x" * 5000,
    "emulator://?preset=ideal&write_noise=inf", "emulator://?preset=ideal&write_noise=nan",
    "emulator://?preset=ideal&write_noise=-1", "emulator://?preset=ideal&line_resistance=1e300",
    "emulator://?seed=1&seed=2", "emulator://?preset=ideal&rows=4&rows=8", "emulator://?rows=0",
    "emulator://?rows=100000", "emulator://?preset=nope", "emulator://?colour=red", "emulator://?read_noise=1e9",
    "emulator://?g_min=1e-3&g_max=1e-4", "emulator://?seed=-1", "emulator://?seed=99999999999999999999999",
    "emulator://?seed=abc", "emulator://?drift_time_constant=0", "emulator://?g_max=1e300",
    "nosuchscheme://board",
]  # fmt: skip

BOARD_CONFIGS = [
    "timeout = nan\n", "timeout = inf\n", "timeout = -1\n", "timeout = 1e9\n", 'framing = "yes"\n', "framing = 1\n",
    'framing = "true"\n', "[limits]\nv_row = { min = nan, max = 3.0 }\n", 'resource = ["a", "b"]\n',
    'resource = ""\n', "colour = 1\n", 'resource = "GPIB0::1::INSTR"\n',
]  # fmt: skip

TRAIN_CONFIGS = [
    ("updates = 1e21\n", "updates"), ("updates = 0\n", "updates"), ("updates = 99999999999999999999\n", "updates"),
    ("updates = -5\n", "updates"), ('updates = "many"\n', "updates"), ("eval_every = 0\n", "eval_every"),
    ("eval_every = 1e30\n", "eval_every"), ("batch_size = 0\n", "batch_size"), ("batch_size = 1e12\n", "batch_size"),
    ("init_scale = 1e30\n", "init_scale"), ("init_scale = 0\n", "init_scale"), ("init_scale = nan\n", "init_scale"),
    ("g_unit = 1e300\n", "g_unit"), ("g_unit = -1e-6\n", "g_unit"), ("g_unit = inf\n", "g_unit"),
    ("v_input = 1e6\n", "v_input"), ("v_input = 0.6\n", "v_input"), ("v_input = nan\n", "v_input"),
    ("v_input = -0.2\n", "v_input"), ("seed = -1\n", "seed"), ("seed = 1e30\n", "seed"),
    ('calibrate = "yes"\n', "calibrate"), ("calibrate = 1\n", "calibrate"), ('prune_defective = "no"\n', "prune"),
    ("[optimizer]\nname = \"sgd\"\nlr = 1e300\n", "optimizer.lr"), ("[optimizer]\nname = \"sgd\"\nlr = 0\n", "lr"),
    ("[optimizer]\nname = \"lion\"\n", "optimizer.name"), ("[optimizer]\nname = \"adam\"\neps = 1e9\n", "eps"),
    ("[bad_lines.board0]\nrows = [100000]\ncols = [-3]\n", "bad_lines.board0"),
    ("[bad_lines.board0]\nrows = [32]\n", "bad_lines.board0.rows[0]"),
    ("[bad_lines.board0]\ncols = [16]\n", "bad_lines.board0.cols[0]"),
    ("[bad_lines.board9]\nrows = [1]\n", "board9"), ("[bad_lines.board0]\nrows = [1.5]\n", "bad_lines.board0.rows"),
    ("[gate_coded]\nv_set = 50\n", "gate_coded.v_set"), ("[gate_coded]\nv_gate_max = 100\n", "gate_coded"),
    ("[gate_coded]\nwidth = 10\n", "gate_coded"), ("[gate_coded]\nv_reset = 40\n", "gate_coded.v_reset"),
    ("[gate_coded]\nv_gate_min = 2.0\nv_gate_max = 1.0\n", "v_gate_min"), ("[gate_coded]\nwidth = nan\n", "width"),
    ("[gate_coded]\nv_gate_reset = 1e300\n", "v_gate_reset"), ("[gate_coded]\ndvg_min = -1\n", "dvg_min"),
    ("[write_verify]\nmax_iterations = 1e9\n", "max_iterations"), ("[hybrid]\npretrain_epochs = 1e9\n", "hybrid"),
    ("[hybrid]\npretrain_lr = 1e300\n", "hybrid.pretrain_lr"), ("calibration_gates = 1\n", "calibration_gates"),
    ("calibration_gates = 100000000\n", "calibration_gates"), ("initial_tolerance = 1e300\n", "initial_tolerance"),
    ('model = "resnet"\n', "model"), ("colour = 1\n", "colour"), ('dataset = "' + "d" * 500 + '"\n', "dataset"),
    ('layout = "spiral"\n', "layout"), ('update = "magic"\n', "update"),
    ('[boards.board0]\nresource = "{tcp}"\nframing = "yes"\n', "framing"),
    ('[boards.board0]\nresource = "{tcp}"\ntimeout = nan\n', "timeout"),
    ('[boards]\nboard0 = "TCPIP::127.0.0.1::notaport::SOCKET"\n', "notaport"),
    ('[boards]\nboard0 = "emulator://?seed=1&seed=2"\n', "more than once"),
    ('[boards]\nboard0 = "emulator://?write_noise=inf"\n', "write_noise"),
    ('[boards]\nboard0 = "GPIB0::1::INSTR"\n', "GPIB0"),
]  # fmt: skip

TRAIN_FLAGS = [
    (["--updates", "0"], "updates"), (["--updates", "99999999999999999999"], "updates"),
    (["--updates", "1e21"], "invalid int"), (["--lr", "1e300"], "lr"), (["--lr", "nan"], "lr"), (["--lr", "inf"], "lr"),
    (["--lr", "-1"], "lr"), (["--batch-size", "0"], "batch_size"), (["--batch-size", "-3"], "batch_size"),
    (["--eval-every", "0"], "eval_every"), (["--seed", "-1"], "seed"), (["--seed", "1" + "0" * 40], "seed"),
    (["--model", "resnet"], "invalid choice"), (["--optimizer", "lion"], "invalid choice"),
    (["--update", "magic"], "invalid choice"), (["--dataset", "nope"], "unknown dataset"),
    (["--mnist-dir", "/nonexistent-hil"], "does not exist"), (["--config", "/dev/zero"], "larger than"),
    (["--config", "/nonexistent-hil.toml"], "cannot read"), (["--config", "{deep_json}"], "nests too deeply"),
    (["--config", "{deep_toml}"], "nests too deeply"), (["--config", "{big}"], "larger than"),
    (["--config", "{list_top}"], "table of fields"), (["--config", "{bad_utf8}"], "not UTF-8"),
    (["--config", "{not_toml}"], "not valid TOML"), (["--resume", "/nonexistent-hil.h5"], "no such file"),
    (["--resume", "{h5_text}"], "not a readable HDF5"), (["--board", "TCPIP::127.0.0.1::{refused}::SOCKET"], "refused"),
    (["--board", "TCPIP::no.such.host.invalid::5025::SOCKET"], "no such host"),
]  # fmt: skip

PROCEDURES = ["yield-map", "iv-sweep", "gate-calibration", "pulse-response", "endurance", "retention", "read-disturb"]
EVERY_PROCEDURE = [
    (["--v-read", "nan"], "v_read"), (["--v-read", "inf"], "v_read"), (["--v-read", "1e6"], "v_read"),
    (["--row0", "-1"], "row0"), (["--row0", "99999999999999999999999"], "row0"), (["--row0", "32"], "row0"),
    (["--ncols", "1000000"], "ncols"), (["--cells", "[[99999999999999999999999, 0]]"], "cells"),
    (["--cells", "[" * 50_000 + "]" * 50_000], "nests too deeply"), (["--cells", "[[-1, 0]]"], "cells"),
]  # fmt: skip
PROCEDURE_CASES = [
    ("retention", ["--points-per-decade", "1000000000"], "points_per_decade"),
    ("retention", ["--t-last", "1e8"], "t_last"), ("retention", ["--t-first", "0"], "t_first"),
    ("retention", ["--t-first", "1e-300"], "t_first"), ("retention", ["--reads-per-point", "1e9"], "invalid int"),
    ("retention", ["--reads-per-point", "1000000000"], "reads_per_point"),
    ("retention", ["--program", "set", "--set-amplitude", "50"], "amplitude"),
    ("retention", ["--t-first", "10", "--t-last", "1"], "t_last"),
    ("endurance", ["--max-cycles", "1e20"], "invalid int"),
    ("endurance", ["--max-cycles", "100000000000000000000"], "max_cycles"),
    ("endurance", ["--read-every", "0"], "read_every"), ("endurance", ["--set-amplitude", "50"], "amplitude"),
    ("endurance", ["--width", "10"], "width"), ("endurance", ["--reset-gate", "1e300"], "v_gate"),
    ("iv-sweep", ["--cells", "[[1]]"], "cells"), ("iv-sweep", ["--cells", "[[32, 0]]"], "cells[0] row"),
    ("iv-sweep", ["--cells", "[]"], "cells"), ("iv-sweep", ["--cells", json.dumps([[0, 0]] * 70_000)], "cells"),
    ("iv-sweep", ["--v-step", "1e-300"], "v_step"), ("iv-sweep", ["--cycles", "1000000000"], "cycles"),
    ("iv-sweep", ["--v-set-max", "50"], "v"), ("iv-sweep", ["--v-set-max", "1e300"], "points"),
    ("iv-sweep", ["--v-step", "1e-4", "--cycles", "10000"], "samples"), ("iv-sweep", ["--cells", '{"a": 1}'], "cells"),
    ("yield-map", ["--destructive", "--set-amplitude", "50"], "amplitude"),
    ("yield-map", ["--nrows", "33"], "nrows"), ("yield-map", ["--width", "-1"], "width"),
    ("pulse-response", ["--n-pulses", "1000000000000"], "n_pulses"),
    ("pulse-response", ["--width", "10"], "width"), ("pulse-response", ["--set-gate", "nan"], "set_gate"),
    ("read-disturb", ["--n-reads", "0"], "n_reads"), ("read-disturb", ["--record-every", "1e30"], "invalid int"),
    ("read-disturb", ["--v-read", "0.9"], "v_read"),
    ("gate-calibration", ["--n-gates", "1000000"], "n_gates"), ("gate-calibration", ["--v-gate-max", "100"], "v_gate"),
    ("gate-calibration", ["--amplitude", "1e300"], "amplitude"),
]  # fmt: skip

CASES: list[object] = []
for i, resource in enumerate(BAD_RESOURCES):
    for command in ("info", "map"):
        CASES.append(pytest.param([command, resource], "", id=f"resource-{command}-{i}"))
for i, text in enumerate(BOARD_CONFIGS):
    expected = "GPIB0" if "GPIB" in text else "board config"
    CASES.append(pytest.param(["info", "--config", f"{{file:board{i}.toml={text}}}"], expected, id=f"board-{i}"))
for key in ("deep_json_board", "big", "huge_int", "bad_utf8", "list_top", "not_toml"):
    CASES.append(pytest.param(["info", "--config", f"{{{key}}}"], "board config", id=f"board-file-{key}"))
CASES.append(pytest.param(["info", "--config", "/dev/zero"], "larger than", id="board-dev-zero"))
for i, (text, field) in enumerate(TRAIN_CONFIGS):
    base = TINY if text.split(" ")[0] not in ("dataset", "model") else ""  # a key twice is a TOML error
    board = [] if text.startswith("[boards") else ["--board", TCP]  # --board would replace the file's boards
    argv = ["train", *board, "--config", f"{{file:train{i}.toml={base}{text}}}", "--out", "{out}"]
    CASES.append(pytest.param(argv, field, id=f"train-config-{i}"))
for i, (flags, message) in enumerate(TRAIN_FLAGS):
    argv = ["train", "--board", TCP, "--config", f"{{file:tiny.toml={TINY}}}", "--out", "{out}", *flags]
    CASES.append(pytest.param(argv, message, id=f"train-flag-{i}"))
for name in PROCEDURES:
    for i, (flags, message) in enumerate(EVERY_PROCEDURE):
        if name == "iv-sweep" and flags[0] in ("--row0", "--ncols", "--v-read"):
            continue  # iv-sweep takes cells, not a region
        if name in ("yield-map", "gate-calibration") and flags[0] == "--cells":
            continue  # these take a region, not cells
        CASES.append(pytest.param(["characterize", name, TCP, "--out", "{out}", *flags], message, id=f"{name}-{i}"))
for i, (name, flags, message) in enumerate(PROCEDURE_CASES):
    CASES.append(pytest.param(["characterize", name, TCP, "--out", "{out}", *flags], message, id=f"{name}-own-{i}"))
CASES += [
    pytest.param(["show", "/nonexistent-hil.h5"], "no such file", id="show-missing"),
    pytest.param(["show", "{h5_text}"], "not a readable HDF5", id="show-text"),
    pytest.param(["show", "/dev/zero"], "no such file", id="show-dev-zero"),
    pytest.param(["characterize", "--resume", "{h5_text}"], "not a readable HDF5", id="resume-text"),
    pytest.param(["characterize", "--resume", "/nonexistent-hil.h5"], "no such file", id="resume-missing"),
    pytest.param(["characterize", "yield-map", TCP], "required", id="no-out"),
    pytest.param(["characterize", "no-such-procedure", TCP, "--out", "{out}"], "invalid choice", id="no-procedure"),
    pytest.param(["map", TCP, "--v-read", "nan"], "v_read", id="map-v-read-nan"),
    pytest.param(["map", TCP, "--v-read", "5"], "v_read", id="map-v-read-5"),
]


def expand(argv: list[str], tmp_path: Path, files: dict[str, str], tcp: str, refused: int) -> list[str]:
    out = []
    for arg in argv:
        if arg.startswith("{file:"):
            name, _, text = arg[len("{file:") : -1].partition("=")
            path = tmp_path / name
            path.write_text(text.replace(TCP, tcp))
            arg = str(path)
        elif arg.startswith("{") and arg.endswith("}") and arg[1:-1] in files:
            arg = files[arg[1:-1]]
        out.append(arg.replace(TCP, tcp).replace("{out}", str(tmp_path / "run.h5")).replace("{refused}", str(refused)))
    return out


def test_the_suite_has_over_two_hundred_cases() -> None:
    assert len(CASES) > 200


@pytest.mark.parametrize(("argv", "message"), CASES)
def test_hostile_input_is_one_line_and_no_pulse(
    argv: list[str], message: str, emulator: EmulatorProcess, refused_port: int, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    files = write_inputs(tmp_path)
    argv = expand(argv, tmp_path, files, emulator.resource, refused_port)
    before = pulse_count(emulator)
    capsys.readouterr()
    previous = signal.signal(signal.SIGALRM, _deadline)
    signal.alarm(CASE_DEADLINE)
    try:
        try:
            status = main(argv)
        except SystemExit as exc:  # argparse: a usage error
            status = exc.code
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    err = capsys.readouterr().err
    assert status == EXIT_ERROR, err
    assert "Traceback" not in err and "unexpected" not in err, err
    lines = [line for line in err.strip().splitlines() if "step/s]" not in line]  # not the progress bar
    assert lines[-1].startswith(("error: ", "usage: ", "hil ")), err
    assert len(lines) == 1 or lines[0].startswith("usage:"), err  # one line (argparse: usage, then one error)
    assert message in err, err
    assert not (tmp_path / "run.h5").exists()  # a refused run leaves no file
    assert pulse_count(emulator) == before  # and applied nothing


SUBPROCESS_CASES = [
    ["info", "TCPIP::127.0.0.1::notaport::SOCKET"],
    ["info", "TCPIP::no.such.host.invalid::5025::SOCKET"],
    ["info", "GPIB0::1::INSTR"],
    ["info", "--config", "/dev/zero"],
    ["characterize", "iv-sweep", "emulator://?preset=ideal", "--out", "x.h5", "--cells", "[[9" + "9" * 22 + ", 0]]"],
    ["characterize", "retention", "emulator://?preset=ideal", "--out", "x.h5", "--points-per-decade", "1000000000"],
]  # fmt: skip


@pytest.mark.parametrize("argv", SUBPROCESS_CASES, ids=[" ".join(a)[:40] for a in SUBPROCESS_CASES])
def test_the_real_entry_point_prints_no_traceback(argv: list[str], tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "hil.cli", *argv], cwd=tmp_path, capture_output=True, text=True,
                          timeout=CASE_DEADLINE, env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin",
                                                      LOCK_DIR_ENV: str(tmp_path / "locks")})  # fmt: skip
    assert done.returncode == EXIT_ERROR, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert not (tmp_path / "x.h5").exists()
