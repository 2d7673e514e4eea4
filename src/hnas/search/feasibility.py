"""Configurations a search never trains: a plain filter the loop consults for each new configuration.

The engine knows nothing of what a filter measures (hnas's pipeline estimates a U-Net's GPU training
memory): a :class:`ConfigFilter` is a name, an ``estimate(config) -> float`` and a limit. When the
optimizer samples a new configuration whose estimate exceeds the limit, the loop asks it again for
the same trial with another sampling stream (``redraw`` attempt 1, 2, ...), so a replayed history
redraws the same way and a resume stays exact. Promotions are never checked: their configuration
already passed. After :data:`MAX_REDRAWS` refused draws for one trial the search stops with an
error naming the limit and the smallest estimate it saw; the refused draws are counted per trial
in the run's database (:meth:`hnas.search.storage.RunStore.record_pruned`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hnas.errors import SearchError
from hnas.search.types import Job

#: Refused draws for one trial before the search gives up on the space.
MAX_REDRAWS = 1000


@dataclass(frozen=True)
class ConfigFilter:
    """Configurations whose ``estimate`` exceeds ``limit`` are never trained.

    ``name`` says what is estimated and ``unit`` how its values read (both only for messages
    and the run's metadata).
    """

    name: str
    estimate: Callable[[Mapping[str, Any]], float]
    limit: float
    unit: str = ""

    def __post_init__(self):
        if not callable(self.estimate):
            raise SearchError(f"ConfigFilter {self.name!r} needs a callable estimate, got {self.estimate!r}")
        if isinstance(self.limit, bool) or not isinstance(self.limit, (int, float)) or not self.limit > 0:
            raise SearchError(f"ConfigFilter {self.name!r} has limit {self.limit!r}; expected a positive number")

    def describe(self) -> dict[str, Any]:
        """What the run's metadata stores (compared on resume)."""
        return {"name": self.name, "limit": self.limit, "unit": self.unit}

    def format(self, value: float) -> str:
        return f"{value:.3g} {self.unit}".rstrip()


def feasible_job(ask: Callable[[int], Job | None], config_filter: ConfigFilter,
                 max_redraws: int = MAX_REDRAWS) -> tuple[Job | None, int]:
    """The first job ``ask(attempt)`` gives that is a promotion or passes the filter, and the draws refused.

    ``ask(0)`` is the optimizer's ordinary ask; ``ask(k)`` the same ask with redraw stream ``k``.
    """
    smallest = math.inf
    for attempt in range(max_redraws + 1):
        job = ask(attempt)
        if job is None or job.parent_id is not None:
            return job, attempt
        value = float(config_filter.estimate(job.config))
        if value <= config_filter.limit:
            return job, attempt
        smallest = min(smallest, value)
    limit = config_filter.format(config_filter.limit)
    raise SearchError(f"no configuration within the {config_filter.name} limit {limit}: "
                      f"{max_redraws + 1} draws for trial {job.trial_id} all exceeded it (the smallest needs "
                      f"{config_filter.format(smallest)}); expected a larger limit or a space with smaller "
                      "configurations")


def pruned_summary(description: Mapping[str, Any] | None, pruned: int) -> str | None:
    """One line for status and reports from a run's stored filter (:meth:`ConfigFilter.describe`); None without one."""
    if not isinstance(description, Mapping):
        return None
    value = description.get("limit")
    value = f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)
    limit = f"{value} {description.get('unit') or ''}".rstrip()
    noun = "configuration" if pruned == 1 else "configurations"
    return (f"{description.get('name', 'filter')} limit {limit}: {pruned} sampled {noun} over it pruned "
            "(drawn again, never trained)")
