"""Help that says what a value is: every generated procedure flag and every hand-written one shows
its unit or kind (``--min-window S``), never ``JSON`` for a number nor argparse's ``OPTION_...``."""

from __future__ import annotations

import argparse
import re

import pytest

from hil import procedure_registry
from hil.cli import build_parser
from hil.options import add_option_flags, parse_options

# A metavar that names what the value is: an SI unit, a count, a number, or a named kind of text.
KNOWN = re.compile(
    r"^(V|S|s|A|Hz|S/V|V/s|K|Ohm|N|X|JSON|SECONDS|DURATION|UPDATES|LAYER|NAME|RESOURCE|DIR|"
    r"PATH|SERIAL|ROW,COL|STEP\.FIELD=VALUE|CHECK|TEXT|tcp://HOST:8786|FILE|\w+\.(h5|npz|png|toml))$"
)


def _parsers(parser: argparse.ArgumentParser, path: str = "hil") -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _parsers(sub, f"{path} {name}")
    return found


def test_every_flag_of_every_command_shows_a_unit_or_a_kind() -> None:
    bad = []
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            if not action.option_strings or action.nargs == 0 or action.choices is not None:
                continue
            metavar = action.metavar or action.dest.upper()
            if not isinstance(metavar, str) or not KNOWN.match(metavar):
                bad.append(f"{path} {action.option_strings[0]} {metavar}")
    assert not bad, bad


def _procedure_flag(procedure: str, flag: str) -> argparse.Action:
    parser = argparse.ArgumentParser()
    add_option_flags(parser, procedure_registry.REGISTRY[procedure].options)
    return next(a for a in parser._actions if flag in a.option_strings)


def test_numbers_that_may_be_automatic_take_their_unit_not_json() -> None:
    for procedure, flag in [("yield-map", "--min-window"), ("yield-map", "--g-stuck-low-max"),
                            ("endurance", "--window-min"), ("retention", "--min-window"),
                            ("write-noise", "--min-window")]:  # fmt: skip
        action = _procedure_flag(procedure, flag)
        assert action.metavar == "S", (procedure, flag)
        assert "null" not in (action.help or "").split("(default")[-1]  # the default reads as auto
    assert _procedure_flag("wire-resistance", "--r-max").metavar == "Ohm"  # spelled "ohm" in its description
    assert _procedure_flag("pulse-response", "--prepare-amplitude").metavar == "V"  # "..., V; 0: none"
    cells = _procedure_flag("iv-sweep", "--cells")
    assert cells.metavar == "JSON" and "[[0, 0]]" in (cells.help or "")  # a default the user can type back


@pytest.mark.parametrize(("text", "expected"), [("3e-6", 3e-6), ("auto", None), ("null", None), ("AUTO", None)])
def test_an_automatic_number_parses_as_a_number_or_auto(text: str, expected: float | None) -> None:
    model = procedure_registry.REGISTRY["write-noise"].options
    parser = argparse.ArgumentParser()
    add_option_flags(parser, model)
    options = parse_options(model, parser.parse_args(["--min-window", text]))
    assert options.model_dump()["min_window"] == expected


def test_a_bad_automatic_number_is_one_line_naming_the_flag_and_value(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="hil characterize write-noise")
    add_option_flags(parser, procedure_registry.REGISTRY["write-noise"].options)
    with pytest.raises(SystemExit):
        parser.parse_args(["--min-window", "2uS"])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--min-window" in last and "'2uS'" in last and "auto" in last


@pytest.mark.parametrize(("low", "high"), [("-1", "9e-4"), ("5e-4", "1e-4"), ("nan", "9e-4"), ("1e-4", "inf")])
def test_a_map_window_that_is_no_window_is_refused_before_the_board_is_read(
    low: str, high: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from hil.cli import EXIT_ERROR, main

    argv = ["map", "emulator://?preset=ideal&rows=4&cols=4", "--window-min", low, "--window-max", high]
    assert main(argv) == EXIT_ERROR  # was: read, and "outside -1000000-900 uS" printed
    out, err = capsys.readouterr()
    assert "reading" not in out and "--window-min" in err and "0 <= min < max" in err and "\n" not in err.strip()
