"""Yao 2020's parallel mode: identical convolution kernels on separate arrays, each convolving part of
the input.

A convolution applies the same kernels at every position of an image, one VMM vector per output
position. Yao 2020 wrote the first layer's kernels three times, on separate processing elements,
and fed each copy one band of the positions, so the three copies convolve one image at once. The
copies are written by the same transfer, but each lands on other devices with other errors, so the
bands of a feature map are computed slightly differently; in-situ retraining of the dense layer
(hybrid training) learns what the copies do together (the paper: 93.86 -> 95.83 %).

Here a replicated layer ``conv1`` is placed ``groups`` times as layers ``conv1``, ``conv1@1``, ...
(:func:`replicated_shapes`, placed by the ordinary placement API, so each copy takes its own
columns or its own board), the same weights are written to every copy, and
:class:`ParallelBackend` sends the output positions of each band of rows (top, middle, bottom for
three groups) to their copy. ``only=g`` sends every position to copy ``g``: one group alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np
import numpy.typing as npt

from hil.array_backend import ArrayBackend
from hil.link_record import record_link
from hil.mapping import auto_place, remap_for_weights, resolve_placement
from hil.nn import Network
from hil.nn.backend import ExactBackend, MatmulBackend
from hil.nn.layers import Conv2D
from hil.optimizers import Optimizer
from hil.run_layout import PARALLEL
from hil.storage import RunFile
from hil.training.config import TrainConfig
from hil.training.loop import evaluate, train
from hil.training.plan import check_plan, check_vmm_currents
from hil.training.run import (
    ArrayLearner,
    Hardware,
    build_network,
    characterize,
    initial_weights,
    install_calibrations,
    load_data,
    opened_boards,
    program_weights,
    record_pulse_counts,
    split_defects,
    update_rule,
)
from hil.updates import UpdateRule

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
REPLICA_SEPARATOR = "@"


def replica_name(layer: str, group: int) -> str:
    """The placed layer that holds copy ``group`` of ``layer`` (copy 0 is the layer itself)."""
    return layer if group == 0 else f"{layer}{REPLICA_SEPARATOR}{group}"


def replicated_shapes(network: Network, layers: Sequence[str], groups: int) -> dict[str, tuple[int, int]]:
    """The network's weight shapes with every layer of ``layers`` placed ``groups`` times."""
    check_replicable(network, layers, groups)
    shapes = dict(network.weight_shapes)
    for layer in layers:
        for group in range(1, groups):
            shapes[replica_name(layer, group)] = network.weight_shapes[layer]
    return shapes


def replicated_weights(weights: Mapping[str, FloatArray], layers: Sequence[str], groups: int) -> dict[str, FloatArray]:
    """The same weights for every copy (each copy's array then holds them with its own errors)."""
    out = dict(weights)
    for layer in layers:
        for group in range(1, groups):
            out[replica_name(layer, group)] = weights[layer]
    return out


def check_replicable(network: Network, layers: Sequence[str], groups: int) -> None:
    """Only convolution layers are replicated (a dense layer has one position: nothing to share)."""
    if not 1 <= groups <= 64:
        raise ValueError(f"groups = {groups} is outside [1, 64]")
    convs = {layer.name for layer in network.layers if isinstance(layer, Conv2D)}
    for i, layer in enumerate(layers):
        if layer not in convs:
            raise ValueError(f"parallel layers[{i}] = {layer!r} is not a convolution layer of the network "
                             f"({', '.join(sorted(n for n in convs if n)) or 'none'})")  # fmt: skip


def check_retrained(trained: Sequence[str] | None, layers: Sequence[str]) -> None:
    """The in-situ retraining updates one device pair per weight, so it cannot train a replicated
    layer (its copies would part ways): only the other layers, named."""
    if trained is None:
        raise ValueError(f"retrain_layers: parallel mode retrains named layers only, not the replicated "
                         f"{', '.join(layers)} (e.g. retrain_layers = [\"dense1\"])")  # fmt: skip
    replicated = sorted(set(trained) & set(layers))
    if replicated:
        raise ValueError(f"retrain_layers: {', '.join(replicated)} is replicated in parallel mode; its copies "
                         "cannot be retrained in situ (retrain the layers after it)")  # fmt: skip


def position_groups(output_rows: int, output_cols: int, n_vectors: int, groups: int) -> IntArray:
    """For each VMM vector of a convolution (images x output rows x output columns, row-major), its
    group: the band of output rows it lies in (``groups`` bands as equal as the rows allow)."""
    per_image = output_rows * output_cols
    if n_vectors % per_image:
        raise ValueError(f"{n_vectors} vectors are not whole images of {output_rows} x {output_cols} positions")
    row = (np.arange(n_vectors) % per_image) // output_cols
    return np.asarray(row * groups // output_rows, dtype=np.int64)


class ParallelBackend:
    """An :class:`ArrayBackend` whose replicated convolutions split their positions among the copies."""

    def __init__(self, inner: ArrayBackend, network: Network, layers: Sequence[str], groups: int,
                 only: int | None = None) -> None:  # fmt: skip
        check_replicable(network, layers, groups)
        if only is not None and not 0 <= only < groups:
            raise ValueError(f"group {only} is outside [0, {groups})")
        self.inner = inner
        self.groups = groups
        self.only = only
        self.output_grid = {layer.name: layer.output_shape[:2] for layer in network.layers if layer.name in set(layers)}

    def matmul(self, layer: str, x: FloatArray) -> FloatArray:
        grid = self.output_grid.get(layer)
        if grid is None:
            return self.inner.matmul(layer, x)
        if self.only is not None:
            return self.inner.matmul(replica_name(layer, self.only), x)
        group = position_groups(grid[0], grid[1], len(x), self.groups)
        out = np.zeros((len(x), self.inner.weights(layer).shape[1]))
        for g in range(self.groups):
            rows = group == g
            if rows.any():
                out[rows] = self.inner.matmul(replica_name(layer, g), x[rows])
        return out

    def weights(self, layer: str) -> FloatArray:
        """A replicated layer's weights as the copies hold them on average (its backward pass)."""
        if layer not in self.output_grid:
            return self.inner.weights(layer)
        copies = [self.inner.weights(replica_name(layer, g)) for g in range(self.groups)]
        return np.asarray(np.mean(copies, axis=0), dtype=np.float64)

    @contextmanager
    def evaluation(self) -> Iterator[None]:
        with self.inner.evaluation():
            yield


@dataclass
class ParallelResult:
    """Test accuracy of each copy alone and of the copies together, after the transfer and after the
    in-situ retraining; the pulses each cost."""

    groups_after_transfer: list[float] = field(default_factory=list)
    combined_after_transfer: float = float("nan")
    groups_after_retraining: list[float] = field(default_factory=list)
    combined_after_retraining: float = float("nan")
    software: float = float("nan")
    copy_weight_error: list[float] = field(default_factory=list)  # rms, weight units, after the transfer
    copy_cells: list[dict[str, int]] = field(default_factory=list)  # devices of each copy, per board
    transfer_pulses: int = 0
    retraining_pulses: int = 0


def accuracies(network: Network, backend: ArrayBackend, layers: Sequence[str], groups: int,
               test: tuple[FloatArray, IntArray]) -> tuple[list[float], float]:  # fmt: skip
    """Test accuracy with each copy alone, and with the copies splitting the positions."""
    alone = [evaluate(network, ParallelBackend(backend, network, layers, groups, only=g), *test)[0]
             for g in range(groups)]  # fmt: skip
    return alone, evaluate(network, ParallelBackend(backend, network, layers, groups), *test)[0]


class ParallelLearner(ArrayLearner):
    """In-situ training whose forward passes split the replicated layers' positions among the copies."""

    def __init__(self, backend: ArrayBackend, rule: UpdateRule, parallel: ParallelBackend) -> None:
        super().__init__(backend, rule)
        self.parallel = parallel

    @property
    def backend(self) -> MatmulBackend:
        return self.parallel


def run_parallel(config: TrainConfig, run: RunFile, layers: Sequence[str] = ("conv1",), groups: int = 3
                 ) -> ParallelResult:  # fmt: skip
    """Yao 2020's parallel mode end to end: software pre-training (``config.hybrid``), the transfer of
    every copy, each copy's and the combined accuracy, in-situ retraining of ``config.trained_layers``
    with the copies sharing the positions, and the accuracies again."""
    check_retrained(config.trained_layers, layers)
    network = build_network(config)
    data = load_data(config)
    test = (data[2], data[3])
    result = ParallelResult()
    weights = initial_weights(config, network, data, run, None)
    result.software = evaluate(network, ExactBackend({k: w.copy() for k, w in weights.items()}), *test)[0]
    shapes = replicated_shapes(network, layers, groups)
    copies = replicated_weights(weights, layers, groups)
    with opened_boards(config) as boards, record_link(boards, run):
        check_plan(config, boards)
        board_shapes = {name: board.shape for name, board in boards.items()}
        auto_place(shapes, board_shapes, config.bad_lines, config.layout)  # copies that cannot fit: before a pulse
        calibrations = characterize(config, boards, run)
        defects = {name: split_defects(c) for name, c in calibrations.items()}
        broken = {name: np.logical_or(*d) for name, d in defects.items()}
        spec = auto_place(shapes, board_shapes, config.bad_lines, config.layout, broken)
        spec = remap_for_weights(resolve_placement(spec, shapes, board_shapes), copies, broken)
        placement = resolve_placement(spec, shapes, board_shapes)
        check_vmm_currents(config, placement, boards)
        backend = ArrayBackend(boards, placement, g_unit=config.g_unit, v_input=config.v_input,
                               vmm_readback=config.uses_vmm_readback, layer_g_unit=config.layer_g_unit)  # fmt: skip
        hardware = Hardware(backend, update_rule(config), calibrations)
        install_calibrations(hardware, config, defects)
        result.transfer_pulses = program_weights(config, hardware, copies, config.hybrid.transfer_tolerance,
                                                 trained=True, recorder=run)  # fmt: skip
        for g in range(groups):
            names = [replica_name(layer, g) for layer in layers]
            errors = np.concatenate([(backend.weights(n) - copies[n]).ravel() for n in names])
            result.copy_weight_error.append(float(np.sqrt(np.mean(errors**2))))
            result.copy_cells.append({board: int(sum(t.cell_mask(placement.board_shapes[board]).sum()
                                                     for n in names for t in placement.tiles[n] if t.board == board))
                                      for board in placement.boards()})  # fmt: skip
        result.groups_after_transfer, result.combined_after_transfer = accuracies(network, backend, layers, groups,
                                                                                  test)  # fmt: skip
        learner = ParallelLearner(backend, hardware.rule, ParallelBackend(backend, network, layers, groups))
        trained = train(network, learner, Optimizer(config.optimizer), data, updates=config.updates,
                        batch_size=config.batch_size, eval_every=config.eval_every, seed=config.seed,
                        recorder=run, trainable=config.trained_layers)  # fmt: skip
        if trained.updates_done:
            record_pulse_counts(hardware.rule, run)
        result.retraining_pulses = trained.pulses
        result.groups_after_retraining, result.combined_after_retraining = accuracies(network, backend, layers,
                                                                                      groups, test)  # fmt: skip
    run.set_attrs(PARALLEL, **{k: json.dumps(v) if isinstance(v, list) else v for k, v in asdict(result).items()})
    return result
