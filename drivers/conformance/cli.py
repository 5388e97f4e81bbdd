"""``hil conformance RESOURCE``: parses options, runs the kit, prints its report."""

from __future__ import annotations

import argparse

from drivers.conformance import ConformanceOptions, run_conformance

EXIT_NONCONFORMING = 1


def _cell(text: str) -> tuple[int, int]:
    row, _sep, col = text.partition(",")
    try:
        return int(row), int(col)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not ROW,COL") from None


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub = commands.add_parser(
        "conformance", help="check a board against the wire protocol (docs/wire-protocol.md)",
        description="Run the conformance kit against a board. By default it never pulses; name the cells it may "
        "pulse (--cells) and the amplitude it may use (--max-amplitude). Exit status 1 if a check fails.",
    )  # fmt: skip
    sub.add_argument("resource", metavar="RESOURCE", help="TCPIP::HOST::PORT::SOCKET, ASRL...::INSTR, serial://..., "
                     "emulator://...")  # fmt: skip
    sub.add_argument("--json", action="store_true", help="print the report as JSON")
    sub.add_argument("--cells", type=_cell, nargs="+", default=[], metavar="ROW,COL",
                     help="the only cells pulse checks may pulse")  # fmt: skip
    sub.add_argument("--max-amplitude", type=float, default=0.0, metavar="V",
                     help="largest pulse amplitude the kit may apply (default 0: no pulse checks)")  # fmt: skip
    sub.add_argument("--max-gate", type=float, default=1.0, metavar="V", help="gate voltage of the kit's pulses")
    sub.add_argument("--max-pulses", type=int, default=20, metavar="N", help="most pulses in the whole run")
    sub.add_argument("--stress", action="store_true", help="also run checks that could stress a chip")
    sub.add_argument("--only", nargs="+", default=[], metavar="CHECK",
                     help="run only these checks or groups: names, GROUP/NAME as the report prints them, "
                     "or patterns ('error-1*')")  # fmt: skip
    sub.add_argument("--timeout", type=_timeout, default=10.0, metavar="S", help="reply timeout (default 10 s)")
    sub.set_defaults(handler=_run)


MAX_TIMEOUT = 3600.0
"""s: the longest reply timeout, as a board config's (hil.config.BoardConfig.timeout)."""


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(f"{text} s is outside (0, {MAX_TIMEOUT:g}] s")
    return value


def _run(args: argparse.Namespace) -> int:
    options = ConformanceOptions(
        cells=tuple(args.cells), max_amplitude=args.max_amplitude, max_gate=args.max_gate,
        max_pulses=args.max_pulses, stress=args.stress,
    )  # fmt: skip
    report = run_conformance(args.resource, options, tuple(args.only), args.timeout)
    print(report.to_json() if args.json else report.text())
    return 0 if report.passed else EXIT_NONCONFORMING
