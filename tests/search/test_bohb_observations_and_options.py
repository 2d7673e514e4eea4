"""What BOHB's density model sees and is built with (cases found by `make mutation`)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hnas.errors import SearchError
from hnas.search import Categorical, Float, Job, SearchSpace, Trial
from hnas.search.bohb import observations_by_rung
from hnas.search.optimizers import HistoryIndex

from .helpers import build, finished


def space() -> SearchSpace:
    return SearchSpace([Float("x", 0.0, 1.0, 0.5), Categorical("kind", ("a", "b"), "a")])


def test_observations_are_successes_and_failures_never_pending_trials():
    jobs = [Job(i, {"x": i / 10, "kind": "a"}, 1 if i < 3 else 3, rung=0 if i < 3 else 1, bracket=0)
            for i in range(5)]
    history = [finished(jobs[0], 0.4), Trial.pending(jobs[1]).failed("boom"), Trial.pending(jobs[2]),
               finished(jobs[3], 0.2), Trial.pending(jobs[4])]
    by_rung = observations_by_rung(HistoryIndex(history))
    assert {rung: [(o.trial_id, o.loss) for o in obs] for rung, obs in by_rung.items()} == {
        0: [(0, 0.4), (1, math.inf)], 1: [(3, 0.2)]}


@pytest.mark.parametrize("name", ["bohb", "priorband-bo"])
def test_model_options_and_the_seed_reach_the_density_model(name):
    optimizer = build(name, space(), seed=7, candidates=5, bandwidth_factor=2.5, min_bandwidth=0.01,
                      top_fraction=0.3, min_points=4)
    model = optimizer.model
    assert (model.candidates, model.bandwidth_factor, model.min_bandwidth, model.top_fraction,
            model.min_points, model.seed) == (5, 2.5, 0.01, 0.3, 4, 7)


def test_a_bad_random_fraction_is_refused_by_its_name():
    with pytest.raises(SearchError, match=r"^random_fraction must be a number in \[0, 1\], got 1\.5$"):
        build("bohb", space(), random_fraction=1.5)


def test_the_candidate_count_reaches_the_proposal(monkeypatch):
    optimizer = build("bohb", space(), candidates=3, random_fraction=0.0)
    counts = []

    class Fitted:
        def propose(self, rng, count=64):
            counts.append(count)
            return {"x": 0.25, "kind": "b"}

    monkeypatch.setattr(optimizer, "fitted_model", lambda index: Fitted())
    config, sampler = optimizer._model_or_uniform(np.random.default_rng(0), HistoryIndex([]))
    assert (config, sampler, counts) == ({"x": 0.25, "kind": "b"}, "model", [3])
