"""What a run tells about a chip: the pulses of its session and what it measured, for the ledger.

A training run's gate calibration (``prepare/calibration/<board>``), a yield map's defect classes
and initial conductances, and a gate-calibration run's fits are the findings a later run can use;
the others add their pulses and their entry in the chip's list of runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from drivers import Board
from hil import run_layout as layout
from hil.ledger.store import (
    ChipHistory,
    ChipLedger,
    LedgerError,
    OpenSession,
    Session,
    add_session,
    ledger_dir,
    utc_now,
)
from hil.storage import RunFile, RunFileError, read_run, run_state
from protocols.calibration import GateCalibration
from protocols.recording import Recorder

log = logging.getLogger(__name__)

CALIBRATION_KEYS = ("k", "c", "residual", "mask", "v_gate_window", "origin", "v_gates", "g_measured")
"""A :class:`GateCalibration` as plain arrays (its ``to_dict``), as the ledger and a training run store it."""
PULSE_PARAMETERS = ("amplitude", "width", "v_reset", "v_gate_reset")
"""What a calibration depends on besides the chip: a calibration is reused only where these match."""
TRAINING_CLASSES = ("normal", "stuck_low", "stuck_high", "untested")
REUSED = "ledger"
"""The ``source`` attribute of a calibration a run took from the ledger (not recorded again)."""


def _read_group(run: RunFile, prefix: str, keys: tuple[str, ...]) -> dict[str, npt.NDArray[Any]] | None:
    arrays = {key: run.read(f"{prefix}/{key}") for key in keys}
    found = {key: value for key, value in arrays.items() if value is not None}
    return found if "k" in found else None


def _training(session: Session, run: RunFile, board: str, shape: tuple[int, int]) -> None:
    snapshots = run.read(layout.snapshots(board))
    if snapshots is not None and len(snapshots):
        session.conductance = {"g": np.asarray(snapshots[-1], np.float32)}
        session.conductance_attrs = {"unit": "S", "source": "training snapshot"}
    prefix = layout.calibration(board, "").rstrip("/")
    attrs = run.read_attrs(prefix)
    calibration = _read_group(run, prefix, (*CALIBRATION_KEYS, "stuck_low", "stuck_high"))
    if calibration is None or attrs.get("source") == REUSED or calibration["k"].shape != shape:
        return
    stuck_low = calibration.pop("stuck_low", np.zeros(shape)).astype(bool)
    stuck_high = calibration.pop("stuck_high", np.zeros(shape)).astype(bool)
    session.calibration = calibration
    session.calibration_attrs = {k: v for k, v in attrs.items() if k in PULSE_PARAMETERS}
    mask = calibration.get("mask", np.ones(shape, bool)).astype(bool)
    classes = np.where(stuck_low, 1, np.where(stuck_high, 2, np.where(mask, 0, 3))).astype(np.int8)
    session.defects = {"class": classes}
    session.defects_attrs = {"class_names": ",".join(TRAINING_CLASSES), "source": "training calibration"}
    session.working_fraction = float((classes == 0).sum() / max(1, mask.sum()))


def _yield_map(session: Session, run: RunFile, shape: tuple[int, int]) -> None:
    classes, g_initial = run.read("yield/class"), run.read("yield/g_initial")
    attrs = run.read_attrs("yield/class")
    if classes is None or classes.shape != shape:
        return  # a region of the chip: not a whole-chip map
    session.defects = {"class": classes.astype(np.int8)}
    session.defects_attrs = {"class_names": str(attrs.get("class_names", "")), "source": "yield-map"}
    session.working_fraction = float((classes == 0).mean())
    if g_initial is not None:
        session.conductance = {"g": g_initial.astype(np.float32)}
        session.conductance_attrs = {"unit": "S", "source": "yield-map"}


def _gate_calibration(session: Session, run: RunFile, shape: tuple[int, int]) -> None:
    if run.read_attrs("calibration").get("source") == REUSED:
        return  # the ledger has it, with its original date
    k, c, residual = run.read("calibration/k"), run.read("calibration/c"), run.read("calibration/residual")
    v_gates, g = run.read("calibration/v_gate"), run.read("calibration/g")
    if k is None or c is None or residual is None or v_gates is None or k.shape != shape:
        return
    attrs = run.read_attrs("calibration")
    low, high = attrs.get("fit_v_turn_on", np.nan), attrs.get("fit_v_saturation", np.nan)
    window = (float(low) if np.isfinite(low) else float(v_gates[0]),
              float(high) if np.isfinite(high) else float(v_gates[-1]))  # fmt: skip
    measured = g if g is not None else np.zeros((0, 0, 0))
    calibration = GateCalibration(k=k, c=c, residual=residual, v_gate_window=window, mask=np.isfinite(k),
                                  v_gates=v_gates.ravel(), g_measured=measured)  # fmt: skip
    session.calibration = calibration.to_dict()
    session.calibration_attrs = {k: v for k, v in attrs.items() if k in PULSE_PARAMETERS}


FINDINGS = {"yield-map": _yield_map, "gate-calibration": _gate_calibration}


def session_of(board_name: str, board: Board, run: RunFile) -> Session:
    """What one board's session in ``run`` adds to its chip's ledger."""
    link = run.read_attrs(layout.link(board_name))
    counts = {k: v.copy() for k, v in board.pulses_by_cell.items()}
    session = Session(run_key(run), run.procedure, board_name, counts, session=int(link.get("sessions", 0)),
                      counter_at_start=int(link.get("counter_at_start", -1)))  # fmt: skip
    if run.procedure == layout.TRAIN:
        _training(session, run, board_name, board.shape)
    elif run.procedure in FINDINGS:
        FINDINGS[run.procedure](session, run, board.shape)
    return session


def run_key(run: RunFile) -> str:
    """How the ledger names a run file: its absolute path (a killed session is settled from it later,
    from wherever the next command runs)."""
    return str(Path(run.path).resolve())


def _chip_ledgers(boards: Mapping[str, Board]) -> list[tuple[str, Board, ChipLedger]]:
    """The boards whose chips keep a ledger: not an in-process emulator, whose chip lives only as long
    as its process and has no history to keep."""
    directory = ledger_dir()
    if directory is None:
        return []
    from drivers.resources import is_in_process

    return [(name, board, ChipLedger(directory, board.identity.serial)) for name, board in boards.items()
            if not is_in_process(board.resource)]  # fmt: skip


WEAR_KINDS = ("set", "reset", "form", "sweep")
"""The kinds of pulse the driver counts per device (``Board.pulses_by_cell``), in the order stored."""


def write_wear(run: RunFile, board_name: str, board: Board, session: int) -> None:
    """The session's pulses per device so far, in the run file (on disk with every flush): what a
    killed session adds to its chip's ledger. Every kind is stored from the start, so the dataset
    keeps its shape and type and is rewritten in place, never moved."""
    kinds = [*WEAR_KINDS, *sorted(set(board.pulses_by_cell) - set(WEAR_KINDS))]
    none = np.zeros(board.shape, np.int64)
    counts = np.stack([board.pulses_by_cell.get(kind, none) for kind in kinds])
    run.write(layout.wear(board_name), counts, kinds=",".join(kinds), session=session)


def begin_sessions(boards: Mapping[str, Board], run: RunFile, started: Mapping[str, tuple[int, int]]) -> None:
    """Register each board's session as open in its chip's ledger, given its (session number, board
    counter at start; -1 unknown); sessions earlier runs left open are settled first. A ledger that
    fails is logged, never fails the run."""
    for name, board, ledger in _chip_ledgers(boards):
        session, counter = started[name]
        opened = OpenSession(run_key(run), name, run.procedure, session, counter, utc_now())

        def begin(history: ChipHistory, opened: OpenSession = opened, identity: str = str(board.identity)) -> None:
            settle_open_sessions(history, run)
            live = [s for s in history.open_sessions.values() if s.run != opened.run]
            if (opened.counter_at_start >= 0 and history.counter_expected >= 0 and not live
                    and history.counter_identity == identity):  # fmt: skip
                # pulses the board applied since the last settled session ended that no run file
                # put on a device (a killed session's after its last flush, or outside any run)
                history.unattributed_pulses += max(0, opened.counter_at_start - history.counter_expected)
            history.counter_identity, history.counter_expected = identity, -1
            history.open_sessions[opened.key] = opened

        try:
            ledger.update(begin, str(board.identity), board.shape)
        except (OSError, LedgerError, ValueError, KeyError) as exc:
            log.warning("the chip ledger of %s was not updated: %s", board.identity.serial, exc)


def record_sessions(boards: Mapping[str, Board], run: RunFile, status: str = "") -> None:
    """Settle each board's session (its exact pulses and findings, how it ended) into its chip's
    ledger; a ledger that fails is logged, never fails the run."""
    for name, board, ledger in _chip_ledgers(boards):
        session = session_of(name, board, run)
        session.status = status

        def close(history: ChipHistory, session: Session = session, board: Board = board) -> None:
            add_session(history, session)
            history.counter_identity = str(board.identity)
            history.counter_expected = (session.counter_at_start + board.pulses_applied
                                        if session.counter_at_start >= 0 else -1)  # fmt: skip

        try:
            ledger.update(close, str(board.identity), board.shape)
        except (OSError, LedgerError, ValueError, KeyError) as exc:
            log.warning("the chip ledger of %s was not updated: %s", board.identity.serial, exc)


def _session_wear(
    session: OpenSession, own: RunFile | None
) -> tuple[str, dict[str, Any], dict[str, npt.NDArray[np.int64]]] | None:
    """(run state, link record, flushed pulses per device by kind) of an open session's run file;
    None if it cannot be read now."""
    name = layout.wear(session.board)
    if own is not None and run_key(own) == session.run:
        state, link = "running", own.read_attrs(layout.link(session.board))
        attrs, stored = own.read_attrs(name), own.read(name)
    elif not Path(session.run).exists():
        return "run file gone", {}, {}  # what it credited stays; the rest is lost with the file
    else:
        try:
            data = read_run(session.run, lazy=True)
            state, link = run_state(data), data.attrs.get(layout.link(session.board), {})
            attrs, stored = data.attrs.get(name, {}), data.datasets.get(name)
        except (RunFileError, OSError, KeyError, ValueError) as exc:
            log.warning("open session of %s not settled: %s", session.run, exc)
            return None
    wear: dict[str, npt.NDArray[np.int64]] = {}
    if stored is not None and int(attrs.get("session", -1)) == session.session:
        kinds = str(attrs.get("kinds", "")).split(",")
        wear = {kind: np.asarray(stored[i], np.int64) for i, kind in enumerate(kinds) if stored[i].any()}
    return state, link, wear


def settle_open_sessions(history: ChipHistory, own: RunFile | None = None) -> None:
    """Add what each session left open on the chip has flushed to its run file. A live one stays open
    (its later pulses come when it closes); a killed one is closed, as ``killed``. ``own``: the run
    file this process has open (whose previous session, if killed, is read through it)."""
    for key, session in list(history.open_sessions.items()):
        found = _session_wear(session, own)
        if found is None:
            continue
        state, link, wear = found
        same_session = int(link.get("sessions", -1)) == session.session
        history.add_pulses({kind: counts - session.credited.get(kind, 0) for kind, counts in wear.items()})
        session.credited = {kind: counts.copy() for kind, counts in wear.items()}
        own_file = own is not None and run_key(own) == session.run
        if state.startswith("running") and same_session and not own_file:
            continue  # live elsewhere: settled again later, and when it closes
        del history.open_sessions[key]
        flushed = int(sum(int(c.sum()) for c in wear.values()))
        history.runs.append({"run": session.run, "procedure": session.procedure, "board": session.board,
                             "recorded_utc": utc_now(), "pulses": flushed,
                             "status": "killed" if state.startswith("running") else state})  # fmt: skip
        if same_session and session.counter_at_start >= 0:
            history.counter_expected = session.counter_at_start + int(link.get("session_pulses", flushed))


def settled_history(ledger: ChipLedger) -> ChipHistory:
    """A chip's history with the sessions left open settled from their run files (``hil chip``)."""
    if not ledger.exists():
        return ledger.read()  # the one-line error
    history = ledger.read()
    if not history.open_sessions:
        return history
    return ledger.update(settle_open_sessions, history.identity, history.shape)


def fresh_calibration(
    board: Board, max_age: float, parameters: Mapping[str, float]
) -> tuple[GateCalibration, str] | None:
    """The chip's latest gate calibration from its ledger, if measured less than ``max_age`` seconds
    ago with these pulse ``parameters`` on this shape; with when it was measured."""
    directory = ledger_dir()
    ledger = ChipLedger(directory, board.identity.serial) if directory is not None else None
    if ledger is None or not ledger.exists():
        return None
    try:
        history = ledger.read()
    except LedgerError as exc:
        log.warning("%s", exc)
        return None
    stored = history.calibration
    if stored is None or history.shape != board.shape or stored.age > max_age:
        return None
    if any(not np.isclose(float(stored.attrs.get(k, np.nan)), float(v)) for k, v in parameters.items()):
        return None
    return GateCalibration.from_dict(stored.arrays), stored.measured_utc


def calibrate_or_reuse(
    board: Board, board_name: str, recorder: Recorder, parameters: Mapping[str, float], max_age: float | None,
    measure: Callable[[], GateCalibration],
) -> GateCalibration:  # fmt: skip
    """The board's gate calibration: from its chip's ledger when one with these pulse ``parameters`` is
    younger than ``max_age`` seconds (None: never), else measured; stored whole in the run file."""
    found = fresh_calibration(board, max_age, parameters) if max_age is not None else None
    if found is not None:
        calibration, measured = found
        log.info("%s: gate calibration of %s reused from its ledger (measured %s)", board_name,
                 board.identity.serial, measured)  # fmt: skip
        source: dict[str, str] = {"source": REUSED, "measured_utc": measured}
    else:
        calibration, source = measure(), {"source": "measured"}
    for key, value in calibration.to_dict().items():
        if key not in ("k", "c", "v_gate_window"):  # those the training run writes with their units
            recorder.write(layout.calibration(board_name, key), np.asarray(value))
    recorder.set_attrs(layout.calibration(board_name, "").rstrip("/"), **parameters, **source)
    return calibration


def working_cells(board: Board, max_age: float) -> list[tuple[int, int]]:
    """The cells the chip's latest defect map (younger than ``max_age`` seconds) calls normal, from its
    ledger: a characterization that skips the defective ones without mapping them again."""
    directory = ledger_dir()
    ledger = ChipLedger(directory, board.identity.serial) if directory is not None else None
    history = ledger.read() if ledger is not None and ledger.exists() else None
    defects = history.defects if history is not None else None
    if history is None or defects is None or defects.age > max_age or history.shape != board.shape:
        raise LedgerError(f"no defect map of chip {board.identity.serial} younger than {max_age:g} s in its ledger; "
                          "map it first (hil characterize yield-map), or leave out --working-cells")  # fmt: skip
    rows, cols = np.nonzero(np.asarray(defects.arrays["class"]) == 0)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True)]


def reuse_gate_calibration(max_age: float) -> Callable[..., object]:
    """``gate-calibration``'s measure function that takes the chip's calibration from its ledger when
    one was measured at most ``max_age`` seconds ago with the same pulse parameters and gate voltages
    (no pulse is sent; the run says ``source = ledger``), and measures otherwise."""
    from protocols.characterization.common import select_region, start_group
    from protocols.characterization.figures import record_figures
    from protocols.characterization.gate_calibration import (
        GROUP,
        GateCalibrationOptions,
        GateCalibrationResult,
        gate_figures,
        measure_gate_calibration,
    )

    def measure(board: Board, recorder: Recorder, **options: Any) -> GateCalibrationResult:
        opts = GateCalibrationOptions.model_validate(options)
        selection = select_region(board, opts)
        parameters = {key: float(getattr(opts, key)) for key in PULSE_PARAMETERS}
        found = fresh_calibration(board, max_age, parameters)
        gates = np.linspace(opts.v_gate_min, opts.v_gate_max, opts.n_gates)
        stored = found[0] if found is not None else None
        if found is None or stored is None or stored.v_gates.shape != gates.shape or not np.allclose(
                stored.v_gates, gates):  # fmt: skip
            log.info("no gate calibration of %s in its ledger younger than %g s with these pulses and gates: "
                     "measuring", board.identity.serial, max_age)  # fmt: skip
            return measure_gate_calibration(board, recorder, **options)
        measured = found[1]
        log.info("gate calibration of %s reused from its ledger (measured %s)", board.identity.serial, measured)
        rows = slice(selection.region.row0, selection.region.row0 + selection.region.nrows)
        cols = slice(selection.region.col0, selection.region.col0 + selection.region.ncols)
        calibration = GateCalibration(
            k=stored.k[rows, cols], c=stored.c[rows, cols], residual=stored.residual[rows, cols],
            v_gate_window=stored.v_gate_window, mask=stored.mask[rows, cols],
            origin=(selection.region.row0, selection.region.col0), v_gates=stored.v_gates,
            g_measured=stored.g_measured[:, rows, cols],
        )  # fmt: skip
        recorder.write(f"{GROUP}/v_gate", calibration.v_gates)
        recorder.write(f"{GROUP}/g", calibration.g_measured)
        recorder.write(f"{GROUP}/k", calibration.k, unit="S/V")
        recorder.write(f"{GROUP}/c", calibration.c, unit="S")
        recorder.write(f"{GROUP}/residual", calibration.residual, unit="S")
        recorder.write(f"{GROUP}/responsive", calibration.responsive)
        recorder.set_attrs(GROUP, **parameters, source=REUSED, measured_utc=measured)
        start_group(recorder, GROUP, "gate-calibration", opts, responsive=int(calibration.responsive.sum()))
        figures, notes = gate_figures(calibration)
        record_figures(recorder, GROUP, figures)
        return GateCalibrationResult(calibration, figures, (f"taken from the chip's ledger (measured {measured})",
                                                            *notes))  # fmt: skip

    return measure


LEDGER_REUSE: dict[str, Callable[[float], Callable[..., object]]] = {"gate-calibration": reuse_gate_calibration}
"""Procedures that can take their result from the chip's ledger (``--reuse-calibration SECONDS``)."""
