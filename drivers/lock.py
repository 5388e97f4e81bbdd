"""One board, one owner: an exclusive lock per resource, held while a Board is open.

The lock is an ``fcntl.flock`` on a file named after the resource, in a directory shared by the
machine's users. The kernel releases it when its owner dies however it dies (even by SIGKILL),
so a stale lock is simply one that can be taken; the file holds the owner's PID, host and
command line only to name the owner in the error a second opener gets.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import sys
import tempfile
from pathlib import Path

from drivers.errors import BoardError

LOCK_DIR_ENV = "MEMRISTOR_HIL_LOCK_DIR"


class BoardBusy(BoardError):
    """Another process has the board open."""


def lock_directory() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / "memristor-hil-locks")


def lock_path(resource: str) -> Path:
    """The lock file of a resource (VISA resource names are case-insensitive)."""
    key = resource.strip()
    if "://" not in key:
        key = key.upper()
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return lock_directory() / f"{digest}.lock"


class ResourceLock:
    """An exclusive lock on one resource; :meth:`acquire` raises :class:`BoardBusy` naming the owner."""

    def __init__(self, resource: str) -> None:
        self.resource = resource
        self.path = lock_path(resource)
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_owner(fd)
            os.close(fd)
            raise BoardBusy(f"{self.resource} is in use by {owner}; close it there first") from None
        os.ftruncate(fd, 0)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)[:200],
                  "resource": self.resource}  # fmt: skip
        os.write(fd, json.dumps(record).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def _read_owner(fd: int) -> str:
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        record = {}
    if not record:
        return "another process"
    return f"PID {record.get('pid')} on {record.get('host')} ({record.get('command', '')})"
