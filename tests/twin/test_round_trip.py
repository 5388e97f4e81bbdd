"""Round trip: random chips drawn across physical ranges, characterized through the Board API
(in process, 64 x 32), fitted, and compared with the parameters they were drawn with
(draw and comparison: :mod:`hil.twin.round_trip`; held-out draws: benchmarks/twin_round_trip.py)."""

from __future__ import annotations

import numpy as np
import pytest

from hil.twin.round_trip import draw_chip, round_trip

CHIPS = 20


@pytest.mark.parametrize("chip", range(CHIPS))
def test_a_random_chip_round_trips(chip: int) -> None:
    params = draw_chip(np.random.default_rng(1000 + chip))
    failures = round_trip(params, seed=chip).failures
    assert not failures, f"chip {chip}: " + "; ".join(failures)
