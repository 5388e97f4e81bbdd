"""One board, one owner: the resource lock taken by open_board."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from drivers import BoardBusy, open_board
from drivers.lock import LOCK_DIR_ENV, ResourceLock, lock_directory, lock_path
from tests.conftest import EmulatorFactory

HOLDER = textwrap.dedent(
    """
    import sys, time
    import drivers
    board = drivers.open_board(sys.argv[1], timeout=5)
    print("open", flush=True)
    time.sleep(60)
    """
)


@pytest.fixture(autouse=True)
def private_lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "locks"
    monkeypatch.setenv(LOCK_DIR_ENV, str(directory))
    return directory


def test_a_second_opener_is_refused_naming_the_owner(emulator_process: EmulatorFactory) -> None:
    emulator = emulator_process(seed=1)
    with open_board(emulator.resource, timeout=5), pytest.raises(BoardBusy, match=rf"in use by PID {os.getpid()} on "):
        open_board(emulator.resource, timeout=5)
    with open_board(emulator.resource, timeout=5) as board:  # released on close
        assert board.shape[0] > 0


def test_a_board_in_another_process_is_busy_until_that_process_dies(emulator_process: EmulatorFactory) -> None:
    emulator = emulator_process(seed=1)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, emulator.resource], stdout=subprocess.PIPE,
                              env=os.environ.copy())  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"open\n"
        with pytest.raises(BoardBusy, match=rf"PID {holder.pid} "):
            open_board(emulator.resource, timeout=5)
        holder.send_signal(signal.SIGKILL)  # dies holding the board: its lock file stays behind
        holder.wait(10)
        assert lock_path(emulator.resource).exists()
        with open_board(emulator.resource, timeout=5) as board:  # the stale lock is taken over
            assert board.identity.model
    finally:
        holder.kill()
        holder.wait(10)


def test_a_refused_open_sends_nothing(emulator_process: EmulatorFactory) -> None:
    emulator = emulator_process(seed=1)
    lock = ResourceLock(emulator.resource)
    lock.acquire()
    try:
        with pytest.raises(BoardBusy):
            open_board(emulator.resource, timeout=5)
    finally:
        lock.release()
    # The emulator served nobody in between: the first client after the refusal gets it cleanly.
    with open_board(emulator.resource, timeout=5) as board:
        assert board.query("*OPC?") == "1"


def test_resource_names_are_keyed_case_insensitively_for_visa() -> None:
    assert lock_path("TCPIP::127.0.0.1::5025::SOCKET") == lock_path("tcpip::127.0.0.1::5025::socket")
    assert lock_path("serial:///dev/ttyUSB0") != lock_path("serial:///dev/ttyUSB1")


def test_every_spelling_of_one_board_is_one_lock(tmp_path: Path) -> None:
    same = ["TCPIP::127.0.0.1::5025::SOCKET", "TCPIP0::127.0.0.1::5025::SOCKET", "tcpip0::localhost::5025::socket",
            "TCPIP::127.1::5025::SOCKET", " TCPIP::127.0.0.1::5025::SOCKET "]  # fmt: skip
    assert len({lock_path(r) for r in same}) == 1
    assert lock_path("TCPIP::127.0.0.1::5026::SOCKET") != lock_path(same[0])
    port = tmp_path / "ttyACM0"
    port.touch()
    link = tmp_path / "by-id-board"
    link.symlink_to(port)
    serial = [f"serial://{port}", f"serial://{link}?baudrate=921600", f"ASRL{port}::INSTR", f"ASRL{link}::INSTR"]
    assert len({lock_path(r) for r in serial}) == 1


def test_the_lock_folder_does_not_follow_tmpdir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(LOCK_DIR_ENV)
    first = lock_directory()
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    assert lock_directory() == first and tmp_path not in first.parents


def test_an_alias_in_another_process_is_busy_until_that_process_is_killed(
    emulator_process: EmulatorFactory,
) -> None:
    emulator = emulator_process(seed=1)
    _host, port = emulator.tcp_address
    alias = f"TCPIP0::localhost::{port}::SOCKET"  # the same board, spelled otherwise
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, alias], stdout=subprocess.PIPE, env=os.environ.copy())
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"open\n"
        with pytest.raises(BoardBusy, match=rf"PID {holder.pid} "):
            open_board(emulator.resource, timeout=5)
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        with open_board(f"TCPIP::127.1::{port}::SOCKET", timeout=5) as board:  # the killed owner's lock died
            assert board.identity.model
    finally:
        holder.kill()
        holder.wait(10)


def test_in_process_emulators_are_not_locked() -> None:
    resource = "emulator://?preset=ideal&rows=4&cols=4"
    with open_board(resource), open_board(resource) as second:
        assert second.shape == (4, 4)


def test_the_drivers_import_without_unix_only_modules() -> None:
    """Windows has no fcntl: the host's import path must not need it (the lock library picks its own)."""
    code = "import sys; sys.modules['fcntl'] = None; from drivers import open_board; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr
