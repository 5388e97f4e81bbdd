"""Compiled per-element passes of the emulator's physics and electronics (numba).

A CNN's convolution VMM drives 6,400 vectors of up to 120 rows (768,000 inputs, 3 MB of float32).
Numpy made a pass over the batch per operation: five for the I-V factor's series, one for the
product with the drive, one for the squares the read noise's spread needs, two for the read's
fingerprint, four over the currents for the noise, two for the noise's table look-up; eight over
each reply for its autoranged ADC codes, six over the array for the drift law. Each kernel here
fuses one group of those into one pass, with the same IEEE float32 or float64 (or wrapping uint64)
operations in the same order, so every result is bit for bit what numpy gave: no fastmath, no
contraction into fused multiply-adds, and no transcendental function (numpy's SIMD ``log1p``,
``exp`` and ``sinh`` need not agree with libm's in the last bit, so they stay numpy's). Reductions
stay numpy's too where their order is not free (min and max vectorize there, not here). The tests
hold each kernel to the numpy form it replaced (tests/mock_hardware/test_physics_kernels.py,
test_electronics_autorange.py).

Compiled once per machine and cached next to this file (``cache=True``); imported by the first
call that needs one (a VMM or read with noise, a drifted read, a reply in ADC codes).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from drivers._kernels import compiled


@compiled
def series_drive_terms(
    v: npt.NDArray[np.float32], c4: np.float32, c2: np.float32, norm: np.float32,
    terms: npt.NDArray[np.float32], squares: npt.NDArray[np.float32],
) -> None:  # fmt: skip
    """Each input's I-V term ``t = v * f(v)`` with the factor's series ``f = (v v c4 + c2) v v + norm``
    into ``terms`` and ``t * t`` into ``squares`` (all float32, C-contiguous, ``v.size`` elements;
    ``terms`` may be ``v``). The caller checks first that the series holds (numpy's max and min are
    SIMD reductions, faster than a compiled loop, which without fastmath may not reorder them)."""
    flat = v.reshape(-1)
    out = terms.reshape(-1)
    sq = squares.reshape(-1)
    if out.size != flat.size or sq.size != flat.size:
        raise ValueError("series_drive_terms: the terms and squares must have the drive's size")
    for i in range(flat.size):
        x = flat[i]
        x2 = x * x
        s = x2 * c4
        s = s + c2
        s = s * x2
        f = s + norm
        t = x * f
        out[i] = t
        sq[i] = t * t


@compiled
def word_sums(words: npt.NDArray[np.uint64]) -> tuple[np.uint64, np.uint64]:
    """The wrapping sum and the exclusive or of ``words`` in one pass (``np.add.reduce`` and
    ``np.bitwise_xor.reduce`` of a uint64 array: both exact whatever the order)."""
    total = np.uint64(0)
    mixed = np.uint64(0)
    for i in range(words.size):
        w = words[i]
        total += w
        mixed ^= w
    return total, mixed


@compiled
def noisy_currents(
    currents: npt.NDArray[np.float32], spread2: npt.NDArray[np.float32], normal: npt.NDArray[np.float32],
    sigma: np.float32, out: npt.NDArray[np.float64],
) -> None:  # fmt: skip
    """``out = currents + sqrt(spread2) * normal.T * sigma`` (``(n, m)``; ``normal`` ``(m, n)``), each
    step in float32 in that order, the sum then widened to float64."""
    n, m = currents.shape
    # no bounds checks in compiled code: refuse mismatched shapes before any write
    if spread2.shape != (n, m) or out.shape != (n, m) or normal.shape != (m, n):
        raise ValueError("noisy_currents: the currents, spread, result and draws' shapes disagree")
    for i in range(n):
        for j in range(m):
            s = np.sqrt(spread2[i, j])
            s = s * normal[j, i]
            s = s * sigma
            out[i, j] = np.float64(currents[i, j] + s)


@compiled
def table_lookup(table: npt.NDArray[np.float32], pieces: npt.NDArray[np.uint16], out: npt.NDArray[np.float32]) -> None:
    """``out[i] = table[pieces[i]]`` (``table`` of 65,536 entries: every index in range)."""
    flat = out.reshape(-1)
    if pieces.size != flat.size or table.size != 65536:
        raise ValueError("table_lookup: a piece per output, and a table of 65,536 entries")
    for i in range(pieces.size):
        flat[i] = table[pieces[i]]


@compiled
def autoranged_codes(
    current: npt.NDArray[np.float64], gains: npt.NDArray[np.float64], limits: npt.NDArray[np.float64],
    rail: float, lsb: float, lowest: float, highest: float,
    codes: npt.NDArray[np.float64], index: npt.NDArray[np.int16],
) -> None:  # fmt: skip
    """Per sample (C-contiguous, flat): the gain index, the count of ``limits`` (the largest ``|I|``
    each gain above the lowest takes) that ``|I|`` is within, into ``index``; and the ADC code
    ``clip(rint(clip(I g, -rail, rail) / lsb), lowest, highest)`` in float64 into ``codes``, with
    NaN passed through both clips as numpy's clip passes it."""
    flat = current.reshape(-1)
    out = codes.reshape(-1)
    picked = index.reshape(-1)
    if out.size != flat.size or picked.size != flat.size or gains.size != limits.size + 1:
        raise ValueError("autoranged_codes: a code and an index per sample, a limit per gain above the lowest")
    # Selects, not branches (currents of a batch land on either side of each limit at random): a
    # comparison false for NaN keeps it, as numpy's clip does.
    for i in range(flat.size):
        x = flat[i]
        magnitude = abs(x)
        k = 0
        for j in range(limits.size):
            k += magnitude <= limits[j]
        picked[i] = k
        v = x * gains[k]
        v = -rail if v < -rail else v
        v = rail if v > rail else v
        v = np.rint(v / lsb)
        v = lowest if v < lowest else v
        v = highest if v > highest else v
        out[i] = v


@compiled
def drift_log_time(
    t: float, t_programmed: npt.NDArray[np.float64], inv_t0: float, out: npt.NDArray[np.float64]
) -> None:
    """``out = max(t - t_programmed, 0) * inv_t0`` (flat, C-contiguous), the argument of the drift
    law's ``log1p``; NaN passes through the max as numpy's maximum passes it."""
    tp = t_programmed.reshape(-1)
    flat = out.reshape(-1)
    if tp.size != flat.size:
        raise ValueError("drift_log_time: a time per output")
    for i in range(flat.size):
        x = t - tp[i]
        x = 0.0 if x < 0.0 else x
        flat[i] = x * inv_t0


@compiled
def drift_apply(
    logs: npt.NDArray[np.float64], rate: npt.NDArray[np.float64], g_programmed: npt.NDArray[np.float64],
    floor: float,
) -> None:  # fmt: skip
    """In place in ``logs`` (``ln(1 + dt/t0)``): ``max(logs * rate + g_programmed, floor)``, the
    product rounded before the sum (no fused multiply-add); NaN passes through the max."""
    flat = logs.reshape(-1)
    r = rate.reshape(-1)
    g = g_programmed.reshape(-1)
    if r.size != flat.size or g.size != flat.size:
        raise ValueError("drift_apply: a rate and a conductance per cell")
    for i in range(flat.size):
        x = flat[i] * r[i]
        x = x + g[i]
        flat[i] = floor if x < floor else x
