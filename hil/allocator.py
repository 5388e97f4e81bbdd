"""Keep freed memory for the next array instead of handing it back to the system (glibc only).

An in-situ update allocates and frees the same large temporaries again and again (the
convolutions' patch batches, their DAC codes and currents: tens of MB each). glibc serves blocks
above its mmap threshold (at most 32 MB however it adapts) with fresh pages from the system and
unmaps them on free, and trims the heap's top as soon as enough of it is free; every reuse then
pays a page fault per 4 KiB. On the demo that was 10 million faults and 34 s of system time of
its 2 minutes (docs/benchmarks.md). Raising both thresholds keeps those pages in the process.
Elsewhere (macOS, Windows, musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 * 2**20  # bytes: blocks above this still come from mmap (and go back on free)
TRIM_THRESHOLD = 512 * 2**20  # bytes: free memory at the heap's top kept before it is returned


def retain_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; whether they were set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    log.debug("glibc malloc thresholds %s", "raised" if done else "left as they were")
    return done
