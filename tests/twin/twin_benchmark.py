"""benchmarks/twin.py imported as a module (benchmarks/ is not a package), once for the twin tests."""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType


@functools.cache
def twin_benchmark() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "twin.py"
    spec = importlib.util.spec_from_file_location("twin_benchmark", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import would register it
    spec.loader.exec_module(module)
    return module
