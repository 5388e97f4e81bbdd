"""Fitting a twin: emulator parameters from the figures characterization files hold.

Each parameter comes from one figure of one procedure (:data:`FIGURE_PARAMETERS`); the TOML file
records, per parameter, the file, procedure, figure and uncertainty it came from. Parameters no
procedure measures keep the base preset's value (the file names the preset).
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import tomli_w

from hil import run_layout as layout
from hil.storage import RunData, RunFileError
from hil.twin.cell_map import MAP_PROCEDURES, CellMap, fit_cell_map, map_path_for, write_cell_map
from hil.twin.defects import reconciled_classes
from hil.twin.drift_refit import drift_refit
from hil.twin.reset_floor import d2d_from_floor_spread, g_min_from_reset_floor
from hil.twin.wire_reads import refit_on_devices
from protocols.characterization.figures import Figure, read_figures
from protocols.characterization.yield_map import defect_figures

BASE_PRESET = "umass-ta-hfo2"
# The data group of each procedure in its run file.
GROUPS = {
    "forming": "forming", "yield-map": "yield", "gate-calibration": "calibration", "write-noise": "write_noise",
    "wire-resistance": "wire_resistance", "retention": "retention",
}  # fmt: skip


@dataclass(frozen=True)
class FigureParameter:
    parameter: str
    """the emulator's DeviceParameters field"""
    procedure: str
    figure: str


# Which figure of which procedure each emulator parameter is fitted from.
FIGURE_PARAMETERS: tuple[FigureParameter, ...] = (
    FigureParameter("unformed_fraction", "forming", "fraction_unformed"),
    FigureParameter("v_form_threshold", "forming", "v_form_mean"),
    FigureParameter("stuck_low_fraction", "yield-map", "fraction_stuck_low"),
    FigureParameter("stuck_high_fraction", "yield-map", "fraction_stuck_high"),
    FigureParameter("g_stuck_low", "yield-map", "g_stuck_low"),
    FigureParameter("g_stuck_high", "yield-map", "g_stuck_high"),
    FigureParameter("g_min", "yield-map", "g_reset"),
    FigureParameter("set_slope", "gate-calibration", "k"),
    FigureParameter("set_intercept", "gate-calibration", "c"),
    FigureParameter("set_slope_spread", "gate-calibration", "k_spread_relative"),
    FigureParameter("set_intercept_spread_abs", "gate-calibration", "c_spread"),
    FigureParameter("v_gate_threshold", "gate-calibration", "v_turn_on"),
    FigureParameter("v_gate_saturation", "gate-calibration", "v_saturation"),
    FigureParameter("write_noise", "write-noise", "write_noise"),
    FigureParameter("read_noise", "write-noise", "read_noise"),
    # Every cell's RESET floor is g_min times its own (1 + d2d_spread N): all working cells
    # measure it, where forming sees only the virgin ones.
    FigureParameter("d2d_spread", "write-noise", "g_reset_spread_relative"),
    FigureParameter("line_resistance", "wire-resistance", "line_resistance"),
    FigureParameter("drift_mean", "retention", "drift_mean"),
    FigureParameter("drift_spread", "retention", "drift_spread"),
)


@dataclass(frozen=True)
class Source:
    file: str
    procedure: str
    figure: str
    uncertainty: float
    unit: str = ""


@dataclass
class Twin:
    """Fitted parameters (DeviceParameters fields) and where each came from."""

    parameters: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, Source] = field(default_factory=dict)
    preset: str = BASE_PRESET
    files: list[str] = field(default_factory=list)
    cell_map: CellMap = field(default_factory=dict)
    """the chip's own cells (hil.twin.cell_map); written beside the twin file, named by ``cell_map``"""
    left_out: list[str] = field(default_factory=list)
    """files given but not used: an earlier run of a procedure another file measured later"""

    def to_toml(self) -> dict[str, Any]:
        sources = {
            name: {"file": s.file, "procedure": s.procedure, "figure": s.figure, "unit": s.unit}
            | ({"uncertainty": s.uncertainty} if math.isfinite(s.uncertainty) else {})
            for name, s in self.sources.items()
        }
        return {
            "preset": self.preset,
            "fitted": {
                "by": "hil twin fit",
                "utc": datetime.now(UTC).isoformat(timespec="seconds"),
                "files": self.files,
            },
            "parameters": self.parameters,
            "sources": sources,
        }


def _chip(run: RunData) -> tuple[str, str]:
    """What tells one chip's files from another's: the board's serial number (its whole identity
    when it gives none; a firmware update between runs is the same chip), and for an in-process
    emulator (every one answers as SN-0001) its parameters and seed, in any order."""
    identity, resource = str(run.root.get(layout.BOARD_IDENTITY, "")), str(run.root.get(layout.RESOURCE, ""))
    serial = _SERIAL.search(identity)
    if not resource.startswith("emulator://"):
        return (serial[1] if serial else identity), ""
    return (serial[1] if serial else identity), urlencode(sorted(parse_qsl(urlsplit(resource).query)))


_SERIAL = re.compile(r"\(serial ([^,)]+)")  # Board.identity's "MAKER MODEL (serial SN, firmware V)"


def _said(run: RunData) -> str:
    identity, resource = str(run.root.get(layout.BOARD_IDENTITY, "")), str(run.root.get(layout.RESOURCE, ""))
    return f"{identity or 'an unnamed board'}{f' ({resource})' if resource.startswith('emulator://') else ''}"


def _latest_by_procedure(runs: Iterable[RunData], left_out: list[str] | None = None) -> dict[str, RunData]:
    """Each procedure's latest completed run (by its start time; ``left_out`` gets the others'
    paths); refused if the runs were measured on more than one chip."""
    chosen: dict[str, RunData] = {}
    first: RunData | None = None
    for run in runs:
        if run.procedure not in GROUPS:
            continue
        if layout.status(run) != layout.COMPLETED:
            raise RunFileError(f"{run.path}: its {run.procedure} run is {layout.status(run)}, not completed")
        if first is None:
            first = run
        elif _chip(run) != _chip(first):
            # Figures of two chips would make a twin of neither (the cell map of one, the noise of another).
            raise RunFileError(f"{run.path} was measured on {_said(run)}, {first.path} on {_said(first)}: a twin "
                               "is fitted from one chip's files")  # fmt: skip
        kept = chosen.get(run.procedure)
        if kept is not None and str(kept.root.get(layout.CREATED, "")) > str(run.root.get(layout.CREATED, "")):
            run, kept = kept, run  # the later run of a procedure is the chip as it is now
        if kept is not None and left_out is not None:
            left_out.append(str(kept.path))
        chosen[run.procedure] = run
    return chosen


def fit_twin(runs: Iterable[RunData], preset: str = BASE_PRESET, cell_map: bool = True) -> Twin:
    """Every parameter the given characterization runs measure; refused if none is a suite procedure.

    With ``cell_map`` the twin also carries the chip's own cells (defect positions, k and c;
    :mod:`hil.twin.cell_map`): a twin of this chip rather than of any chip with its figures.
    """
    left_out: list[str] = []
    chosen = _latest_by_procedure(runs, left_out)
    if not chosen:
        raise RunFileError(f"no characterization run of {', '.join(GROUPS)} among the files given")
    twin = Twin(preset=preset, files=[str(run.path) for run in chosen.values()], left_out=left_out)
    figures = {name: read_figures(run.attrs.get(GROUPS[name], {})) for name, run in chosen.items()}
    shape = _array_shape(chosen)
    if shape is not None:
        twin.parameters["rows"], twin.parameters["cols"] = shape
    for item in FIGURE_PARAMETERS:
        run = chosen.get(item.procedure)
        figure = figures.get(item.procedure, {}).get(item.figure)
        if run is None or figure is None:
            continue
        value = figure.value
        if item.parameter == "v_gate_saturation" and not math.isfinite(value):
            value = 0.0  # no plateau inside the measured range: no saturation
        if not math.isfinite(value):
            continue
        if item.parameter in ("drift_spread", "set_slope_spread", "set_intercept_spread_abs", "d2d_spread"):
            value = max(value, 0.0)
        twin.parameters[item.parameter] = value
        twin.sources[item.parameter] = Source(str(run.path), item.procedure, item.figure, figure.uncertainty,
                                              figure.unit)  # fmt: skip
    _stuck_cells_forming_could_not_form(chosen, twin)
    if "gate-calibration" in chosen and "set_slope" in twin.parameters:
        # The compliance line is measured at the calibration's pulse width; the preset's own line
        # may be defined at another (the TaOx/HfOx preset's at 50 ns, and its line 6 % higher at
        # 1 us): the twin's line is defined where it was measured, so the width law scales it
        # from there exactly as it scales the chip's.
        run = chosen["gate-calibration"]
        width = run.options(GROUPS["gate-calibration"]).get("width")
        if isinstance(width, int | float) and width > 0:
            twin.parameters["width_reference"] = float(width)
            twin.sources["width_reference"] = Source(str(run.path), "gate-calibration", "pulse width", 0.0, "s")
    r_segment = float(twin.parameters.get("line_resistance", 0.0))
    if r_segment > 0 and shape is not None:
        # Map reads lose G^2 r to the wires, and the twin's wires take it again (hil/twin/wire_reads.py).
        for refit in refit_on_devices(chosen, r_segment, shape):
            if not math.isfinite(refit.value.value):
                continue
            # c may be negative (the TaOx/HfOx line crosses zero above 0 V); every other refit is a
            # level, a slope, a noise or a spread.
            value = refit.value.value if refit.parameter == "set_intercept" else max(refit.value.value, 0.0)
            twin.parameters[refit.parameter] = value
            twin.sources[refit.parameter] = Source(str(chosen[refit.procedure].path), refit.procedure,
                                                   f"{refit.figure} of the reads less the wires' series resistance",
                                                   refit.value.uncertainty, refit.value.unit)  # fmt: skip
    if shape is not None:
        # Drift on the devices (the wires scale it by (G_read / G)^2) of the cells the yield map
        # found working (hil/twin/drift_refit.py).
        for refit in drift_refit(chosen, r_segment, shape):
            if not math.isfinite(refit.value.value):
                continue
            value = max(refit.value.value, 0.0) if refit.parameter == "drift_spread" else refit.value.value
            twin.parameters[refit.parameter] = value
            twin.sources[refit.parameter] = Source(str(chosen[refit.procedure].path), refit.procedure,
                                                   f"{refit.figure} of the yield map's working cells, on the "
                                                   "reads less the wires' series resistance",
                                                   refit.value.uncertainty, refit.value.unit)  # fmt: skip
    if "g_min" in twin.parameters:
        # The yield map's floor is the RESET floor at its amplitude; the twin's model adds the
        # excess at that amplitude itself (hil/twin/reset_floor.py).
        measured_floor = twin.parameters["g_min"]
        yield_attrs = chosen["yield-map"].attrs.get(GROUPS["yield-map"], {})
        twin.parameters["g_min"] = g_min_from_reset_floor(measured_floor, twin.parameters, preset, yield_attrs)
        source = twin.sources["g_min"]
        twin.sources["g_min"] = Source(source.file, source.procedure, f"{source.figure} less the model's excess "
                                       f"({1e6 * (measured_floor - twin.parameters['g_min']):.2f} uS) at its RESET "
                                       "amplitude", source.uncertainty, source.unit)  # fmt: skip
    if "d2d_spread" in twin.parameters and "g_min" in twin.parameters:
        # The floor's spread includes its excess's, which is a fifth of a small chip's floor
        # (hil/twin/reset_floor.py): d2d_spread is what gives the twin the chip's floor spread.
        measured_spread = float(twin.parameters["d2d_spread"])
        options = chosen["write-noise"].options(GROUPS["write-noise"])
        reset: dict[str, Any] = {name: options[name] for name in ("reset_amplitude", "reset_gate") if name in options}
        fitted = d2d_from_floor_spread(measured_spread, twin.parameters, preset, reset)
        if math.isfinite(fitted) and fitted > 0:
            twin.parameters["d2d_spread"] = fitted
            source = twin.sources["d2d_spread"]
            scale = fitted / measured_spread if measured_spread > 0 else 1.0
            twin.sources["d2d_spread"] = Source(source.file, source.procedure, f"{source.figure} over the floor's "
                                                f"relative spread per unit d2d_spread on the twin ({1 / scale:.3f})",
                                                source.uncertainty * scale, source.unit)  # fmt: skip
    if "set_intercept_spread_abs" in twin.parameters:
        # The measured spread of c is absolute: it replaces the preset's relative one.
        twin.parameters["set_intercept_spread"] = 0.0
    if "yield-map" in chosen:
        run = chosen["yield-map"]
        bad = json.loads(str(run.attrs.get("yield", {}).get("bad_lines", '{"rows": [], "cols": []}')))
        twin.parameters["bad_rows"], twin.parameters["bad_cols"] = list(bad["rows"]), list(bad["cols"])
        for name in ("bad_rows", "bad_cols"):
            twin.sources[name] = Source(str(run.path), "yield-map", "bad_lines", 0.0)
    if cell_map and shape is not None:
        twin.cell_map = fit_cell_map(chosen, shape, r_segment)
        used = [name for name in MAP_PROCEDURES if name in chosen]
        if twin.cell_map:
            twin.sources["cell_map"] = Source(", ".join(str(chosen[name].path) for name in used), ", ".join(used),
                                              "per-cell", math.nan)  # fmt: skip
    return twin


def _stuck_cells_forming_could_not_form(runs: Mapping[str, RunData], twin: Twin) -> None:
    """The stuck-low fraction and level with the yield map's "unformed" cells that forming could
    not form counted stuck low (:mod:`hil.twin.defects`); nothing changes when there are none."""
    reconciled = reconciled_classes(runs)
    if reconciled is None or not reconciled[1]:
        return
    classes, changed = reconciled
    run = runs["yield-map"]
    g_set = run.datasets.get("yield/g_set")
    if g_set is None:
        return
    attrs = run.attrs.get(GROUPS["yield-map"], {})
    bad = json.loads(str(attrs.get("bad_lines", '{"rows": [], "cols": []}')))
    g_reset = run.datasets.get("yield/g_reset")
    figures = defect_figures(classes, g_set, g_reset, int(attrs.get("row0", 0)), int(attrs.get("col0", 0)),
                             tuple(bad["rows"]), tuple(bad["cols"]))  # fmt: skip
    for parameter, name in (("stuck_low_fraction", "fraction_stuck_low"), ("g_stuck_low", "g_stuck_low")):
        figure = figures[name]
        if math.isfinite(figure.value):
            twin.parameters[parameter] = figure.value
            twin.sources[parameter] = Source(str(run.path), "yield-map", f"{name}, with the {changed} cells it "
                                             "called unformed that forming could not form counted stuck low",
                                             figure.uncertainty, figure.unit)  # fmt: skip


def _array_shape(runs: Mapping[str, RunData]) -> tuple[int, int] | None:
    """The array's size, from a whole-array map (the wire-resistance step always covers it)."""
    for procedure, name in (("wire-resistance", "wire_resistance/g_read"), ("yield-map", "yield/class")):
        run = runs.get(procedure)
        if run is not None and name in run.datasets:
            rows, cols = run.datasets[name].shape
            return int(rows), int(cols)
    return None


def write_twin(twin: Twin, path: str | Path) -> Path:
    """The TOML file, and its cell map beside it (``chip7.cells.npz``, named relative to the file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = twin.to_toml()
    if twin.cell_map:
        map_path = write_cell_map(twin.cell_map, map_path_for(path))
        document["parameters"] = {**document["parameters"], "cell_map": map_path.name}
    path.write_text(tomli_w.dumps(document), encoding="utf-8")
    return path


def read_twin_parameters(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(parameters, sources)`` of a twin file."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise RunFileError(f"cannot read twin file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise RunFileError(f"twin file {path} is not valid TOML: {exc}") from None
    parameters = data.get("parameters")
    if not isinstance(parameters, dict):
        raise RunFileError(f"twin file {path} has no [parameters] table")
    return parameters, dict(data.get("sources", {}))


def read_twin_preset(path: str | Path) -> str:
    """The base preset a twin file names (the Ta/HfO2 one for a file that names none)."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return BASE_PRESET  # read_twin_parameters reports what is wrong with the file
    return str(data.get("preset", BASE_PRESET))


def figure_of(twin: Twin, parameter: str) -> Figure:
    """A fitted parameter as a figure (value and uncertainty)."""
    source = twin.sources.get(parameter)
    value = twin.parameters.get(parameter, math.nan)
    return Figure(float(value) if not isinstance(value, list) else math.nan,
                  source.uncertainty if source else math.nan, source.unit if source else "")  # fmt: skip
