"""A training run from its config: data, network, boards, characterization, training, resume.

On hardware a run goes: open the boards; check that the network fits (before any pulse);
characterize every device (a per-device SET calibration that also finds the defective ones);
place the layers on the cleanest lines; program the initial weights by write-verify; then train
with the forward pass on the arrays. Everything is journaled in the run
file, so ``resume`` continues from the last completed update with the conductances read back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from drivers import Board
from hil.array_backend import ArrayBackend
from hil.config import ConfigError
from hil.datasets import labels_digest, load_dataset
from hil.ledger.facts import calibrate_or_reuse
from hil.link_record import record_link
from hil.mapping import PlacementSpec, auto_place, remap_for_weights, resolve_placement
from hil.nn import Network, get_architecture, load_network_spec
from hil.nn.backend import MatmulBackend
from hil.noise_aware import NoisyLearner
from hil.optimizers import Optimizer, OptimizerConfig
from hil.run_layout import (
    DATASET_DIGEST,
    DEPLOY,
    EVALUATIONS,
    JOURNAL,
    PREPARE,
    PRETRAIN,
    PRETRAIN_EVALUATIONS,
    checkpoint,
    checkpoint_devices,
    completed_updates,
    deployed_weights,
    final_conductance,
    preparation,
    pretrain_weights,
    pulses,
    snapshots,
)
from hil.run_layout import calibration as calibration_path
from hil.storage import RunData, RunFile, RunFileError, check_same_board
from hil.terminal import ProgressOnly, phase
from hil.training.config import TrainConfig, stored_train_config
from hil.training.loop import (
    ExactLearner,
    Learner,
    Schedule,
    TrainResult,
    evaluate,
    train,
)
from hil.training.plan import (
    PlanError,
    check_data,
    check_plan,
    check_same_data,
    check_vmm_currents,
    check_weight_span,
)
from hil.transfer import TransferReport, park_unused, quantize, refine, shift_targets, write_targets
from hil.updates import GateCodedUpdate, UpdateRule, UpdateStats, WriteVerifyUpdate
from hil.weights_file import fit_weights, read_weights
from protocols.calibration import GateCalibration, calibrate_gate
from protocols.recording import Recorder

log = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Data = tuple[FloatArray, IntArray, FloatArray, IntArray]

PROCEDURE = "train"
FIT_MARGIN = 0.8
FINAL_READS = 4


def build_network(config: TrainConfig) -> Network:
    spec = load_network_spec(config.network, "config.network") if config.network else get_architecture(config.model)
    return Network(spec)


def _labels(*labels: npt.NDArray[np.int64]) -> int:
    """How many labels the data uses: its largest + 1."""
    return int(max(int(y.max()) for y in labels)) + 1


def check_run_data(config: TrainConfig) -> None:
    """The run's data against its network (:func:`~hil.training.plan.check_data`), as a campaign checks
    its cells before any runs."""
    dataset = load_dataset(config.dataset_name, **config.dataset_options)
    _checked_digest(config, build_network(config), (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test))


def _checked_digest(
    config: TrainConfig, network: Network, data: tuple[npt.NDArray[Any], ...], previous: RunData | None = None
) -> str:
    """The data's digest, once the data (``x_train, y_train, x_test, y_test``) is found to fit the
    network and, resuming ``previous``, to be the data it trained on."""
    x_train, y_train, x_test, y_test = data
    check_data(config, network, x_train.shape[1:], _labels(y_train, y_test), len(x_train))
    digest = labels_digest(x_train.shape, y_train, x_test.shape, y_test)
    if previous is not None:
        check_same_data(config, previous, digest)
    return digest


def load_data(config: TrainConfig) -> Data:
    dataset = load_dataset(config.dataset_name, **config.dataset_options)
    return (
        dataset.x_train.astype(np.float64),
        dataset.y_train.astype(np.int64),
        dataset.x_test.astype(np.float64),
        dataset.y_test.astype(np.int64),
    )


class ArrayLearner:
    """Weights on the arrays: updates become pulses, then every board's map is read back."""

    def __init__(self, backend: ArrayBackend, rule: UpdateRule) -> None:
        self.array_backend = backend
        self.rule = rule

    @property
    def backend(self) -> MatmulBackend:
        return self.array_backend

    def apply(self, delta: dict[str, FloatArray]) -> UpdateStats:
        stats = self.rule.apply(self.array_backend, delta)
        self.array_backend.read_back()
        return stats

    def checkpoint(self, recorder: Recorder, slot: str) -> None:
        for board, state in self.rule.state_arrays().items():
            # the pulse counts too: ``pulses/<board>`` is written from them once, when the updates end
            for name, array in state.items():
                recorder.write(checkpoint_devices(slot, board, name), array)

    def snapshot(self, recorder: Recorder) -> None:
        for board, g in self.array_backend.conductance.items():
            recorder.append(snapshots(board), g.astype(np.float32))


@dataclass
class Hardware:
    """The boards of a run, with its placement and update rule."""

    backend: ArrayBackend
    rule: UpdateRule
    calibrations: dict[str, GateCalibration]
    restored: bool = False  # from a run file that had its weights on the array already


def _place(
    config: TrainConfig, network: Network, boards: Mapping[str, Board], spec: PlacementSpec | None
) -> ArrayBackend:
    shapes = {name: board.shape for name, board in boards.items()}
    weight_shapes = network.spec.weight_shapes()
    unknown = sorted(set(config.layer_g_unit) - set(weight_shapes))
    if unknown:
        raise PlanError(f"layer_g_unit names layer {unknown[0]!r}, not one of the network's {sorted(weight_shapes)}; "
                        "nothing was sent")  # fmt: skip
    spec = spec or config.placement or auto_place(weight_shapes, shapes, config.bad_lines, config.layout)
    placement = resolve_placement(spec, weight_shapes, shapes)
    return ArrayBackend(boards, placement, g_unit=config.g_unit, v_input=config.v_input,
                        vmm_readback=config.uses_vmm_readback, layer_g_unit=config.layer_g_unit)  # fmt: skip


def _placement_spec(
    config: TrainConfig, network: Network, boards: Mapping[str, Board], calibrations: Mapping[str, GateCalibration]
) -> PlacementSpec | None:
    """The configured placement; else, with a calibration, one that avoids the defective devices."""
    if config.placement is not None or not calibrations:
        return config.placement
    defective = {name: np.logical_or(*split_defects(calibration)) for name, calibration in calibrations.items()}
    shapes = {name: board.shape for name, board in boards.items()}
    return auto_place(network.spec.weight_shapes(), shapes, config.bad_lines, config.layout, defective)


def update_rule(config: TrainConfig) -> UpdateRule:
    if config.update_rule == "write-verify":
        return WriteVerifyUpdate(config.write_verify)
    return GateCodedUpdate(config.gate_coded)


def _window(config: TrainConfig) -> tuple[float, float]:
    g = config.gate_coded
    return g.v_gate_min, g.v_gate_max


def characterize(config: TrainConfig, boards: Mapping[str, Board], recorder: Recorder) -> dict[str, GateCalibration]:
    """Per-device SET calibration of every device of every board (three round trips per gate voltage)."""
    calibrations = {}
    low, high = _window(config)
    for name, board in boards.items():
        usable = np.ones(board.shape, dtype=bool)  # never a pulse on a line declared bad
        bad = config.bad_lines.get(name)
        if bad is not None:
            usable[[r for r in bad.rows if 0 <= r < board.shape[0]], :] = False
            usable[:, [c for c in bad.cols if 0 <= c < board.shape[1]]] = False
        g = config.gate_coded
        parameters = {"amplitude": g.v_set, "width": g.width, "v_reset": g.v_reset, "v_gate_reset": g.v_gate_reset}
        gates = np.linspace(low, high, config.calibration_gates)
        measure = partial(calibrate_gate, board, gates, g.v_set, g.width, g.v_reset, g.v_gate_reset, mask=usable,
                          recorder=ProgressOnly(recorder))  # fmt: skip
        phase(recorder, f"calibrating {name}", config.calibration_gates)
        calibration = calibrate_or_reuse(board, name, recorder, parameters, config.calibration_max_age, measure)
        calibrations[name] = calibration
        stuck_low, stuck_high = split_defects(calibration)
        recorder.write(calibration_path(name, "k"), calibration.k, unit="S/V")
        recorder.write(calibration_path(name, "c"), calibration.c, unit="S")
        recorder.write(calibration_path(name, "stuck_low"), stuck_low)
        recorder.write(calibration_path(name, "stuck_high"), stuck_high)
        recorder.write(calibration_path(name, "v_gate_window"), np.array(calibration.v_gate_window), unit="V")
        log.info("%s: of %d devices, %d dead low and %d shorted", name, int(calibration.mask.sum()),
                 int(stuck_low.sum()), int(stuck_high.sum()))  # fmt: skip
    return calibrations


def split_defects(calibration: GateCalibration) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Devices that did not follow the gate, split into dead low ones and shorted ones (which read
    above anything a working device reaches in the window).

    A shorted device whose every read lies above that top is shorted even when read noise lent
    its fit a slope that passes for a response: asked for a conductance inside its fitted
    "reach", it would be asked for more than a cell may hold.
    """
    defective = calibration.mask & ~calibration.responsive
    measured = calibration.g_measured
    level = measured.max(axis=0) if measured.size else calibration.c
    lowest = measured.min(axis=0) if measured.size else calibration.c
    k, c = calibration.effective_fit()
    top = np.median((k * calibration.v_gate_window[1] + c)[calibration.responsive])
    stuck_high = calibration.mask & ((defective & (level > top)) | (lowest > top))
    return defective & ~stuck_high, stuck_high


def install_calibrations(
    hardware: Hardware, config: TrainConfig, defects: Mapping[str, tuple[BoolArray, BoolArray]]
) -> None:
    """Give the backend and the rule what the calibration found."""
    for name, calibration in hardware.calibrations.items():
        # The calibration's linear window (turn-on and saturation left out) bounds the gates used.
        low, high = calibration.v_gate_window
        stuck_low, stuck_high = defects[name]
        k, c = calibration.effective_fit()
        responsive = calibration.responsive
        hardware.backend.g_reference[name] = float(np.median(((k * low + c) + (k * high + c))[responsive] / 2))
        if config.prune_defective:
            hardware.backend.stuck_low[name] = stuck_low
            hardware.backend.stuck_high[name] = stuck_high
        hardware.rule.install(hardware.backend, name, calibration, stuck_low | stuck_high)


def conductance_targets(
    config: TrainConfig, hardware: Hardware, weights: Mapping[str, FloatArray]
) -> dict[str, tuple[FloatArray, BoolArray]]:
    """Per board, the conductance every used device should hold for ``weights`` around the middle of
    the usable window, and the mask of devices to write (every used device that works)."""
    backend = hardware.backend
    low, high = _window(config)
    out = {}
    for name in backend.placement.boards():
        g = config.gate_coded
        middle = backend.g_reference.get(name, g.set_slope * (low + high) / 2 + g.set_intercept)
        shape = backend.placement.board_shapes[name]
        dead = backend.stuck_low.get(name, np.zeros(shape, bool)) | backend.stuck_high.get(name, np.zeros(shape, bool))
        out[name] = (np.full(shape, middle), backend.placement.used_mask(name) & ~dead)
    shift_targets(backend, out, weights)  # from the middle of the window by the whole weights
    return out


def program_weights(
    config: TrainConfig,
    hardware: Hardware,
    weights: Mapping[str, FloatArray],
    tolerance: float,
    trained: bool = False,
    recorder: Recorder | None = None,
) -> int:
    """Write every device to its target by closed-loop write-verify (:mod:`hil.transfer`); then read
    everything back. Weights ``trained`` elsewhere are then corrected on what the VMMs compute."""
    backend, g = hardware.backend, config.gate_coded
    pulses = 0
    if config.transfer.park_unused:
        pulses += park_unused(backend, hardware.calibrations, g.v_reset, g.v_gate_reset, g.width)
    if trained and config.transfer.levels is not None:
        weights = quantize(weights, config.transfer.levels)
    targets = conductance_targets(config, hardware, weights)
    report = TransferReport()
    pulses += write_targets(backend, targets, hardware.calibrations, tolerance, recorder, report)
    backend.read_back()
    # Weights trained elsewhere must be what the VMMs compute. Random initial weights only on request: the
    # wires (each pair's two devices attenuated unlike, times their large common conductance) make the
    # start another network; correcting it is the MLP's default (its curve tracks float from the start),
    # not the CNN's (its curve was worse with it) (docs/training.md, "Learning speed").
    if (trained or config.transfer.refine_initial) and config.transfer.rounds:
        refine(backend, weights, targets, hardware.calibrations, tolerance, config.transfer.rounds, report)
        pulses += report.pulses
        log.info("effective weight error (rms) by round: %s", ", ".join(f"{e:.3f}" for e in report.weight_error_rms))
    if recorder is not None and report.held_at_reach:
        # Devices asked past their calibrated reach and written at its end (the last write's count).
        recorder.set_attrs(PREPARE, devices_held_at_reach=report.held_at_reach[-1], devices_written=report.written)
    hardware.rule.recall(backend)
    return pulses


@contextmanager
def opened_boards(config: TrainConfig) -> Iterator[dict[str, Board]]:
    """Every board of the run, idled and closed however the run ends."""
    with ExitStack() as stack:
        yield {name: stack.enter_context(board.open()) for name, board in config.board_configs.items()}


def board_identities(boards: Mapping[str, Board]) -> str:
    """The identity of every board of a run, as stored in its file and compared on resume."""
    return "; ".join(f"{name}: {board.identity}" for name, board in sorted(boards.items()))


def preflight(config: TrainConfig, previous: RunData | None = None) -> str:
    """Open the run's boards, check the whole run against them and close them again, before any run
    file exists (or, resuming ``previous``, before it is touched); the boards' identities. Nothing is
    pulsed (:class:`~hil.training.plan.PlanError`)."""
    network = build_network(config)
    _trained_layers(config, network)
    dataset = load_dataset(config.dataset_name, **config.dataset_options)
    _checked_digest(config, network, (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test), previous)
    kept = previous is not None and deployed_weights(next(iter(network.weight_shapes))) in previous.datasets
    if config.initial_weights is not None and not kept:
        _file_weights(config, network)  # a file that does not fit, or past the span: before any file or pulse
    elif config.initial_weights is None and previous is None:
        _drawn_weights(config, network)
    if config.update_rule == "exact":
        return ""
    with opened_boards(config) as boards:
        check_plan(config, boards)
        backend = _place(config, network, boards, None)  # a placement that cannot work fails here too
        check_vmm_currents(config, backend.placement, boards)
        return board_identities(boards)


def _saved(previous: RunData | None, group: str) -> dict[str, FloatArray]:
    """The datasets under ``group`` of the last complete checkpoint, by their names in the group."""
    if previous is None:
        return {}
    return checkpoint(previous, group)


def _optimizer(config: OptimizerConfig, previous: RunData | None) -> Optimizer:
    optimizer = Optimizer(config)
    if previous is not None:
        optimizer.load_state_arrays(_saved(previous, "optimizer"))
    return optimizer


def run_training(
    config: TrainConfig, run: RunFile, previous: RunData | None = None, allow_other_board: bool = False
) -> TrainResult:
    """Train as ``config`` says, recording into ``run``; with ``previous``, resume that run (on the
    same boards, unless ``allow_other_board``)."""
    # The network's products are small (a batch by a few hundred): a second BLAS thread made the
    # demo 2x slower on a busy 2-core machine, where it fights the emulator and other jobs.
    with threadpool_limits(limits=1, user_api="blas"):
        return _run_training(config, run, previous, allow_other_board)


def _run_training(config: TrainConfig, run: RunFile, previous: RunData | None, allow_other_board: bool) -> TrainResult:
    network = build_network(config)
    data = load_data(config)
    digest = _checked_digest(config, network, data, previous)  # again here: a sweep's cell has no preflight
    if previous is None or DATASET_DIGEST not in previous.root:
        run.set_root(**{DATASET_DIGEST: digest})
    start = resume_point(config, run, previous, len(data[0]))
    weights = initial_weights(config, network, data, run, previous)
    train_loop = partial(train, network, data=data, updates=config.updates, batch_size=config.batch_size,
                         eval_every=config.eval_every, seed=config.seed, recorder=run,
                         trainable=_trained_layers(config, network))  # fmt: skip
    if config.update_rule == "exact":
        return train_exact(config, weights, previous, partial(train_loop, start_update=start))
    with opened_boards(config) as boards:
        phase(run, "checking the run against the boards")
        check_plan(config, boards)
        _check_same_boards(boards, previous, allow_other_board)
        run.set_root(board_identity=board_identities(boards))
        with record_link(boards, run):
            hardware = prepare_hardware(config, network, boards, data, weights, run, previous)
            if not hardware.restored:
                start = 0  # a run killed before its weights were on the array starts over
            learner = ArrayLearner(hardware.backend, hardware.rule)
            phase(run, "training")
            result = train_loop(learner, _optimizer(config.optimizer, previous), start_update=start)
            record_final_state(hardware, run, updated=result.updates_done > 0)
            result.vmm_round_trips = hardware.backend.vmm_calls
            result.devices = hardware.backend.placement.device_count
            return result


def resume_point(config: TrainConfig, run: RunFile, previous: RunData | None, n_train: int) -> int:
    """The update a run continues from (0 for a new one); what the file holds past it (journal rows,
    evaluations, epoch snapshots of an update in flight) is cut back to it."""
    start = completed_updates(previous) if previous else 0
    run.truncate(JOURNAL, start)
    run.truncate(EVALUATIONS, _evaluations_before(previous, start))
    epochs_done = start // Schedule(n_train, config.batch_size, config.seed).batches_per_epoch
    for board in config.boards:
        run.truncate(snapshots(board), epochs_done)
    return start


def train_exact(
    config: TrainConfig, weights: dict[str, FloatArray], previous: RunData | None,
    train_loop: Callable[[Learner, Optimizer], TrainResult],
) -> TrainResult:  # fmt: skip
    """The same loop in exact arithmetic (the software baseline): no board is opened."""
    if previous is not None:
        weights = {layer: w.copy() for layer, w in _saved(previous, "weights").items()}
    return train_loop(ExactLearner(weights), _optimizer(config.optimizer, previous))


def prepare_hardware(
    config: TrainConfig, network: Network, boards: Mapping[str, Board], data: Data,
    weights: Mapping[str, FloatArray], run: RunFile, previous: RunData | None,
) -> Hardware:  # fmt: skip
    """The boards ready to train: a prepared run's placement, calibration and device memory restored
    from its file (conductances read back); otherwise characterized, placed, and the initial
    ``weights`` written by write-verify and evaluated."""
    prepared = preparation(previous) if previous is not None else {}
    if previous is not None and prepared.get("done"):
        return restore_hardware(config, network, boards, previous)
    # a placement that cannot work fails before any pulse
    check_vmm_currents(config, _place(config, network, boards, None).placement, boards)
    calibrations = characterize(config, boards, run) if config.calibrate else {}
    phase(run, "placing the layers")
    spec = _placement_spec(config, network, boards, calibrations)
    # Weights trained elsewhere (yao-hybrid's software phase, a deployment) are known before they
    # are written: placed so the large ones avoid defective pairs, then corrected on what the VMMs compute.
    trained = config.model == "yao-hybrid" or config.initial_weights is not None
    if trained and calibrations and config.placement is None:
        broken = {name: np.logical_or(*split_defects(c)) for name, c in calibrations.items()}
        spec = remap_for_weights(_place(config, network, boards, spec).placement, weights, broken)
    hardware = Hardware(_place(config, network, boards, spec), update_rule(config), calibrations)
    run.set_attrs(PREPARE, placement=hardware.backend.placement.spec.model_dump_json())
    install_calibrations(hardware, config, {name: split_defects(cal) for name, cal in calibrations.items()})
    tolerance = config.hybrid.transfer_tolerance if config.model == "yao-hybrid" else config.initial_tolerance
    pulses = program_weights(config, hardware, weights, tolerance, trained=trained, recorder=run)
    phase(run, "evaluating the transferred weights", len(data[2]))
    accuracy, _ = evaluate(network, hardware.backend, data[2], data[3], progress=run.progress)
    run.set_attrs(PREPARE, done=True, programming_pulses=pulses, accuracy_after_transfer=accuracy)
    log.info("weights on the array: test accuracy %.1f %% before in-situ training", 100 * accuracy)
    return hardware


def restore_hardware(config: TrainConfig, network: Network, boards: Mapping[str, Board], previous: RunData) -> Hardware:
    """A prepared run's hardware from its file: its placement, calibration and device memory, with
    the conductances read back from the boards (never assumed)."""
    prepared = preparation(previous)
    if not prepared.get("done"):
        raise RunFileError(f"{previous.path}: the run's weights never reached the array (it stopped while "
                           "preparing); nothing to use")  # fmt: skip
    saved = PlacementSpec.model_validate_json(prepared["placement"])
    hardware = Hardware(_place(config, network, boards, saved), update_rule(config), {}, restored=True)
    _restore(config, hardware, previous)
    return hardware


def record_final_state(hardware: Hardware, run: RunFile, updated: bool = False) -> None:
    """The conductances the run ended with: what the weights are on the chip, the reference a later
    refresh writes drifted devices back to. The mean of :data:`FINAL_READS` map reads (the last
    read-back among them), so that read noise (about 1 % of G per read) does not pass for drift.
    After updates (``updated``), also each device's pulses over them (``pulses/<board>``)."""
    if updated:
        record_pulse_counts(hardware.rule, run)
    total = {board: g.copy() for board, g in hardware.backend.conductance.items()}
    for _ in range(FINAL_READS - 1):
        for board, g in hardware.backend.read_back().items():
            total[board] += g
    for board, g in total.items():
        run.write(final_conductance(board), g / FINAL_READS, unit="S")


def record_pulse_counts(rule: UpdateRule, run: RunFile) -> None:
    """Each device's pulses over a run's updates, as ``pulses/<board>``: written once, after the last
    update (each update's checkpoint holds them meanwhile, ``run_layout.pulse_counts``)."""
    for board, state in rule.state_arrays().items():
        run.write(pulses(board), state["pulses"])


def _trained_layers(config: TrainConfig, network: Network) -> list[str] | None:
    layers = config.trained_layers
    for i, layer in enumerate(layers or []):
        if layer not in network.weight_shapes:
            field = "retrain_layers" if config.retrain_layers is not None else "hybrid.retrain_layers"
            raise ConfigError(f"{field}[{i}] = {layer!r} is not a layer of the network "
                              f"({', '.join(network.weight_shapes)}); nothing was sent")  # fmt: skip
    return layers


def _check_same_boards(boards: Mapping[str, Board], previous: RunData | None, allow_other_board: bool) -> None:
    if previous is not None:
        check_same_board(previous, board_identities(boards), allow_other_board)


def resume_config(path: str, previous: RunData, updates: int | None = None) -> TrainConfig:
    """The config a killed or extended training run continues with; ``updates`` raises its budget.

    A run with nothing left to do is refused: resuming it would only rewrite its record."""
    config = stored_train_config(previous, {} if updates is None else {"updates": updates})
    if config.parallel is not None:
        raise RunFileError(f"{path} is a parallel-mode run (hil parallel), which cannot be resumed: its copies' "
                           "state is not journaled; start it again")  # fmt: skip
    done = completed_updates(previous)
    if done >= config.updates:
        raise RunFileError(f"{path}: {done} of {config.updates} updates are done; nothing to resume "
                           f"(to train further, give a larger budget: --updates N with N > {done})")  # fmt: skip
    return config


def _evaluations_before(previous: RunData | None, update: int) -> int:
    if previous is None or EVALUATIONS not in previous.datasets:
        return 0
    return int((previous.datasets[EVALUATIONS][:, 0] <= update).sum())


def _file_weights(config: TrainConfig, network: Network) -> tuple[dict[str, FloatArray], dict[str, float]]:
    """The weights of ``initial_weights`` as they will be written, and each layer's scale if they
    were fitted (else none); refused past what a device pair holds (:func:`check_weight_span`)."""
    assert config.initial_weights is not None
    weights, scales = read_weights(config.initial_weights, network), dict[str, float]()
    if config.fit_initial_weights:
        # a margin below the nominal span: devices differ, and the window's ends are the least linear
        weights, scales = fit_weights(weights, network, FIT_MARGIN * config.weight_limit)
    if config.update_rule != "exact":
        check_weight_span(config, weights)
    return weights, scales


def _drawn_weights(config: TrainConfig, network: Network, check: bool = True) -> dict[str, FloatArray]:
    """Random initial weights at ``init_scale``; with ``check``, refused past what a device pair holds
    (:func:`check_weight_span`) unless the run is in exact arithmetic."""
    weights = network.init_weights(np.random.default_rng(config.seed), scale=config.init_scale)
    if check and config.update_rule != "exact":
        check_weight_span(config, weights)
    return weights


def initial_weights(
    config: TrainConfig, network: Network, data: Data, run: RunFile, previous: RunData | None
) -> dict[str, FloatArray]:
    """Random initial weights, weights trained elsewhere (``initial_weights``), or for the hybrid
    scheme weights trained in software first. Weights from a file are kept in the run file, so a
    resume needs only the run file."""
    # the span checked again here: a campaign's cell has no preflight
    weights = _drawn_weights(config, network, check=previous is None and config.initial_weights is None)
    if config.initial_weights is not None:
        if previous is not None and deployed_weights(next(iter(weights))) in previous.datasets:
            return {layer: previous.datasets[deployed_weights(layer)].copy() for layer in weights}
        weights, scales = _file_weights(config, network)
        if scales:
            run.set_attrs(DEPLOY, **{f"scale_{layer}": s for layer, s in scales.items()})
        for layer, w in weights.items():
            run.write(deployed_weights(layer), w)
        return weights
    if config.model != "yao-hybrid" or config.update_rule == "exact":
        return weights
    if previous is not None and PRETRAIN_EVALUATIONS in previous.datasets:
        return {layer: previous.datasets[pretrain_weights(layer)].copy() for layer in weights}
    hybrid = config.hybrid
    # Hardware-aware pre-training: weights kept inside what a device pair holds transfer better
    # than weights clipped (or scaled, which scales their write errors too) at transfer.
    learner = NoisyLearner(weights, hybrid.pretrain_noise, config.seed, clip=hybrid.weight_clip)
    updates = hybrid.pretrain_epochs * max(1, len(data[0]) // config.batch_size)
    result = train(network, learner, Optimizer(OptimizerConfig(name="adam", lr=hybrid.pretrain_lr)), data,
                   updates=updates, batch_size=config.batch_size, eval_every=max(1, updates),
                   seed=config.seed + 1, recorder=_Prefixed(run, PRETRAIN))  # fmt: skip
    for layer, w in weights.items():
        run.write(pretrain_weights(layer), w)
    run.append(PRETRAIN_EVALUATIONS, np.array([updates, result.final_test_accuracy]))
    return weights


def _stored_window(previous: RunData, board: str, config: TrainConfig) -> tuple[float, float]:
    window = previous.datasets.get(calibration_path(board, "v_gate_window"))
    return (float(window[0]), float(window[1])) if window is not None else _window(config)


def _restore(config: TrainConfig, hardware: Hardware, previous: RunData) -> None:
    """Calibration and device memory from the file; conductances read back from the boards."""
    defects = {}
    for name in hardware.backend.placement.boards():
        k = previous.datasets.get(calibration_path(name, "k"))
        if k is not None:
            hardware.calibrations[name] = GateCalibration(
                k=k, c=previous.datasets[calibration_path(name, "c")], residual=np.zeros_like(k),
                v_gate_window=_stored_window(previous, name, config), mask=np.ones(k.shape, dtype=bool),
            )  # fmt: skip
            defects[name] = (
                previous.datasets[calibration_path(name, "stuck_low")].astype(bool),
                previous.datasets[calibration_path(name, "stuck_high")].astype(bool),
            )
    install_calibrations(hardware, config, defects)
    hardware.backend.read_back()
    hardware.rule.recall(hardware.backend)
    saved = _saved(previous, "devices")
    for name in hardware.backend.placement.boards():
        prefix = f"{name}/"
        hardware.rule.load_state_arrays(name, {k[len(prefix) :]: v for k, v in saved.items() if k.startswith(prefix)})


class _Prefixed:
    """A recorder that files everything under a prefix (the hybrid scheme's software phase)."""

    def __init__(self, inner: Recorder, prefix: str) -> None:
        self.inner, self.prefix = inner, prefix

    def write(self, name: str, data: npt.ArrayLike, /, **attrs: object) -> None:
        self.inner.write(f"{self.prefix}/{name}", data, **attrs)  # type: ignore[arg-type]

    def append(self, name: str, row: npt.ArrayLike, /) -> None:
        self.inner.append(f"{self.prefix}/{name}", row)

    def set_attrs(self, name: str, /, **attrs: object) -> None:
        self.inner.set_attrs(f"{self.prefix}/{name}", **attrs)  # type: ignore[arg-type]

    def progress(self, advance: int = 0, total: int | None = None, **status: object) -> None:
        pass  # the software phase is quick; the run's own bar starts with the in-situ phase
