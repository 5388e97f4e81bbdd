"""Protocol 1.3's compact encodings end to end: the host picks the smaller form, the firmware reads every
form as the same pulses and readings as the float32 forms, refuses malformed ones with nothing applied,
and the host splits work on a slow link so no command outlasts its bound."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from drivers import Board, InvalidRequest, Range, codec, compact
from drivers.board import Progress
from drivers.commands import Line, PulseKind
from drivers.pulse_forms import BatchForm, smallest_form, sparse_form
from drivers.transports.base import PassThrough, Transport
from mock_hardware.emulator import build_firmware
from mock_hardware.firmware import Firmware
from tests.firmware_transport import FirmwareTransport
from tests.mock_hardware.test_firmware import ask, error_code

SCALES = compact.Scales(16, {Line.ROW: (-5.0, 5.0), Line.COL: (-5.0, 5.0), Line.GATE: (0.0, 6.0)}, 14, (-2.5, 2.5),
                        (1e2, 1e3, 1e4, 1e5, 1e6))  # fmt: skip
LIMITS = (Range(min=0.0, max=4.0), Range(min=0.0, max=5.5))


def _firmware(rows: int = 8, cols: int = 8, preset: str = "ideal", seed: int = 0) -> Firmware:
    return build_firmware(preset, seed, {"rows": str(rows), "cols": str(cols)})


def _planes(mask: np.ndarray, amplitude: object, v_gate: object, width: object) -> np.ndarray:
    planes = np.zeros((4, *mask.shape), dtype=np.float32)
    for plane, values in zip(planes, (amplitude, v_gate, width, mask), strict=True):
        plane[...] = values
    planes[:3][:, ~mask] = 0
    return planes


def test_a_few_cells_with_their_own_gates_travel_as_indices_shared_values_and_dac_codes() -> None:
    mask = np.zeros((128, 64), dtype=bool)
    mask[[3, 40, 100], [5, 6, 63]] = True
    gates = np.linspace(1.0, 2.0, mask.size).reshape(mask.shape)
    form = smallest_form(PulseKind.SET, _planes(mask, 2.5, gates, 1e-6), SCALES, LIMITS, sparse=True)
    assert form.header == "PULS:SPAR"
    assert form.args == ("IDX", 3, 2.5, "DAC", float(np.float32(1e-6)))
    assert form.block_bytes == 3 * 2 + 3 * 2  # uint16 indices, uint16 gate codes (dense: 131,072 B)
    codes = np.frombuffer(form.block[6:], "<u2") if isinstance(form.block, bytes) else None
    assert codes is not None
    levels = codes * SCALES.dac_step(Line.GATE)
    wanted = gates[mask]
    assert (levels >= wanted).all() and (levels - wanted < SCALES.dac_step(Line.GATE)).all()  # the next code up


def test_every_cell_pulsed_travels_as_a_bitmap_and_a_level_outside_the_limits_as_float32() -> None:
    mask = np.ones((16, 16), dtype=bool)
    step = SCALES.dac_step(Line.GATE)
    gates = np.full(mask.shape, 0.5)
    gates[0, 0] = 0.7
    tight = (LIMITS[0], Range(min=0.5, max=0.7))  # 0.7 V has no exact code: the next one up lies beyond the limit
    form = sparse_form(PulseKind.SET, _planes(mask, 2.5, gates, 1e-6), SCALES, tight)
    assert form.args[:2] == ("BITS", 256) and form.args[3] == "F32"
    assert compact.dac_codes(np.array([0.7]), step)[0] * step > 0.7
    assert sparse_form(PulseKind.SET, _planes(mask, 2.5, gates, 1e-6), SCALES, LIMITS).args[3] == "DAC"
    dense = smallest_form(PulseKind.SET, _planes(mask, 2.5, gates, 1e-6), SCALES, LIMITS, sparse=False)
    assert dense.header == "PULS:BATC" and dense.block_bytes == 4 * 256 * 4


@pytest.mark.parametrize("kind", list(PulseKind))
def test_the_compact_forms_give_the_same_cells_as_the_float32_forms(kind: PulseKind) -> None:
    """Two identical boards, one driven in 1.3's forms and one in 1.2's: the same pulses land, the same
    maps and VMM currents come back (to a DAC step of the inputs and float32's precision)."""
    rng = np.random.default_rng(3)
    mask = rng.random((8, 8)) < 0.3
    gates = rng.uniform(1.0, 3.0, (8, 8))
    amplitudes = rng.uniform(1.5, 2.5, (8, 8))
    v_rows = rng.uniform(-0.2, 0.2, (5, 8))
    results = []
    for use_compact in (True, False):
        firmware = _firmware(preset="ideal", seed=5)
        with Board(FirmwareTransport(firmware), compact=use_compact) as board:
            assert (board.scales is not None) == use_compact
            count = board.apply_pulses(kind, amplitudes, gates, 1e-6, mask=mask)
            results.append((count, firmware.pulses_applied, firmware.array.conductance.copy(),
                            board.vmm(v_rows), board.read_map(), board.read_map(quantity="current")))  # fmt: skip
    (count, applied, g, currents, g_read, i_read), (count_f, applied_f, g_f, currents_f, g_read_f, i_read_f) = results
    assert count == count_f == applied == applied_f == mask.sum()
    np.testing.assert_allclose(g, g_f, rtol=1e-4, atol=1e-9)  # levels differ by under one DAC step (153 uV)
    # Each input lies within a row DAC step of its float32 value; ADC codes within 1e-3 of full precision.
    bound = SCALES.dac_step(Line.ROW) * g.sum(axis=0) + 1e-3 * np.abs(currents_f) + 1e-9
    assert (np.abs(currents - currents_f) <= bound).all()
    np.testing.assert_allclose(g_read, g_read_f, rtol=1e-6, atol=2e-7)  # a level a DAC step apart: one ADC code
    np.testing.assert_allclose(i_read, i_read_f, rtol=1e-2, atol=1e-9)  # a second reading: read noise differs


def _spar(args: str, block: bytes) -> bytes:
    return codec.encode_command("PULS:SPAR", (args,), block)


@pytest.mark.parametrize(
    ("args", "block", "code"),
    [
        ("SET,0,0,8,8,IDX,2,2.5,1.0,1e-6", np.array([3], "<u2").tobytes(), -160),  # one index short
        ("SET,0,0,8,8,IDX,2,2.5,1.0,1e-6", np.array([9, 3], "<u2").tobytes(), -222),  # not ascending
        ("SET,0,0,8,8,IDX,2,2.5,1.0,1e-6", np.array([3, 64], "<u2").tobytes(), -222),  # past the region
        ("SET,0,0,8,8,BITS,2,2.5,1.0,1e-6", np.packbits(np.eye(8, dtype=bool).ravel(), bitorder="little").tobytes(),
         -222),  # 8 bits set, not 2
        ("SET,0,0,8,8,IDX,0,2.5,1.0,1e-6", b"", -222),
        ("SET,0,0,8,8,IDX,1,2.5,1.0,DAC", np.array([3, 1], "<u2").tobytes(), -224),  # a width is no DAC level
        ("SET,0,0,8,8,IDX,1,2.5,1.0,NOPE", np.array([3], "<u2").tobytes(), -224),
        ("SET,0,0,8,8,IDX,1,9,1.0,1e-6", np.array([3], "<u2").tobytes(), -222),  # 9 V beyond VROW
        ("SET,0,0,8,8,IDX,1,DAC,1.0,1e-6", np.array([3, 65535], "<u2").tobytes(), -222),  # code of 10 V
        ("RES,0,0,8,8,IDX,1,F32,1.0,1e-6", np.array([3], "<u2").tobytes() + np.array([-1.0], "<f4").tobytes(), -222),
        ("SET,0,0,8,8,IDX,1,2.5,1.0,F32", np.array([3], "<u2").tobytes() + np.array([np.nan], "<f4").tobytes(), -222),
    ],
    ids=["short", "unsorted", "outside", "bitmap-count", "none", "dac-width", "word", "over-limit", "over-limit-code",
         "negative-amplitude", "nan-width"],
)  # fmt: skip
def test_the_firmware_refuses_a_malformed_sparse_batch_and_applies_nothing(args: str, block: bytes, code: int) -> None:
    firmware = _firmware()
    before = firmware.array.conductance.copy()
    assert error_code(firmware, _spar(args, block)) == code
    assert firmware.pulses_applied == 0
    np.testing.assert_array_equal(firmware.array.conductance, before)


def test_the_firmware_reads_each_value_form_as_the_same_levels() -> None:
    step = SCALES.dac_step(Line.ROW)
    cells = np.array([3, 10], "<u2").tobytes()
    for spec, per_cell in [
        ("2.5,1.5,1e-6", b""),
        ("F32,1.5,1e-6", np.array([2.5, 2.5], "<f4").tobytes()),
        ("DAC,1.5,1e-6", np.array([round(2.5 / step)] * 2, "<u2").tobytes()),
    ]:
        firmware = _firmware()
        reply = ask(firmware, _spar(f"SET,0,0,8,8,IDX,2,{spec}", cells + per_cell))
        assert reply.kind == "value" and reply.text == "2", (spec, reply)
        changed = np.flatnonzero(firmware.array.conductance != _firmware().array.conductance)
        assert set(changed) <= {3, 10} and firmware.pulses_applied == 2


class Exchanges(PassThrough):
    """Bytes moved by each command and its reply."""

    def __init__(self, inner: Transport) -> None:
        super().__init__(inner)
        self.sizes: list[int] = []

    def write(self, data: bytes) -> None:
        self.sizes.append(len(data))
        super().write(data)

    def read_exact(self, count: int) -> bytes:
        data = super().read_exact(count)
        self.sizes[-1] += len(data)
        return data

    def read_line(self) -> bytes:
        data = super().read_line()
        self.sizes[-1] += len(data)
        return data


@pytest.mark.parametrize("use_compact", [True, False], ids=["1.3", "1.2"])
def test_on_a_slow_link_no_command_moves_more_than_its_time_bound_and_progress_moves(use_compact: bool) -> None:
    rate, bound = 2000.0, 0.5  # bytes/s, s: at most 1,000 bytes a command
    transport = Exchanges(FirmwareTransport(_firmware(32, 16)))
    seen: list[Progress] = []
    with Board(transport, compact=use_compact, link_rate=rate, max_command_time=bound, framing=False) as board:
        board.progress = seen.append
        opened = len(transport.sizes)
        board.read_map()
        board.vmm(np.full((40, 32), 0.1))
        gates = np.linspace(1.0, 2.0, 32 * 16).reshape(32, 16)
        assert board.apply_pulses("SET", 2.0, gates, 1e-6) == 32 * 16
        sizes = transport.sizes[opened:]
    assert max(sizes) <= rate * bound + 64  # + the command line and block header
    assert len(sizes) > 3  # each operation was split
    for operation in ("map", "vmm", "pulses"):
        steps = [(p.done, p.total) for p in seen if p.operation == operation]
        assert len(steps) >= 2 and steps[-1][0] == steps[-1][1]
        assert [done for done, _ in steps] == sorted({done for done, _ in steps})  # moving forward


def test_without_a_link_rate_each_operation_is_one_command() -> None:
    transport = Exchanges(FirmwareTransport(_firmware(32, 16)))
    with Board(transport, framing=False) as board:
        opened = len(transport.sizes)
        board.read_map()
        board.vmm(np.full((40, 32), 0.1))
        board.apply_pulses("SET", 2.0, 1.5, 1e-6)
        assert len(transport.sizes) - opened == 3


def test_a_batch_form_knows_its_bytes() -> None:
    assert BatchForm("PULS:BATC", (), np.zeros((4, 2, 2), np.float32)).block_bytes == 64
    assert BatchForm("PULS:SPAR", (), b"abc").block_bytes == 3


@pytest.mark.parametrize("use_compact", [True, False], ids=["1.3", "1.2"])
def test_a_vmm_of_some_columns_returns_those_and_sends_only_the_driven_rows(use_compact: bool) -> None:
    v_rows = np.zeros((6, 8))
    v_rows[:, [1, 6]] = np.linspace(-0.2, 0.2, 12).reshape(6, 2)  # rows 1 and 6 driven, the rest at 0 V
    full, some = [], []
    for columns, out in ((None, full), ([2, 5], some)):
        transport = Exchanges(FirmwareTransport(_firmware()))
        with Board(transport, compact=use_compact, framing=False) as board:
            opened = len(transport.sizes)
            out.append(board.vmm(v_rows, columns=columns))
            out.append(transport.sizes[opened])
    (currents, full_bytes), (picked, some_bytes) = full, some
    np.testing.assert_array_equal(picked[:, [2, 5]], currents[:, [2, 5]])  # the same chip, the same reading
    assert np.isnan(np.delete(picked, [2, 5], axis=1)).all()
    assert (some_bytes < full_bytes) == use_compact  # 1.2 boards measure and send every column
    if use_compact:  # 2 of 8 rows in (2 B each), 2 of 8 columns out (2.5 B each), vs 6 x 8 x 4 B each way
        assert full_bytes < 6 * (2 * 2 + 8 * 2.5) + 80 and some_bytes < 6 * (2 * 2 + 2 * 2.5) + 80


def test_the_firmware_refuses_a_vmm_of_no_rows_or_past_its_columns() -> None:
    firmware = _firmware()
    none = compact.encode_vmm_selection(np.zeros(8, bool), np.ones(8, bool))
    assert error_code(firmware, codec.encode_command("VMM:CODE?", (0, 0, 8, 8, 1, "ALL"), none)) == -222
    past = compact.encode_vmm_selection(np.ones(8, bool), np.ones(8, bool)) + np.zeros(8, "<i2").tobytes()
    assert error_code(firmware, codec.encode_command("VMM:CODE?", (0, 0, 8, 4, 1, "ALL"), past)) == -222  # 4 cols
    with Board(FirmwareTransport(_firmware()), framing=False) as board, pytest.raises(InvalidRequest, match="columns"):
        board.vmm(np.zeros((1, 8)), columns=[8])


def test_mostly_zero_inputs_travel_as_a_bitmap_and_their_non_zero_codes() -> None:
    codes = np.zeros((3, 10), dtype=np.int64)
    codes[1, 4], codes[2, 9] = 655, -1310
    form, payload = compact.encode_inputs(codes)
    assert form is compact.Inputs.NONZERO and len(payload) == 4 + 2 * 2  # 30 bits, 2 codes (ALL: 60 B)
    np.testing.assert_array_equal(compact.decode_inputs(payload, form, 30).reshape(3, 10), codes)
    dense = np.arange(1, 31).reshape(3, 10)
    assert compact.encode_inputs(dense)[0] is compact.Inputs.ALL
    with pytest.raises(ValueError, match="need"):
        compact.decode_inputs(payload[:-1], form, 30)
    firmware = _firmware()
    every = compact.encode_vmm_selection(np.ones(8, bool), np.ones(8, bool))
    assert error_code(firmware, codec.encode_command("VMM:CODE?", (0, 0, 8, 8, 1, "NZ"), every + b"\x01")) == -160


@pytest.mark.parametrize("density", [0.05, 0.99])
def test_inputs_given_as_their_non_zero_codes_encode_as_the_whole_array_does(density: float) -> None:
    rng = np.random.default_rng(1)
    codes = np.where(rng.random((40, 13)) < density, rng.integers(-3000, 3000, (40, 13)), 0)
    nonzero = codes != 0
    form, payload = compact.encode_inputs(codes)
    layout = np.packbits(nonzero, bitorder="little").tobytes() + codes[nonzero].astype("<i2").tobytes()
    assert payload == (layout if form is compact.Inputs.NONZERO else codes.astype("<i2").tobytes())
    assert compact.inputs_form(codes.size, int(nonzero.sum())) == (form, len(payload))
    assert form is (compact.Inputs.NONZERO if density < 0.5 else compact.Inputs.ALL)


def test_dac_codes_are_never_weaker_than_asked_and_within_one_step() -> None:
    step = 10.0 / (2**16 - 1)
    rng = np.random.default_rng(2)
    volts = np.concatenate([rng.uniform(-0.5, 0.5, 10_000), np.arange(-50, 51) * step, [0.0, 1e-12, -1e-12]])
    codes = compact.dac_codes(volts, step)
    levels = codes * step
    assert (np.abs(levels) >= np.abs(volts)).all() and (np.abs(levels - volts) < step).all()
    assert ((codes == 0) == (volts == 0)).all()  # 0 V stays 0, any other level is at least a code away


def reference_codes(volts: npt.NDArray[np.floating], step: float) -> npt.NDArray[np.float64]:
    """The smallest whole number of steps whose level (in float64) reaches each |input|, signed: found by
    counting up from below, not by the codec's rounding."""
    magnitude = np.abs(volts.astype(np.float64))
    k = np.maximum(np.floor(magnitude / step) - 2, 0)
    for _ in range(4):
        k += k * step < magnitude
    return np.copysign(k, volts.astype(np.float64))


def test_dac_codes_in_chunks_are_the_smallest_codes_that_reach_each_input() -> None:
    """A batch longer than a chunk (and not a whole number of chunks, in two dimensions) is coded piece by
    piece, as float64 levels (:func:`compact.dac_levels`) or as the VMM's int16 codes (the compiled
    :func:`drivers._kernels.encode_every`): every code the smallest that reaches its input, on and next
    to code levels, signs and -0.0 kept, and the codes' extremes those of the batch's smallest and
    largest input."""
    from drivers import _kernels

    step = 10.0 / (2**16 - 1)
    rng = np.random.default_rng(4)
    size = 3 * compact.DAC_CHUNK + 17
    volts = rng.uniform(-0.5, 0.5, size).astype(np.float32)
    volts[::97] = (np.arange(len(volts[::97])) % 400 - 200) * np.float32(step)  # on and next to code levels
    volts[::211] = np.nextafter(volts[::211], np.float32(1.0))
    volts[5], volts[compact.DAC_CHUNK] = -0.0, 0.0
    batch = volts[: size - 17].reshape(-1, 64)
    for values in (volts, batch, volts[:100], volts[:0]):
        expected = reference_codes(values, step)
        levels = compact.dac_levels(values, step)
        assert levels.shape == values.shape
        np.testing.assert_array_equal(levels, expected)
        assert (np.signbit(levels) == np.signbit(expected)).all()
        codes = np.empty(values.size, np.int16)
        _kernels.encode_every(np.ascontiguousarray(values.reshape(1, -1)), step, codes)
        np.testing.assert_array_equal(codes, expected.ravel())
        if values.size:
            ends = compact.dac_levels(np.array([values.min(), values.max()]), step)
            assert (ends[0], ends[1]) == (codes.min(), codes.max())
