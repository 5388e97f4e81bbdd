"""The wire contract's costs: how long the conformance kit takes per transport, and how much memory a
client that stops reading can make the emulator hold.

- ``kit``: ``run_conformance`` against the emulator in process, over TCP and over the pty (each a
  separate ``python -m mock_hardware serve`` process), with two named cells, a 3 V amplitude allowed;
  wall time, checks passed/failed/skipped.
- ``backlog``: a TCP client sends ``--maps`` whole-array ``MAP?`` commands and reads nothing for 2 s;
  the emulator's largest unsent reply backlog (bytes) and its resident memory growth, then every reply
  is read back (bytes received must equal the replies' total: flow control, not loss).

Prints a Markdown table, then one JSON object as the last line.

    python benchmarks/wire_contract.py
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from drivers.conformance import ConformanceOptions, run_conformance

REPO = Path(__file__).resolve().parents[1]
MAP = b"MAP? 0,0,128,64,0.2,COND\n"
MAP_REPLY = len(b"#532768") + 32768 + 1
OPTIONS = ConformanceOptions(cells=((3, 4), (5, 6)), max_amplitude=3.0, max_gate=1.5)


def serve(link: str) -> tuple[subprocess.Popen[bytes], str]:
    where = ["--tcp", "127.0.0.1:0"] if link == "tcp" else ["--pty"]
    process = subprocess.Popen([sys.executable, "-m", "mock_hardware", "serve", *where, "--seed", "1"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO)  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline().decode().strip()
    if not line.startswith("READY "):
        raise RuntimeError(f"the emulator printed {line!r}")
    return process, line.split(" ", 1)[1]


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.stdin is not None:
        process.stdin.close()
    process.wait(10)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def kit(link: str) -> dict[str, Any]:
    process = None
    if link == "in-process":
        resource = "emulator://?seed=1"
    else:
        process, resource = serve(link)
        if link == "pty":
            resource = "serial://" + resource[len("ASRL") : -len("::INSTR")]
    try:
        started = time.perf_counter()
        report = run_conformance(resource, OPTIONS)
        seconds = time.perf_counter() - started
    finally:
        if process is not None:
            stop(process)
    return {"link": link, "seconds": round(seconds, 1), **report.counts()}


def backlog(maps: int) -> dict[str, Any]:
    process, resource = serve("tcp")
    _, host, port, _ = resource.split("::")
    try:
        before = rss_kib(process.pid)
        with socket.create_connection((host, int(port)), timeout=30) as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
            client.sendall(MAP * maps)
            time.sleep(2.0)
            held = rss_kib(process.pid) - before
            received = 0
            while received < maps * MAP_REPLY:
                chunk = client.recv(1 << 20)
                if not chunk:
                    break
                received += len(chunk)
    finally:
        stop(process)
    return {"maps": maps, "reply_bytes": maps * MAP_REPLY, "rss_growth_kib": held, "received_bytes": received}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=int, default=300)
    args = parser.parse_args()
    kits = [kit(link) for link in ("in-process", "tcp", "pty")]
    held = backlog(args.maps)
    print("| link | kit wall time, s | passed | failed | skipped |")
    print("|---|---|---|---|---|")
    for k in kits:
        print(f"| {k['link']} | {k['seconds']} | {k['pass']} | {k['fail']} | {k['skip']} |")
    print(f"\n{held['maps']} unread maps ({held['reply_bytes'] / 2**20:.1f} MiB of replies): emulator RSS grew "
          f"{held['rss_growth_kib'] / 1024:.1f} MiB; {held['received_bytes'] / 2**20:.1f} MiB read back afterwards")
    print(json.dumps({"machine": platform.machine(), "python": platform.python_version(), "kit": kits,
                      "backlog": held}))  # fmt: skip


if __name__ == "__main__":
    main()
