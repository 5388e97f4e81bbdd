"""``hil``: the technician's command line.

    hil info [RESOURCE]              identity, array size, electronics and limits
    hil map [RESOURCE] [--out FILE]  full conductance map and its summary
    hil demo                         the main job on the embedded emulator

RESOURCE defaults to the embedded emulator (``emulator://?preset=umass-ta-hfo2&seed=1``) or to the
``resource`` of ``--config FILE``. Errors are one line naming what is wrong, exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType

from drivers import Board, BoardError, open_board
from hil.config import EMBEDDED_EMULATOR, BoardConfig, ConfigError, load_board_config
from hil.map_summary import DEFAULT_WINDOW, save_map, summarize

EXIT_ERROR = 2


def _open(args: argparse.Namespace) -> Board:
    config = load_board_config(args.config) if args.config else BoardConfig()
    resource = args.resource or config.resource
    return open_board(resource, limits=config.limits, timeout=config.timeout, visa_backend=config.visa_backend)


def cmd_info(args: argparse.Namespace) -> int:
    with _open(args) as board:
        description = board.describe()
    if args.json:
        print(json.dumps(description, indent=2))
        return 0
    limits = description.pop("limits")
    description.pop("firmware_limits")
    for key, value in description.items():
        print(f"{key:>22}: {value}")
    print(f"{'limits':>22}:")
    assert isinstance(limits, dict)
    for name, limit in limits.items():
        shown = f"[{limit['min']:g}, {limit['max']:g}]" if isinstance(limit, dict) else f"{limit:g}"
        print(f"{name:>22}  {shown}")
    return 0


def cmd_map(args: argparse.Namespace) -> int:
    with _open(args) as board:
        print(f"reading {board.shape[0]} x {board.shape[1]} cells of {board.identity} at {args.v_read:g} V ...")
        conductance = board.read_map(v_read=args.v_read)
    print(summarize(conductance, (args.window_min, args.window_max)))
    if args.out:
        print(f"wrote {save_map(args.out, conductance)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job on the embedded emulator: for now, describe the board and map it."""
    args.resource = args.resource or EMBEDDED_EMULATOR
    args.json = False
    cmd_info(args)
    print()
    return cmd_map(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hil", description="Memristor crossbar hardware-in-the-loop platform")
    parser.add_argument("--verbose", "-v", action="count", default=0, help="-v: info, -vv: wire traffic")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def board_command(name: str, handler: Callable[[argparse.Namespace], int], text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("resource", nargs="?", help=f"board resource string (default: {EMBEDDED_EMULATOR})")
        sub.add_argument("--config", metavar="FILE", help="board config (TOML or JSON): resource, timeout, limits")
        sub.set_defaults(handler=handler)
        return sub

    info = board_command("info", cmd_info, "identity, array size, electronics and safety limits")
    info.add_argument("--json", action="store_true", help="print JSON")
    for name, handler, text in (
        ("map", cmd_map, "read the full conductance map and summarize it"),
        ("demo", cmd_demo, "the main job on the embedded emulator"),
    ):
        sub = board_command(name, handler, text)
        sub.add_argument("--v-read", type=float, default=0.2, help="read voltage, V (default 0.2)")
        sub.add_argument("--window-min", type=float, default=DEFAULT_WINDOW[0], help="usable window low end, S")
        sub.add_argument("--window-max", type=float, default=DEFAULT_WINDOW[1], help="usable window high end, S")
        sub.add_argument("--out", metavar="FILE", help="write the map to FILE (.npy or .csv)")
    return parser


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # SystemExit unwinds every `with open_board(...)`, so the board is idled before we go.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except (BoardError, ConfigError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted: the board was put in its idle state", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
