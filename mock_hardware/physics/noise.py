"""A fast Gaussian sampler for read noise.

numpy's ziggurat normals cost about 9 ns each here, more than the matrix product of a VMM batch
they perturb. Read noise only needs i.i.d. draws from a distribution indistinguishable from a
Gaussian at the scale of a few percent of a conductance, so it draws uniform 16-bit indices into
a table of the 65,536 mid-point quantiles of N(0, 1): exact mean 0, variance rescaled to exactly
1, tails cut at 4.3 sigma (probability 2e-5). Draws are independent (fresh random bits each) and
reproducible from the generator's seed.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.special import ndtri

_TABLE_BITS = 16


def _quantile_table() -> npt.NDArray[np.float32]:
    size = 1 << _TABLE_BITS
    table = ndtri((np.arange(size) + 0.5) / size)
    table /= np.sqrt(np.mean(table**2))
    return np.asarray(table, dtype=np.float32)


_TABLE = _quantile_table()
MAX_ABS_DRAW = float(np.abs(_TABLE).max())
"""the largest magnitude a draw can have (about 4.3)"""


def fast_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> npt.NDArray[np.float32]:
    """Standard normal float32 draws of ``shape`` from ``rng``'s bit stream."""
    out = np.empty(shape, dtype=np.float32)
    fast_normal_into(rng, out)
    return out


def _look_up(pieces: npt.NDArray[np.uint16], out: npt.NDArray[np.float32]) -> None:
    """``out``'s elements (flat, C order) are the table's entries at the 16-bit ``pieces``: one
    compiled pass (numpy's ``take`` wants the indices converted to intp first, a pass more)."""
    from mock_hardware import _physics_kernels  # numba: loaded by the first read with noise

    # native byte order for the kernel: a view on little-endian machines, a copy elsewhere
    _physics_kernels.table_lookup(_TABLE, pieces.astype(np.uint16, copy=False), out)


def fast_normal_into(rng: np.random.Generator, out: npt.NDArray[np.float32]) -> None:
    """Fill the C-contiguous float32 array ``out`` with standard normal draws."""
    _look_up(np.frombuffer(rng.bytes(2 * out.size), dtype="<u2"), out)


def fast_normal_rows_into(rng: np.random.Generator, out: npt.NDArray[np.float32], rows: npt.NDArray[np.intp]) -> None:
    """Fill ``out`` (``(len(rows), n)``, C-contiguous) with the rows ``rows`` (ascending) of what
    :func:`fast_normal_into` would draw into a ``(max(rows) + 1, n)`` array from ``rng``'s present
    state, bit for bit, without drawing the other rows: a VMM draws noise for the columns it
    measures only, yet each column gets the draws it would get among all of the region's.

    The draws are consecutive 16-bit pieces of the generator's 64-bit words, so a row starts at a
    known word: the generator jumps there (``advance``, logarithmic in the distance). ``rng`` is
    left at an unspecified state.
    """
    length = out.shape[1]
    if not len(rows) or not length:
        return
    bits = rng.bit_generator
    start = bits.state
    flat_out = out.reshape(-1)
    rows = np.asarray(rows, dtype=np.intp)
    # Runs of consecutive rows are drawn in one piece.
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    for run in np.split(np.arange(len(rows)), breaks):
        first_row, count = int(rows[run[0]]), len(run)
        first_byte = 2 * first_row * length
        word = first_byte // 8
        skip = first_byte - 8 * word
        words = -(-(skip + 2 * count * length) // 8)
        bits.state = start
        bits.advance(word)  # type: ignore[attr-defined]  # every numpy bit generator used here has it
        raw = bits.random_raw(words).astype("<u8", copy=False)
        piece = slice(int(run[0]) * length, (int(run[0]) + count) * length)
        # the 16-bit pieces of the words, viewed in place (skip is even: whole pieces)
        pieces = raw.view(np.uint8)[skip : skip + 2 * count * length].view("<u2")
        _look_up(pieces, flat_out[piece])
