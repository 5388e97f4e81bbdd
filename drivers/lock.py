"""One board, one owner: an exclusive lock per physical board, held while a Board is open.

The lock is a :mod:`filelock` lock (``flock`` on Unix, ``LockFileEx`` on Windows) on a file named
after the board's canonical key (:func:`drivers.resource_names.board_key`: every spelling of a
resource is one board), in one folder shared by the machine's users whatever their ``TMPDIR``.
The operating system releases it when its owner dies however it dies (even by SIGKILL), so a
stale lock is simply one that can be taken. A file beside it holds the owner's PID, host and
command line, only to name the owner in the error a second opener gets.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sys
from pathlib import Path

import filelock

from drivers.errors import BoardError
from drivers.resource_names import board_key

LOCK_DIR_ENV = "MEMRISTOR_HIL_LOCK_DIR"


class BoardBusy(BoardError):
    """Another process has the board open."""


def lock_directory() -> Path:
    """One folder per machine (not per user's temporary folder); ``MEMRISTOR_HIL_LOCK_DIR`` overrides it."""
    override = os.environ.get(LOCK_DIR_ENV)
    if override:
        return Path(override)
    if os.name == "nt":
        return Path(os.environ.get("PROGRAMDATA", r"C:\ProgramData")) / "memristor-hil" / "locks"
    return Path("/tmp/memristor-hil-locks")


def lock_path(resource: str) -> Path:
    """The lock file of the board ``resource`` names (the same file for every spelling of it)."""
    digest = hashlib.sha256(board_key(resource).encode()).hexdigest()[:24]
    return lock_directory() / f"{digest}.lock"


def _shared_directory(path: Path) -> None:
    """Create the lock folder writable by every user (sticky, like /tmp) so any user can lock a board."""
    if path.is_dir():
        return
    path.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):  # another user made it first, or the platform has no modes
        path.chmod(0o1777)


class ResourceLock:
    """An exclusive lock on one board; :meth:`acquire` raises :class:`BoardBusy` naming the owner."""

    def __init__(self, resource: str) -> None:
        self.resource = resource
        self.path = lock_path(resource)
        self.owner_path = self.path.with_suffix(".owner")
        self._lock = filelock.FileLock(self.path, timeout=0, mode=0o666, thread_local=False)

    def acquire(self) -> None:
        _shared_directory(self.path.parent)
        try:
            self._lock.acquire(timeout=0)
        except filelock.Timeout:
            raise BoardBusy(f"{self.resource} is in use by {self._owner()}; close it there first") from None
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)[:200],
                  "resource": self.resource}  # fmt: skip
        with contextlib.suppress(OSError):  # the record only names the owner; the lock is what counts
            self.owner_path.write_text(json.dumps(record), encoding="utf-8")
            self.owner_path.chmod(0o666)

    def release(self) -> None:
        if self._lock.is_locked:
            with contextlib.suppress(OSError):
                self.owner_path.unlink()
            self._lock.release()

    @property
    def held(self) -> bool:
        return bool(self._lock.is_locked)

    def _owner(self) -> str:
        try:
            record = json.loads(self.owner_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = None
        if not isinstance(record, dict) or not record:
            return "another process"
        return f"PID {record.get('pid')} on {record.get('host')} ({record.get('command', '')})"
