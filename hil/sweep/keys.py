"""Stable cell keys: the same resolved cell config gives the same key, on any machine, in any run."""

from __future__ import annotations

import hashlib
import json
from typing import Any

KEY_LENGTH = 16


def canonical_json(value: Any) -> str:
    """JSON with sorted keys, no whitespace and floats in their shortest exact form."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def cell_key(cell_config: Any) -> str:
    """The first 16 hex digits of the SHA-256 of the canonical JSON of a resolved cell config."""
    return hashlib.sha256(canonical_json(cell_config).encode()).hexdigest()[:KEY_LENGTH]
