"""The emulator as an in-process endpoint: ``emulator://?preset=NAME&seed=N&field=value``.

Registered under the ``memristor_hil.endpoints`` entry point, so ``drivers.open_board`` finds it
by scheme. Bytes still pass through the wire codec and the firmware interpreter.
"""

from __future__ import annotations

from collections import Counter
from urllib.parse import parse_qsl, urlsplit

from mock_hardware.emulator import DEFAULT_PRESET, build_firmware, parse_emulator_url
from mock_hardware.firmware import Firmware
from mock_hardware.params_file import with_params_file


class EmulatorEndpoint:
    def __init__(self, firmware: Firmware) -> None:
        self.firmware = firmware

    def exchange(self, data: bytes) -> bytes:
        # The host waits for the reply once a write is done: in process, the link is then quiet.
        return self.firmware.feed(data) + self.firmware.link_quiet()

    def close(self) -> None:
        self.firmware.disconnected()


MAX_SEED = 2**63 - 1


def check_given_once(resource: str) -> None:
    """Refuse a parameter given twice (``seed=1&seed=2``): which one was meant cannot be known."""
    names = Counter(name for name, _ in parse_qsl(urlsplit(resource).query, keep_blank_values=True))
    twice = sorted(name for name, count in names.items() if count > 1)
    if twice:
        raise ValueError(f"{', '.join(twice)} given more than once in {resource!r}; give each parameter once")


def open_endpoint(resource: str) -> EmulatorEndpoint:
    check_given_once(resource)
    name, seed, overrides = parse_emulator_url(resource)
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed {seed} in {resource!r} is outside [0, {MAX_SEED}]")
    if "params" in overrides:  # a parameter file: the base under the resource's own fields
        explicit = "preset" in dict(parse_qsl(urlsplit(resource).query))
        name, overrides = with_params_file(overrides.pop("params"), name if explicit else None, overrides,
                                           DEFAULT_PRESET)  # fmt: skip
    return EmulatorEndpoint(build_firmware(name, seed, overrides))
