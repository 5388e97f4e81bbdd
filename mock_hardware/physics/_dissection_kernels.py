"""Compiled merges of the nested dissection's smallest tiles (numba).

The batched stage of :mod:`mock_hardware.physics.wire_dissection` starts from single cells and
merges them pairwise while the shared nodes are few (1 to 4), stack-last: each block entry of every
tile of a band lies in one contiguous plane. Numpy made a dozen passes over those planes per level
(block copies, a vectorized Gauss-Jordan inverse, two ``einsum`` products at about 2 GFLOPS):
about 30 ms of a 512 x 256 solve. :func:`merge_stack_last` makes one level in one call, each step a
loop over a plane (a band's plane at these levels is 0.5 to 16 k tiles: in the L1 or L2 cache), the
separator eliminated by Cholesky. The results agree with numpy's to rounding, not bit for bit (the
dissection is held to the sparse LU).

Compiled once per machine and cached next to this file (``cache=True``); imported by the first
dissection.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from drivers._kernels import compiled


@compiled
def merge_stack_last(
    tiles: npt.NDArray[np.float64], h: int, w: int, across: bool, merged: npt.NDArray[np.float64]
) -> None:
    """Pairs of ``h x w`` tiles merged: ``tiles`` is ``(b, b, R, C)`` (``b = 2 h + 2 w``, edges in the
    order ``L, R, T, B``, whole symmetric matrices), C-contiguous; the pairs are side by side
    (``across``: columns ``2c`` and ``2c + 1``) or one above the other (rows ``2r``, ``2r + 1``);
    ``merged`` is ``(nb, nb, R', C')`` for the merged ``h x 2w`` or ``2h x w`` tiles, written whole
    and exactly symmetric. Across, the merged edges are ``L`` the first's, ``R`` the second's, ``T``
    and ``B`` the first's then the second's, the first's ``R`` shared with the second's ``L``; down,
    ``L`` and ``R`` the first's then the second's, ``T`` the first's, ``B`` the second's, the first's
    ``B`` shared with the second's ``T`` (as ``wire_dissection._merge_pairs``)."""
    b = 2 * h + 2 * w
    rows_in, cols_in = tiles.shape[2], tiles.shape[3]
    rows, cols = (rows_in, cols_in // 2) if across else (rows_in // 2, cols_in)
    nh, nw = (h, 2 * w) if across else (2 * h, w)
    nb = 2 * nh + 2 * nw
    s = h if across else w
    # no bounds checks in compiled code: refuse mismatched shapes before any write
    if tiles.shape[0] != b or tiles.shape[1] != b or (cols_in if across else rows_in) % 2:
        raise ValueError("merge_stack_last: the tiles' matrices or their count do not fit the tile size")
    if merged.shape != (nb, nb, rows, cols):
        raise ValueError("merge_stack_last: the result's shape is not the merged tiles'")
    left, right, top, bottom = 0, h, 2 * h, 2 * h + w
    if across:
        parts = ((0, left, h), (1, right, h), (0, top, w), (1, top, w), (0, bottom, w), (1, bottom, w))
        own_first, own_second = right, left
    else:
        parts = ((0, left, h), (1, left, h), (0, right, h), (1, right, h), (0, top, w), (1, bottom, w))
        own_first, own_second = bottom, top
    tile = np.empty(nb, np.int64)
    node = np.empty(nb, np.int64)
    n = 0
    for which, start, size in parts:
        for k in range(size):
            tile[n] = which
            node[n] = start + k
            n += 1
    # The pair of tile (r, c): first at (r, 2c) or (2r, c), second one column or row on.
    step_r, step_c = (0, 1) if across else (1, 0)
    scale_r, scale_c = (1, 2) if across else (2, 1)
    factor = np.empty((s, s, rows, cols))
    solved = np.empty((nb, s, rows, cols))
    for i in range(s):
        for j in range(i + 1):
            for r in range(rows):
                for c in range(cols):
                    factor[i, j, r, c] = (tiles[own_first + i, own_first + j, scale_r * r, scale_c * c]
                                          + tiles[own_second + i, own_second + j, scale_r * r + step_r,
                                                  scale_c * c + step_c])  # fmt: skip
    for j in range(s):  # Cholesky, lower, in place, tile by tile along the plane
        for k in range(j):
            for r in range(rows):
                for c in range(cols):
                    factor[j, j, r, c] -= factor[j, k, r, c] * factor[j, k, r, c]
        for r in range(rows):
            for c in range(cols):
                factor[j, j, r, c] = np.sqrt(factor[j, j, r, c])
        for i in range(j + 1, s):
            for k in range(j):
                for r in range(rows):
                    for c in range(cols):
                        factor[i, j, r, c] -= factor[i, k, r, c] * factor[j, k, r, c]
            for r in range(rows):
                for c in range(cols):
                    factor[i, j, r, c] /= factor[j, j, r, c]
    for n in range(nb):  # solved[n] = L^-1 (kept node n's coupling to the shared nodes)
        which, a = tile[n], node[n]
        own = own_first if which == 0 else own_second
        for j in range(s):
            for r in range(rows):
                for c in range(cols):
                    solved[n, j, r, c] = tiles[a, own + j, scale_r * r + which * step_r, scale_c * c + which * step_c]
            for k in range(j):
                for r in range(rows):
                    for c in range(cols):
                        solved[n, j, r, c] -= factor[j, k, r, c] * solved[n, k, r, c]
            for r in range(rows):
                for c in range(cols):
                    solved[n, j, r, c] /= factor[j, j, r, c]
    for n in range(nb):
        for m in range(n + 1):
            if tile[n] == tile[m]:
                which, a, e = tile[n], node[n], node[m]
                for r in range(rows):
                    for c in range(cols):
                        merged[n, m, r, c] = tiles[a, e, scale_r * r + which * step_r, scale_c * c + which * step_c]
            else:  # the two tiles touch only through the shared nodes
                for r in range(rows):
                    for c in range(cols):
                        merged[n, m, r, c] = 0.0
            for k in range(s):
                for r in range(rows):
                    for c in range(cols):
                        merged[n, m, r, c] -= solved[n, k, r, c] * solved[m, k, r, c]
            if m != n:
                for r in range(rows):
                    for c in range(cols):
                        merged[m, n, r, c] = merged[n, m, r, c]
