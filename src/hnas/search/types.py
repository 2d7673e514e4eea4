"""Plain data shared by optimizers, storage, executors and the search loop.

The optimizer protocol is ask/tell over an explicit history:

* ``job = optimizer.ask(history)`` returns the next :class:`Job` (a new configuration at some
  rung, or a promotion of a finished trial to the next rung; ``parent_id`` names the promoted
  trial) or ``None`` when the optimizer has nothing to hand out right now. ``history`` is every
  trial issued so far, in ``trial_id`` order, *including pending ones* (jobs handed to a worker
  whose result has not come back). ``job.trial_id`` is always ``max(trial ids) + 1``.
* The caller evaluates the job and builds the finished trial with
  ``Trial.pending(job).succeeded(loss, cost)`` or ``.failed(error)``, replaces the pending entry
  in its history and calls ``optimizer.tell(trial)``.

Optimizers keep no state that cannot be rebuilt from ``history`` and their seed: all randomness
comes from a generator seeded with ``(seed, job.trial_id)``, so asking again with a stored
history returns exactly the job an uninterrupted run would have got. A minimal loop::

    optimizer = make_optimizer("priorband", space, min_fidelity=1, max_fidelity=81, seed=0)
    history: list[Trial] = []
    while (job := optimizer.ask(history)) is not None and len(history) < 200:
        loss = f(job.config, job.fidelity)
        trial = Trial.pending(job).succeeded(loss, cost=job.fidelity)
        history.append(trial)
        optimizer.tell(trial)

Both objectives (``loss`` and ``cost``) are minimised. Single-objective optimizers look only at
``loss``; Regularized PriorBand (and the ``promotion="nds-*"`` options) use both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, runtime_checkable

TrialState = Literal["pending", "success", "failed"]
TRIAL_STATES: tuple[str, ...] = ("pending", "success", "failed")

#: ``Job.bracket`` of jobs that belong to no bracket (PriorBand's first evaluation of the
#: default configuration at the maximum fidelity, and every random-search job).
NO_BRACKET = -1


@dataclass(frozen=True)
class Job:
    """One evaluation to run: ``config`` at ``fidelity``.

    ``rung`` indexes the fidelity schedule (0 = lowest fidelity); ``bracket`` is the running
    number of the Hyperband/successive-halving bracket that issued it (``NO_BRACKET`` for
    none); ``parent_id`` is set for promotions, which continue the parent trial's training.
    ``sampler`` says where a new config came from (``default``, ``random``, ``prior``,
    ``incumbent``, ``promotion``) so runs can be analysed afterwards.
    """

    trial_id: int
    config: Mapping[str, Any]
    fidelity: float
    rung: int
    bracket: int = NO_BRACKET
    parent_id: int | None = None
    sampler: str = "random"

    @property
    def is_promotion(self) -> bool:
        return self.parent_id is not None


@dataclass(frozen=True)
class ImportedFrom:
    """Where a warm-started run's imported trial came from: the source run folder and its trial id there."""

    run: str
    trial_id: int


@dataclass(frozen=True)
class Trial:
    """A job plus what became of it. ``loss``/``cost`` are set only when ``state == 'success'``.

    ``imported`` is set for a trial a warm start copied from an earlier run (docs/warm-start.md):
    the optimizers see it like any other; budgets and trial limits count only the run's own trials.
    """

    job: Job
    state: TrialState = "pending"
    loss: float | None = None
    cost: float | None = None
    error: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    worker: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    imported: ImportedFrom | None = None

    @classmethod
    def pending(cls, job: Job) -> "Trial":
        return cls(job=job)

    def succeeded(self, loss: float, cost: float, extra: Mapping[str, Any] | None = None,
                  **timing: Any) -> "Trial":
        """The finished trial; a non-finite loss or cost makes it a failed one instead."""
        loss, cost = float(loss), float(cost)
        if not (math.isfinite(loss) and math.isfinite(cost)):
            return self.failed(f"objective returned a non-finite result (loss={loss}, cost={cost})",
                               **timing)
        return replace(self, state="success", loss=loss, cost=cost, error=None,
                       extra=dict(extra or {}), **timing)

    def failed(self, error: str, **timing: Any) -> "Trial":
        return replace(self, state="failed", loss=None, cost=None, error=str(error), **timing)

    # Shortcuts so code reads ``trial.config`` rather than ``trial.job.config``.
    @property
    def trial_id(self) -> int:
        return self.job.trial_id

    @property
    def config(self) -> Mapping[str, Any]:
        return self.job.config

    @property
    def fidelity(self) -> float:
        return self.job.fidelity

    @property
    def rung(self) -> int:
        return self.job.rung

    @property
    def bracket(self) -> int:
        return self.job.bracket

    @property
    def parent_id(self) -> int | None:
        return self.job.parent_id

    @property
    def is_finished(self) -> bool:
        return self.state != "pending"

    @property
    def is_imported(self) -> bool:
        return self.imported is not None

    @property
    def is_success(self) -> bool:
        return self.state == "success"

    @property
    def objectives(self) -> tuple[float, float]:
        """``(loss, cost)``, both minimised; only meaningful for successful trials."""
        if self.loss is None or self.cost is None:
            raise ValueError(f"trial {self.trial_id} is {self.state} and has no objectives")
        return (self.loss, self.cost)


@runtime_checkable
class Optimizer(Protocol):
    """What the search loop needs from an optimizer (see the module docstring)."""

    name: str

    def ask(self, history: Sequence[Trial]) -> Job | None:
        """The next job given every trial issued so far (pending ones included)."""

    def tell(self, trial: Trial) -> None:
        """Report a finished trial (its pending copy is already replaced in the history)."""

    def settings(self) -> dict[str, Any]:
        """JSON-able settings that must match when a stored run is resumed."""
