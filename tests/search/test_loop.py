import math
from pathlib import Path

import pytest

from hnas.errors import SearchError
from hnas.pipeline.spaces import make_space
from hnas.search import budget_spent, dominates, load_run, run

from . import objectives
from .fakes import WordArchitecture

SETTINGS = dict(min_fidelity=1, max_fidelity=9, eta=3)


def comparable(history):
    """What must agree between two runs (not timing, worker or process ids)."""
    return [(t.job, t.state, t.loss, t.cost, t.error) for t in history]


def checkpointing(context):
    """Trains 'epochs' from the parent's checkpoint, as the real objective does."""
    start = 0.0
    if context.previous_trial_dir is not None:
        start = float((Path(context.previous_trial_dir) / "epochs.txt").read_text())
        assert start == context.previous_fidelity
    (Path(context.trial_dir) / "epochs.txt").write_text(str(context.fidelity))
    loss = (math.log10(context.config["initial_lr"]) + 2.5) ** 2 + 1 / context.fidelity
    return {"loss": loss, "cost": (context.previous_cost or 0.0) + (context.fidelity - start),
            "trained": context.fidelity - start}


def test_serial_run_spends_the_budget_and_summarises(tmp_path):
    events = []
    summary = run(checkpointing, make_space("hpo"), optimizer="priorband", budget=6,
                  run_dir=tmp_path, progress=events.append, **SETTINGS)
    history = summary.history
    assert summary.stop_reason == "budget"
    assert 6 <= summary.budget_used < 7 and summary.budget_used == budget_spent(history, 9)
    assert all(t.is_success for t in history)
    assert [e.finished for e in events] == list(range(1, len(history) + 1))
    assert events[-1].budget_used == summary.budget_used
    promoted = [t for t in history if t.parent_id is not None]
    assert promoted
    for trial in promoted:  # cost accumulates over the chain = the fidelity reached
        assert trial.cost == pytest.approx(trial.fidelity)
        assert trial.extra["trained"] == trial.fidelity - history[trial.parent_id].fidelity
    top = max(t.fidelity for t in history)
    assert summary.incumbent.loss == min(t.loss for t in history if t.fidelity == top)
    for a in summary.pareto_front:
        assert not any(dominates(b.objectives, a.objectives) for b in history if b.is_success)
    assert sorted(p.name for p in (tmp_path / "trials").iterdir()) == \
        [f"{t.trial_id:05d}" for t in history]
    assert comparable(load_run(tmp_path).history) == comparable(history)


def test_resuming_with_more_budget_equals_one_longer_run(tmp_path):
    space = make_space("hpo")
    run(objectives.quadratic, space, budget=4, run_dir=tmp_path / "a", seed=5, **SETTINGS)
    resumed = run(objectives.quadratic, space, budget=9, run_dir=tmp_path / "a", seed=5,
                  resume=True, **SETTINGS)
    straight = run(objectives.quadratic, space, budget=9, run_dir=tmp_path / "b", seed=5,
                   **SETTINGS)
    assert comparable(resumed.history) == comparable(straight.history)
    with pytest.raises(SearchError, match="seed: stored 5, now 6"):
        run(objectives.quadratic, space, budget=9, run_dir=tmp_path / "a", seed=6, resume=True,
            **SETTINGS)


def test_max_trials_and_time_limit_stop_the_search(tmp_path):
    space = make_space("hpo")
    summary = run(objectives.quadratic, space, optimizer="hyperband", max_trials=7,
                  run_dir=tmp_path / "n", **SETTINGS)
    assert (len(summary.history), summary.stop_reason) == (7, "max_trials")
    summary = run(objectives.slow_quadratic, space, optimizer="random", time_limit=0.3,
                  run_dir=tmp_path / "t", **SETTINGS)
    assert summary.stop_reason == "time_limit" and 1 <= len(summary.history) <= 3


def flaky(context):
    kind = context.trial_id % 4
    if kind == 1:
        raise RuntimeError(f"diverged in trial {context.trial_id}")
    if kind == 2:
        return float("nan")
    if kind == 3 and context.parent_id is None:
        return "not a number"
    return objectives.quadratic(context)


def test_failing_objectives_become_failed_trials_and_the_search_goes_on(tmp_path):
    summary = run(flaky, make_space("hpo"), optimizer="hyperband", max_trials=40,
                  run_dir=tmp_path, **SETTINGS)
    history = summary.history
    assert len(history) == 40
    failed = {t.trial_id: t.error for t in history if t.state == "failed"}
    assert "RuntimeError: diverged in trial 1" in failed[1]
    assert "non-finite loss" in failed[2]
    assert "not a number" in failed[3]
    assert all(t.loss is None for t in history if t.state == "failed")
    promoted_from = {t.parent_id for t in history if t.parent_id is not None}
    assert promoted_from and not promoted_from & set(failed)
    assert summary.failures and summary.successes


def test_objective_dict_must_hold_a_loss(tmp_path):
    summary = run(lambda c: {"cost": 1.0}, make_space("hpo"), optimizer="random", max_trials=1,
                  run_dir=tmp_path, **SETTINGS)
    assert "without 'loss'" in summary.history[0].error


def test_architecture_runs_store_the_architecture(tmp_path):
    words = WordArchitecture()
    summary = run(lambda c: len(c.config["architecture"].replace(" ", "").strip("a")),
                  make_space("hnas", words), optimizer="regularized-priorband", budget=3,
                  run_dir=tmp_path, **SETTINGS)
    assert summary.history[0].config["architecture"] == words.default
    assert all(t.is_success for t in summary.history)


def test_run_refuses_bad_arguments(tmp_path):
    space = make_space("hpo")
    with pytest.raises(SearchError, match="needs a limit"):
        run(objectives.quadratic, space, run_dir=tmp_path, **SETTINGS)
    with pytest.raises(SearchError, match="budget must be a positive"):
        run(objectives.quadratic, space, budget=-1, run_dir=tmp_path, **SETTINGS)
    with pytest.raises(SearchError, match="callable"):
        run("train.py", space, budget=1, run_dir=tmp_path, **SETTINGS)
    with pytest.raises(SearchError, match="executor 'processes' or 'dask'"):
        run(objectives.quadratic, space, budget=1, run_dir=tmp_path / "w", workers=2,
            **SETTINGS)
    with pytest.raises(SearchError, match="unknown executor"):
        run(objectives.quadratic, space, budget=1, run_dir=tmp_path / "x", executor="mpi",
            **SETTINGS)
    with pytest.raises(SearchError, match="at least two rungs"):
        run(objectives.quadratic, space, budget=1, run_dir=tmp_path / "y", min_fidelity=5,
            max_fidelity=9)
    run(objectives.quadratic, space, budget=1, run_dir=tmp_path / "z", **SETTINGS)
    with pytest.raises(SearchError, match="already holds a search"):
        run(objectives.quadratic, space, budget=1, run_dir=tmp_path / "z", **SETTINGS)


def test_process_workers_survive_a_dying_worker(tmp_path):
    summary = run(objectives.dies_on_trial_3, make_space("hpo"), optimizer="priorband",
                  max_trials=10, executor="processes", workers=2, run_dir=tmp_path, **SETTINGS)
    history = summary.history
    assert len(history) == 10
    assert history[3].state == "failed" and "died" in history[3].error
    assert all(t.is_success for t in history if t.trial_id != 3)
    assert len({t.extra["pid"] for t in history if t.is_success}) >= 2
    assert all(t.parent_id != 3 for t in history)


def test_process_executor_needs_a_picklable_objective(tmp_path):
    with pytest.raises(SearchError, match="picklable"):
        run(lambda c: 1.0, make_space("hpo"), max_trials=2, executor="processes", workers=2,
            run_dir=tmp_path, **SETTINGS)


class KillsTheSearch:
    """An objective that takes the whole (serial) search down whenever it runs trial ``victim``."""

    def __init__(self, victim: int):
        self.victim = victim

    def __call__(self, context):
        if context.trial_id == self.victim:
            raise KeyboardInterrupt  # not an Exception: the serial executor does not catch it, like a kill
        return checkpointing(context)


def test_a_trial_that_keeps_killing_the_search_fails_after_max_attempts(tmp_path):
    options = dict(optimizer="random", max_trials=6, run_dir=tmp_path, **SETTINGS)
    for attempt in range(3):
        with pytest.raises(KeyboardInterrupt):
            run(KillsTheSearch(2), make_space("hpo"), resume=attempt > 0, **options)
        pending = [t for t in load_run(tmp_path).history if not t.is_finished]
        assert [t.trial_id for t in pending] == [2]
    summary = run(KillsTheSearch(2), make_space("hpo"), resume=True, **options)
    states = {t.trial_id: t.state for t in summary.history}
    assert len(states) == 6 and states[2] == "failed"
    assert all(state == "success" for trial_id, state in states.items() if trial_id != 2)
    assert "3 times" in summary.history[2].error


def test_an_interrupted_trial_is_run_again_on_resume(tmp_path):
    options = dict(optimizer="random", max_trials=4, run_dir=tmp_path, **SETTINGS)
    with pytest.raises(KeyboardInterrupt):
        run(KillsTheSearch(1), make_space("hpo"), **options)
    summary = run(checkpointing, make_space("hpo"), resume=True, **options)
    assert all(t.is_success for t in summary.history) and len(summary.history) == 4


def test_runs_stored_before_attempts_were_counted_still_resume(tmp_path):
    import sqlite3

    run(checkpointing, make_space("hpo"), optimizer="random", max_trials=2, run_dir=tmp_path, **SETTINGS)
    with sqlite3.connect(tmp_path / "search.sqlite") as db:
        db.execute("ALTER TABLE trials DROP COLUMN attempts")
    summary = run(checkpointing, make_space("hpo"), optimizer="random", max_trials=3, run_dir=tmp_path, resume=True,
                  **SETTINGS)
    assert len(summary.history) == 3 and all(t.is_success for t in summary.history)


def test_max_attempts_must_be_positive(tmp_path):
    with pytest.raises(SearchError, match="max_attempts"):
        run(checkpointing, make_space("hpo"), optimizer="random", max_trials=1, run_dir=tmp_path, max_attempts=0,
            **SETTINGS)
