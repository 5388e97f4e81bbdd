"""Building an emulated board from a preset, a seed and overrides."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from pydantic import ValidationError

from drivers.messages import validation_message
from mock_hardware.array_model import CrossbarArray
from mock_hardware.device_params import preset
from mock_hardware.faults import FaultInjector, FaultPlan
from mock_hardware.firmware import Firmware, FirmwareSpec

DEFAULT_PRESET = "umass-ta-hfo2"


def build_firmware(
    preset_name: str = DEFAULT_PRESET, seed: int = 0, overrides: dict[str, str] | None = None
) -> Firmware:
    """An emulated board: the named device preset with ``overrides`` (field -> value), seeded.

    ``latency`` among the overrides sets the firmware's simulated per-command latency, ``serial``
    its serial number (another chip), ``noise_seed`` the seed of its noise alone (the same chip,
    another noise future: :class:`~mock_hardware.array_model.CrossbarArray`), and
    ``fault_<name>`` fields a :class:`~mock_hardware.faults.FaultPlan`.
    """
    fields = dict(overrides or {})
    spec = FirmwareSpec()
    if "latency" in fields:
        spec = FirmwareSpec(command_latency=float(fields.pop("latency")))
    if "serial" in fields:  # another chip: what a run checks on resume
        spec = spec.model_copy(update={"serial": fields.pop("serial")[:40]})
    noise_text = fields.pop("noise_seed", None)
    noise_seed = None if noise_text is None else _whole_number("noise_seed", noise_text)
    fault_fields = {name[len("fault_") :]: fields.pop(name) for name in list(fields) if name.startswith("fault_")}
    try:
        params = preset(preset_name, **fields)
        plan = FaultPlan.model_validate(fault_fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {validation_message(e)}" for e in exc.errors())
        raise ValueError(f"bad emulator parameters: {problems}") from None
    array = CrossbarArray(params, seed=seed, noise_seed=noise_seed)
    return Firmware(array, spec, FaultInjector(plan) if plan.any else None)


def parse_emulator_url(resource: str) -> tuple[str, int, dict[str, str]]:
    """``emulator://?preset=NAME&seed=N&field=value`` -> (preset, seed, overrides)."""
    query = dict(parse_qsl(urlsplit(resource).query, keep_blank_values=True))
    name = query.pop("preset", DEFAULT_PRESET)
    return name, _whole_number("seed", query.pop("seed", "0"), f" in {resource!r}"), query


def _whole_number(field: str, text: str, where: str = "") -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{field} {text!r}{where} is not a whole number") from None
