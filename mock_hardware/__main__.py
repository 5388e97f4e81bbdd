"""``python -m mock_hardware serve --tcp 127.0.0.1:PORT`` or ``serve --pty``: the emulated board.

``--baud N`` (8N1) or ``--bytes-per-second N`` paces the link as slow as a real serial board's.
Once listening it prints one line ``READY <resource string to open>`` on stdout, then serves
until stdin closes (unless --ignore-stdin) or it receives SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import sys

from mock_hardware.device_params import PRESETS
from mock_hardware.emulator import DEFAULT_PRESET, build_firmware
from mock_hardware.pacing import bytes_per_second
from mock_hardware.params_file import with_params_file
from mock_hardware.server import EmulatorServer


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT or PORT") from None


def _assignment(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not FIELD=VALUE")
    return key.strip(), value.strip()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mock_hardware", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve an emulated board")
    where = serve.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--tcp",
        type=_host_port,
        metavar="[HOST:]PORT",
        help="TCP socket; HOST defaults to 127.0.0.1 (loopback); PORT 0 picks a free port",
    )
    where.add_argument("--pty", action="store_true", help="a pseudo-terminal (a serial resource)")
    serve.add_argument("--preset", choices=sorted(PRESETS), help=f"device preset (default: {DEFAULT_PRESET})")
    serve.add_argument("--params", metavar="FILE.toml", help="device parameter file (e.g. a fitted twin)")
    serve.add_argument("--seed", type=int, default=0)
    serve.add_argument("--rows", type=int, help="array rows (overrides the preset)")
    serve.add_argument("--cols", type=int, help="array columns (overrides the preset)")
    serve.add_argument(
        "--set",
        dest="overrides",
        type=_assignment,
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override any device parameter; repeatable",
    )
    serve.add_argument(
        "--fault",
        dest="faults",
        type=_assignment,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="inject link faults, e.g. drop_reply=0.01 close_after=500 (see mock_hardware/faults.py); repeatable",
    )
    pace = serve.add_mutually_exclusive_group()
    pace.add_argument("--baud", type=int, metavar="N",
                      help="pace the link as a UART at N baud, 8N1 (N/10 bytes per second each way)")
    pace.add_argument("--bytes-per-second", type=float, metavar="N",
                      help="pace the link at N bytes per second each way")
    serve.add_argument("--ignore-stdin", action="store_true", help="do not stop when stdin closes")
    serve.add_argument("--verbose", action="store_true", help="log to stderr")
    return parser  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr)
    overrides = dict(args.overrides) | {f"fault_{name}": value for name, value in args.faults}
    for name in ("rows", "cols"):
        if getattr(args, name) is not None:
            overrides[name] = str(getattr(args, name))
    try:
        rate = bytes_per_second(args.baud, args.bytes_per_second)
        preset_name = args.preset or DEFAULT_PRESET
        if args.params:
            preset_name, overrides = with_params_file(args.params, args.preset, overrides, DEFAULT_PRESET)
        firmware = build_firmware(preset_name, args.seed, overrides)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def announce(resource: str) -> None:
        print(f"READY {resource}", flush=True)

    server = EmulatorServer(firmware, watch_stdin=not args.ignore_stdin, rate=rate)
    if args.pty:
        server.serve_pty(announce)
    else:
        host, port = args.tcp
        server.serve_tcp(host, port, announce)
    return 0


if __name__ == "__main__":
    sys.exit(main())
