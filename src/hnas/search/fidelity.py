"""The Hyperband fidelity schedule: rungs, bracket shapes and their budgets (docs/references.md, "PriorBand").

With eta = 3, b_min = 1 and b_max = 81 there are five rungs (1, 3, 9, 27, 81) and five bracket
shapes with [81, 27, 9, 3, 1], [27, 9, 3, 1], [9, 3, 1], [6, 2] and [5] configurations per rung.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hnas.errors import SearchError


def _is_whole(value: float) -> bool:
    return float(value).is_integer()


@dataclass(frozen=True)
class FidelitySchedule:
    """Rung ``r`` (0 = cheapest) runs at ``b_max / eta**(max_rung - r)``.

    When both bounds are whole numbers (epochs) the rung fidelities are rounded to whole
    numbers too, as the paper's 12, 37, 111, 333, 1000 epochs for 10..1000.
    """

    min_fidelity: float
    max_fidelity: float
    eta: int = 3

    def __post_init__(self) -> None:
        if not (isinstance(self.eta, int) and not isinstance(self.eta, bool)) or self.eta < 2:
            raise SearchError(f"eta must be an integer >= 2, got {self.eta!r}")
        lo, hi = self.min_fidelity, self.max_fidelity
        if not (isinstance(lo, (int, float)) and isinstance(hi, (int, float))) \
                or not (math.isfinite(lo) and math.isfinite(hi)) or not 0 < lo <= hi:
            raise SearchError(f"fidelity bounds must satisfy 0 < min_fidelity <= max_fidelity, got "
                              f"min_fidelity={lo!r}, max_fidelity={hi!r}")

    @property
    def max_rung(self) -> int:
        """s_max = floor(log_eta(b_max / b_min)); 0 means a single rung."""
        return int(math.floor(math.log(self.max_fidelity / self.min_fidelity) / math.log(self.eta)
                              + 1e-9))

    @property
    def rungs(self) -> range:
        return range(self.max_rung + 1)

    @property
    def integer(self) -> bool:
        return _is_whole(self.min_fidelity) and _is_whole(self.max_fidelity)

    def fidelity(self, rung: int) -> float:
        if rung not in self.rungs:
            raise SearchError(f"rung {rung} is outside the schedule's rungs 0..{self.max_rung}")
        value = self.max_fidelity / self.eta ** (self.max_rung - rung)
        return float(round(value)) if self.integer else value

    @property
    def fidelities(self) -> tuple[float, ...]:
        return tuple(self.fidelity(r) for r in self.rungs)

    def require_multiple_rungs(self, optimizer: str) -> None:
        """Multi-fidelity optimizers make no sense with one rung: refuse that setup."""
        if self.max_rung < 1:
            raise SearchError(
                f"{optimizer} needs at least two rungs, but max_fidelity / min_fidelity = "
                f"{self.max_fidelity} / {self.min_fidelity} = "
                f"{self.max_fidelity / self.min_fidelity:g} is below eta = {self.eta}; lower "
                f"min_fidelity to at most {self.max_fidelity / self.eta:g}, lower eta, or use "
                "random search")

    # -- brackets ------------------------------------------------------------------------------
    def bracket_sizes(self, halvings: int) -> dict[int, int]:
        """Configurations per rung of a bracket that halves ``halvings`` times (NePS counts).

        Its base rung is ``max_rung - halvings``; the base holds
        ``floor((max_rung + 1) / (halvings + 1)) * eta**halvings`` configurations and every
        further rung ``floor(previous / eta)``.
        """
        if not 0 <= halvings <= self.max_rung:
            raise SearchError(f"a bracket may halve 0..{self.max_rung} times, got {halvings}")
        count = ((self.max_rung + 1) // (halvings + 1)) * self.eta ** halvings
        sizes = {}
        for rung in range(self.max_rung - halvings, self.max_rung + 1):
            sizes[rung] = count
            count //= self.eta
        return sizes

    def bracket_cost(self, halvings: int) -> float:
        """Fidelity a full bracket spends when promotions continue from their parent's rung."""
        sizes = self.bracket_sizes(halvings)
        cost, previous = 0.0, 0.0
        for rung, count in sizes.items():
            fidelity = self.fidelity(rung)
            cost += count * (fidelity - previous)
            previous = fidelity
        return cost
