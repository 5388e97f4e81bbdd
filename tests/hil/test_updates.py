"""Weight changes as pulses: the gate-coded two-pulse scheme and threshold write-verify."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from drivers import Board, PulseBatch, PulseKind, open_board
from hil.array_backend import ArrayBackend
from hil.mapping import BadLines, auto_place, resolve_placement
from hil.updates import (
    GateCodedConfig,
    GateCodedUpdate,
    UpdateRule,
    UpdateStats,
    WriteVerifyUpdate,
    WriteVerifyUpdateConfig,
)

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IDEAL = "emulator://?preset=ideal&seed=1&rows=32&cols=16"
SHAPE = (4, 3)
G_MID_GATE = 1.5  # V: every used device starts SET here, mid-window, so weights can move both ways


@dataclass
class Batch:
    """One pulse batch the rule sent."""

    kind: PulseKind
    v_gate: FloatArray
    mask: BoolArray


def spy_pulses(board: Board, monkeypatch: pytest.MonkeyPatch) -> list[Batch]:
    """Record every pulse batch sent to ``board`` (and still send it), as whole-board maps."""
    batches: list[Batch] = []
    apply = board.apply_pulses

    def recording(kind: Any, amplitude: Any = 0.0, v_gate: Any = 0.0, width: Any = 0.0, mask: Any = None,
                  origin: tuple[int, int] = (0, 0)) -> int:  # fmt: skip
        if isinstance(kind, PulseBatch):
            batch = kind
        else:
            batch = board.check_pulses(kind, amplitude, v_gate, width, mask, origin)
        where = (slice(batch.region.row0, batch.region.row0 + batch.region.nrows),
                 slice(batch.region.col0, batch.region.col0 + batch.region.ncols))  # fmt: skip
        full_mask, gates = np.zeros(board.shape, dtype=bool), np.zeros(board.shape)
        full_mask[where] = batch.planes[3] != 0
        gates[where] = batch.planes[1]
        batches.append(Batch(batch.kind, gates, full_mask))
        return apply(batch)

    monkeypatch.setattr(board, "apply_pulses", recording)
    return batches


@pytest.fixture
def board() -> Iterator[Board]:
    with open_board(IDEAL) as opened:
        yield opened


def mid_window_backend(board: Board, bad_lines: dict[str, BadLines] | None = None) -> ArrayBackend:
    """A 4 x 3 layer whose devices all sit at the conductance of a SET at ``G_MID_GATE``; read back."""
    shapes = {"w": SHAPE}
    boards = {"board0": board.shape}
    placement = resolve_placement(auto_place(shapes, boards, bad_lines), shapes, boards)
    board.apply_pulses(PulseKind.SET, 2.5, G_MID_GATE, 1e-6, mask=placement.used_mask("board0"))
    backend = ArrayBackend({"board0": board}, placement)
    backend.read_back()
    return backend


def gate_coded(backend: ArrayBackend, **config: Any) -> GateCodedUpdate:
    rule = GateCodedUpdate(GateCodedConfig(**config))
    rule.recall(backend)
    return rule


def step(rule: UpdateRule, backend: ArrayBackend, dw: FloatArray) -> tuple[FloatArray, UpdateStats]:
    """Apply one change to layer "w"; the read-back weight change and the stats."""
    before = backend.weights("w")
    stats = rule.apply(backend, {"w": dw})
    backend.read_back()
    return backend.weights("w") - before, stats


def signed_changes(seed: int, low: float = 0.2, high: float = 0.6) -> FloatArray:
    rng = np.random.default_rng(seed)
    return np.asarray(rng.choice([-1.0, 1.0], SHAPE) * rng.uniform(low, high, SHAPE))


# ---------------------------------------------------------------------------- gate-coded


def test_recall_takes_the_gate_memory_from_the_read_back(board: Board) -> None:
    backend = mid_window_backend(board)
    rule = gate_coded(backend)
    memory = rule.memory["board0"]
    used = backend.placement.used_mask("board0")
    assert np.allclose(memory.v_gate_applied[used], G_MID_GATE, atol=1e-3)
    assert np.array_equal(memory.v_gate_target, memory.v_gate_applied)
    assert np.allclose(memory.v_gate_applied[~used], 0.6)  # fresh devices: below the window, clipped


def test_the_read_weight_moves_by_the_requested_change(board: Board) -> None:
    backend = mid_window_backend(board)
    rule = gate_coded(backend)
    for seed in range(3):
        dw = signed_changes(seed)
        moved, stats = step(rule, backend, dw)
        assert (np.sign(moved) == np.sign(dw)).all()
        assert np.abs(moved - dw).max() < 0.02  # ideal devices follow the nominal SET line
        assert stats.devices_changed == 2 * dw.size


def test_a_change_below_dvg_min_waits_until_changes_add_up(board: Board, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = mid_window_backend(board)
    rule = gate_coded(backend, dvg_min=0.03)
    batches = spy_pulses(board, monkeypatch)
    # dW = 0.02 is dG = 1 uS per device, dVg = 1e-6 / 98e-6 = 0.0102 V: under dvg_min twice, over it thrice.
    small = np.full(SHAPE, 0.02)
    for _ in range(2):
        moved, stats = step(rule, backend, small)
        assert stats.pulses == 0 and stats.devices_changed == 0
        assert not moved.any()
    assert batches == []
    moved, stats = step(rule, backend, small)
    assert stats.devices_changed == 2 * small.size
    assert np.allclose(moved, 3 * small, atol=0.01)


def test_stochastic_rounding_pulses_a_small_change_as_whole_steps_unbiased(board: Board) -> None:
    backend = mid_window_backend(board)
    rule = gate_coded(backend, dvg_min=0.03, rounding="stochastic", seed=4)
    memory = rule.memory["board0"]
    used = backend.placement.used_mask("board0")
    applied_before = memory.v_gate_applied.copy()
    # dVg = 0.0102 V per device (+ on G+, - on G-), a third of dvg_min: each device is pulsed with
    # probability about 0.34, by one step of dvg_min in the direction asked
    moves: list[FloatArray] = []
    for _ in range(12):
        applied = memory.v_gate_applied.copy()
        step(rule, backend, np.full(SHAPE, 0.02))
        moves.append((memory.v_gate_applied - applied)[used])
    steps = np.concatenate(moves)
    pulsed = np.abs(steps[steps != 0])
    assert (pulsed >= 0.03 - 1e-9).all() and (pulsed < 0.045).all()  # a step, or a change that added up past it
    assert 0.2 < np.mean(steps != 0) < 0.5
    # on average each device moved as asked (0.0102 V per update), not later
    moved = np.abs(memory.v_gate_applied - applied_before)[used]
    assert np.mean(moved) == pytest.approx(12 * 0.0102, rel=0.25)
    # the draws are keyed by the update count, which a checkpoint keeps
    restored = gate_coded(backend, dvg_min=0.03, rounding="stochastic", seed=4)
    restored.load_state_arrays("board0", rule.state_arrays()["board0"])
    assert restored.updates == 12
    assert np.array_equal(restored.memory["board0"].v_gate_applied, memory.v_gate_applied)


def test_dvg_min_zero_pulses_every_change(board: Board) -> None:
    backend = mid_window_backend(board)
    rule = gate_coded(backend, dvg_min=0.0)
    moved, stats = step(rule, backend, np.full(SHAPE, 0.02))
    assert stats.devices_changed == 2 * np.prod(SHAPE)
    assert np.allclose(moved, 0.02, atol=0.01)


def test_reset_precedes_set_where_the_gate_falls(board: Board, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = mid_window_backend(board)
    rule = gate_coded(backend)
    batches = spy_pulses(board, monkeypatch)
    dw = signed_changes(4)
    step(rule, backend, dw)

    assert [b.kind for b in batches] == [PulseKind.RESET, PulseKind.SET]  # one batch of each, in that order
    (tile,) = backend.placement.tiles["w"]
    falls = np.zeros(board.shape, dtype=bool)  # G+ of a falling weight, G- of a rising one
    falls[np.ix_(tile.plus_rows, tile.cols)] = dw < 0
    falls[np.ix_(tile.minus_rows, tile.cols)] = dw > 0
    assert np.array_equal(batches[0].mask, falls)
    assert np.array_equal(batches[1].mask, backend.placement.used_mask("board0"))
    memory = rule.memory["board0"]
    assert np.allclose(batches[1].v_gate[batches[1].mask], memory.v_gate_target[batches[1].mask], atol=1e-6)


# Only write noise (4 uS per programming event), on a 16 x 8 layer: a device SET lands at
# max(its compliance level + noise, where it was), so small raises keep the higher of two errors.
WRITE_NOISE_ONLY = "emulator://?preset=ideal&seed=3&rows=32&cols=16&write_noise=4e-6"


def mean_weight_error_after_small_raises(reset_above: bool) -> float:
    """Raise every weight of a 16 x 8 layer by 0.01 (0.5 uS per device, a third of dvg_min) 45
    times; the mean of the read weights minus what was asked."""
    with open_board(WRITE_NOISE_ONLY) as board:
        shapes, boards = {"w": (16, 8)}, {"board0": board.shape}
        placement = resolve_placement(auto_place(shapes, boards), shapes, boards)
        board.apply_pulses(PulseKind.SET, 2.5, G_MID_GATE, 1e-6, mask=placement.used_mask("board0"))
        backend = ArrayBackend({"board0": board}, placement)
        backend.read_back()
        start = backend.weights("w")
        rule = gate_coded(backend, reset_above=reset_above)
        for _ in range(45):
            rule.apply(backend, {"w": np.full((16, 8), 0.01)})
            backend.read_back()
        return float(np.mean(backend.weights("w") - start - 0.45))


def test_small_raises_ratchet_upward_unless_a_device_above_its_level_is_reset_first() -> None:
    # without: G+ (raised in steps of about 1.5 uS against 4 uS of noise) sits about 0.6 sigma above
    # its level, 2.5 uS, a weight error of +0.025 at 100 uS per unit weight (G-, lowered by RESET
    # and SET, lands unbiased)
    assert mean_weight_error_after_small_raises(reset_above=False) > 0.012
    assert abs(mean_weight_error_after_small_raises(reset_above=True)) < 0.008


def test_the_gate_is_clipped_to_its_window(board: Board, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = mid_window_backend(board)
    rule = gate_coded(backend)
    batches = spy_pulses(board, monkeypatch)
    step(rule, backend, np.full(SHAPE, 50.0))  # asks G+ for +2.5 mS: far beyond the window

    (set_batch,) = [b for b in batches if b.kind is PulseKind.SET]
    (tile,) = backend.placement.tiles["w"]
    assert np.allclose(set_batch.v_gate[np.ix_(tile.plus_rows, tile.cols)], 2.5)
    assert np.allclose(set_batch.v_gate[np.ix_(tile.minus_rows, tile.cols)], 0.6)
    memory = rule.memory["board0"]
    assert memory.v_gate_target.max() <= 2.5 and memory.v_gate_target.min() >= 0.6


def test_defective_devices_are_never_pulsed(board: Board, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = mid_window_backend(board)
    rule = gate_coded(backend)
    (tile,) = backend.placement.tiles["w"]
    defective = np.zeros(board.shape, dtype=bool)
    defective[tile.plus_rows[0], tile.cols[0]] = True
    defective[tile.minus_rows[2], tile.cols[1]] = True
    rule.memory["board0"].defective = defective
    batches = spy_pulses(board, monkeypatch)
    g_before = backend.conductance["board0"].copy()
    for seed in range(3):
        step(rule, backend, signed_changes(seed))

    assert batches and not any((b.mask & defective).any() for b in batches)
    assert (rule.memory["board0"].pulses[defective] == 0).all()
    assert np.array_equal(backend.conductance["board0"][defective], g_before[defective])


def test_pulse_counts_per_device_add_up(board: Board, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = mid_window_backend(board)
    rule = gate_coded(backend)
    batches = spy_pulses(board, monkeypatch)
    total = 0
    for seed in range(4):
        _, stats = step(rule, backend, signed_changes(seed, low=0.0, high=0.3))
        total += stats.pulses
    pulses = rule.memory["board0"].pulses
    assert total > 0
    assert pulses.sum() == total
    assert np.array_equal(pulses, sum(b.mask.astype(np.int64) for b in batches))
    assert (pulses[~backend.placement.used_mask("board0")] == 0).all()


def test_unused_and_bad_line_devices_are_never_pulsed(board: Board, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = mid_window_backend(board, {"board0": BadLines(rows=[1, 2], cols=[0])})
    rule = gate_coded(backend)
    batches = spy_pulses(board, monkeypatch)
    for seed in range(3):
        step(rule, backend, signed_changes(seed))
    used = backend.placement.used_mask("board0")
    assert not used[[1, 2], :].any() and not used[:, 0].any()
    assert not any((b.mask & ~used).any() for b in batches)


# ---------------------------------------------------------------------------- write-verify


def write_verifying(backend: ArrayBackend, threshold: float = 1.5e-6) -> WriteVerifyUpdate:
    rule = WriteVerifyUpdate(WriteVerifyUpdateConfig(threshold=threshold, tolerance=1e-6, max_iterations=10))
    rule.recall(backend)
    return rule


def test_write_verify_writes_only_changes_beyond_the_threshold(board: Board) -> None:
    backend = mid_window_backend(board)
    rule = write_verifying(backend, threshold=1.5e-6)
    dw = np.full(SHAPE, 0.02)  # 1 uS per device: under the threshold
    dw[0, :] = [0.4, -0.4, 0.2]  # 20 uS, -20 uS, 10 uS
    moved, stats = step(rule, backend, dw)

    (tile,) = backend.placement.tiles["w"]
    pulses = rule.pulses["board0"]
    written = np.zeros(board.shape, dtype=bool)
    written[tile.plus_rows[0], tile.cols] = True
    written[tile.minus_rows[0], tile.cols] = True
    assert stats.devices_changed == 6
    assert (pulses[written] > 0).all() and (pulses[~written] == 0).all()
    assert stats.pulses == pulses.sum()
    assert np.abs(moved[0] - dw[0]).max() < 0.04  # two devices within 1 uS each
    assert not moved[1:].any()


def test_write_verify_accumulates_small_changes(board: Board) -> None:
    backend = mid_window_backend(board)
    rule = write_verifying(backend, threshold=1.5e-6)
    small = np.full(SHAPE, 0.02)  # 1 uS per device per update
    first, first_stats = step(rule, backend, small)
    assert first_stats.devices_changed == 0 and not first.any()
    second, second_stats = step(rule, backend, small)
    assert second_stats.devices_changed == 2 * small.size  # 2 uS pending now exceeds 1.5 uS
    assert np.allclose(second, 0.04, atol=0.03)


def test_write_verify_skips_defective_devices(board: Board) -> None:
    backend = mid_window_backend(board)
    rule = write_verifying(backend)
    (tile,) = backend.placement.tiles["w"]
    defective = np.zeros(board.shape, dtype=bool)
    defective[tile.plus_rows[1], tile.cols[2]] = True
    rule.defective["board0"] = defective
    step(rule, backend, np.full(SHAPE, 0.3))
    assert rule.pulses["board0"][defective].sum() == 0
    assert (rule.pulses["board0"][backend.placement.used_mask("board0") & ~defective] > 0).all()


def test_write_verify_never_pulses_devices_outside_the_placement(monkeypatch: pytest.MonkeyPatch) -> None:
    # The realistic preset's read noise (1 %, ~1.2 uS on a fresh device) against a 1.5 uS threshold.
    resource = "emulator://?preset=umass-ta-hfo2&seed=1&rows=32&cols=16&stuck_low_fraction=0&stuck_high_fraction=0"
    with open_board(resource) as noisy:
        backend = mid_window_backend(noisy, {"board0": BadLines(rows=[0], cols=[3])})
        rule = write_verifying(backend)
        batches = spy_pulses(noisy, monkeypatch)
        for _ in range(2):
            backend.read_back()
            rule.apply(backend, {"w": np.zeros(SHAPE)})
    used = backend.placement.used_mask("board0")
    assert (rule.pulses["board0"][~used] == 0).all()
    assert not any((b.mask & ~used).any() for b in batches)


@pytest.mark.parametrize("change", [-50.0, 50.0])
def test_write_verify_targets_stay_in_the_window_a_device_can_hold(board: Board, change: float) -> None:
    """A run of same-signed changes pushes one device of each pair below zero conductance and the other past
    the cell maximum: the targets are held to what a device can hold, not sent for the Board to refuse."""
    backend = mid_window_backend(board)
    rule = write_verifying(backend)
    for _ in range(2):
        step(rule, backend, np.full(SHAPE, change))
    target = rule.g_target["board0"]
    assert (target > 0).all() and (target <= board.limits.g_cell_max).all()


# ---------------------------------------------------------------------------- the shared interface


@pytest.mark.parametrize("kind", ["gate-coded", "write-verify"])
def test_each_rule_takes_a_calibration_through_install_and_never_pulses_what_it_marks(
    board: Board, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """The trainer hands every rule the same things the same way (UpdateRule.install), whatever its type."""
    from protocols.calibration import calibrate_gate

    backend = mid_window_backend(board)
    used = backend.placement.used_mask("board0")
    calibration = calibrate_gate(board, np.linspace(0.8, 2.2, 4), mask=used)
    board.apply_pulses(PulseKind.SET, 2.5, G_MID_GATE, 1e-6, mask=used)  # back to mid-window after the calibration
    backend.read_back()
    rule: UpdateRule = (
        GateCodedUpdate(GateCodedConfig()) if kind == "gate-coded" else WriteVerifyUpdate(WriteVerifyUpdateConfig())
    )
    (tile,) = backend.placement.tiles["w"]
    defective = np.zeros(board.shape, dtype=bool)
    defective[tile.plus_rows[0], tile.cols[0]] = defective[tile.minus_rows[2], tile.cols[1]] = True
    rule.install(backend, "board0", calibration, defective)
    rule.recall(backend)
    batches = spy_pulses(board, monkeypatch)
    for seed in range(2):
        step(rule, backend, signed_changes(seed))
    assert batches and not any((b.mask & defective).any() for b in batches)
    pulses = rule.state_arrays()["board0"]["pulses"]
    assert pulses[defective].sum() == 0 and pulses[used & ~defective].sum() > 0
