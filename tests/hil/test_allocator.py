"""Freed memory kept for the next array: large temporaries reused without a page fault per page."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hil.allocator import retain_freed_memory

# Allocates and frees a 64 MB array once, then twenty times more (as an update's patch batches
# are), and prints the page faults the twenty took.
PROGRAM = """
import resource, sys
import numpy as np
from hil.allocator import retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory()
np.ones(8 * 2**20).sum()  # the first array faults its pages in either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    np.ones(8 * 2**20).sum()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True)
    return int(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc thresholds")
def test_large_temporaries_are_reused_without_faulting_their_pages_again() -> None:
    default, retained = faults("default"), faults("retain")
    # By default every 64 MB array after the first is mapped afresh and faulted in: 16,384 faults
    # of 4 kB pages, or 32 where transparent huge pages of 2 MB serve it (numpy asks for them;
    # whether the kernel has them free varies from run to run), so at least 32 each time; kept,
    # the first array's pages serve the next ones without a fault.
    assert default >= 20 * 32
    assert retained < default / 5


def test_elsewhere_it_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert retain_freed_memory() is False
