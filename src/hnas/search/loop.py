"""The search loop: ask the optimizer, store the job, run it, store the outcome, repeat.

The run directory holds ``search.sqlite`` and one folder per trial (``trials/00042``). Every
outcome is committed before the next ask, and resuming replays the stored history: pending
trials (those a crash interrupted) run again as the same job with the same trial id, then the
optimizer continues exactly where an uninterrupted run would be. A trial that was running
each of ``max_attempts`` times the process died (one that kills it: out of memory, a
segfault) is recorded as failed instead of being run again, so a resume can always progress.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hnas.errors import SearchError
from hnas.search.executors import Objective, Outcome, TrialContext, make_executor
from hnas.search.feasibility import ConfigFilter, feasible_job
from hnas.search.optimizers import final_incumbent, make_optimizer
from hnas.search.pareto import pareto_front
from hnas.search.space import SearchSpace
from hnas.search.storage import RunStore, database_path, trial_dir
from hnas.search.types import Job, Trial
from hnas.search.warm_start import import_history, link_imported_folders, source_folders

OBJECTIVES: tuple[str, ...] = ("loss", "cost")
MAX_ATTEMPTS = 3  # starts of a trial before a resume gives up on it


@dataclass(frozen=True)
class Progress:
    """Handed to the ``progress`` callback after every finished trial."""

    trial: Trial
    finished: int
    failed: int
    running: int
    budget_used: float
    budget: float | None
    trials: int
    max_trials: int | None
    elapsed: float
    incumbent: Trial | None


@dataclass(frozen=True)
class RunSummary:
    """What a search produced. ``incumbent`` is the best loss at the highest fidelity reached;
    ``pareto_front`` the successful trials not dominated in (loss, cost), by loss."""

    run_dir: Path
    history: tuple[Trial, ...]
    incumbent: Trial | None
    pareto_front: tuple[Trial, ...]
    budget_used: float
    stop_reason: str

    @property
    def successes(self) -> tuple[Trial, ...]:
        return tuple(t for t in self.history if t.is_success)

    @property
    def failures(self) -> tuple[Trial, ...]:
        return tuple(t for t in self.history if t.state == "failed")


def budget_spent(history: Sequence[Trial], max_fidelity: float) -> float:
    """Issued budget in max-fidelity units; a promotion counts only the fidelity it adds.

    Imported trials (a warm start's) were paid for by their source run and count nothing here.
    """
    by_id = {t.trial_id: t for t in history}
    total = 0.0
    for trial in history:
        if trial.imported is not None:
            continue
        parent = by_id.get(trial.parent_id) if trial.parent_id is not None else None
        total += trial.fidelity - (parent.fidelity if parent is not None else 0.0)
    return total / max_fidelity


def summarize(run_dir: str | Path, history: Sequence[Trial], max_fidelity: float,
              stop_reason: str) -> RunSummary:
    successes = [t for t in history if t.is_success]
    front = [successes[i] for i in pareto_front([t.objectives for t in successes])] \
        if successes else []
    return RunSummary(run_dir=Path(run_dir), history=tuple(history),
                      incumbent=final_incumbent(history),
                      pareto_front=tuple(sorted(front, key=lambda t: (t.loss, t.trial_id))),
                      budget_used=budget_spent(history, max_fidelity), stop_reason=stop_reason)


def load_run(run_dir: str | Path) -> RunSummary:
    """The summary of a stored run (finished or not) without running anything."""
    with RunStore.open_existing(run_dir) as store:
        metadata, history = store.metadata(), store.history()
    max_fidelity = metadata["optimizer_settings"]["max_fidelity"]
    return summarize(run_dir, history, max_fidelity, stop_reason="stored")


def _check_limits(budget: float | None, max_trials: int | None,
                  time_limit: float | None) -> None:
    if budget is None and max_trials is None and time_limit is None:
        raise SearchError("a search needs a limit: give budget, max_trials or time_limit")
    for name, value in (("budget", budget), ("max_trials", max_trials),
                        ("time_limit", time_limit)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or value <= 0):
            raise SearchError(f"{name} must be a positive number, got {value!r}")


class _Search:
    """One call of :func:`run`: the loop state, kept small and explicit."""

    def __init__(self, optimizer, store: RunStore, executor, run_dir: Path, seed: int,
                 limits: tuple, progress, max_attempts: int = MAX_ATTEMPTS,
                 config_filter: ConfigFilter | None = None):
        self.optimizer, self.store = optimizer, store
        self.config_filter = config_filter
        self.executor, self.run_dir, self.seed = executor, run_dir, seed
        self.budget, self.max_trials, self.time_limit = limits
        self.progress = progress
        self.max_fidelity = optimizer.schedule.max_fidelity
        self.history: list[Trial] = store.history()
        if [t.trial_id for t in self.history] != list(range(len(self.history))):
            raise SearchError(f"{store.path} has gaps in its trial ids; it was not written by hnas")
        self.imported = sum(t.imported is not None for t in self.history)  # a warm start's, ids 0..imported-1
        self.rerun = deque(self._interrupted_jobs(max_attempts))
        self.issued_fidelity = budget_spent(self.history, 1.0)
        self.started = time.monotonic()

    def _interrupted_jobs(self, max_attempts: int) -> list[Job]:
        """Pending trials to run again; those already started ``max_attempts`` times fail instead."""
        jobs = []
        for trial in list(self.history):
            if trial.is_finished:
                continue
            attempts = self.store.attempts(trial.trial_id)
            if attempts >= max_attempts:
                failed = trial.failed(f"the search process died while this trial ran, {attempts} times (e.g. out "
                                      f"of memory or a crash inside the objective); not run again")
                self.store.finish(failed)
                self.history[trial.trial_id] = failed
            else:
                self.store.count_attempt(trial.trial_id)
                jobs.append(trial.job)
        return jobs

    @property
    def budget_used(self) -> float:
        return self.issued_fidelity / self.max_fidelity

    def limit_reached(self) -> str | None:
        if self.budget is not None and self.budget_used >= self.budget - 1e-9:
            return "budget"
        if self.max_trials is not None and len(self.history) - self.imported >= self.max_trials:
            return "max_trials"
        if self.time_limit is not None and time.monotonic() - self.started >= self.time_limit:
            return "time_limit"
        return None

    def context(self, job: Job) -> TrialContext:
        parent = self.history[job.parent_id] if job.parent_id is not None else None
        return TrialContext(
            trial_id=job.trial_id, config=dict(job.config), fidelity=job.fidelity,
            max_fidelity=self.max_fidelity, rung=job.rung, bracket=job.bracket,
            trial_dir=trial_dir(self.run_dir, job.trial_id), parent_id=job.parent_id,
            previous_trial_dir=trial_dir(self.run_dir, parent.trial_id) if parent else None,
            previous_cost=parent.cost if parent else None,
            previous_fidelity=parent.fidelity if parent else None, seed=self.seed)

    def issue(self) -> str | None:
        """Fill free workers; the reason to stop asking, if any."""
        while self.executor.running < self.executor.capacity:
            if self.rerun:
                self.executor.submit(self.context(self.rerun.popleft()))
                continue
            reason = self.limit_reached()
            if reason is not None:
                return reason
            job = self.ask()
            if job is None:
                return None if self.executor.running else "optimizer"
            if job.trial_id != len(self.history):
                raise SearchError(f"optimizer {self.optimizer.name} issued trial id "
                                  f"{job.trial_id}, expected {len(self.history)}")
            self.optimizer.space.validate(job.config)
            parent_fidelity = (self.history[job.parent_id].fidelity
                               if job.parent_id is not None else 0.0)
            self.history.append(self.store.add(job))
            self.issued_fidelity += job.fidelity - parent_fidelity
            self.executor.submit(self.context(job))
        return None

    def ask(self) -> Job | None:
        """The optimizer's next job; with a filter, new configurations it refuses are drawn again (counted)."""
        if self.config_filter is None:
            return self.optimizer.ask(self.history)
        job, pruned = feasible_job(lambda attempt: self.optimizer.redraw(self.history, attempt), self.config_filter)
        if pruned and job is not None:
            self.store.record_pruned(job.trial_id, pruned)
        return job

    def record(self, outcome: Outcome) -> None:
        pending = self.history[outcome.trial_id]
        timing = {"worker": outcome.worker, "started_at": outcome.started_at,
                  "finished_at": outcome.finished_at}
        if outcome.state == "success":
            trial = pending.succeeded(outcome.loss, outcome.cost, outcome.extra, **timing)
        else:
            trial = pending.failed(outcome.error or "unknown error", **timing)
        self.store.finish(trial)
        self.history[trial.trial_id] = trial
        self.optimizer.tell(trial)
        if self.progress is not None:
            finished = [t for t in self.history if t.is_finished]
            own = finished[self.imported:]  # counts are this run's own trials; the incumbent may be imported
            self.progress(Progress(
                trial=trial, finished=len(own),
                failed=sum(t.state == "failed" for t in own),
                running=self.executor.running, budget_used=self.budget_used, budget=self.budget,
                trials=len(self.history) - self.imported, max_trials=self.max_trials,
                elapsed=time.monotonic() - self.started, incumbent=final_incumbent(finished)))

    def loop(self) -> str:
        stop_reason = "optimizer"
        while True:
            reason = self.issue()
            if reason is not None:
                stop_reason = reason
            if self.executor.running == 0:
                return stop_reason
            for outcome in self.executor.wait():
                self.record(outcome)


def _check_same_warm_start(stored: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """A resume given warm-start runs must name the ones the run imported (it never imports again)."""
    if "warm_start" in new and stored.get("warm_start") != new["warm_start"]:
        raise SearchError(f"cannot resume: this run differs from the stored one (warm_start: stored "
                          f"{stored.get('warm_start')!r}, now {new['warm_start']!r}); leave warm_start out to "
                          "continue the run as it was started")


def run(objective: Objective, space: SearchSpace, *, optimizer: str = "priorband",
        budget: float | None = None, max_trials: int | None = None,
        time_limit: float | None = None, min_fidelity: float, max_fidelity: float, eta: int = 3,
        run_dir: str | Path, seed: int = 0, executor: str = "serial", workers: int = 1,
        scheduler: str | None = None, worker_env=None, resume: bool = False,
        progress: Callable[[Progress], None] | None = None,
        optimizer_options: Mapping[str, Any] | None = None, max_attempts: int = MAX_ATTEMPTS,
        config_filter: ConfigFilter | None = None,
        warm_start: Sequence[str | Path] | None = None) -> RunSummary:
    """Search ``space`` for configurations minimising ``objective``.

    ``objective(context: TrialContext)`` returns a loss, or a dict with ``loss`` and optionally
    ``cost`` (default: the fidelity) plus JSON-able extras. ``budget`` counts max-fidelity
    evaluations (a promotion pays only for the fidelity it adds); the search stops asking
    once ``budget``, ``max_trials`` or ``time_limit`` (seconds, this call) is reached and
    lets running trials finish. ``worker_env`` gives each local worker process its environment
    (one mapping per worker, e.g. its GPU). ``resume=True`` continues the run stored in ``run_dir``; a trial
    that was running each of ``max_attempts`` times the search process died is recorded failed.
    ``config_filter`` (:mod:`hnas.search.feasibility`) keeps new configurations over its limit from
    ever being trained: they are drawn again, and counted in the run's database.
    ``warm_start`` (run folders of earlier searches over the same space and fidelity schedule)
    imports their finished trials into a new run's history before its first ask
    (docs/warm-start.md); a resume never imports again and refuses other folders than the
    recorded ones. Imported trials count against neither ``budget`` nor ``max_trials``.
    """
    if not callable(objective):
        raise SearchError(f"the objective must be callable, got {type(objective).__name__}")
    _check_limits(budget, max_trials, time_limit)
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise SearchError(f"max_attempts must be a positive integer, got {max_attempts!r}")
    search_optimizer = make_optimizer(optimizer, space, min_fidelity=min_fidelity,
                                      max_fidelity=max_fidelity, eta=eta, seed=seed,
                                      **dict(optimizer_options or {}))
    architecture = space.architecture
    metadata = {
        "space_hash": space.hash, "space": space.describe(),
        "architecture_identity": architecture.distribution.identity if architecture else None,
        "architecture_key": architecture.name if architecture else None,
        "seed": seed, "optimizer": search_optimizer.name,
        "optimizer_settings": search_optimizer.settings(), "objectives": list(OBJECTIVES),
    }
    if config_filter is not None:  # only then: runs without one keep the metadata they always had
        metadata["config_filter"] = config_filter.describe()
    run_dir = Path(run_dir)
    imported: list[Trial] = []
    if warm_start is not None:
        metadata["warm_start"] = [str(folder) for folder in source_folders(warm_start)]
        if not (resume and database_path(run_dir).exists()):
            imported = import_history(warm_start, space, min_fidelity=min_fidelity, max_fidelity=max_fidelity,
                                      eta=eta)
    store = RunStore.create_or_resume(run_dir, metadata, resume=resume,
                                      architecture_key=metadata["architecture_key"], imported=imported)
    try:
        _check_same_warm_start(store.metadata(), metadata)
        link_imported_folders(store.history(), run_dir)
        pool = make_executor(executor, objective, workers=workers, scheduler=scheduler, worker_env=worker_env)
        try:
            search = _Search(search_optimizer, store, pool, run_dir, seed,
                             (budget, max_trials, time_limit), progress, max_attempts, config_filter)
            stop_reason = search.loop()
        finally:
            pool.close()
    finally:
        store.close()
    return summarize(run_dir, search.history, max_fidelity, stop_reason)
