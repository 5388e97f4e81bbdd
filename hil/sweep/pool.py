"""The campaign's pool of real boards: which are still in, and why each one that failed was taken out.

Cells take a free board through the board lock themselves (:func:`hil.sweep.cell.run_cell`); the
pool is the campaign's record of which boards cells may still try.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class BoardPool:
    resources: list[str]
    out: dict[str, str] = field(default_factory=dict)
    """boards taken out of the pool, with the reason"""

    @property
    def available(self) -> list[str]:
        return [r for r in self.resources if r not in self.out]

    def take_out(self, resource: str, reason: str) -> bool:
        """Take a failed board out (the first reason is kept); whether it was still in."""
        if resource not in self.resources or resource in self.out:
            return False
        self.out[resource] = reason
        return True

    def __bool__(self) -> bool:
        return bool(self.available)
