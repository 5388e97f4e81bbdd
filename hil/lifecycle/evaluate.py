"""``hil evaluate``: a trained (or deployed) network's accuracy on the chip as it is now, and over time.

Inference only: the run's placement, calibration and defect maps come from its file, the
conductances are read back from the chip, and the test set runs forward on the arrays; nothing
is trained. ``every`` / ``duration`` repeat the evaluation while the boards idle between points
(on an emulator's simulated clock, hours pass in seconds), so the accuracy can be followed as the
devices drift. Two compensations, each with its cost:

- **refresh**: devices whose conductance left the run's final conductances by more than a
  tolerance are written back by closed-loop write-verify (pulses, counted per point);
- **column gains**: a fixed probe batch through every layer at the first point is the reference;
  at each later point the same probe gives each output column's gain against it, and the layer's
  outputs are divided by it where the gain explains the column's change (no pulse; one VMM batch
  per tile per point). It takes out what scales a column (a TIA or ADC gain, multiplicative
  conductance drift, a wire's drop), not the devices' independent random drift, which only a
  refresh undoes (there the gain is left at 1);
- **reference cells** (:mod:`hil.lifecycle.references`): spare devices in the network's columns
  written to known levels at the first point and read at each, their drift line taken out of the
  layers' outputs (pulses once, a read per reference per point). It takes out what every device
  shares (a drift that scales them, or a common shift against the digital reference of
  single-device pairs), not the devices' independent drift.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from drivers import Board
from hil.lifecycle.references import (
    IDENTITY,
    DriftLine,
    ReferenceCells,
    board_lines,
    choose_reference_cells,
    column_lines,
    layer_gains,
    reference_levels,
)
from hil.link_record import record_link
from hil.nn import Network
from hil.nn.backend import EvaluationAware, FloatArray, MatmulBackend
from hil.run_layout import EVALUATE, EVALUATION_POINTS, final_conductance, prepared, reference_cells
from hil.storage import RunData, RunFile, RunFileError, check_not_live, check_same_board, read_run
from hil.training.config import TrainConfig, stored_train_config
from hil.training.loop import IntArray, evaluate
from hil.training.run import (
    PROCEDURE,
    Hardware,
    board_identities,
    build_network,
    load_data,
    opened_boards,
    restore_hardware,
)
from protocols.programming import write_verify

log = logging.getLogger(__name__)
BoolArray = npt.NDArray[np.bool_]

EVALUATE_PROCEDURE = EVALUATE
POINTS = EVALUATION_POINTS
POINT_COLUMNS = ("seconds", "accuracy", "loss", "drift_median", "devices_refreshed", "refresh_pulses",
                 "probe_round_trips", "reference_gain", "reference_pulses", "reference_reads")  # fmt: skip
REFERENCE_FITS = ("board", "column")
HOLDS_WEIGHTS_LIMIT = 20e-6
"""Median distance (S) of the used devices from the run's final conductances beyond which a chip is
taken not to hold the run's weights (a day of drift moves a device by about 1 uS)."""
MAX_POINTS = 10_000
MAX_REFRESH_TOLERANCE = 1e-3  # S: a tolerance past a device's whole window is a typo
PROBE_SEED = 20_200_101
GAIN_EXPLAINS = 0.75
"""Share of a column's squared change that its gain must explain for the gain to be applied."""


@dataclass(frozen=True)
class Compensation:
    """How drift is fought between evaluations."""

    refresh_tolerance: float | None = None
    """Write back devices that drifted more than this from the run's final conductances, S (None: never)."""
    column_gains: bool = False
    """Divide each layer's outputs by their columns' gains against the first point's probe."""
    probe_vectors: int = 32
    reference_cells: int = 0
    """Reference cells per column the network uses (0: none), written at the first point."""
    reference_fit: str = "board"
    """One drift line per array (``board``) or per column (``column``, from that column's references)."""

    def __post_init__(self) -> None:
        tolerance = self.refresh_tolerance
        if tolerance is not None and not (0 < tolerance <= MAX_REFRESH_TOLERANCE):
            raise ValueError(f"--refresh {tolerance:g} S is outside (0, {MAX_REFRESH_TOLERANCE:g}] S")
        if not 1 <= self.probe_vectors <= 4096:
            raise ValueError(f"probe_vectors = {self.probe_vectors} is outside [1, 4096]")
        if not 0 <= self.reference_cells <= 64:
            raise ValueError(f"--reference-cells {self.reference_cells} is outside [0, 64] per column")
        if self.reference_fit not in REFERENCE_FITS:
            raise ValueError(f"--reference-fit {self.reference_fit!r} is not one of {', '.join(REFERENCE_FITS)}")
        if self.reference_cells and tolerance is not None:
            raise ValueError("--reference-cells with --refresh: a refresh restarts the drift of the devices it "
                             "rewrites, which the references then no longer share; choose one")  # fmt: skip
        if self.reference_cells and self.column_gains:
            raise ValueError("--reference-cells with --column-gains: both rescale the columns; choose one")


@dataclass
class EvaluationPoint:
    """One evaluation: when (board clock, since the first point), how well, and what it cost."""

    seconds: float
    accuracy: float
    loss: float
    drift_median: float
    devices_refreshed: int = 0
    refresh_pulses: int = 0
    probe_round_trips: int = 0
    reference_gain: float = 1.0
    """Mean over the arrays of the gain their reference cells measured (1: none)."""
    reference_pulses: int = 0
    reference_reads: int = 0


def column_gains(response: FloatArray, reference: FloatArray, explained: float = GAIN_EXPLAINS) -> FloatArray:
    """Per column, the least-squares gain of ``response`` against ``reference`` (both (probes, columns)).

    1 where a column carries nothing, where the fit is implausible (outside 0.2 to 5), and where a
    gain does not explain the column's change: unless scaling the reference leaves at most
    ``1 - explained`` of the squared change from it, the change is not a gain (the devices' own
    drift, independent per device, moves a column's response in directions no gain reaches) and
    dividing by the fitted gain would only mis-scale that column (a class column of the output layer
    against the others).
    """
    energy = (reference**2).sum(axis=0)
    fitted = np.divide((response * reference).sum(axis=0), energy, out=np.ones_like(energy), where=energy > 0)
    change = ((response - reference) ** 2).sum(axis=0)
    left = ((response - fitted * reference) ** 2).sum(axis=0)
    is_gain = left <= (1 - explained) * change
    return np.where((fitted > 0.2) & (fitted < 5.0) & is_gain, fitted, 1.0)


class GainCorrected:
    """A backend whose layer outputs are divided by per-column gains (``gains[layer]``, one per output)."""

    def __init__(self, inner: MatmulBackend, gains: Mapping[str, FloatArray]) -> None:
        self.inner = inner
        self.gains = gains

    def matmul(self, layer: str, x: FloatArray) -> FloatArray:
        out = self.inner.matmul(layer, x)
        gain = self.gains.get(layer)
        return out if gain is None else out / gain

    def weights(self, layer: str) -> FloatArray:
        return self.inner.weights(layer)

    def evaluation(self) -> AbstractContextManager[None]:
        """The inner backend's evaluation context (its own column-gain fit forgets the evaluation)."""
        return self.inner.evaluation() if isinstance(self.inner, EvaluationAware) else nullcontext()


class ChipEvaluator:
    """Evaluates a run's network on its hardware, compensating drift as told."""

    def __init__(
        self, network: Network, hardware: Hardware, test: tuple[FloatArray, IntArray],
        reference: Mapping[str, FloatArray], compensation: Compensation, write_tolerance: float,
    ) -> None:  # fmt: skip
        self.network = network
        self.hardware = hardware
        self.x_test, self.y_test = test
        self.reference = reference
        self.compensation = compensation
        self.write_tolerance = write_tolerance
        self.gains: dict[str, FloatArray] = {}
        self.references: dict[str, ReferenceCells] = {}
        self._g_reference = dict(hardware.backend.g_reference)  # the single-device pairs' digital reference
        self._probe_reference: dict[str, FloatArray] = {}
        rng = np.random.default_rng(PROBE_SEED)
        # Zero-mean probes (rows driven at +v and -v alike): with inputs of one sign, every probe would
        # mostly measure a column's sum of weights, which any drift changes as a gain would.
        self._probes = {layer: rng.uniform(-1.0, 1.0, (compensation.probe_vectors, shape[0]))
                        for layer, shape in network.weight_shapes.items()}  # fmt: skip

    def working_used(self, board: str) -> BoolArray:
        """The devices the placement uses that are not defective."""
        backend = self.hardware.backend
        none = np.zeros(backend.placement.board_shapes[board], bool)
        dead = backend.stuck_low.get(board, none) | backend.stuck_high.get(board, none)
        return backend.placement.used_mask(board) & ~dead

    def drift(self) -> float:
        """Median |G - G_final| over the used working devices of every board, S (from the last read)."""
        distances = [np.abs(self.hardware.backend.conductance[b] - g)[self.working_used(b)]
                     for b, g in self.reference.items()]  # fmt: skip
        return float(np.median(np.concatenate(distances))) if distances else 0.0

    def refresh(self, point: EvaluationPoint) -> None:
        """Write drifted devices back to the run's final conductances."""
        tolerance = self.compensation.refresh_tolerance
        assert tolerance is not None
        backend = self.hardware.backend
        for board, target in self.reference.items():
            due = self.working_used(board) & (np.abs(backend.conductance[board] - target) > tolerance)
            if not due.any():
                continue
            point.refresh_pulses += self._write(board, target, due)[0]
            point.devices_refreshed += int(due.sum())
        backend.read_back()

    def _write(self, board: str, goal: FloatArray, mask: BoolArray) -> tuple[int, FloatArray]:
        """Write-verify ``mask``'s devices toward ``goal``, held to what each device reaches; the
        pulses sent and the goal as held."""
        calibration = self.hardware.calibrations.get(board)
        if calibration is not None:  # ask no device for more than it reaches
            low, high = calibration.reach()
            goal = np.clip(goal, low, high)
        result = write_verify(self.hardware.backend.boards[board], np.where(mask, goal, 0.0),
                              tolerance=self.write_tolerance, mask=mask, calibration=calibration)  # fmt: skip
        return int(result.pulses.sum()), goal

    def recalibrate_gains(self, point: EvaluationPoint) -> None:
        """Each layer's column gains from the probe batch, against its response at the first point."""
        backend = self.hardware.backend
        before = backend.vmm_calls
        with backend.evaluation():
            for layer, probe in self._probes.items():
                response = backend.matmul(layer, probe)
                self.gains[layer] = column_gains(response, self._probe_reference.setdefault(layer, response))
        point.probe_round_trips += backend.vmm_calls - before

    def write_references(self, point: EvaluationPoint) -> None:
        """Write reference cells beside the network on every array, and read what they hold now."""
        backend = self.hardware.backend
        chosen = {}
        for board in backend.placement.boards():
            none = np.zeros(backend.placement.board_shapes[board], bool)
            dead = backend.stuck_low.get(board, none) | backend.stuck_high.get(board, none)
            levels = reference_levels(self.reference[board], self.working_used(board))
            rows, cols, targets = choose_reference_cells(backend.placement, board, dead,
                                                         self.compensation.reference_cells, levels)  # fmt: skip
            mask = np.zeros_like(none)
            mask[rows, cols] = True
            goal = np.zeros(mask.shape)
            goal[rows, cols] = targets
            pulses, held = self._write(board, goal, mask)
            point.reference_pulses += pulses
            chosen[board] = (rows, cols, held[rows, cols])
        maps = backend.read_back()
        for board, (rows, cols, targets) in chosen.items():
            self.references[board] = ReferenceCells(board, rows, cols, targets, maps[board][rows, cols].copy())

    def reference_gains(self, point: EvaluationPoint) -> dict[str, FloatArray]:
        """Each layer's output gains from the references as the last read holds them; the single-device
        pairs' digital reference moved along each array's drift line."""
        backend = self.hardware.backend
        lines = board_lines(self.references, backend.conductance)
        columns: dict[str, dict[int, DriftLine]] | None = None
        if self.compensation.reference_fit == "column":
            columns = {b: column_lines(r, backend.conductance[b]) for b, r in self.references.items()}
        for board, g_reference in self._g_reference.items():
            backend.g_reference[board] = lines.get(board, IDENTITY).apply(g_reference)
        point.reference_gain = float(np.mean([line.gain for line in lines.values()]))
        point.reference_reads += sum(len(r.rows) for r in self.references.values())
        return layer_gains(backend.placement, lines, columns)

    def point(self, seconds: float) -> EvaluationPoint:
        backend = self.hardware.backend
        backend.read_back()
        point = EvaluationPoint(seconds=seconds, accuracy=float("nan"), loss=float("nan"), drift_median=self.drift())
        if self.compensation.refresh_tolerance is not None:
            self.refresh(point)
        model: MatmulBackend = backend
        if self.compensation.reference_cells:
            if not self.references:
                self.write_references(point)
            model = GainCorrected(backend, self.reference_gains(point))
        if self.compensation.column_gains:
            self.recalibrate_gains(point)
            model = GainCorrected(backend, self.gains)
        point.accuracy, point.loss = evaluate(self.network, model, self.x_test, self.y_test)
        return point


def evaluation_config(previous: RunData, board: str | None = None) -> TrainConfig:
    """The run's config, on another resource when ``board`` is given (a run of one board only)."""
    config = stored_train_config(previous)
    if board is None:
        return config
    if len(config.boards) != 1:
        raise RunFileError(f"{previous.path} used {len(config.boards)} boards ({', '.join(config.boards)}); "
                           "--board replaces the board of a one-board run only")  # fmt: skip
    (name,) = config.boards
    return config.model_copy(update={"boards": {name: board}, "chip_seed": None})


def read_trained_run(path: str | Path) -> RunData:
    """A training or deployment run whose weights reached the array (refused otherwise, in one line)."""
    previous = read_run(path)
    if previous.procedure != PROCEDURE:
        raise RunFileError(f"{path} is a {previous.procedure!r} run, not a training or deployment run")
    check_not_live(path, previous)
    if previous.config.get("parallel"):
        raise RunFileError(f"{path} is a parallel-mode run: its copies' placement is not one hil evaluate restores")
    if previous.config.get("update") == "exact":
        raise RunFileError(f"{path} is an exact-arithmetic run: it has no weights on a chip to evaluate")
    if not prepared(previous):
        raise RunFileError(f"{path}: the run's weights never reached the array; nothing to evaluate")
    return previous


def final_conductances(previous: RunData, hardware: Hardware) -> dict[str, FloatArray]:
    """The conductances the run ended with; for a run that has none stored (killed before its end), the
    chip's as read now."""
    out = {}
    for board, g in hardware.backend.conductance.items():
        stored = previous.datasets.get(final_conductance(board))
        out[board] = np.asarray(stored, dtype=np.float64) if stored is not None else g.copy()
    return out


def check_holds_weights(evaluator: ChipEvaluator, path: str | Path) -> None:
    """Refuse a chip whose used devices are far from the run's final conductances (another array, or
    an in-process emulator, which starts fresh in every process), unless a refresh writes them back."""
    distance = evaluator.drift()
    if distance > HOLDS_WEIGHTS_LIMIT and evaluator.compensation.refresh_tolerance is None:
        raise RunFileError(f"the chip does not hold the weights of {path}: its used devices are a median "
                           f"{distance * 1e6:.1f} uS from the run's final conductances (an in-process emulator "
                           "starts fresh in every process); serve the board as a process, or pass "
                           "--refresh S (a tolerance in siemens, e.g. 4e-6) to write the weights again")  # fmt: skip


def point_times(every: float | None, duration: float | None) -> list[float]:
    """The evaluation times from the first one, s: just 0, or 0, every, 2 every, ... up to duration."""
    if every is None and duration is None:
        return [0.0]
    if every is None or duration is None:
        raise ValueError("--every and --for go together: evaluate every DURATION for DURATION")
    if not (every > 0 and duration >= 0 and np.isfinite(every) and np.isfinite(duration)):
        raise ValueError(f"--every {every:g} s --for {duration:g} s: both must be finite, --every above 0")
    count = int(np.floor(duration / every + 1e-9)) + 1
    if count > MAX_POINTS:
        raise ValueError(f"--every {every:g} s --for {duration:g} s asks for {count:,} evaluations; "
                         f"at most {MAX_POINTS:,}")  # fmt: skip
    return [i * every for i in range(count)]


def evaluate_run(
    path: str | Path, out: str | Path, *, every: float | None = None, duration: float | None = None,
    compensation: Compensation = Compensation(), board: str | None = None, allow_other_board: bool = False,
    overwrite: bool = False, show_progress: bool = True,
) -> list[EvaluationPoint]:  # fmt: skip
    """Evaluate the run in ``path`` on its chip at the times :func:`point_times` gives, recording every
    point (and every pulse a refresh costs) in a new run file ``out``."""
    times = point_times(every, duration)
    previous = read_trained_run(path)
    config = evaluation_config(previous, board)
    out = Path(out)
    if out.exists() and not overwrite:
        raise RunFileError(f"{out} exists; choose another name or pass --overwrite (nothing was measured)")
    network = build_network(config)
    _, _, x_test, y_test = load_data(config)
    with opened_boards(config) as boards:
        check_same_board(previous, board_identities(boards), allow_other_board)
        hardware = restore_hardware(config, network, boards, previous)
        evaluator = ChipEvaluator(network, hardware, (x_test, y_test), final_conductances(previous, hardware),
                                  compensation, write_tolerance=config.initial_tolerance)  # fmt: skip
        check_holds_weights(evaluator, path)
        record = {"run": str(Path(path).resolve()), "every": every, "for": duration, **asdict(compensation),
                  "boards": {name: b.resource for name, b in config.board_configs.items()}}  # fmt: skip
        with RunFile(out, procedure=EVALUATE_PROCEDURE, config=record, resource=", ".join(record["boards"].values()),
                     board_identity=board_identities(boards), overwrite=overwrite,
                     show_progress=show_progress) as run, record_link(boards, run):  # fmt: skip
            return _follow(evaluator, boards, times, run)


def _follow(
    evaluator: ChipEvaluator, boards: Mapping[str, Board], times: list[float], run: RunFile
) -> list[EvaluationPoint]:
    run.set_attrs(POINTS, columns=",".join(POINT_COLUMNS))
    run.progress(0, total=len(times))
    points: list[EvaluationPoint] = []
    now = 0.0
    started = time.perf_counter()
    for t in times:
        for board in boards.values():
            if t > now:
                board.idle_for(t - now)
        now = t
        point = evaluator.point(t)
        if not points:  # the references were written at the first point: where, and what they read then
            for name, cells in evaluator.references.items():
                run.write(reference_cells(name), cells.table(), columns="row,col,target,baseline")
        points.append(point)
        run.append(POINTS, np.array([getattr(point, name) for name in POINT_COLUMNS], dtype=np.float64))
        run.flush()
        run.progress(1, acc=f"{100 * point.accuracy:.1f}%", pulses=point.refresh_pulses)
        log.info("t = %g s: accuracy %.2f %%, drift %.2f uS, %d devices refreshed (%d pulses)", t, 100 * point.accuracy,
                 point.drift_median * 1e6, point.devices_refreshed, point.refresh_pulses)  # fmt: skip
    run.set_attrs(EVALUATE, points=len(points), wall_seconds=time.perf_counter() - started)
    return points
