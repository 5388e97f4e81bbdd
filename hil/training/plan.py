"""A training run checked whole against its boards before the first pulse.

The config's own model bounds every field on its own (finite, in a sane range); this checks what
only the opened boards can tell: every line index inside the array, every voltage the run can
apply (VMM inputs as scaled, calibration and update pulses) inside the board's limits. A refusal
names the field by its full path and the limit, and nothing has been sent.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from drivers import Board, InvalidRequest, LimitError
from hil import run_layout as layout
from hil.mapping import Placement
from hil.nn import Network
from hil.storage import RunData
from hil.training.config import TrainConfig


class PlanError(InvalidRequest):
    """A run that cannot be done on these boards; nothing was sent."""


def check_plan(config: TrainConfig, boards: Mapping[str, Board]) -> None:
    """Refuse (with :class:`PlanError`) anything the run would ask of a board that the board cannot do."""
    for name, board in boards.items():
        _check_bad_lines(config, name, board)
        _check_input_voltage(config, name, board)
        _check_pulses(config, name, board)


def check_data(
    config: TrainConfig, network: Network, sample_shape: tuple[int, ...], labels: int, n_train: int | None = None
) -> None:
    """Refuse data whose samples (``sample_shape``, one sample's) the network cannot take, or whose
    ``labels`` (how many: the largest label + 1) it cannot output: found at the first evaluation
    otherwise, after calibration and programming. A batch larger than the ``n_train`` training
    samples is refused too: each update would take fewer samples than the run file says."""
    which = "config.network" if config.network else f"model {config.model!r}"
    declared = tuple(network.spec.input_shape)
    if tuple(sample_shape) not in (declared, tuple(network.spec.canonical_input_shape())):
        hint = ""
        if config.dataset_name == "mnist-idx" and len(declared) == 2 and declared[0] == declared[1] <= 28:
            side = declared[0]
            hint = f" (a --config file with dataset = 'mnist-idx', dataset_options.size = {side} gives {side}x{side})"
        raise PlanError(f"dataset = {config.dataset_name!r}: samples of shape {tuple(sample_shape)} do not fit the "
                        f"network's input_shape {list(declared)} ({which}){hint}; nothing was sent")  # fmt: skip
    if labels > network.spec.n_classes:
        raise PlanError(f"dataset = {config.dataset_name!r}: labels 0..{labels - 1} need {labels} outputs, the "
                        f"network has n_classes = {network.spec.n_classes} ({which}); nothing was sent")  # fmt: skip
    if n_train is not None and config.updates > 0 and config.batch_size > n_train:  # a deploy alone draws no batch
        raise PlanError(f"batch_size = {config.batch_size} is larger than the {n_train} training samples of dataset = "
                        f"{config.dataset_name!r}; at most {n_train}; nothing was sent")  # fmt: skip


def check_same_data(config: TrainConfig, previous: RunData, digest: str) -> None:
    """Refuse to resume a run on other data than it trained on (other files in its folder, another
    split): the resumed updates would silently train another task. Runs written before the digest
    was kept are not checked."""
    stored = previous.root.get(layout.DATASET_DIGEST)
    if stored is not None and str(stored) != digest:
        where = f" from {config.dataset_options['directory']}" if "directory" in config.dataset_options else ""
        raise PlanError(f"dataset = {config.dataset_name!r}{where} is not the data this run trained on (labels or "
                        f"sizes differ: digest {digest}, the run's {stored}); resume it on the same data; "
                        "nothing was sent")  # fmt: skip


def check_weight_span(config: TrainConfig, weights: Mapping[str, npt.NDArray[np.float64]]) -> None:
    """Refuse initial weights (as they will be written: from a file after any fit, or drawn at
    ``init_scale``) past what a pair of nominal devices holds, ``weight_limit`` in the layer's unit:
    their devices would be written to the ends of their reach instead, silently another network."""
    if config.weight_limit <= 0:
        return  # no gate window at all: check_plan names the gate voltages
    if config.initial_weights is not None:
        source, remedy = "initial_weights", "scale the weights, or fit them (hil deploy without --no-fit)"
    else:
        source, remedy = f"init_scale = {config.init_scale:g}", "lower init_scale"
    for layer, w in weights.items():
        top = float(np.abs(w).max()) if w.size else 0.0
        limit = config.weight_limit * config.g_unit / config.layer_g_unit.get(layer, config.g_unit)
        if top > limit:
            raise PlanError(f"{source}: {layer!r} holds |w| up to {top:.4g}, past the {limit:.4g} a pair of "
                            f"nominal devices holds (gate_coded.set_slope x gate window / g_unit); {remedy}; "
                            "nothing was sent")  # fmt: skip


def _check_bad_lines(config: TrainConfig, name: str, board: Board) -> None:
    bad = config.bad_lines.get(name)
    if bad is None:
        return
    for axis, lines, size in (("rows", bad.rows, board.shape[0]), ("cols", bad.cols, board.shape[1])):
        for i, line in enumerate(lines):
            if line >= size:
                shape = f"{board.shape[0]} x {board.shape[1]}"
                raise PlanError(f"bad_lines.{name}.{axis}[{i}] = {line} is outside the array of {name} "
                                f"({shape}: 0 to {size - 1}); nothing was sent")  # fmt: skip


def _check_input_voltage(config: TrainConfig, name: str, board: Board) -> None:
    """The largest VMM row voltage is ``v_input`` (inputs are scaled to it), of either sign."""
    limit = board.limits.v_read
    if not (limit.min <= -config.v_input and config.v_input <= limit.max):
        raise PlanError(f"v_input = {config.v_input:g} V: VMM inputs of +-{config.v_input:g} V are outside "
                        f"{name}'s read limit [{limit.min:g}, {limit.max:g}] V; nothing was sent")  # fmt: skip


def _check_pulses(config: TrainConfig, name: str, board: Board) -> None:
    """Calibration and gate-coded updates: SET at v_set over the gate window, RESET at v_reset."""
    g = config.gate_coded
    pulses = (
        ("gate_coded.v_set / v_gate_min", "SET", g.v_set, g.v_gate_min),
        ("gate_coded.v_set / v_gate_max", "SET", g.v_set, g.v_gate_max),
        ("gate_coded.v_reset / v_gate_reset", "RESET", g.v_reset, g.v_gate_reset),
    )
    if g.v_gate_min > g.v_gate_max:
        raise PlanError(f"gate_coded.v_gate_min = {g.v_gate_min:g} V is above gate_coded.v_gate_max = "
                        f"{g.v_gate_max:g} V; nothing was sent")  # fmt: skip
    for fields, kind, amplitude, v_gate in pulses:
        try:
            board.check_pulses(kind, amplitude, v_gate, g.width, mask=[[True]])
        except LimitError as exc:
            raise PlanError(f"{fields} / gate_coded.width: {kind} pulses on {name}: {exc}") from None


def check_vmm_currents(config: TrainConfig, placement: Placement, boards: Mapping[str, Board]) -> None:
    """The largest column current a forward pass can ask for: every row of a tile at ``v_input``
    (an input vector of equal values) through cells at the board's ``g_cell_max``."""
    for layer, tiles in placement.tiles.items():
        for i, tile in enumerate(tiles):
            board = boards[tile.board]
            rows = len(tile.plus_rows) + len(tile.minus_rows)
            worst, limit = board.predicted_column_current(rows, config.v_input), board.limits.i_col.max
            if worst > limit:
                raise PlanError(f"v_input = {config.v_input:g} V: layer {layer!r} tile {i} drives {rows} rows of "
                                f"{tile.board}, up to {worst * 1e3:.3g} mA into a column; its limit is "
                                f"{limit * 1e3:.3g} mA (a v_input of at most {board.largest_vmm_input(rows):.3g} V "
                                "in the training config fits); nothing was sent")  # fmt: skip
