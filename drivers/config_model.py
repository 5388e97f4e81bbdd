"""The base of the project's config and options models: pydantic, with true/false refused where
a number is meant.

pydantic reads a bool as 1 or 0 wherever an int or float is asked for: ``batch_size = true`` in a
training config trained on batches of one, ``repeats=true`` ran one repeat, ``[[true, 0]]`` named
cell (1, 0). A field whose type takes numbers but not bools refuses a bool anywhere in its value
(nested lists, tuples and tables included) with a one-line error, before pydantic converts it.
"""

from __future__ import annotations

import numbers
import typing
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationInfo, field_validator


class ConfigModel(BaseModel):
    """A pydantic model whose number fields do not take true or false."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name is None or not _holds_bool(value):
            return value
        annotation = cls.model_fields[info.field_name].annotation
        if _takes_number(annotation) and not _takes_bool(annotation):
            raise ValueError(f"a number is meant, not {_first_bool(value)}")
        return value


def _takes_bool(annotation: Any) -> bool:
    """Whether a type takes a bool anywhere in it (bool itself, Any, or a union or container of them)."""
    if annotation is bool or annotation is Any:
        return True
    return any(_takes_bool(arg) for arg in typing.get_args(annotation))


def _takes_number(annotation: Any) -> bool:
    """Whether a type takes an int or a float anywhere in it (a literal of numbers included)."""
    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) is typing.Literal:
        return any(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in typing.get_args(annotation))
    return any(_takes_number(arg) for arg in typing.get_args(annotation))


def _holds_bool(value: Any) -> bool:
    if isinstance(value, bool | np.bool_):
        return True
    if isinstance(value, list | tuple):
        return any(_holds_bool(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_bool(v) for v in value.values())
    return False


def _first_bool(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return str(bool(value)).lower()
    items = value.values() if isinstance(value, dict) else value
    return next(_first_bool(v) for v in items if _holds_bool(v))
