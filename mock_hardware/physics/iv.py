"""The cell's current-voltage curve: ohmic at small voltage, superlinear above.

``I(v) = G * v * factor(v)`` with ``factor(v) = s(a v) / s(a v_ref)`` and ``s(x) = sinh(x) / x``.
``G`` is the chord conductance at the reference read voltage ``v_ref`` (0.2 V), so a read at
``v_ref`` reports exactly ``G``; at 0.5 V and ``a = 1.5 /V`` the chord conductance is about 8 %
higher. The sinh form is the usual compact model of tunnelling through the filament's gap.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def _sinhc(x: FloatArray) -> FloatArray:
    """``sinh(x) / x`` with its limit 1 at 0."""
    out = np.ones_like(x)
    np.divide(np.sinh(x), x, out=out, where=x != 0)
    return out


class IVCurve:
    """``I = G v factor(v)``; ``nonlinearity`` is ``a`` in 1/V (0: ohmic)."""

    def __init__(self, nonlinearity: float, v_reference: float) -> None:
        self.nonlinearity = nonlinearity
        self.is_ohmic = nonlinearity == 0.0
        self._norm = 1.0 / float(_sinhc(np.array([nonlinearity * v_reference]))[0])
        self._factors: dict[float, float] = {}  # factor_of's results: drives repeat a few DAC levels

    def factor(self, v: FloatArray) -> FloatArray:
        """Chord conductance at ``v`` relative to the one at the reference voltage."""
        if self.is_ohmic:
            return np.ones_like(v, dtype=np.float64)
        return np.asarray(_sinhc(self.nonlinearity * np.asarray(v, dtype=np.float64)) * self._norm)

    def factor_of(self, v: float) -> float:
        """:meth:`factor` of one voltage, remembered (the same float as ``factor`` gives: it computes it)."""
        factor = self._factors.get(v)
        if factor is None:
            if len(self._factors) >= 4096:
                self._factors.clear()
            factor = self._factors[v] = float(self.factor(np.array([v]))[0])
        return factor

    def factor32_into(
        self, v: npt.NDArray[np.float32], out: npt.NDArray[np.float32], scratch: npt.NDArray[np.float32]
    ) -> None:
        """:meth:`factor` in float32 written into ``out`` (``scratch``: same shape), for the VMM hot path.

        float32 is plenty: the factor differs from 1 by a few percent at most. No temporaries, so
        a batch costs no fresh memory (page faults cost more than the arithmetic here).
        """
        a = np.float32(self.nonlinearity)
        # sinh(x)/x = 1 + x^2/6 + x^4/120 + ...; at |x| <= 0.75 (|v| <= 0.5 V at a = 1.5 /V) the
        # next term is below 4e-5 relative, far under read noise, and the series is 3x cheaper.
        if max(float(v.max()), -float(v.min())) * float(a) <= 0.75:
            norm = np.float32(self._norm)
            np.multiply(v, v, out=out)
            np.multiply(out, norm * a**4 / np.float32(120.0), out=scratch)
            scratch += norm * a * a / np.float32(6.0)
            scratch *= out
            np.add(scratch, norm, out=out)
            return
        np.multiply(v, a, out=out)
        # Even function: on |x| + 1e-30 it needs no special case at 0 (the shift is far below
        # float32 resolution of any x that matters).
        np.abs(out, out=out)
        np.add(out, np.float32(1e-30), out=out)
        np.sinh(out, out=scratch)
        np.divide(scratch, out, out=out)
        np.multiply(out, np.float32(self._norm), out=out)

    def drive_terms32_into(
        self, v: npt.NDArray[np.float32], terms: npt.NDArray[np.float32], squares: npt.NDArray[np.float32],
        scratch: npt.NDArray[np.float32],
    ) -> None:  # fmt: skip
        """A VMM's current terms ``t = v * factor(v)`` into ``terms`` and ``t * t`` into ``squares``, in
        float32 (all C-contiguous, ``v``'s shape; ``terms`` may be ``v``, ``scratch`` and ``squares`` may
        not): bit for bit ``factor32_into`` times ``v``, then squared, in one compiled pass over the
        batch where the series holds (after numpy's max and min, which decide that) instead of seven
        numpy passes."""
        if self.is_ohmic:
            if terms is not v:
                np.copyto(terms, v)
            np.square(terms, out=squares)
            return
        a = np.float32(self.nonlinearity)
        norm = np.float32(self._norm)
        if v.flags.c_contiguous and terms.flags.c_contiguous and squares.flags.c_contiguous:
            from mock_hardware import _physics_kernels  # numba: loaded by the first VMM with read noise

            # The series' constants as factor32_into makes them (float32 steps, same order).
            c4 = norm * a**4 / np.float32(120.0)
            c2 = norm * a * a / np.float32(6.0)
            if max(float(v.max()), -float(v.min())) * float(a) <= 0.75:  # factor32_into's test
                _physics_kernels.series_drive_terms(v, c4, c2, norm, terms, squares)
                return
        self.factor32_into(v, out=scratch, scratch=squares)
        np.multiply(v, scratch, out=terms)
        np.square(terms, out=squares)

    def differential_factor(self, v: FloatArray) -> FloatArray:
        """``dI/dv / G``: the small-signal conductance relative to ``G``."""
        if self.is_ohmic:
            return np.ones_like(v, dtype=np.float64)
        return np.asarray(np.cosh(self.nonlinearity * np.asarray(v, dtype=np.float64)) * self._norm)
