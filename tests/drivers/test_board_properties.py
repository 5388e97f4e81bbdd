"""Property test of the Board API against the emulator, with a checker on the emulator's side.

Random requests, some inside the host's limits and some not: each either succeeds, and then
every voltage and width the emulated array received lies inside the limits, or is refused
before a single byte is sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers import Board, InvalidRequest, Range, SafetyLimits, open_board

LIMITS = SafetyLimits(
    v_row=Range(min=-3.0, max=3.0), v_col=Range(min=-3.0, max=3.0), v_gate=Range(min=0.0, max=5.0),
    v_read=Range(min=-0.3, max=0.3), pulse_width=Range(min=1e-8, max=1e-4), i_col=Range(min=-0.05, max=0.05),
)  # fmt: skip
SHAPE = (8, 8)


class LineChecker:
    """Records the largest excursion of every quantity the emulated array was driven with."""

    def __init__(self, board: Board) -> None:
        self.firmware: Any = board._transport._endpoint.firmware  # type: ignore[attr-defined]
        self.violations: list[str] = []
        array = self.firmware.array
        pulses, vmm, read = array.apply_pulses, array.vmm, array.read_conductance

        def checked_pulses(kind: Any, row0: int, col0: int, amplitude: Any, v_gate: Any, width: Any, mask: Any) -> Any:
            line = LIMITS.v_col if str(kind) in ("RES", "PulseKind.RESET") else LIMITS.v_row
            self._check("amplitude", np.asarray(amplitude)[mask], Range(min=0.0, max=line.max))
            self._check("v_gate", np.asarray(v_gate)[mask], LIMITS.v_gate)
            self._check("width", np.asarray(width)[mask], LIMITS.pulse_width)
            return pulses(kind, row0, col0, amplitude, v_gate, width, mask)

        def checked_vmm(v_rows: Any, *args: Any, **kwargs: Any) -> Any:
            self._check("VMM row voltage", np.asarray(v_rows), LIMITS.v_read)
            return vmm(v_rows, *args, **kwargs)

        def checked_read(*args: Any) -> Any:
            # READ?/MAP? read at v_read; a SWEEP? step measures at its own voltage, on a row or column line.
            line = max(LIMITS.v_row.max, LIMITS.v_col.max)
            self._check("voltage during a read", np.asarray([args[-1]]), Range(min=-line, max=line))
            return read(*args)

        array.apply_pulses, array.vmm, array.read_conductance = checked_pulses, checked_vmm, checked_read

    def _check(self, what: str, values: Any, limit: Range) -> None:
        # float32 blocks may carry a limit rounded up by a fraction of an ulp.
        slack = 1e-6 * max(abs(limit.min), abs(limit.max), 1e-9)
        if values.size and not (np.isfinite(values).all() and values.min() >= limit.min - slack
                                and values.max() <= limit.max + slack):  # fmt: skip
            self.violations.append(f"{what} {values.min():g}..{values.max():g} outside {limit}")

    def check_dacs(self) -> None:
        dac = self.firmware.dac
        for line, limit in (("ROW", LIMITS.v_row), ("COL", LIMITS.v_col), ("GATE", LIMITS.v_gate)):
            self._check(f"{line} DAC", dac[line], Range(min=limit.min - 1e-3, max=limit.max + 1e-3))


@pytest.fixture(scope="module")
def board() -> Iterator[Board]:
    with open_board(f"emulator://?preset=ideal&rows={SHAPE[0]}&cols={SHAPE[1]}", limits=LIMITS) as opened:
        yield opened


# Mostly values inside the limits (so requests get through and the checker has work), some far
# outside, and the edges.
volts = st.one_of(
    st.floats(0, 0.3), st.floats(0, 2.9), st.floats(-6, 6),
    st.sampled_from([float("nan"), float("inf"), 3.0, -3.0, 0.3, 5.0, 5.0001]),
)  # fmt: skip
widths = st.one_of(st.floats(1e-8, 1e-4), st.floats(1e-9, 1e-3), st.sampled_from([1e-8, 1e-4, 0.0, -1e-6]))
cells = st.tuples(st.integers(-1, SHAPE[0]), st.integers(-1, SHAPE[1]))
requests = st.one_of(
    st.tuples(st.just("dac"), st.sampled_from(["ROW", "COL", "GATE"]), st.integers(-1, 8), volts),
    st.tuples(st.just("pulse"), st.sampled_from(["SET", "RESET", "FORM"]), cells, volts, volts, widths),
    st.tuples(st.just("batch"), st.sampled_from(["SET", "RESET"]), st.lists(volts, min_size=1, max_size=4),
              volts, widths),
    st.tuples(st.just("read"), cells, volts),
    st.tuples(st.just("vmm"), st.lists(volts, min_size=8, max_size=8)),
    st.tuples(st.just("sweep"), cells, st.lists(volts, min_size=1, max_size=5), volts, widths),
)  # fmt: skip


def _send(board: Board, request: tuple[Any, ...]) -> None:
    kind = request[0]
    if kind == "dac":
        board.set_dac(request[1], request[2], request[3])
    elif kind == "pulse":
        (row, col), amplitude, v_gate, width = request[2:]
        board.pulse(request[1], row, col, amplitude, v_gate, width)
    elif kind == "batch":
        amplitudes = np.resize(np.asarray(request[2]), SHAPE)
        board.apply_pulses(request[1], amplitudes, request[3], request[4])
    elif kind == "read":
        board.read_cell(*request[1], v_read=request[2])
    elif kind == "vmm":
        board.vmm(np.asarray([request[1]]))
    else:
        (row, col), voltages, v_gate, width = request[1:]
        board.iv_sweep(row, col, voltages, v_gate, width)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=requests)
def test_requests_succeed_within_limits_or_send_nothing(board: Board, request: tuple[Any, ...]) -> None:
    checker = LineChecker(board)
    writes: list[bytes] = []
    transport: Any = board._transport
    original = transport.write
    transport.write = lambda data: (writes.append(data), original(data))[1]
    try:
        try:
            _send(board, request)
        except InvalidRequest:
            assert writes == [], f"{request} was refused after sending {writes!r}"
        checker.check_dacs()
        assert checker.violations == []
    finally:
        transport.write = original
        board.idle()
