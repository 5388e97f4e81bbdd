"""The host's VMM path: its fast checks decide as the element-by-element ones do, and the bytes it
sends do not depend on how the caller's batch is laid out in memory."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers import Board, InvalidRequest, LimitError, Range, Region, SafetyLimits, open_board
from drivers.limits import check_array

I_COL = Range(min=-2e-3, max=2e-3)
LIMITS = SafetyLimits(
    v_row=Range(min=-3.0, max=3.0), v_col=Range(min=-3.0, max=3.0), v_gate=Range(min=0.0, max=5.0),
    v_read=Range(min=-0.3, max=0.3), pulse_width=Range(min=1e-8, max=1e-4), i_col=I_COL, g_cell_max=1e-3,
)  # fmt: skip


@pytest.fixture(scope="module")
def board() -> Iterator[Board]:
    with open_board("emulator://?preset=ideal&rows=16&cols=8&seed=3", limits=LIMITS) as opened:
        yield opened


def refused_exactly(inputs: np.ndarray) -> bool:
    """The check as it reads: every vector's sum of |v| times ``g_cell_max`` against ``i_col``."""
    worst = np.add.reduce(np.abs(inputs.astype(np.float32)), axis=1, dtype=np.float64) * LIMITS.g_cell_max
    try:
        check_array("predicted column current of vector", worst, I_COL, "A")
    except LimitError:
        return True
    return False


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    nvec=st.integers(1, 6), driven=st.integers(1, 16), level=st.floats(0.0, 0.3), fill=st.floats(0.3, 1.0),
    spread=st.floats(0.0, 0.5), seed=st.integers(0, 2**16),
)  # fmt: skip
def test_the_current_bound_refuses_what_the_sums_refuse_and_nothing_else(
    board: Board, nvec: int, driven: int, level: float, fill: float, spread: float, seed: int
) -> None:
    # Batches around the limit: 16 rows at up to 0.3 V and 1 mS reach 4.8 mA, the limit is 2 mA,
    # so the bound (rows x largest input) settles some batches and the sums the others.
    rng = np.random.default_rng(seed)
    inputs = np.zeros((nvec, 16))
    signs = rng.choice([-1.0, 1.0], (nvec, driven)) * (rng.random((nvec, driven)) < fill)
    inputs[:, :driven] = level * signs * rng.uniform(1.0 - spread, 1.0, (nvec, driven))
    transport = board.link.transport
    write, writes = transport.write, []

    def counting(data: bytes) -> None:
        writes.append(len(data))
        write(data)

    transport.write = counting  # type: ignore[method-assign]
    try:
        board.vmm(inputs, Region(0, 0, 16, 8))
        refused = False
    except LimitError as exc:
        refused = True
        assert "predicted column current of vector" in str(exc)
        assert not writes  # refused before a byte was sent
    finally:
        transport.write = write  # type: ignore[method-assign]
    assert refused == refused_exactly(inputs)


def test_a_batch_laid_out_column_major_sends_the_same_bytes(board: Board) -> None:
    rng = np.random.default_rng(5)
    batch = (rng.uniform(-0.2, 0.2, (40, 16)) * (rng.random((40, 16)) < 0.4)).astype(np.float32)
    batch[:, [3, 11]] = 0.0  # rows no vector drives
    layouts = [batch, np.asfortranarray(batch), batch.astype(np.float64)[:, ::-1][:, ::-1]]
    sent, _ = _sent_commands(board, [(layout, {"columns": [1, 4]}) for layout in layouts])
    assert len(sent) == 3 and sent[0].startswith(b"VMM:CODE?")
    assert sent[0] == sent[1] == sent[2]


def test_pulse_values_outside_the_limits_are_refused_only_where_the_mask_selects_them(board: Board) -> None:
    """The check's shortcut (every value inside: nothing to refuse) must not hide a selected value outside,
    nor refuse an unselected one."""
    gates = np.full((16, 8), 2.0)
    gates[4, 5] = 9.0  # beyond v_gate (5 V)
    mask = np.ones((16, 8), dtype=bool)
    mask[4, 5] = False
    board.check_pulses("SET", 1.0, gates, 1e-6, mask=mask)  # the cell beyond the limit is not pulsed
    mask[4, 5] = True
    with pytest.raises(LimitError, match=r"SET v_gate\[4, 5\]"):
        board.check_pulses("SET", 1.0, gates, 1e-6, mask=mask)
    gates[4, 5] = np.nan
    with pytest.raises(LimitError, match=r"SET v_gate\[4, 5\]"):
        board.check_pulses("SET", 1.0, gates, 1e-6, mask=mask)


def _sent_commands(board: Board, calls: list[tuple[np.ndarray, dict]]) -> tuple[list[bytes], list[np.ndarray]]:
    sent: list[bytes] = []
    transport = board.link.transport
    write = transport.write

    def recording(data: bytes) -> None:
        sent.append(data.split(b"\n", 1)[1] if data[:1] == b"!" else data)  # the command inside its frame
        write(data)

    transport.write = recording  # type: ignore[method-assign]
    try:
        results = [board.vmm(batch, Region(0, 0, 16, 8), **kwargs) for batch, kwargs in calls]
    finally:
        transport.write = write  # type: ignore[method-assign]
    return sent, results


@pytest.mark.parametrize("compact", [True, False])
def test_a_batch_of_the_driven_rows_only_sends_what_the_whole_region_batch_sends(compact: bool) -> None:
    """``rows=``: the same command, bytes for bytes, as the region's batch with zeros in the other rows
    (among the rows given, one no vector drives: it is not sent either), and the same currents."""
    rng = np.random.default_rng(7)
    rows = np.array([0, 2, 3, 7, 8, 12, 15])
    part = (rng.uniform(-0.2, 0.2, (30, len(rows))) * (rng.random((30, len(rows))) < 0.5)).astype(np.float32)
    part[:, 3] = 0.0
    whole = np.zeros((30, 16), np.float32)
    whole[:, rows] = part
    resource = "emulator://?preset=ideal&rows=16&cols=8&seed=3"
    outcomes = []
    for kwargs in ({}, {"rows": rows}):
        with open_board(resource, limits=LIMITS, compact=compact) as fresh:
            sent, results = _sent_commands(fresh, [(whole if not kwargs else part, {"columns": [1, 4], **kwargs})])
            outcomes.append((sent, results[0]))
    (sent_whole, currents_whole), (sent_part, currents_part) = outcomes
    assert len(sent_whole) == len(sent_part) == 1 and sent_whole[0].startswith(b"VMM:CODE?" if compact else b"VMM?")
    assert sent_part == sent_whole
    np.testing.assert_array_equal(currents_part, currents_whole)


def test_rows_must_be_ascending_rows_of_the_region_and_match_the_batch(board: Board) -> None:
    batch = np.full((2, 3), 0.1)
    for rows in ([0, 2, 2], [3, 1, 2], [14, 15, 16], [-1, 0, 1]):
        with pytest.raises(InvalidRequest, match="rows"):
            board.vmm(batch, Region(0, 0, 16, 8), rows=rows)
    with pytest.raises(InvalidRequest, match=r"expected \(n, 4\) for the 4 rows given"):
        board.vmm(batch, Region(0, 0, 16, 8), rows=[0, 1, 2, 3])


@pytest.mark.parametrize("compact", [True, False])
def test_a_narrow_vmm_sends_the_same_command_and_returns_the_columns_asked(compact: bool) -> None:
    """``narrow=True``: the same bytes on the wire, and the columns asked (ascending) of the full-width
    reply, without its NaN columns."""
    rng = np.random.default_rng(8)
    batch = (rng.uniform(-0.2, 0.2, (25, 16)) * (rng.random((25, 16)) < 0.5)).astype(np.float32)
    resource = "emulator://?preset=ideal&rows=16&cols=8&seed=3"
    outcomes = []
    for narrow in (False, True):
        with open_board(resource, limits=LIMITS, compact=compact) as fresh:
            outcomes.append(_sent_commands(fresh, [(batch, {"columns": [6, 1, 4], "narrow": narrow})]))
    (sent_wide, (wide,)), (sent_narrow, (narrow_out,)) = outcomes
    assert sent_narrow == sent_wide and len(sent_wide) == 1
    assert wide.shape == (25, 8) and narrow_out.shape == (25, 3)
    np.testing.assert_array_equal(narrow_out, wide[:, [1, 4, 6]])
    assert np.isnan(wide[:, [0, 2, 3, 5, 7]]).all() and not np.isnan(narrow_out).any()


@pytest.mark.parametrize("where", ["a non-zero input", "the only input"])
def test_an_input_beyond_the_read_limit_is_refused_whatever_else_the_batch_holds(board: Board, where: str) -> None:
    """The batch's extremes come from its non-zero inputs (and 0 V where any input is 0): an input
    outside the read limit, or a NaN, is still named and nothing is sent."""
    for bad in (0.35, -0.31, np.nan):
        batch = np.zeros((4, 16), np.float32) if where == "the only input" else np.full((4, 16), 0.1, np.float32)
        batch[2, 9] = bad
        transport = board.link.transport
        write, writes = transport.write, []
        transport.write = writes.append  # type: ignore[method-assign]
        try:
            with pytest.raises(LimitError, match=r"v_rows\[2, 9\]"):
                board.vmm(batch, Region(0, 0, 16, 8))
        finally:
            transport.write = write  # type: ignore[method-assign]
        assert not writes


def test_a_batch_changed_while_it_is_encoded_is_refused_and_nothing_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    # The checks read the batch once and the encoding again (another thread may change it between):
    # fewer non-zero inputs at the encoding than at the checks means codes the checks never saw.
    from drivers import _kernels

    encode = _kernels.encode_nonzero
    batch = np.where(np.add.outer(np.arange(4), np.arange(16)) % 3 == 0, 0.1, 0.0).astype(np.float32)  # the bitmap form
    with open_board("emulator://?preset=ideal&rows=16&cols=8&seed=3", limits=LIMITS, compact=True) as fresh:
        assert _sent_commands(fresh, [(batch, {})])[0][0].startswith(b"VMM:CODE? 0,0,16,8,4,NZ")
        monkeypatch.setattr(_kernels, "encode_nonzero", lambda *args: encode(*args) - 1)
        sent: list[tuple[np.ndarray, dict]] = []
        with pytest.raises(InvalidRequest, match="changed while they were being encoded; nothing was sent"):
            sent.append(_sent_commands(fresh, [(batch, {})]))  # type: ignore[arg-type]
        assert not sent
