"""An emulator as a separate process on a loopback TCP port, for benchmarks that need a board that
outlives its clients (``python -m mock_hardware serve --tcp``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def serve_tcp(preset: str, seed: int, *options: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start an emulator of ``preset`` and ``seed`` (with further ``serve`` options) on a free port;
    the process and the resource its READY line names. The caller stops the process."""
    argv = [sys.executable, "-m", "mock_hardware", "serve", "--tcp", "127.0.0.1:0", "--preset", preset,
            "--seed", str(seed), *options]  # fmt: skip
    process = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdout is not None
    ready = process.stdout.readline().decode()
    if not ready.startswith("READY "):
        process.kill()
        raise RuntimeError(f"the emulator did not start: {ready!r}")
    return process, ready.split()[1]
