"""Shared fixtures: the emulated board as a separate process, reached over a real TCP socket or pty.

``emulator_process(...)`` starts ``python -m mock_hardware serve ...``, waits for its single
``READY <resource>`` line and returns an :class:`EmulatorProcess`; every process it started is
stopped at teardown (stdin closed first, then SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 60.0  # s: a safety net against a hang; a loaded 2-core machine starts an emulator in 15 s+
STOP_TIMEOUT = 5.0


@dataclass
class EmulatorProcess:
    """A running ``python -m mock_hardware serve`` and the resource its READY line named."""

    process: subprocess.Popen[bytes]
    resource: str
    stderr_path: Path

    @property
    def tty_path(self) -> str:
        """The pty's device path (``/dev/pts/N``) of a ``serve --pty`` emulator."""
        if not (self.resource.startswith("ASRL") and self.resource.endswith("::INSTR")):
            raise ValueError(f"{self.resource} is not a serial resource")
        return self.resource[len("ASRL") : -len("::INSTR")]

    @property
    def serial_resource(self) -> str:
        """The same pty as a pyserial resource string."""
        return f"serial://{self.tty_path}"

    @property
    def tcp_address(self) -> tuple[str, int]:
        """(host, port) of a ``serve --tcp`` emulator."""
        parts = self.resource.split("::")
        if len(parts) != 4 or parts[0] != "TCPIP" or parts[3] != "SOCKET":
            raise ValueError(f"{self.resource} is not a TCPIP socket resource")
        return parts[1], int(parts[2])

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def _read_ready_line(process: subprocess.Popen[bytes], timeout: float) -> bytes:
    """The first line the process prints, or whatever arrived before ``timeout`` / its exit."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    received = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while b"\n" not in received:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                break
            chunk = os.read(fd, 4096)
            if not chunk:  # the process closed stdout: it exited
                break
            received += chunk
    return received


def stop_process(process: subprocess.Popen[bytes]) -> int:
    """Close stdin (the polite way to stop the emulator), then escalate; the exit code."""
    if process.stdin is not None and not process.stdin.closed:
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()
    try:
        return process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.terminate()
    try:
        return process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()
    finally:
        if process.stdout is not None:
            process.stdout.close()


class EmulatorLauncher:
    """Starts emulator processes and stops every one it started."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[EmulatorProcess] = []

    def __call__(
        self,
        link: str = "tcp",
        seed: int = 0,
        preset: str | None = None,
        extra: tuple[str, ...] = (),
        listen: str = "127.0.0.1:0",
    ) -> EmulatorProcess:
        """``link`` is "tcp" (on ``listen``, an ephemeral loopback port by default) or "pty"."""
        where = {"tcp": ["--tcp", listen], "pty": ["--pty"]}[link]
        argv = [sys.executable, "-m", "mock_hardware", "serve", *where, "--seed", str(seed), *extra]
        if preset is not None:
            argv += ["--preset", preset]
        stderr_path = self.log_dir / f"emulator-{len(self.started)}.stderr"
        with stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, cwd=REPO_ROOT
            )
        line = _read_ready_line(process, READY_TIMEOUT)
        if not line.startswith(b"READY ") or not line.endswith(b"\n"):
            stop_process(process)
            pytest.fail(
                f"{' '.join(argv[1:])} printed {line!r} instead of one READY line within {READY_TIMEOUT:g} s; "
                f"stderr:\n{stderr_path.read_text(errors='replace')}"
            )
        emulator = EmulatorProcess(process, line[len(b"READY ") :].decode().strip(), stderr_path)
        self.started.append(emulator)
        return emulator

    def stop_all(self) -> None:
        while self.started:
            stop_process(self.started.pop().process)


EmulatorFactory = Callable[..., EmulatorProcess]


@pytest.fixture
def emulator_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorFactory]:
    """A factory: ``emulator_process(link="tcp"|"pty", seed=N, preset=None, extra=(), listen=...)``
    starts ``python -m mock_hardware serve`` and returns it once its READY line has arrived."""
    launcher = EmulatorLauncher(tmp_path_factory.mktemp("emulator-logs"))
    yield launcher
    launcher.stop_all()


@pytest.fixture
def killable() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test started; any still running at teardown are killed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture(autouse=True)
def chip_ledgers(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test's runs append to chip ledgers of its own, never to the user's."""
    directory = tmp_path_factory.mktemp("chips")
    monkeypatch.setenv("MEMRISTOR_HIL_LEDGER", str(directory))
    return directory
