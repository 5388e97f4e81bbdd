"""A chip's history across runs: its ledger (:mod:`hil.ledger.store`), what each run adds to it
(:mod:`hil.ledger.facts`) and ``hil chip`` (:mod:`hil.ledger.cli`)."""

from hil.ledger.store import LEDGER_ENV, ChipHistory, ChipLedger, LedgerError, ledger_dir

__all__ = ["LEDGER_ENV", "ChipHistory", "ChipLedger", "LedgerError", "ledger_dir"]
