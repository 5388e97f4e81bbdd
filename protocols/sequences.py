"""Pulse sequences a technician writes in a file: pulses, reads, delays and loops over target cells.

A :class:`PulseSequence` is plain validated data (pydantic, SI units). It is loaded from and saved
to JSON or TOML; nothing in a file is ever evaluated or unpickled. :func:`load_sequence` reports
every problem of a malformed file at once, each with its field path (``steps.2.steps.0.width``).
Running a sequence on a board is :mod:`protocols.runner`'s job.

Hostile files are bounded: a file is at most :data:`MAX_FILE_BYTES`, loops nest at most
:data:`MAX_LOOP_DEPTH` deep and a sequence expands to at most :data:`MAX_EXPANDED_STEPS` steps,
so a small file cannot ask for unbounded memory or time.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from drivers.messages import validation_message

MAX_EXPANDED_STEPS = 1_000_000
"""Most steps a sequence may run once its loops are expanded."""
MAX_LOOP_DEPTH = 16
"""Deepest nesting of loops."""
MAX_TARGETS = 1 << 20
"""Most target cells (a 1024 x 1024 array)."""
MAX_INDEX = (1 << 20) - 1
"""Largest row or column index (or region size) a file may name; keeps index arithmetic in int64."""
MAX_FILE_BYTES = 16 * 1024 * 1024
"""Largest sequence file :func:`load_sequence` reads."""
MAX_LISTED_ERRORS = 200
"""Most validation errors spelled out in one :class:`SequenceFileError` message (all are in ``.errors``)."""

_STEP_TAGS = frozenset({"pulse", "read", "delay", "loop"})


class _Model(BaseModel):
    # strict: a file saying amplitude = "2.5" or repeat = true is a mistake, not something to coerce.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


# ----------------------------------------------------------------------------- steps


class Pulse(_Model):
    """One programming pulse on every target cell (one batch command)."""

    type: Literal["pulse"] = "pulse"
    kind: Literal["SET", "RESET", "FORM"] = Field(
        description="SET and FORM drive the row line, RESET the column line (opposite polarity)"
    )
    amplitude: float = Field(ge=0, description="pulse amplitude magnitude, V; the kind gives the polarity")
    v_gate: float = Field(description="gate (word) line voltage during the pulse, V; sets the compliance current")
    width: float = Field(gt=0, description="pulse width, s")


class Read(_Model):
    """Read the conductance of every target cell (one map read)."""

    type: Literal["read"] = "read"
    v_read: float = Field(description="row voltage during the read, V; non-zero")

    @field_validator("v_read")
    @classmethod
    def _non_zero(cls, v_read: float) -> float:
        if v_read == 0:
            raise ValueError("v_read must be non-zero: a read at 0 V measures nothing")
        return v_read


class Delay(_Model):
    """Hold the board idle; an emulator with a simulated clock skips ahead at once."""

    type: Literal["delay"] = "delay"
    seconds: float = Field(ge=0, description="how long to hold the idle state, s")


class Loop(_Model):
    """Run ``steps`` ``repeat`` times; loops nest."""

    type: Literal["loop"] = "loop"
    repeat: int = Field(ge=1, description="how many times to run the body")
    steps: list[Step] = Field(min_length=1, description="the body, run in order each time")

    @model_validator(mode="after")
    def _bounded(self) -> Loop:
        depth = loop_depth(self.steps) + 1
        if depth > MAX_LOOP_DEPTH:
            raise ValueError(f"loops nest {depth} deep; at most {MAX_LOOP_DEPTH} are allowed")
        size = self.repeat * expanded_size(self.steps)
        if size > MAX_EXPANDED_STEPS:
            raise ValueError(f"loop expands to {size:,} steps; at most {MAX_EXPANDED_STEPS:,} are allowed")
        return self


Step = Annotated[Pulse | Read | Delay | Loop, Field(discriminator="type")]
"""One element of a sequence, told apart by its ``type`` field."""
Loop.model_rebuild()

LeafStep = Pulse | Read | Delay


def expanded_size(steps: Iterable[Step]) -> int:
    """How many pulses, reads and delays ``steps`` run once loops are expanded."""
    return sum(s.repeat * expanded_size(s.steps) if isinstance(s, Loop) else 1 for s in steps)


def loop_depth(steps: Iterable[Step]) -> int:
    """How deep loops nest in ``steps`` (0: no loop)."""
    return max((1 + loop_depth(s.steps) for s in steps if isinstance(s, Loop)), default=0)


# ----------------------------------------------------------------------------- targets


Cell = Annotated[list[Annotated[int, Field(ge=0, le=MAX_INDEX)]], Field(min_length=2, max_length=2)]


class TargetRegion(_Model):
    """Rows ``row0 .. row0+nrows-1`` by columns ``col0 .. col0+ncols-1``."""

    row0: int = Field(ge=0, le=MAX_INDEX, description="first row, zero-based")
    col0: int = Field(ge=0, le=MAX_INDEX, description="first column, zero-based")
    nrows: int = Field(ge=1, le=MAX_INDEX, description="number of rows")
    ncols: int = Field(ge=1, le=MAX_INDEX, description="number of columns")

    def contains(self, row: int, col: int) -> bool:
        return self.row0 <= row < self.row0 + self.nrows and self.col0 <= col < self.col0 + self.ncols


class Targets(_Model):
    """The cells every step acts on: a region, listed ``[row, col]`` cells, or both (no cell twice)."""

    region: TargetRegion | None = Field(None, description="a rectangle of cells, taken row by row")
    cells: list[Cell] = Field(default_factory=list, description="[row, col] pairs, after the region's cells")

    @model_validator(mode="after")
    def _distinct(self) -> Targets:
        if self.region is None and not self.cells:
            raise ValueError("no target cells: give a region, cells, or both")
        count = len(self.cells) + (self.region.nrows * self.region.ncols if self.region else 0)
        if count > MAX_TARGETS:
            raise ValueError(f"{count:,} target cells; at most {MAX_TARGETS:,} are allowed")
        seen: set[tuple[int, int]] = set()
        for row, col in self.cells:
            if (row, col) in seen or (self.region is not None and self.region.contains(row, col)):
                raise ValueError(f"cell [{row}, {col}] is targeted twice; each cell gets one pulse per step")
            seen.add((row, col))
        return self

    def as_array(self) -> npt.NDArray[np.int64]:
        """``(n, 2)`` zero-based (row, col) of every target: the region row by row, then the listed cells."""
        parts = []
        if self.region is not None:
            r = self.region
            rows, cols = np.meshgrid(np.arange(r.row0, r.row0 + r.nrows), np.arange(r.col0, r.col0 + r.ncols),
                                     indexing="ij")  # fmt: skip
            parts.append(np.stack([rows.ravel(), cols.ravel()], axis=1))
        parts.append(np.array(self.cells, dtype=np.int64).reshape(-1, 2))
        return np.concatenate(parts).astype(np.int64)


# ----------------------------------------------------------------------------- the sequence


class PulseSequence(_Model):
    """A named list of steps applied to a set of target cells."""

    name: str = Field(min_length=1, max_length=200, description="short name, for data files and logs")
    description: str = Field("", max_length=10_000, description="what the sequence is for")
    targets: Targets = Field(description="the cells every step acts on")
    steps: list[Step] = Field(min_length=1, description="run in order")

    @model_validator(mode="after")
    def _bounded(self) -> PulseSequence:
        size = expanded_size(self.steps)
        if size > MAX_EXPANDED_STEPS:
            raise ValueError(f"sequence expands to {size:,} steps; at most {MAX_EXPANDED_STEPS:,} are allowed")
        return self

    @property
    def n_steps(self) -> int:
        """Steps run once loops are expanded."""
        return expanded_size(self.steps)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", exclude_none=True), indent=2) + "\n"

    def to_toml(self) -> str:
        return tomli_w.dumps(self.model_dump(mode="json", exclude_none=True))


# ----------------------------------------------------------------------------- files


class SequenceFileError(ValueError):
    """A sequence file that is missing, unreadable, malformed or invalid; the message says every problem.

    ``errors`` holds ``(field path, message)`` for each problem (``""`` for the whole file).
    """

    def __init__(self, source: str, errors: Sequence[tuple[str, str]]) -> None:
        self.source = source
        self.errors = list(errors)
        if len(self.errors) == 1 and not self.errors[0][0]:
            text = f"{source}: {self.errors[0][1]}"
        else:
            lines = [f"  {path or '(top level)'}: {message}" for path, message in self.errors[:MAX_LISTED_ERRORS]]
            if len(self.errors) > MAX_LISTED_ERRORS:
                lines.append(f"  ... and {len(self.errors) - MAX_LISTED_ERRORS} more")
            count = len(self.errors)
            text = f"{source}: {count} error{'s' if count != 1 else ''} in the sequence:\n" + "\n".join(lines)
        super().__init__(text)


def _field_path(loc: Sequence[int | str]) -> str:
    """``steps.2.steps.0.width`` from pydantic's loc, without the union tags it inserts after an index."""
    parts: list[str] = []
    for i, item in enumerate(loc):
        if isinstance(item, str) and item in _STEP_TAGS and i > 0 and isinstance(loc[i - 1], int):
            continue
        parts.append(str(item))
    return ".".join(parts)


def _nesting_depth(data: object) -> int:
    """How deep ``steps`` lists nest in raw data, without recursion (a hostile file may nest thousands)."""
    deepest = 0
    stack: list[tuple[object, int]] = [(data, 0)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(node, dict):
            steps = node.get("steps")
            if isinstance(steps, list):
                stack.extend((child, depth + 1) for child in steps)
    return deepest


def parse_sequence(data: object, source: str = "<sequence>") -> PulseSequence:
    """Validate already-parsed data (a dict from JSON or TOML); :class:`SequenceFileError` lists every error."""
    # The top level's steps count as depth 1; each loop adds one.
    depth = _nesting_depth(data) - 1
    if depth > MAX_LOOP_DEPTH:
        raise SequenceFileError(source, [("", f"loops nest {depth} deep; at most {MAX_LOOP_DEPTH} are allowed")])
    try:
        return PulseSequence.model_validate(data)
    except ValidationError as exc:
        errors = [(_field_path(e["loc"]), validation_message(e)) for e in exc.errors()]
        raise SequenceFileError(source, errors) from None


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads silently keeps the last of two equal keys; in a lab file that hides a mistake.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def sequence_from_text(text: str, fmt: Literal["json", "toml"], source: str = "<sequence>") -> PulseSequence:
    """Parse and validate the text of a JSON or TOML sequence file."""
    data: object
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys) if fmt == "json" else tomllib.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise SequenceFileError(source, [("", f"malformed JSON at {where}: {exc.msg}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise SequenceFileError(source, [("", f"malformed TOML: {exc}")]) from None
    except RecursionError:
        raise SequenceFileError(source, [("", f"malformed {fmt.upper()}: nested too deeply to parse")]) from None
    except ValueError as exc:  # e.g. a duplicate key, or an integer of thousands of digits
        raise SequenceFileError(source, [("", f"malformed {fmt.upper()}: {exc}")]) from None
    return parse_sequence(data, source)


def _format_of(path: Path) -> Literal["json", "toml"]:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix == ".toml":
        return "toml"
    raise SequenceFileError(str(path), [("", f"unknown file type {suffix or '(none)'!r}; use .json or .toml")])


def load_sequence(path: str | Path) -> PulseSequence:
    """Read a ``.json`` or ``.toml`` sequence file; any problem raises :class:`SequenceFileError`."""
    path = Path(path)
    source = str(path)
    fmt = _format_of(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise SequenceFileError(source, [("", f"file is {size:,} bytes; at most {MAX_FILE_BYTES:,} are read")])
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SequenceFileError(source, [("", "no such file")]) from None
    except IsADirectoryError:
        raise SequenceFileError(source, [("", "is a directory, not a sequence file")]) from None
    except OSError as exc:
        raise SequenceFileError(source, [("", f"cannot read the file: {exc.strerror or exc}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SequenceFileError(source, [("", f"not UTF-8 text (byte {exc.start}): {exc.reason}")]) from None
    return sequence_from_text(text, fmt, source)


def save_sequence(sequence: PulseSequence, path: str | Path) -> None:
    """Write ``sequence`` as JSON or TOML, chosen by the file's suffix."""
    path = Path(path)
    fmt = _format_of(path)
    path.write_text(sequence.to_json() if fmt == "json" else sequence.to_toml(), encoding="utf-8")


__all__ = [
    "MAX_EXPANDED_STEPS", "MAX_FILE_BYTES", "MAX_INDEX", "MAX_LOOP_DEPTH", "MAX_TARGETS", "Delay", "LeafStep",
    "Loop", "Pulse", "PulseSequence", "Read", "SequenceFileError", "Step", "TargetRegion", "Targets",
    "expanded_size", "load_sequence", "loop_depth", "parse_sequence", "save_sequence", "sequence_from_text",
]  # fmt: skip
