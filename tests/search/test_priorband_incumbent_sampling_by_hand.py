"""PriorBand's incumbent share and sampling mix against hand values (cases found by `make mutation`).

Space: one categorical c in (a, b), default a, medium confidence: the prior gives a 4/5 and b 1/5,
the prior centred on an incumbent with c = b gives b 4/5 and a 1/5. The share is
S_inc / (S_inc + S_prior) with S = sum over the top K configurations (weights K..1) of their density.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from hnas.search import NO_BRACKET, Categorical, Job, SearchSpace, Trial
from hnas.search.optimizers import HistoryIndex

from .helpers import build, finished


def space() -> SearchSpace:
    return SearchSpace([Categorical("c", ("a", "b"), "a")])


FIDELITIES = (1, 3, 9, 27)


def trial(trial_id, rung, c, loss, bracket=0, parent=None) -> Trial:
    job = Job(trial_id, {"c": c}, FIDELITIES[rung], rung=rung, bracket=bracket, parent_id=parent)
    return finished(job, loss)


def history(n_rung0: int, c_rung0: str, incumbent_c: str = "b") -> list[Trial]:
    """The default at b_max, then ``n_rung0`` base trials; the best loss has c = ``incumbent_c``."""
    trials = [trial(0, 3, "a", 0.5, bracket=NO_BRACKET)]
    trials += [trial(i, 0, c_rung0, 1.0 + i / 1000) for i in range(1, n_rung0 + 1)]
    trials[1] = trial(1, 0, incumbent_c, 0.1)
    return trials


def test_the_share_comes_from_the_highest_rung_with_eta_successes():
    optimizer = build("priorband", space())
    trials = [trial(i, 0, "a", 1.0 + i) for i in range(6)]  # rung 0: six a's
    trials += [trial(6 + i, 1, "b", 0.1 * (i + 1), parent=i) for i in range(3)]  # rung 1: exactly eta b's
    index = HistoryIndex(trials)
    incumbent = index.by_id[6]  # c = b
    # rung 1, K = 3, all b: S_prior = 6 * 1/5, S_inc = 6 * 4/5
    assert optimizer.incumbent_share(index, incumbent) == pytest.approx(0.8)
    # with only two rung-1 successes the base rung decides: all a, K = 3: 6 * 1/5 vs 6 * 4/5
    fewer = HistoryIndex(trials[:-1])
    assert optimizer.incumbent_share(fewer, fewer.by_id[6]) == pytest.approx(0.2)


def test_no_rung_with_eta_successes_gives_no_share():
    optimizer = build("priorband", space())
    index = HistoryIndex([trial(0, 0, "b", 0.1), trial(1, 0, "b", 0.2)])
    assert optimizer.incumbent_share(index, index.by_id[0]) == 0.0


@pytest.mark.parametrize("log_prior, log_incumbent, share", [
    (-math.inf, 0.0, 1.0),   # the top configurations have no prior density: all to the incumbent
    (0.0, -math.inf, 0.0),
    (-math.inf, -math.inf, 0.0),  # neither says anything
])
def test_zero_densities_decide_the_share_without_nan(monkeypatch, log_prior, log_incumbent, share):
    optimizer = build("priorband", space())
    monkeypatch.setattr(optimizer, "_log_pdfs", lambda trials, centre: [
        log_prior if centre is None else log_incumbent] * len(trials))
    index = HistoryIndex([trial(i, 0, "b", 0.1 * (i + 1)) for i in range(3)])
    assert optimizer.incumbent_share(index, index.by_id[0]) == share


def sampler_shares(optimizer, index, rung=0, draws=3000):
    samplers = [optimizer._sample(np.random.default_rng(i), rung, index)[1] for i in range(draws)]
    return {name: samplers.count(name) / draws for name in ("random", "prior", "incumbent")}


def test_sampling_mix_once_incumbent_sampling_is_active():
    optimizer = build("priorband", space())
    index = HistoryIndex(history(54, "b"))  # 27 + 54 = 81: one full bracket's budget spent
    assert optimizer.incumbent_sampling_active(index)
    share = optimizer.incumbent_share(index, optimizer.incumbent(index))
    assert share == pytest.approx(0.8)  # rung 0, top 18, all b
    # rung 0: p_random = 1/2, p_incumbent = (1 - 1/2) * 0.8, the prior the rest
    shares = sampler_shares(optimizer, index)
    tolerance = 4 * math.sqrt(0.25 / 3000)
    assert shares["random"] == pytest.approx(0.5, abs=tolerance)
    assert shares["incumbent"] == pytest.approx(0.4, abs=tolerance)
    assert shares["prior"] == pytest.approx(0.1, abs=tolerance)


def test_no_incumbent_samples_before_a_brackets_budget_is_spent():
    optimizer = build("priorband", space())
    index = HistoryIndex(history(53, "b"))  # 80 < 81
    assert not optimizer.incumbent_sampling_active(index)
    assert sampler_shares(optimizer, index, draws=1000)["incumbent"] == 0.0


def test_multi_objective_promotion_ranks_the_share_too():
    optimizer = build("priorband", space(), promotion="nds-random")
    index = HistoryIndex(history(54, "b"))
    assert 0.0 < optimizer.incumbent_share(index, optimizer.incumbent(index)) <= 1.0
    assert "incumbent" in {optimizer._sample(np.random.default_rng(i), 0, index)[1] for i in range(50)}


def test_densities_are_memoised_but_follow_a_changed_config(monkeypatch):
    calls = []
    original = SearchSpace.prior_log_pdf

    def counting(self, config):
        calls.append(dict(config))
        return original(self, config)

    monkeypatch.setattr(SearchSpace, "prior_log_pdf", counting)
    optimizer = build("priorband", space())
    trials = [trial(i, 0, "b", 0.1 * (i + 1)) for i in range(3)]
    index = HistoryIndex(trials)
    first = optimizer.incumbent_share(index, index.by_id[0])
    assert len(calls) == 2 * 3  # prior and incumbent-centred density of the top 3
    assert optimizer.incumbent_share(index, index.by_id[0]) == first
    assert len(calls) == 2 * 3  # asked again: nothing recomputed
    # the same trial ids with other configurations (another history): the memo must not answer
    changed = [trial(i, 0, "a", 0.1 * (i + 1)) for i in range(3)]
    assert optimizer._log_pdfs(changed, None) == pytest.approx([math.log(0.8)] * 3)
    assert optimizer._log_pdfs(trials, None) == pytest.approx([math.log(0.2)] * 3)
