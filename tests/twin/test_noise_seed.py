"""The emulator's ``noise_seed``: the same chip (cells and fresh state), another noise future.

The twin benchmark trains on one chip over many training seeds. A physical chip meets fresh noise
in every run; an emulator seeded once does not (the trainer's calibration sees the same noise run
after run). ``noise_seed`` gives the chip's own cells with the noise of another seed."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from drivers import open_board
from drivers.errors import LinkError
from mock_hardware.array_model import CrossbarArray
from mock_hardware.device_params import preset

FIELDS = "rows=16&cols=8&stuck_low_fraction=0.2&stuck_high_fraction=0.05&write_noise=5e-6"
PARAMS = preset("umass-ta-hfo2", rows=16, cols=8, stuck_low_fraction=0.2, stuck_high_fraction=0.05)


def test_noise_seed_keeps_the_cells_and_the_fresh_state() -> None:
    chip, renoised = CrossbarArray(PARAMS, seed=5), CrossbarArray(PARAMS, seed=5, noise_seed=9)
    for name in ("set_slope", "set_intercept", "g_min", "g_max", "stuck_low", "stuck_high", "g_stuck"):
        assert np.array_equal(getattr(chip.cells, name), getattr(renoised.cells, name)), name
    assert np.array_equal(chip.conductance, renoised.conductance)
    other_chip = CrossbarArray(PARAMS, seed=6)
    assert not np.array_equal(chip.cells.set_slope, other_chip.cells.set_slope)


def _set_then_read(resource: str) -> npt.NDArray[np.float64]:
    """The map read after a RESET and a SET of every cell."""
    with open_board(resource) as board:
        board.apply_pulses("RES", amplitude=1.8, v_gate=5.0, width=1e-6)
        board.apply_pulses("SET", amplitude=2.5, v_gate=1.5, width=1e-6)
        return board.read_map()


def test_noise_seed_through_the_board() -> None:
    base = f"emulator://?preset=umass-ta-hfo2&seed=5&{FIELDS}"
    read = _set_then_read(base)
    assert np.array_equal(read, _set_then_read(f"{base}&noise_seed=5"))  # the seed's own noise: bit for bit
    assert not np.allclose(read, _set_then_read(f"{base}&noise_seed=9"), rtol=1e-3, atol=0)


def test_noise_seed_draws_other_write_noise() -> None:
    shape = (PARAMS.rows, PARAMS.cols)
    after = []
    for array in (CrossbarArray(PARAMS, seed=5), CrossbarArray(PARAMS, seed=5, noise_seed=9)):
        array.apply_pulses("SET", 0, 0, np.full(shape, 2.5), np.full(shape, 1.5), np.full(shape, 1e-6),
                           np.ones(shape, dtype=bool))  # fmt: skip
        after.append(array.conductance)
    working = ~CrossbarArray(PARAMS, seed=5).cells.stuck
    assert not np.allclose(after[0][working], after[1][working], rtol=1e-3, atol=0)
    assert np.array_equal(after[0][~working], after[1][~working])  # stuck cells hold their level


def test_a_bad_noise_seed_is_one_line() -> None:
    with pytest.raises(LinkError, match=r"cannot open: noise_seed 'x' is not a whole number"):
        open_board("emulator://?preset=umass-ta-hfo2&noise_seed=x").close()
