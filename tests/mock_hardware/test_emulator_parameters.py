"""An emulator:// resource with a bad parameter: one message naming the parameter, the limit and the value."""

from __future__ import annotations

import pytest

from mock_hardware.emulator import build_firmware


@pytest.mark.parametrize(("fields", "message"), [
    ({"rows": "0"}, "rows: Input should be greater than or equal to 1 (got '0')"),
    ({"write_noise": "inf"}, "write_noise: Input should be a finite number (got 'inf')"),
])  # fmt: skip
def test_a_bad_parameter_names_its_value(fields: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match="bad emulator parameters") as refused:
        build_firmware(overrides=fields)
    assert message in str(refused.value)  # was: the field and the limit, not what was given
