"""Driver errors cross process boundaries (a Dask worker's failed cell) pickled, and come back whole."""

from __future__ import annotations

import pickle

from drivers import LimitError


def test_a_limit_error_survives_pickling_with_its_fields_and_message() -> None:
    error = LimitError("v_read", 0.9, -0.5, 0.5, "V", hint="a v_read of at most 0.5 V")
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is LimitError and str(back) == str(error)
    assert (back.parameter, back.value, back.low, back.high, back.unit, back.hint) == ("v_read", 0.9, -0.5, 0.5, "V",
                                                                                     "a v_read of at most 0.5 V")
