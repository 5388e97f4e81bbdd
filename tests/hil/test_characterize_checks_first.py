"""``hil characterize NAME`` checks the run against the board's limits before it makes the run file.

Before, the run file was made first and the procedure checked its limits when it began: with
``--overwrite`` a refused run (a typo in an amplitude) had already deleted the file it was to
replace, and the refused run's own file was not kept either, so the earlier data was lost.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.cli import main
from hil.procedure_registry import REGISTRY
from protocols.characterization.checks import CHECKS

CHIP = "emulator://?preset=umass-ta-hfo2&seed=3&rows=8&cols=4"
# One option per procedure past the emulator's limits (v_row 0..4 V, v_read -0.5..0.5 V).
PAST_A_LIMIT = {
    "yield-map": ["--set-amplitude", "4.5"],
    "iv-sweep": ["--v-set-max", "4.5"],
    "gate-calibration": ["--amplitude", "4.5"],
    "pulse-response": ["--set-amplitude", "4.5"],
    "endurance": ["--set-amplitude", "4.5"],
    "retention": ["--v-read", "0.9"],
    "read-disturb": ["--v-read", "0.9"],
    "forming": ["--v-read", "0.9"],
    "write-noise": ["--set-amplitude", "4.5"],
    "wire-resistance": ["--v-read", "0.9"],
}


def test_every_procedure_has_a_check_and_a_case() -> None:
    assert set(CHECKS) == set(REGISTRY) == set(PAST_A_LIMIT)


@pytest.mark.parametrize("procedure", sorted(PAST_A_LIMIT))
def test_a_refused_run_leaves_the_file_it_would_overwrite_as_it_was(
    procedure: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    earlier = tmp_path / "earlier.h5"
    earlier.write_bytes(b"an earlier run's data")  # any content: the file must come back byte for byte
    argv = ["characterize", procedure, CHIP, "--out", str(earlier), "--overwrite", *PAST_A_LIMIT[procedure]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "is outside the limit" in err and err.endswith("nothing was sent") and "\n" not in err
    assert earlier.read_bytes() == b"an earlier run's data"
