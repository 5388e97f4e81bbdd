"""The 1T1R array's physics, behind the small interface the firmware uses.

Interface (all the firmware may call):

- ``rows``, ``cols``, ``params``
- ``column_currents(v_rows, v_cols, gate_on)``: DC currents into every column's TIA
- ``vmm(v_rows, row0, col0, ncols)``: column currents for a batch of row-voltage vectors
- ``read_conductance(row0, col0, nrows, ncols, v_read)``: a map of one-at-a-time reads
- ``apply_pulses(kind, row0, col0, amplitude, v_gate, width, mask)``: program cells
- ``advance_time(seconds)``: account for per-command latency; ``wait(seconds)``: idle time
- ``time``: seconds elapsed on the array's clock
- ``conductance``: the true state (for tests and debugging; a chip has no such thing)

The physics lives in ``mock_hardware.physics``; docs/emulator-physics.md describes it. Board
electronics (DAC and ADC quantization, TIA gain and saturation, voltage limits) belong to the
firmware, not here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from mock_hardware.device_params import DeviceParameters
from mock_hardware.physics.cells import CellPopulation
from mock_hardware.physics.clock import Clock
from mock_hardware.physics.iv import IVCurve
from mock_hardware.physics.line_resistance import TransferSolver, series_read, series_segments, solve_dc
from mock_hardware.physics.noise import MAX_ABS_DRAW, fast_normal, fast_normal_into, fast_normal_rows_into
from mock_hardware.physics.retention import DriftState
from mock_hardware.physics.switching import apply_reset, apply_set
from mock_hardware.physics.threads import one_blas_thread

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# Line-network solutions kept per row band of VMM regions (a training run uses a few bands).
# Scratch space kept for this many VMM batch shapes (layers of a network use a few).
_WORKSPACE_CACHE_SIZE = 4
# What a jump of the noise stream to another column costs, in draws (about 20 us against 4-12 ns a
# draw, measured under load; rounded up so the whole region is drawn when in doubt).
_DRAWS_PER_JUMP = 5000


def _fingerprint(array: npt.NDArray[np.generic]) -> bytes:
    """Bytes that tell reads apart, at a fraction of hashing the whole input (a VMM batch of
    convolution patches is megabytes): the shape, both ends, and two whole-array reductions."""
    data = np.ascontiguousarray(array)
    raw = data.view(np.uint8).ravel()
    if raw.size <= 4096 or raw.size % 8:
        return bytes(str(data.shape), "ascii") + raw.tobytes()
    from mock_hardware import _physics_kernels  # numba: loaded by the first large read

    # np.add.reduce and np.bitwise_xor.reduce of the words, in one pass
    sums = np.array(_physics_kernels.word_sums(raw.view(np.uint64)), dtype=np.uint64)
    return bytes(str(data.shape), "ascii") + raw[:1024].tobytes() + raw[-1024:].tobytes() + sums.tobytes()


class PulseKind(StrEnum):
    SET = "SET"
    RESET = "RES"
    FORM = "FORM"


@dataclass
class _LineSolution:
    """``G_eff`` of one row band, the conductances it was solved for, and the series resistance
    each cell effectively saw (``1 / G_eff - 1 / G``)."""

    g_eff: FloatArray
    g_snapshot: FloatArray
    r_cell: FloatArray
    columns: BoolArray  # where g_eff and r_cell were solved (NaN elsewhere)


class _VmmWorkspace:
    """Scratch arrays of one VMM batch shape, reused: fresh large arrays cost page faults."""

    def __init__(self, nvec: int, nrows: int, ncols: int, region_cols: int) -> None:
        self.inputs32 = np.empty((nvec, nrows), dtype=np.float32)
        self.factor32 = np.empty((nvec, nrows), dtype=np.float32)
        self.squares32 = np.empty((nvec, nrows), dtype=np.float32)
        self.currents32 = np.empty((nvec, ncols), dtype=np.float32)
        self.spread = np.empty((nvec, ncols), dtype=np.float32)
        self.normal = np.empty((region_cols, nvec), dtype=np.float32)  # up to every column of the region


class CrossbarArray:
    """A seeded, vectorized model of an array of 1T1R cells."""

    def __init__(self, params: DeviceParameters, seed: int = 0, noise_seed: int | None = None) -> None:
        """``seed`` draws the chip (its cells and fresh state) and its noise; ``noise_seed``, if
        given, draws the noise instead (write, read and drift): the same chip, another noise future,
        as a physical chip has in each run (``noise_seed == seed`` is the chip as ``seed`` alone)."""
        self.params = params
        self.rows, self.cols = params.rows, params.cols
        shape = (self.rows, self.cols)
        # Independent streams: what a technician reads never changes what a pulse does, and
        # the device population does not depend on how the array is later used.
        cell_seed, state_seed, drift_seed, write_seed, read_seed = np.random.SeedSequence(seed).spawn(5)
        if noise_seed is not None:
            drift_seed, write_seed, read_seed = np.random.SeedSequence(noise_seed).spawn(5)[2:]
        self._read_entropy = read_seed.generate_state(4)
        self.cells = CellPopulation.draw(params, cell_seed)
        state_rng = np.random.default_rng(state_seed)
        stuck = self.cells.stuck
        if params.start_formed:
            g0 = params.g_initial_mean + params.g_initial_spread * state_rng.standard_normal(shape)
            g0 = np.clip(g0, self.cells.g_min, self.cells.g_max)
            self._formed = ~self.cells.unformed
            if self.cells.unformed.any():  # drawn last: without unformed cells the stream is as before
                g_virgin = params.g_virgin * np.exp(params.d2d_spread * state_rng.standard_normal(shape))
                g0 = np.where(self.cells.unformed, g_virgin, g0)
        else:
            g0 = params.g_virgin * np.exp(params.d2d_spread * state_rng.standard_normal(shape))
            self._formed = stuck.copy()
        g0 = np.where(stuck, self.cells.g_stuck, g0)
        self._clock = Clock(params.clock)
        self._drift = DriftState(g0, self._formed & ~stuck, params, np.random.default_rng(drift_seed))
        self._write_rng = np.random.default_rng(write_seed)
        # Read noise comes from a stream per read (see _read_rng): {(version, read digest): repeats}.
        self._read_repeats: dict[tuple[int, bytes], int] = {}
        self._iv = IVCurve(params.iv_nonlinearity, params.v_iv_reference)
        # Bumped whenever a pulse changes a cell: keys every cache of derived state.
        self._version = 0
        self._g_now_key: tuple[float, int] | None = None
        self._g_now = g0.copy()
        self._line_solution: _LineSolution | None = None
        self._transfer_solver: TransferSolver | None = None
        self._line_columns = np.zeros(self.cols, dtype=bool)  # columns VMMs have measured
        self._vmm_workspaces: dict[tuple[int, int, int, int], _VmmWorkspace] = {}
        self._map_buffer: npt.NDArray[np.float32] | None = None
        self._dc_cache: tuple[bytes, int, float, FloatArray, FloatArray] | None = None

    # --- state ---------------------------------------------------------------------------------

    @property
    def conductance(self) -> FloatArray:
        """Every cell's true conductance now (S, ``(rows, cols)``), drift included."""
        return self._conductance_now().copy()

    @property
    def formed(self) -> BoolArray:
        """Which cells are formed."""
        return self._formed.copy()

    @property
    def stuck_low(self) -> BoolArray:
        return self.cells.stuck_low.copy()

    @property
    def stuck_high(self) -> BoolArray:
        return self.cells.stuck_high.copy()

    @property
    def time(self) -> float:
        """Seconds elapsed on the array's clock (simulated or wall, per ``params.clock``)."""
        return self._clock.now

    def advance_time(self, seconds: float) -> None:
        """Account for ``seconds`` of per-command latency (a no-op on the wall clock)."""
        self._clock.advance(seconds)

    def wait(self, seconds: float) -> None:
        """Let ``seconds`` pass idle: advances the simulated clock, or sleeps on the wall clock."""
        self._clock.wait(seconds)

    def _conductance_now(self) -> FloatArray:
        """The drifted state now; an internal buffer, refreshed in place (callers copy if they keep it)."""
        key = (self._clock.now, self._version)
        if key != self._g_now_key:
            self._drift.conductance_at(key[0], out=self._g_now)
            self._g_now_key = key
        return self._g_now

    # --- reads ---------------------------------------------------------------------------------

    def column_currents(self, v_rows: FloatArray, v_cols: FloatArray, gate_on: BoolArray) -> FloatArray:
        """Current into each column for DC line voltages; rows with the gate off carry nothing.

        With line resistance every column line is held at its ``v_cols`` level at its TIA end.
        """
        v_rows = np.asarray(v_rows, dtype=np.float64)
        v_cols = np.asarray(v_cols, dtype=np.float64)
        gate_on = np.asarray(gate_on, dtype=bool)
        g = self._conductance_now()
        if self.params.line_resistance > 0:
            columns, cells = self._solve_dc_cached(g, v_rows, v_cols, gate_on)
        else:
            drop = v_rows[:, None] - v_cols[None, :]
            cells = g * gate_on[:, None] * drop * self._iv.factor(drop)
            columns = cells.sum(axis=0)
        sigma = self.params.read_noise
        if sigma:
            # Independent per-cell read noise summed over the column: Gaussian with the summed variance.
            spread = sigma * np.sqrt((cells**2).sum(axis=0))
            rng = self._read_rng(b"DC", v_rows, v_cols, gate_on)
            columns = columns + spread * fast_normal(rng, columns.shape)
        self._clock.advance(self.params.read_duration)
        return np.asarray(columns)

    def _solve_dc_cached(
        self, g: FloatArray, v_rows: FloatArray, v_cols: FloatArray, gate_on: BoolArray
    ) -> tuple[FloatArray, FloatArray]:
        # A technician samples one column after another with the same DC levels: solve once.
        key = v_rows.tobytes() + v_cols.tobytes() + gate_on.tobytes()
        now = self._clock.now
        if self._dc_cache is not None:
            cached_key, version, t, columns, cells = self._dc_cache
            if cached_key == key and version == self._version and (t == now or not self._drift.enabled):
                return columns, cells
        columns, cells = solve_dc(g, gate_on, v_rows, v_cols, self.params.line_resistance, self._iv)
        self._dc_cache = (key, self._version, now, columns, cells)
        return columns, cells

    def vmm(
        self, v_rows: npt.NDArray[np.floating], row0: int, col0: int, ncols: int,
        rows: npt.NDArray[np.intp] | None = None, columns: npt.NDArray[np.intp] | None = None,
    ) -> FloatArray:  # fmt: skip
        """Column currents ``(n, ncols)`` for row-voltage vectors ``(n, nrows)`` on a region.

        All rows of the region are driven at once with their gates on; every column is at virtual
        ground. Read noise is per cell and per vector; its sum over a column is Gaussian with
        variance ``sum_r (v_r G_rc)^2 sigma^2``, drawn directly so a batch costs two matrix
        products. With read noise on, both run in float32, the wire format's precision: their
        rounding (about 1e-7 of the largest term) is five orders below the noise. Without read
        noise the product is float64.

        ``rows``: the rows of the region (0-based within it) that ``v_rows``'s columns drive, the
        region's other rows at 0 V (they add no current, so they cost nothing); ``columns``: the
        columns of the region to measure, the result then ``(n, len(columns))``. Either way the
        currents are those of the whole region driven so.
        """
        with one_blas_thread():
            return self._vmm(v_rows, row0, col0, ncols, rows, columns)

    def vmm_bound(
        self, v_rows: npt.NDArray[np.floating], row0: int, col0: int, ncols: int,
        rows: npt.NDArray[np.intp] | None, columns: npt.NDArray[np.intp],
    ) -> float:  # fmt: skip
        """An upper bound on the magnitude of any current :meth:`vmm` could return in ``columns`` for
        these inputs, read noise included, without measuring them (no clock, no noise drawn, no line
        solve): the board's TIA protection watches the columns a VMM does not send back too.

        The VMM computes ``I_c = sum_r v'_r T_rc`` (``v' = v f(v)``, the I-V factor on the inputs) on
        a passive network whose drivers sit between ``min(v', 0)`` and ``max(v', 0)``, so every node
        does too and each cell of column ``c`` (all rows: sneak paths run through the rows at 0 V)
        passes at most that span times its ``G``: ``|I_c| <= span * sum_r G_rc``; likewise
        ``sum_r T_rc <= sum_r G_rc`` bounds the read noise's spread, ``sigma * max|v'| * sum_r T_rc``.
        ``f`` is even and grows with ``|v|``. No line solve is needed for the columns not measured.
        """
        if not len(columns):
            return 0.0
        v = np.asarray(v_rows)
        if not v.size:
            return 0.0
        highest, lowest = max(float(v.max()), 0.0), min(float(v.min()), 0.0)
        v_max = max(highest, -lowest)
        factor = self._iv.factor_of(v_max)
        column_sums = self._conductance_now()[:, col0 + np.asarray(columns, dtype=np.intp)].sum(axis=0)
        worst_column = float(column_sums.max())
        swing = (highest - lowest) + self.params.read_noise * MAX_ABS_DRAW * v_max
        # 1e-5: float32 rounding of the products, far above it
        return swing * factor * worst_column * (1.0 + 1e-5)

    def _region_transfer(
        self, row0: int, col0: int, ncols: int, nrows: int, rows: npt.NDArray[np.intp] | None,
        columns: npt.NDArray[np.intp] | None,
    ) -> FloatArray:  # fmt: skip
        """``T`` of the driven rows and measured columns (``(driven, measured)``; all when ``None``).
        With wires, only the measured columns are solved (the line solve's back substitution costs
        what it measures)."""
        measured = np.arange(col0, col0 + ncols) if columns is None else col0 + np.asarray(columns, dtype=np.intp)
        span = nrows if rows is None else int(np.max(rows, initial=-1)) + 1
        whole = self._transfer_matrix(row0, span, measured)
        picked_rows = whole[:nrows] if rows is None else whole[np.asarray(rows, dtype=np.intp)]
        if columns is None:
            return picked_rows[:, col0 : col0 + ncols]
        return picked_rows[:, measured]

    def _vmm(
        self, v_rows: npt.NDArray[np.floating], row0: int, col0: int, ncols: int,
        rows: npt.NDArray[np.intp] | None, columns: npt.NDArray[np.intp] | None,
    ) -> FloatArray:  # fmt: skip
        v = np.asarray(v_rows)
        nvec, ndriven = v.shape
        transfer = self._region_transfer(row0, col0, ncols, ndriven, rows, columns)
        nout = transfer.shape[1]
        sigma = self.params.read_noise
        nonlinear = not self._iv.is_ohmic
        self._clock.advance(nvec * self.params.read_duration)
        if not sigma:
            v = np.asarray(v, dtype=np.float64)
            if nonlinear:
                v = v * self._iv.factor(v)
            return np.asarray(v @ transfer)
        from mock_hardware import _physics_kernels  # numba: loaded by the first VMM with read noise

        work = self._vmm_workspace(nvec, ndriven, nout, ncols)
        inputs = work.inputs32
        # The drive in float32: the caller's array when it is so already (the firmware's is), read
        # and not written; else a cast copy.
        drive = v if v.dtype == np.float32 and v.flags.c_contiguous else None
        if drive is None:
            np.copyto(inputs, v, casting="same_kind")
            drive = inputs
        # The read's key is what is driven and the region; noise is drawn for every column of the
        # region, so a column reads the same whichever other columns are measured with it.
        driven = np.arange(ndriven) if rows is None else np.asarray(rows, dtype=np.int64)
        rng = self._read_rng(b"VMM", drive, driven, np.array([row0, col0, ncols]))
        # With the columns at 0 V a cell's voltage is its row's, so the I-V curve is a per-element
        # factor on the inputs; the squared terms weigh the read noise.
        self._iv.drive_terms32_into(drive, terms=inputs, squares=work.squares32, scratch=work.factor32)
        transfer32 = transfer.astype(np.float32)
        np.matmul(inputs, transfer32, out=work.currents32)
        np.matmul(work.squares32, np.square(transfer32, out=transfer32), out=work.spread)
        measured = None if columns is None else np.asarray(columns, dtype=np.intp)
        if measured is not None and self._draw_measured_only(measured, ncols, nvec):
            # the measured columns' draws only, the same as among the whole region's
            normal = work.normal[:nout]
            fast_normal_rows_into(rng, normal, measured)
        else:
            fast_normal_into(rng, work.normal)
            normal = work.normal if measured is None else work.normal[measured]
        currents = np.empty(work.currents32.shape)
        # sqrt of the spread, times the draws and sigma, plus the currents, in float32; then float64
        _physics_kernels.noisy_currents(work.currents32, work.spread, normal, np.float32(sigma), currents)
        return currents

    @staticmethod
    def _draw_measured_only(measured: npt.NDArray[np.intp], region_cols: int, nvec: int) -> bool:
        """Whether drawing the read noise of the measured columns alone (a jump of the stream per run
        of adjacent columns) beats drawing every column of the region. Either way a column gets the
        same draws."""
        steps = np.diff(measured)
        if np.any(steps <= 0):
            return False  # not ascending: the whole region's draws, then picked
        runs = 1 + int(np.count_nonzero(steps != 1))
        return runs * _DRAWS_PER_JUMP < (region_cols - len(measured)) * nvec

    def _read_rng(self, kind: bytes, *inputs: npt.NDArray[np.generic]) -> np.random.Generator:
        """The noise stream of one read: keyed by the array's programming state, what is read (the
        command and its inputs) and how often that same read was already made in this state.

        Repeated reads get fresh noise, but a read never shifts the noise of a different read: an
        evaluation between two training updates leaves the training's reads (and so its
        trajectory) exactly as they would have been without it.
        """
        digest = hashlib.blake2b(kind, digest_size=16)
        for array in inputs:
            digest.update(_fingerprint(array))
        if self._read_repeats and next(iter(self._read_repeats))[0] != self._version:
            self._read_repeats.clear()  # keys of an older state can never repeat
        key = (self._version, digest.digest())
        repeat = self._read_repeats.get(key, 0)
        self._read_repeats[key] = repeat + 1
        words = np.frombuffer(key[1], dtype=np.uint32)
        spawn_key = (self._version, repeat, *(int(w) for w in words))
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence(self._read_entropy, spawn_key=spawn_key)))

    def _vmm_workspace(self, nvec: int, nrows: int, ncols: int, region_cols: int) -> _VmmWorkspace:
        key = (nvec, nrows, ncols, region_cols)
        work = self._vmm_workspaces.get(key)
        if work is None:
            if len(self._vmm_workspaces) >= _WORKSPACE_CACHE_SIZE:
                self._vmm_workspaces.clear()
            work = self._vmm_workspaces[key] = _VmmWorkspace(nvec, nrows, ncols, region_cols)
        return work

    def _transfer_matrix(self, row0: int, nrows: int, columns: npt.NDArray[np.intp]) -> FloatArray:
        """``T`` with ``I = V_eff @ T`` for the rows ``row0 .. row0+nrows-1`` driven together, valid
        (with wires) in ``columns`` and the columns earlier VMMs measured.

        Rows outside the region are held at 0 V with their gates on, so one solve of the whole
        array serves every region: a VMM on any rows is the matching rows of one ``G_eff``.
        """
        if self.params.line_resistance == 0:
            return self._conductance_now()[row0 : row0 + nrows, :]
        self._line_columns[columns] = True
        return self._whole_array_transfer()[row0 : row0 + nrows, :]

    def _whole_array_transfer(self) -> FloatArray:
        """``G_eff`` of the whole array, valid in the columns VMMs have measured so far (NaN elsewhere):
        a network pays for the columns it reads only."""
        g = self._conductance_now()
        r_segment = self.params.line_resistance
        solution = self._line_solution
        if solution is not None and np.array_equal(solution.columns, self._line_columns):
            change = np.abs(g - solution.g_snapshot)
            if not change.any():
                return solution.g_eff
            # A cell whose conductance moves by dG shifts the line voltages of its row and column
            # by about dG * r * (segments) of the drive: the error of ignoring that, summed over
            # the worst row and the worst column, bounds what a per-cell update misses.
            coupling = r_segment * max(
                self.rows * float(change.sum(axis=0).max()), self.cols * float(change.sum(axis=1).max())
            )
            if coupling <= self.params.line_refactor_tolerance:
                # Each cell keeps the series resistance the last solve gave it (exact for that
                # cell's own path, first order in its neighbours' changes).
                return np.asarray(g / (1.0 + g * solution.r_cell))
        if self._transfer_solver is None:
            self._transfer_solver = TransferSolver(self.rows, self.cols, r_segment, end_segments=1)
        # An exact solve of the whole array's network: the block sweep, or nested dissection on wide
        # arrays (physics/line_resistance.py, physics/wire_dissection.py).
        columns = self._line_columns.copy()
        g_eff = self._transfer_solver.transfer(g, np.flatnonzero(columns))
        # The series resistance each cell effectively sees; G_eff >= G cannot happen on a passive
        # network with driven rows, but keep it well defined.
        r_cell = np.maximum(1.0 / g_eff - 1.0 / g, 0.0)
        self._line_solution = _LineSolution(g_eff, g.copy(), r_cell, columns)
        return g_eff

    def read_conductance(self, row0: int, col0: int, nrows: int, ncols: int, v_read: float) -> FloatArray:
        """Conductances ``I / v_read`` of a region, each cell read alone at ``v_read``.

        A cell read alone (only its row's gate on, other columns floating) sees one series path
        through the lines: ``col + 1`` row segments and ``rows - row`` column segments.
        """
        g = self._conductance_now()[row0 : row0 + nrows, col0 : col0 + ncols]
        r_segment = self.params.line_resistance
        if r_segment > 0:
            rows = np.arange(row0, row0 + nrows)[:, None]
            cols = np.arange(col0, col0 + ncols)[None, :]
            r_series = r_segment * series_segments(rows, cols, self.rows)
            g_read = series_read(g, r_series, v_read, self._iv) / v_read
        else:
            g_read = g * float(self._iv.factor(np.array(v_read)))
        sigma = self.params.read_noise
        if sigma:
            # Scratch reused between maps: on large arrays fresh temporaries cost more (page
            # faults) than the arithmetic.
            relative = self._map_scratch(nrows, ncols)
            rng = self._read_rng(b"MAP", np.array([row0, col0, nrows, ncols]), np.array([v_read]))
            fast_normal_into(rng, relative)
            relative *= np.float32(sigma)
            relative += np.float32(1.0)
            g_read *= relative
        self._clock.advance(nrows * ncols * self.params.read_duration)
        return np.asarray(g_read, dtype=np.float64)

    def _map_scratch(self, nrows: int, ncols: int) -> npt.NDArray[np.float32]:
        """Noise scratch for one map shape (the last one asked for)."""
        if self._map_buffer is None or self._map_buffer.shape != (nrows, ncols):
            self._map_buffer = np.empty((nrows, ncols), dtype=np.float32)
        return self._map_buffer

    # --- programming ---------------------------------------------------------------------------

    def apply_pulses(
        self,
        kind: PulseKind,
        row0: int,
        col0: int,
        amplitude: FloatArray,
        v_gate: FloatArray,
        width: FloatArray,
        mask: BoolArray,
    ) -> int:
        """Apply one pulse to each masked cell of the region; return the number applied.

        The cells are pulsed one after another in row-major order (each at its own time on the
        clock, which advances by the sum of the widths). Stuck cells take the pulse and ignore it.
        """
        kind = PulseKind(kind)
        mask = np.asarray(mask, dtype=bool)
        shape = mask.shape
        # The physics runs on the masked cells only (an update pulses a few hundred of 8,192): every
        # step is per cell, so each masked cell gets the numbers a whole-region pass would give it.
        # Unmasked cells' values are unchecked by the firmware and may be anything (even nan): they
        # are never read.
        where = np.flatnonzero(mask)  # row-major: the order the cells are pulsed in
        amplitude, v_gate, width = (
            np.broadcast_to(np.asarray(a, dtype=np.float64), shape).reshape(-1)[where]
            for a in (amplitude, v_gate, width)
        )
        p = self.params
        t_start = self._clock.now
        rows, cols = np.divmod(where, shape[1])
        cells_at = (rows + row0) * self.cols + (cols + col0)  # flat indices into the whole array
        g_start = self._drift.conductance_of(t_start, cells_at)
        formed = np.take(self._formed, cells_at)
        cells = self.cells.at(cells_at)
        # Drawn for the whole region whatever the mask, so the stream's use does not depend on it.
        noise = (
            p.write_noise * self._write_rng.standard_normal(shape).reshape(-1)[where]
            if p.write_noise
            else np.zeros(len(where))
        )
        if kind is PulseKind.RESET:
            g_new = apply_reset(g_start, formed, cells, amplitude, v_gate, width, noise, p)
            formed_new = formed
        else:
            # FORM and SET have the same polarity; what a pulse does depends on the cell (virgin
            # or formed) and the amplitude, not on the name the host gave it.
            g_new, formed_new = apply_set(g_start, formed, cells, amplitude, v_gate, width, noise, p)
        pulsed = ~cells.stuck_low & ~cells.stuck_high
        changed = pulsed & (g_new != g_start)
        masked_widths = np.zeros(mask.size)
        masked_widths[where] = width
        if changed.any():
            # Each cell at its own time: the widths of the cells pulsed before it and its own (the
            # running sum over the masked cells is the one over the region: adding 0 s is exact).
            t_end = t_start + np.cumsum(width)
            np.put(self._formed, cells_at[pulsed], formed_new[pulsed])
            self._drift.reprogram(shape, where[changed], cells_at[changed], g_new[changed], t_end[changed])
            self._version += 1
        self._clock.advance(float(masked_widths.sum()))
        return int(mask.sum())
