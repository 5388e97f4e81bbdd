"""The run file's layout: every group, dataset and attribute name a run file holds, and the readers
of what those say (docs/data-format.md).

Writers (:mod:`hil.storage`, training, the link record) and readers (``hil show``, resume, sweeps)
name a place in a run file only through this module, so the layout is spelled out once. Dataset
names are paths under :data:`DATA_GROUP`. A characterization procedure names its own group
(``yield``, ``calibration``, ...; ``protocols`` cannot import ``hil``), kept under ``/data`` too.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hil.storage import RunData

FORMAT_NAME = "memristor-hil run"
FORMAT_VERSION = "1.5"
"""The minor version grows when datasets or attributes are added; the major one when a meaning changes."""
DATA_GROUP = "data"
STORED_FROM = "stored_from"
"""Attribute of a dataset stored in a smaller type than it was written with (``float64``, ``int64``),
holding every value exactly: readers widen it back (new in 1.2)."""

# ---------------------------------------------------------------------- root attributes

FORMAT = "format"
VERSION = "format_version"
PROCEDURE = "procedure"
STATUS = "status"
CREATED = "created_utc"
FINISHED = "finished_utc"
RESOURCE = "resource"
BOARD_IDENTITY = "board_identity"
CONFIG = "config"
SOFTWARE_VERSION = "software_version"
HOST = "host"
PID = "pid"
RESUMED = "resumed"
DATASET_DIGEST = "dataset_digest"
"""a training run's data, by its samples' shapes and labels (:func:`hil.datasets.labels_digest`), checked on resume"""

HEADER_KEYS = (PROCEDURE, STATUS, RESUMED, CREATED, FINISHED, RESOURCE, BOARD_IDENTITY, VERSION, SOFTWARE_VERSION)
"""The root attributes a reader shows first, in this order."""

RUNNING = "running"
COMPLETED = "completed"
INTERRUPTED = "interrupted"


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def config_text(config: Mapping[str, Any]) -> str:
    return json.dumps(config, default=str, sort_keys=True)


def new_root(
    procedure: str, config: Mapping[str, Any], resource: str, board_identity: str, software_version: str
) -> dict[str, str | int]:
    """The root attributes of a run file as it is created."""
    return {FORMAT: FORMAT_NAME, VERSION: FORMAT_VERSION, PROCEDURE: procedure, STATUS: RUNNING, CREATED: _utc_now(),
            RESOURCE: resource, BOARD_IDENTITY: board_identity, CONFIG: config_text(config),
            SOFTWARE_VERSION: software_version, **writer()}  # fmt: skip


def writer() -> dict[str, str | int]:
    """Which process on which machine writes the file (the latest session)."""
    return {HOST: platform.node(), PID: os.getpid()}


def resumed_root(root: Mapping[str, Any]) -> dict[str, str | int]:
    """The root attributes a resumed session changes."""
    return {STATUS: RUNNING, RESUMED: int(root.get(RESUMED, 0)) + 1, **writer()}


def closed_root(status: str) -> dict[str, str]:
    return {STATUS: status, FINISHED: _utc_now()}


def format_problem(root: Mapping[str, Any]) -> str | None:
    """Why a file with these root attributes cannot be read by this software (None: it can)."""
    if root.get(FORMAT) != FORMAT_NAME:
        return f"is an HDF5 file but not a {FORMAT_NAME} file"
    if str(root.get(VERSION, "0")).split(".")[0] != FORMAT_VERSION.split(".")[0]:
        return f"has layout version {root.get(VERSION)}; this software reads {FORMAT_VERSION}"
    return None


def layout_version(root: Mapping[str, Any]) -> tuple[int, int]:
    """The (major, minor) layout version a file with these root attributes was written in (1.0 when absent)."""
    major, _, minor = str(root.get(VERSION, "1.0")).partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        return 1, 0


def status(run: RunData) -> str:
    return str(run.root.get(STATUS, ""))


def resumed_sessions(run: RunData) -> int:
    return int(run.root.get(RESUMED, 0))


# ---------------------------------------------------------------------- link record (every run)

LINK = "link"


def link(board: str) -> str:
    """Group whose attributes count the pulses and link costs of ``board`` (:mod:`hil.link_record`)."""
    return f"{LINK}/{board}"


WEAR = "wear"


def wear(board: str) -> str:
    """A board's pulses per device in the latest session, ``(kinds, rows, cols)``, with attributes
    ``kinds`` and ``session`` (new in 1.3): rewritten with every flush, so a killed session's
    wear reaches its chip's ledger (:mod:`hil.ledger.facts`)."""
    return f"{WEAR}/{board}"


def links(run: RunData) -> dict[str, dict[str, Any]]:
    """Every board's link record, by board name."""
    prefix = f"{LINK}/"
    return {name[len(prefix) :]: attrs for name, attrs in run.attrs.items() if name.startswith(prefix)}


def pulses_recorded(run: RunData) -> int:
    """Every pulse a run file counts, over all its boards and sessions."""
    return sum(int(attrs.get("pulses_applied", 0)) for attrs in links(run).values())


# ---------------------------------------------------------------------- training runs

TRAIN = "train"
"""Group whose attributes say how far training got: ``completed_updates`` and the checkpoint ``state``."""
JOURNAL = f"{TRAIN}/journal"
EVALUATIONS = f"{TRAIN}/eval"
STATE_SLOTS = ("state/a", "state/b")  # checkpoints alternate, so a torn one never replaces a whole one
PREPARE = "prepare"
"""Group whose attributes hold the placement and, once the weights are on the array, ``done``."""
CALIBRATION = f"{PREPARE}/calibration"
PRETRAIN = "pretrain"
PRETRAIN_EVALUATIONS = f"{PRETRAIN}/eval"
SNAPSHOTS = "snapshots"
PULSES = "pulses"


def calibration(board: str, name: str) -> str:
    """One map of a board's gate calibration (``k``, ``c``, ``stuck_low``, ``stuck_high``, ``v_gate_window``)."""
    return f"{CALIBRATION}/{board}/{name}"


def pretrain_weights(layer: str) -> str:
    return f"{PRETRAIN}/weights/{layer}"


def snapshots(board: str) -> str:
    """A board's conductance map at the end of each epoch, ``(epochs, rows, cols)``."""
    return f"{SNAPSHOTS}/{board}"


def snapshot_boards(datasets: Mapping[str, Any]) -> list[str]:
    prefix = f"{SNAPSHOTS}/"
    return sorted(name[len(prefix) :] for name in datasets if name.startswith(prefix))


FINAL = "final"
DEPLOY = "deploy"
"""Group of a deployment (``initial_weights``): its weights as written; attributes ``scale_<layer>``."""
PARALLEL = "parallel"
"""Group of a parallel-mode run (hil/parallel.py): attributes hold each copy's and the combined accuracies."""


def final_conductance(board: str) -> str:
    """A board's map read after the run's last update (or after the transfer, without updates), S."""
    return f"{FINAL}/conductance/{board}"


def final_boards(datasets: Mapping[str, Any]) -> list[str]:
    """The boards whose map after the last update a run file holds."""
    prefix = f"{FINAL}/conductance/"
    return sorted(name[len(prefix) :] for name in datasets if name.startswith(prefix))


def deployed_weights(layer: str) -> str:
    """A deployment's weights of ``layer`` as written onto the chip."""
    return f"{DEPLOY}/weights/{layer}"


def pulses(board: str) -> str:
    """Pulses the updates applied to each device of a board, written when the updates end (from 1.5;
    before, with every update). While they run, the checkpoint holds them: :func:`pulse_counts`."""
    return f"{PULSES}/{board}"


def checkpoint_weights(slot: str, layer: str) -> str:
    return f"{slot}/weights/{layer}"


def checkpoint_optimizer(slot: str, name: str) -> str:
    return f"{slot}/optimizer/{name}"


def checkpoint_devices(slot: str, board: str, name: str) -> str:
    return f"{slot}/devices/{board}/{name}"


def completed_updates(run: RunData) -> int:
    """How many updates a training run file has journaled."""
    return int(run.attrs.get(TRAIN, {}).get("completed_updates", 0))


def checkpoint_slot(run: RunData) -> str:
    """The slot of the last complete checkpoint."""
    return str(run.attrs.get(TRAIN, {}).get("state", STATE_SLOTS[0]))


def checkpoint(run: RunData, group: str) -> dict[str, Any]:
    """The datasets under ``group`` (``weights``, ``optimizer``, ``devices``) of the last complete
    checkpoint, by their names in the group."""
    prefix = f"{checkpoint_slot(run)}/{group}/"
    return {k[len(prefix) :]: v for k, v in run.datasets.items() if k.startswith(prefix)}


def pulse_counts(run: RunData, board: str) -> Any | None:
    """Pulses the updates applied to each device of ``board``: ``pulses/<board>`` once the updates
    ended, else (a killed run's file, from 1.5) the last complete checkpoint's (None: no update)."""
    if pulses(board) in run.datasets:
        return run.datasets[pulses(board)]
    return checkpoint(run, "devices").get(f"{board}/pulses")


def preparation(run: RunData) -> dict[str, Any]:
    """The ``prepare`` group's attributes (placement, ``done``, programming pulses, accuracy after transfer)."""
    return dict(run.attrs.get(PREPARE, {}))


def prepared(run: RunData) -> bool:
    """Whether the run got its weights onto the array (calibrated, placed, programmed)."""
    return bool(preparation(run).get("done", False))


# ---------------------------------------------------------------------- evaluations (hil evaluate)

EVALUATE = "evaluate"
"""Procedure name of an evaluation file, and group whose attributes sum it up."""
EVALUATION_POINTS = f"{EVALUATE}/points"
REFERENCE_CELLS = f"{EVALUATE}/reference_cells"


def reference_cells(board: str) -> str:
    """One board's reference cells of an evaluation (rows: row, col, target S, baseline S)."""
    return f"{REFERENCE_CELLS}/{board}"
