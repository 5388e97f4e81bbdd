"""Command-line flags generated from a procedure's pydantic options model."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from hil.config import ConfigError, parse_config_text, validation_problems

_PREFIX = "option_"
_SCALARS: dict[object, type[int] | type[float] | type[str]] = {int: int, float: float, str: str}


MAX_JSON_OPTION = 1024 * 1024
"""Longest JSON option value read (a list of 65,536 cells fits)."""


def _json_value(text: str) -> Any:
    if len(text) > MAX_JSON_OPTION:
        raise argparse.ArgumentTypeError(f"a JSON value of {len(text):,} characters is longer than {MAX_JSON_OPTION:,}")
    try:
        return parse_config_text(text, "json", "the value")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(f"{text[:60]!r} is not usable JSON (e.g. [[0, 0], [3, 5]]): {exc}") from None


UNITS = {"V", "S", "s", "A", "Hz", "S/V", "V/s", "K", "Ohm"}
_UNIT_SPELLINGS = {"ohm": "Ohm", "ohms": "Ohm", "\u03a9": "Ohm"}
_NONE_WORDS = ("null", "none", "auto")


def _unit(description: str) -> str:
    """The SI unit a field's description ends its first clause with (``read voltage, V``; ``..., S;
    null (default): auto``), or ``""``."""
    clause = description.split(";", 1)[0]
    unit = clause.rsplit(", ", 1)[-1].strip() if ", " in clause else ""
    unit = _UNIT_SPELLINGS.get(unit.lower(), unit)
    return unit if unit in UNITS else ""


def _metavar(scalar: type, description: str) -> str:
    """What a flag's value is, for help: its SI unit where the description gives one (``--v-read V``),
    else ``N`` for a count and ``X`` for a number."""
    unit = _unit(description)
    if scalar is float and unit:
        return unit
    return {int: "N", float: "X", str: "TEXT"}[scalar]


def _optional_scalar(annotation: Any) -> type[int] | type[float] | None:
    """``int`` or ``float`` for a field typed ``int | None`` / ``float | None`` (constraints and all),
    else ``None``."""
    if get_origin(annotation) not in (Union, UnionType):
        return None
    members = [a for a in get_args(annotation) if a is not type(None)]
    if len(members) != 1 or len(get_args(annotation)) != 2:
        return None
    member = members[0]
    if get_origin(member) is Annotated:
        member = get_args(member)[0]
    return member if member in (int, float) else None


def _or_none(scalar: type[int] | type[float], metavar: str) -> Callable[[str], int | float | None]:
    """An argparse type: a number, or ``null``/``auto``/``none`` for the field's automatic value."""

    def parse(text: str) -> int | float | None:
        if text.strip().lower() in _NONE_WORDS:
            return None
        try:
            return scalar(text)
        except ValueError:
            kind = "an integer" if scalar is int else "a number"
            raise argparse.ArgumentTypeError(f"{text[:60]!r} is not {kind} ({metavar}) nor 'auto'") from None

    return parse


def _as_json(value: Any) -> str:
    """A default as the user would type it (``[[0, 0]]``, not Python's ``[(0, 0)]``)."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return str(value)


def add_option_flags(parser: argparse.ArgumentParser, model: type[BaseModel]) -> None:
    """One ``--flag`` per field; values the user gives are validated by the model itself."""
    group = parser.add_argument_group("procedure options")
    for name, field in model.model_fields.items():
        flag = "--" + name.replace("_", "-")
        description = field.description or name
        help_text = f"{description} (default: {field.default})"
        common: dict[str, Any] = {"dest": _PREFIX + name, "default": argparse.SUPPRESS, "help": help_text}
        annotation = field.annotation
        scalar = _SCALARS.get(annotation)
        optional = _optional_scalar(annotation)
        if annotation is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
        elif scalar is not None:
            group.add_argument(flag, type=scalar, metavar=_metavar(scalar, description), **common)
        elif optional is not None:
            # ``None`` means "automatic": the flag takes a number in the field's unit (or the word auto),
            # not JSON, and the help shows the unit and the default as auto.
            metavar = _metavar(optional, description)
            if field.default is None:
                common["help"] = description if "(default)" in description else f"{description} (default: auto)"
            group.add_argument(flag, type=_or_none(optional, metavar), metavar=metavar, **common)
        elif get_origin(annotation) is Literal:
            group.add_argument(flag, choices=[str(a) for a in get_args(annotation)], **common)
        else:
            common["help"] = f"{description}, as JSON (default: {_as_json(field.default)})"
            group.add_argument(flag, type=_json_value, metavar="JSON", **common)


def parse_options(model: type[BaseModel], args: argparse.Namespace) -> BaseModel:
    """The model built from the flags given; every bad value is named in one error."""
    given = {name: getattr(args, _PREFIX + name) for name in model.model_fields if hasattr(args, _PREFIX + name)}
    try:
        return model.model_validate(given)
    except ValidationError as exc:
        raise ConfigError(f"bad procedure options:\n{validation_problems(exc)}") from None
