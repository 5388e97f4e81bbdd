"""The 1T1R array's physics, behind the small interface the firmware uses.

Interface (all the firmware may call):

- ``rows``, ``cols``
- ``column_currents(v_rows, v_cols, gate_on)``: DC currents into every column's TIA
- ``vmm(v_rows, row0, col0, ncols)``: column currents for a batch of row-voltage vectors
- ``read_conductance(row0, col0, nrows, ncols, v_read)``: a map of one-at-a-time reads
- ``apply_pulses(kind, row0, col0, amplitude, v_gate, width, mask)``: program cells
- ``conductance``: the true state (for tests and debugging; a chip has no such thing)
"""

from __future__ import annotations

from enum import Enum

import numpy as np
import numpy.typing as npt

from mock_hardware.device_params import DeviceParameters

FloatArray = npt.NDArray[np.float64]


class PulseKind(str, Enum):
    SET = "SET"
    RESET = "RES"
    FORM = "FORM"


class CrossbarArray:
    """A seeded, vectorized model of an array of 1T1R cells."""

    def __init__(self, params: DeviceParameters, seed: int = 0) -> None:
        self.params = params
        self.rows, self.cols = params.rows, params.cols
        self._rng = np.random.default_rng(seed)
        shape = (self.rows, self.cols)
        p = params
        self.set_slope = p.set_slope * (1 + p.set_slope_spread * self._rng.standard_normal(shape))
        self.set_intercept = np.full(shape, p.set_intercept)
        g0 = p.g_initial_mean + p.g_initial_spread * self._rng.standard_normal(shape)
        self._g = np.clip(g0, p.g_min, p.g_max)
        draw = self._rng.random(shape)
        self.stuck_low = draw < p.stuck_low_fraction
        self.stuck_high = (draw >= p.stuck_low_fraction) & (draw < p.stuck_low_fraction + p.stuck_high_fraction)
        self._g[self.stuck_low] = p.g_stuck_low
        self._g[self.stuck_high] = p.g_stuck_high

    @property
    def conductance(self) -> FloatArray:
        return self._g.copy()

    def _noisy(self, g: FloatArray) -> FloatArray:
        sigma = self.params.read_noise
        if sigma == 0:
            return g.copy()
        return g * (1 + sigma * self._rng.standard_normal(g.shape))

    def column_currents(self, v_rows: FloatArray, v_cols: FloatArray, gate_on: npt.NDArray[np.bool_]) -> FloatArray:
        """Current into each column for DC line voltages; rows with the gate off carry nothing."""
        g = self._noisy(self._g) * gate_on[:, None]
        drop = v_rows[:, None] - v_cols[None, :]
        return np.asarray((g * drop).sum(axis=0))

    def vmm(self, v_rows: FloatArray, row0: int, col0: int, ncols: int) -> FloatArray:
        """Column currents ``(n, ncols)`` for row-voltage vectors ``(n, nrows)`` on a region.

        Read noise is per cell and per vector; its sum over a column is Gaussian with variance
        ``sum_r v_r^2 G_rc^2 sigma^2``, drawn directly so a batch costs two matrix products.
        """
        g = self._g[row0 : row0 + v_rows.shape[1], col0 : col0 + ncols]
        ideal = v_rows @ g
        sigma = self.params.read_noise
        if sigma == 0:
            return ideal
        spread = np.sqrt((v_rows**2) @ (g**2)) * sigma
        return ideal + spread * self._rng.standard_normal(ideal.shape)

    def read_conductance(self, row0: int, col0: int, nrows: int, ncols: int, v_read: float) -> FloatArray:
        """Conductances of a region, each cell read alone at ``v_read``."""
        return self._noisy(self._g[row0 : row0 + nrows, col0 : col0 + ncols])

    def apply_pulses(
        self,
        kind: PulseKind,
        row0: int,
        col0: int,
        amplitude: FloatArray,
        v_gate: FloatArray,
        width: FloatArray,
        mask: npt.NDArray[np.bool_],
    ) -> int:
        """Apply one pulse to each masked cell of the region; return the number applied."""
        p = self.params
        region = (slice(row0, row0 + mask.shape[0]), slice(col0, col0 + mask.shape[1]))
        g = self._g[region]
        stuck = self.stuck_low[region] | self.stuck_high[region]
        noise = p.write_noise * self._rng.standard_normal(g.shape)
        if kind in (PulseKind.SET, PulseKind.FORM):
            active = mask & ~stuck & (amplitude >= p.v_set_threshold)
            target = self.set_slope[region] * v_gate + self.set_intercept[region] + noise
            new = np.maximum(target, g)
        else:
            active = mask & ~stuck & (amplitude >= p.v_reset_threshold)
            depth = 1 - np.exp(-np.maximum(amplitude - p.v_reset_threshold, 0) / p.reset_voltage_scale)
            new = g - (g - p.g_reset) * depth + noise
        self._g[region] = np.where(active, np.clip(new, p.g_min, p.g_max), g)
        return int(mask.sum())
