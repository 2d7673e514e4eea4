"""The engine's configuration filter: refused new configurations are drawn again, counted, and resumed exactly.

A plain fake filter (the learning rate over a limit) stands in for the pipeline's GPU-memory estimate.
"""

import math

import pytest

from hnas.errors import SearchError
from hnas.pipeline.spaces import make_space
from hnas.search import Job, RunStore, load_run, run
from hnas.search.feasibility import MAX_REDRAWS, ConfigFilter, feasible_job

from . import objectives

SETTINGS = dict(min_fidelity=1, max_fidelity=9, eta=3)
LR_LIMIT = 1e-3  # about half of the hpo space's log-uniform [1e-5, 1e-1]; the default 1e-2 is over it


class CountingFilter:
    """initial_lr as the 'estimate'; remembers every config it was asked about."""

    def __init__(self):
        self.seen = []

    def __call__(self, config):
        self.seen.append(dict(config))
        return config["initial_lr"]


def lr_filter(estimate=None, limit=LR_LIMIT):
    return ConfigFilter("learning rate", estimate or (lambda config: config["initial_lr"]), limit)


def comparable(history):
    return [(t.job, t.state, t.loss, t.cost) for t in history]


def pruned(run_dir):
    with RunStore.open_existing(run_dir) as store:
        return store.pruned_configurations()


@pytest.mark.parametrize("optimizer", ["priorband", "random"])
def test_refused_configurations_are_never_trained_and_are_counted(tmp_path, optimizer):
    estimate = CountingFilter()
    summary = run(objectives.quadratic, make_space("hpo"), optimizer=optimizer, budget=5, run_dir=tmp_path, seed=3,
                  config_filter=lr_filter(estimate), **SETTINGS)
    new = [t for t in summary.history if t.parent_id is None]
    assert all(t.config["initial_lr"] <= LR_LIMIT for t in summary.history)
    refused = [c for c in estimate.seen if c["initial_lr"] > LR_LIMIT]
    assert refused and len(estimate.seen) == len(new) + len(refused)  # promotions are never asked about
    assert pruned(tmp_path) == len(refused)
    if optimizer == "priorband":  # the default (lr 1e-2) is refused: trial 0 opens a bracket instead
        assert summary.history[0].job.sampler != "default" and summary.history[0].parent_id is None


def test_an_always_feasible_filter_changes_nothing(tmp_path):
    space = make_space("hpo")
    plain = run(objectives.quadratic, space, budget=4, run_dir=tmp_path / "plain", seed=1, **SETTINGS)
    passed = run(objectives.quadratic, space, budget=4, run_dir=tmp_path / "filtered", seed=1,
                 config_filter=lr_filter(limit=1.0), **SETTINGS)
    assert comparable(passed.history) == comparable(plain.history)
    assert pruned(tmp_path / "filtered") == 0
    with RunStore.open_existing(tmp_path / "plain") as store:
        assert "config_filter" not in store.metadata()


def test_resuming_redraws_exactly_and_keeps_the_count(tmp_path):
    space = make_space("hpo")
    run(objectives.quadratic, space, budget=3, run_dir=tmp_path / "a", seed=5, config_filter=lr_filter(), **SETTINGS)
    first = pruned(tmp_path / "a")
    resumed = run(objectives.quadratic, space, budget=8, run_dir=tmp_path / "a", seed=5, resume=True,
                  config_filter=lr_filter(), **SETTINGS)
    whole = run(objectives.quadratic, space, budget=8, run_dir=tmp_path / "b", seed=5, config_filter=lr_filter(),
                **SETTINGS)
    assert comparable(resumed.history) == comparable(whole.history)
    assert 0 < first < pruned(tmp_path / "a") == pruned(tmp_path / "b")
    assert comparable(load_run(tmp_path / "a").history) == comparable(whole.history)


def test_a_replayed_ask_records_the_same_count_not_twice(tmp_path):
    """A crash between the refused draws and storing the trial asks again for the same trial id."""
    with RunStore.create_or_resume(tmp_path, {"optimizer_settings": {}}, resume=False) as store:
        store.record_pruned(4, 3)
        store.record_pruned(4, 3)
        store.record_pruned(7, 2)
        assert store.pruned_configurations() == 5


def test_resuming_with_another_limit_is_refused(tmp_path):
    space = make_space("hpo")
    run(objectives.quadratic, space, max_trials=2, run_dir=tmp_path, config_filter=lr_filter(), **SETTINGS)
    with pytest.raises(SearchError, match="config_filter.limit: stored 0.001, now 0.01"):
        run(objectives.quadratic, space, max_trials=4, run_dir=tmp_path, resume=True,
            config_filter=lr_filter(limit=1e-2), **SETTINGS)


def test_a_space_with_nothing_under_the_limit_stops_naming_the_limit_and_the_smallest_estimate(tmp_path):
    space = make_space("hpo")
    with pytest.raises(SearchError) as error:
        run(objectives.quadratic, space, max_trials=3, run_dir=tmp_path, config_filter=lr_filter(limit=1e-9),
            **SETTINGS)
    message = str(error.value)
    assert "learning rate limit 1e-09" in message and f"{MAX_REDRAWS + 1} draws for trial 0" in message
    smallest = float(message.split("the smallest needs ")[1].split(")")[0])
    assert 1e-5 <= smallest < 1e-4  # the least of 1001 log-uniform draws from [1e-5, 1e-1]
    assert load_run(tmp_path).history == ()  # nothing trained


def test_feasible_job_passes_promotions_unchecked_and_caps_the_redraws():
    promotion = Job(5, {"initial_lr": 1.0}, 3.0, rung=1, bracket=0, parent_id=2, sampler="promotion")

    def never(config):
        raise AssertionError("a promotion was checked")

    assert feasible_job(lambda attempt: promotion, ConfigFilter("x", never, 1.0)) == (promotion, 0)
    asked = []

    def ask(attempt):
        asked.append(attempt)
        return Job(5, {"initial_lr": 10.0 - attempt}, 1.0, rung=0, bracket=0, sampler="random")

    job, refused = feasible_job(ask, lr_filter(limit=7.5), max_redraws=10)
    assert (job.config["initial_lr"], refused, asked) == (7.0, 3, [0, 1, 2, 3])
    with pytest.raises(SearchError, match=r"3 draws for trial 5 all exceeded it \(the smallest needs 8\)"):
        feasible_job(ask, lr_filter(limit=1.0), max_redraws=2)


@pytest.mark.parametrize("limit", [0, -1.0, math.nan, True])
def test_a_filter_needs_a_positive_limit(limit):
    with pytest.raises(SearchError, match="expected a positive number"):
        lr_filter(limit=limit)
