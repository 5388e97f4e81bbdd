"""Retention: conductance drift after programming, logarithmic in time (the HfOx fit).

A cell programmed to ``G0`` at time ``t_p`` reads, at time ``t``,
``G(t) = G0 + nu * ln(1 + (t - t_p) / t0)``. Each programming event draws the cell's own
``nu ~ N(drift_mean, drift_spread)``, so across cells the mean shift is ``drift_mean * ln(...)``
(about -0.09 uS per e-fold of time) and the spread grows in proportion, to about 1 uS after a
day. Virgin and stuck cells do not drift.

``drift_exponent`` (``nu_m``, default 0) adds a drift that every cell shares and that scales it, as
in phase-change memory: ``G(t) = G0 (1 + (t - t_p) / t0)^-nu_m + nu ln(1 + (t - t_p) / t0)``. Its
common multiplicative part is what reference cells can measure and take out.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from mock_hardware.device_params import DeviceParameters
from mock_hardware.physics.switching import G_FLOOR_ABSOLUTE

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


class DriftState:
    """Each cell's conductance as last programmed, when, and its drift rate since."""

    def __init__(self, g_programmed: FloatArray, drifts: BoolArray, params: DeviceParameters, rng: np.random.Generator):
        self._params = params
        self._rng = rng
        self.g_programmed = g_programmed.copy()
        self.t_programmed = np.zeros_like(g_programmed)
        self.rate = np.where(drifts, self._draw_rates(g_programmed.shape), 0.0)
        self.enabled = bool(params.drift_mean or params.drift_spread or params.drift_exponent)

    def _draw_rates(self, shape: tuple[int, ...]) -> FloatArray:
        p = self._params
        return np.asarray(p.drift_mean + p.drift_spread * self._rng.standard_normal(shape))

    def conductance_at(self, t: float, out: FloatArray | None = None) -> FloatArray:
        """Every cell's conductance at time ``t`` (s on the array's clock), into ``out`` if given."""
        if out is None:
            out = np.empty_like(self.g_programmed)
        if not self.enabled:
            np.copyto(out, self.g_programmed)
            return out
        # In place: this runs once per command, and fresh arrays cost page faults.
        if not self._params.drift_exponent and out.flags.c_contiguous and out.shape == self.t_programmed.shape:
            from mock_hardware import _physics_kernels  # numba: loaded by the first drifted read

            # _drifted's steps in two compiled passes around numpy's log1p (whose SIMD form stays)
            _physics_kernels.drift_log_time(t, self.t_programmed, 1.0 / self._params.drift_time_constant, out)
            np.log1p(out, out=out)
            _physics_kernels.drift_apply(out, self.rate, self.g_programmed, G_FLOOR_ABSOLUTE)
            return out
        np.subtract(t, self.t_programmed, out=out)
        return self._drifted(out, self.g_programmed, self.rate)

    def conductance_of(self, t: float, cells: npt.NDArray[np.intp]) -> FloatArray:
        """The conductance at time ``t`` of the cells at flat indices ``cells``: per cell the numbers
        :meth:`conductance_at` gives it."""
        g_programmed = np.take(self.g_programmed, cells)
        if not self.enabled:
            return g_programmed
        since = np.subtract(t, np.take(self.t_programmed, cells))
        return self._drifted(since, g_programmed, np.take(self.rate, cells))

    def _drifted(self, since: FloatArray, g_programmed: FloatArray, rate: FloatArray) -> FloatArray:
        """The drift law, in place in ``since`` (each cell's time since programming, s): the conductance
        now of cells programmed to ``g_programmed`` drifting at ``rate``."""
        out = since
        np.maximum(out, 0.0, out=out)
        out *= 1.0 / self._params.drift_time_constant
        np.log1p(out, out=out)
        if self._params.drift_exponent:
            scale = np.exp(-self._params.drift_exponent * out)  # (1 + dt/t0)^-nu_m, from ln(1 + dt/t0)
            out *= rate
            out += g_programmed * scale
        else:
            out *= rate
            out += g_programmed
        np.maximum(out, G_FLOOR_ABSOLUTE, out=out)
        return out

    def reprogram(
        self, region_shape: tuple[int, int], in_region: npt.NDArray[np.intp], cells: npt.NDArray[np.intp],
        g_new: FloatArray, t_new: FloatArray,
    ) -> None:  # fmt: skip
        """Restart the drift of the cells at flat indices ``cells`` (of the whole array; ``in_region``:
        the same cells' flat indices within the pulsed region of ``region_shape``) from ``g_new`` at
        ``t_new``, with fresh rates."""
        np.put(self.g_programmed, cells, g_new)
        np.put(self.t_programmed, cells, t_new)
        if self.enabled:
            # Drawn for the whole region (the stream's use does not depend on which cells changed).
            np.put(self.rate, cells, self._draw_rates(region_shape).reshape(-1)[in_region])
