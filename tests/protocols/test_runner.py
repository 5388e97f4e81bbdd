"""The sequence runner on the in-process emulated board: checked whole first, one round trip per step."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from drivers import Board, LimitError, codec, open_board
from protocols.recording import MemoryRecorder
from protocols.runner import (
    SequenceCheckError,
    SequenceLimitError,
    check_sequence,
    run_sequence,
)
from protocols.sequences import (
    Delay,
    Loop,
    Pulse,
    PulseSequence,
    Read,
    Step,
    TargetRegion,
    Targets,
    load_sequence,
)

IDEAL = "emulator://?preset=ideal&seed=1&rows=16&cols=8"
EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"

SET = Pulse(kind="SET", amplitude=2.0, v_gate=1.5, width=1e-6)
RESET = Pulse(kind="RESET", amplitude=1.2, v_gate=5.0, width=1e-6)
READ = Read(v_read=0.2)


class Counter:
    """Counts commands sent: every exchange is exactly one transport write."""

    def __init__(self, board: Board, monkeypatch: pytest.MonkeyPatch) -> None:
        self.headers: list[bytes] = []
        write = board._transport.write

        def counting_write(data: bytes) -> None:
            self.headers.append(codec.unframe(data).split(b" ", 1)[0].strip())
            write(data)

        monkeypatch.setattr(board._transport, "write", counting_write)

    @property
    def count(self) -> int:
        return len(self.headers)


@pytest.fixture
def board() -> Iterator[Board]:
    with open_board(IDEAL) as opened:
        yield opened


@pytest.fixture
def counter(board: Board, monkeypatch: pytest.MonkeyPatch) -> Counter:
    return Counter(board, monkeypatch)


def sequence(
    steps: list[Step], cells: list[list[int]] | None = None, region: TargetRegion | None = None
) -> PulseSequence:
    targets = Targets(cells=cells if cells is not None else [[2, 3]], region=region)
    return PulseSequence(name="test", targets=targets, steps=steps)


# ----------------------------------------------------------------------------- refused before anything is applied


def test_one_bad_element_deep_in_a_loop_refuses_the_whole_sequence(board: Board, counter: Counter) -> None:
    before = board.read_map()
    bad_reset = Pulse(kind="RESET", amplitude=4.5, v_gate=5.0, width=1e-6)  # VCOL is [-4, 4] V
    steps: list[Step] = [
        SET,  # would change the cells at once if the runner did not check everything first
        READ,
        Loop(repeat=5, steps=[READ, Loop(repeat=3, steps=[SET, bad_reset])]),
    ]
    counter.headers.clear()
    with pytest.raises(SequenceLimitError) as info:
        run_sequence(board, sequence(steps, cells=[[0, 0], [4, 5]]))
    assert counter.count == 0  # not a byte sent
    assert board.read_map() == pytest.approx(before, rel=0, abs=0)
    error = info.value
    assert isinstance(error, LimitError)
    assert error.path == "steps[2] (loop 1 of 5) > steps[1] (loop 1 of 3) > steps[1]"
    assert (error.value, error.low, error.high) == (4.5, 0.0, 4.0)
    assert str(error) == (
        "steps[2] (loop 1 of 5) > steps[1] (loop 1 of 3) > steps[1]: RESET amplitude (v_col)[0, 0] = 4.5 V "
        "is outside the limit [0, 4] V; nothing was sent"
    )


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (Pulse(kind="SET", amplitude=2.0, v_gate=6.0, width=1e-6),
         "SET v_gate[2, 3] = 6 V is outside the limit [0, 5.5] V"),
        (Pulse(kind="FORM", amplitude=2.0, v_gate=1.0, width=1.0),
         "FORM width[2, 3] = 1 s is outside the limit [1e-08, 0.001] s"),
        (Pulse(kind="SET", amplitude=4.01, v_gate=1.0, width=1e-6), "SET amplitude (v_row)[2, 3] = 4.01 V"),
        (Read(v_read=0.6), "v_read = 0.6 V is outside the limit [-0.5, 0.5] V"),
        (Delay(seconds=2e7), "seconds = 2e+07 s is outside the limit [0, 1e+07] s"),
    ],
)  # fmt: skip
def test_each_kind_of_limit_is_named_with_path_value_and_limit(
    board: Board, counter: Counter, step: Step, message: str
) -> None:
    counter.headers.clear()
    with pytest.raises(SequenceCheckError) as info:
        check_sequence(board, sequence([READ, Loop(repeat=2, steps=[READ, step])]))
    assert str(info.value).startswith("steps[1] (loop 1 of 2) > steps[1]: ")
    assert message in str(info.value)
    assert counter.count == 0


def test_a_target_outside_the_array_is_refused(board: Board, counter: Counter) -> None:
    counter.headers.clear()
    with pytest.raises(SequenceLimitError) as info:
        run_sequence(board, sequence([SET, READ], cells=[[0, 0], [3, 8]]))
    assert str(info.value) == "targets: col of target cell [3, 8] = 8 is outside the limit [0, 7]; nothing was sent"
    with pytest.raises(SequenceLimitError, match=r"row of target cell \[16, 0\] = 16 is outside the limit \[0, 15\]"):
        check_sequence(board, sequence([READ], region=TargetRegion(row0=10, col0=0, nrows=7, ncols=1), cells=[]))
    assert counter.count == 0


def test_a_sequence_mutated_past_the_step_cap_is_refused(board: Board) -> None:
    too_long = sequence([READ]).model_copy(update={"steps": [Loop.model_construct(repeat=10**9, steps=[READ])]})
    with pytest.raises(SequenceCheckError, match="expands to 1,000,000,000 steps"):
        check_sequence(board, too_long)


def test_too_many_read_values_are_refused(board: Board, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("protocols.runner.MAX_READ_VALUES", 99)
    with pytest.raises(SequenceCheckError, match="100 reads of 1 cells return 100 values; at most 99"):
        check_sequence(board, sequence([Loop(repeat=100, steps=[READ])]))


# ----------------------------------------------------------------------------- round trips


def mixed_steps() -> list[Step]:
    return [
        READ,
        Loop(repeat=4, steps=[SET, READ, Loop(repeat=2, steps=[Delay(seconds=1.0), RESET])]),
        Delay(seconds=0.0),
        READ,
    ]


@pytest.mark.parametrize("n_targets", [1, 50])
def test_round_trips_equal_steps_whatever_the_number_of_targets(board: Board, counter: Counter, n_targets: int) -> None:
    cells = np.random.default_rng(n_targets).permutation(16 * 8)[:n_targets]
    targets = [[int(c) // 8, int(c) % 8] for c in cells]
    seq = sequence(mixed_steps(), cells=targets)
    assert seq.n_steps == 1 + 4 * (2 + 2 * 2) + 2
    counter.headers.clear()
    checked = check_sequence(board, seq)
    assert counter.count == 0  # the dry check sends nothing
    result = run_sequence(board, seq)
    assert counter.count == seq.n_steps == len(checked.plan)
    batches = counter.headers.count(b"PULS:BATC") + counter.headers.count(b"PULS:SPAR")  # dense or sparse form
    assert batches == checked.n_pulses == 12
    assert counter.headers.count(b"MAP?") + counter.headers.count(b"MAP:CODE?") == checked.n_reads == 6
    assert counter.headers.count(b"SYST:WAIT") == 9
    assert result.pulses_applied == 12 * n_targets


def test_timestamps_cost_one_clock_query_per_read(board: Board, counter: Counter) -> None:
    seq = sequence([READ, Delay(seconds=100.0), READ, Delay(seconds=3600.0), READ])
    counter.headers.clear()
    result = run_sequence(board, seq, timestamps=True)
    assert counter.count == seq.n_steps + 3
    assert result.read_times is not None
    # The emulator's simulated clock jumps by each delay.
    assert np.diff(result.read_times) == pytest.approx([100.0, 3600.0], abs=0.1)


def test_batches_not_kept_in_memory_are_rechecked_and_still_one_round_trip(
    board: Board, counter: Counter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("protocols.runner.MAX_CACHED_BATCH_BYTES", 0)
    seq = sequence([SET, READ, RESET, READ], cells=[[0, 0], [1, 1]])
    checked = check_sequence(board, seq)
    assert all(p.batch is None for p in checked.plan)
    counter.headers.clear()
    result = run_sequence(board, seq)
    assert counter.count == 4 and result.pulses_applied == 4
    assert (result.reads[0] > result.reads[1]).all()  # SET raised, RESET lowered


# ----------------------------------------------------------------------------- reads


def test_reads_come_back_in_order_with_one_column_per_target(board: Board) -> None:
    region = TargetRegion(row0=1, col0=1, nrows=2, ncols=2)
    seq = sequence([READ, Loop(repeat=3, steps=[Delay(seconds=1.0), READ]), SET, READ], cells=[[9, 6], [0, 7]],
                   region=region)  # fmt: skip
    board.set_pulse(9, 6, amplitude=2.0, v_gate=3.0, width=1e-6)  # make one target stand out
    recorder = MemoryRecorder()
    result = run_sequence(board, seq, recorder)

    assert result.targets.tolist() == [[1, 1], [1, 2], [2, 1], [2, 2], [9, 6], [0, 7]]
    assert result.reads.shape == (5, 6)
    assert result.read_steps.tolist() == [0, 2, 4, 6, 8]
    assert all(isinstance(result.checked.plan[i].step, Read) for i in result.read_steps)
    # Column 4 is cell (9, 6), the one pulsed beforehand: the brightest in every read before the SET.
    assert (result.reads[:4].argmax(axis=1) == 4).all()
    # The last read is the board's own map at the targets (the ideal preset has no read noise).
    g = board.read_map()
    assert result.reads[-1] == pytest.approx(g[result.targets[:, 0], result.targets[:, 1]], rel=1e-6)

    assert np.array_equal(recorder.datasets["sequence/reads"], result.reads)
    assert recorder.datasets["sequence/read_step"].tolist() == [0, 2, 4, 6, 8]
    assert np.array_equal(recorder.datasets["sequence/targets"], result.targets)
    assert recorder.attrs["sequence/targets"] == {"sequence": "test", "n_steps": 9}
    assert (recorder.steps_done, recorder.total) == (9, 9)
    assert "sequence/read_time" not in recorder.datasets


def test_a_sequence_without_reads_returns_an_empty_array(board: Board) -> None:
    result = run_sequence(board, sequence([SET, Delay(seconds=1.0)], cells=[[0, 0], [0, 1], [0, 2]]))
    assert result.reads.shape == (0, 3)
    assert result.read_steps.shape == (0,)
    assert result.read_times is None


def test_pulse_train_moves_conductance_the_expected_way(board: Board) -> None:
    seq = load_sequence(EXAMPLES / "pulse-train.toml")
    untouched = board.read_map()[8:, :]  # outside the example's 4 x 4 target block
    result = run_sequence(board, seq)
    reads = result.reads.mean(axis=1)  # (41,): start, 20 after SET pulses, 20 after RESET pulses
    start, after_set, after_reset = reads[0], reads[1:21], reads[21:]
    assert after_set[0] > start * 1.1  # SET raises
    assert np.all(np.diff(after_set) >= -1e-9)  # and never lowers
    assert after_reset[-1] < after_set[-1] * 0.9  # RESET lowers
    assert np.all(np.diff(after_reset) <= 1e-9)  # and never raises
    assert result.pulses_applied == 40 * 16
    assert board.read_map()[8:, :] == pytest.approx(untouched, rel=0, abs=0)  # the mask kept others out


def test_retention_example_runs_in_simulated_hours(board: Board) -> None:
    seq = load_sequence(EXAMPLES / "retention-check.json")
    result = run_sequence(board, seq, timestamps=True)
    assert result.reads.shape == (15, 4)
    assert result.read_times is not None
    assert result.read_times[-1] - result.read_times[0] == pytest.approx(1000 + 10 * 3600, abs=1)
