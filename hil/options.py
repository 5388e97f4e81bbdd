"""Command-line flags generated from a procedure's pydantic options model."""

from __future__ import annotations

import argparse
from typing import Any, Literal, get_args, get_origin

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


def _metavar(scalar: type, description: str) -> str:
    """What a flag's value is, for help: its SI unit where the description ends with one (``--v-read V``),
    else ``N`` for a count and ``X`` for a number."""
    unit = description.rsplit(", ", 1)[-1].strip() if ", " in description else ""
    if scalar is float and unit in UNITS:
        return unit
    return {int: "N", float: "X", str: "TEXT"}[scalar]


def add_option_flags(parser: argparse.ArgumentParser, model: type[BaseModel]) -> None:
    """One ``--flag`` per field; values the user gives are validated by the model itself."""
    group = parser.add_argument_group("procedure options")
    for name, field in model.model_fields.items():
        flag = "--" + name.replace("_", "-")
        help_text = f"{field.description or name} (default: {field.default})"
        common: dict[str, Any] = {"dest": _PREFIX + name, "default": argparse.SUPPRESS, "help": help_text}
        annotation = field.annotation
        scalar = _SCALARS.get(annotation)
        if annotation is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
        elif scalar is not None:
            group.add_argument(flag, type=scalar, metavar=_metavar(scalar, field.description or ""), **common)
        elif get_origin(annotation) is Literal:
            group.add_argument(flag, choices=[str(a) for a in get_args(annotation)], **common)
        else:
            group.add_argument(flag, type=_json_value, metavar="JSON", **common)


def parse_options(model: type[BaseModel], args: argparse.Namespace) -> BaseModel:
    """The model built from the flags given; every bad value is named in one error."""
    given = {name: getattr(args, _PREFIX + name) for name in model.model_fields if hasattr(args, _PREFIX + name)}
    try:
        return model.model_validate(given)
    except ValidationError as exc:
        raise ConfigError(f"bad procedure options:\n{validation_problems(exc)}") from None
