"""PriorBand's evidence shares and sampling mix against hand values (cases found by `make mutation`).

Space: one categorical c in (a, b), default a, medium confidence: the prior gives a 4/5 and b 1/5,
the prior centred on an incumbent with c = b gives b 4/5 and a 1/5, the uniform distribution 1/2
each. Each distribution scores S = sum over the top K configurations (weights K..1) of its
density; the incumbent's share is S_inc / (S_inc + S_prior) (PriorBand's), and the rest is split
between prior and uniform as S_prior : S_uniform.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from hnas.search import NO_BRACKET, Categorical, Float, Job, SearchSpace, Trial
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
    # rung 1, K = 3 (weights 3 + 2 + 1 = 6), all b: S_prior = 6/5, S_uniform = 6/2, S_inc = 24/5;
    # incumbent 24/5 / (24/5 + 6/5) = 4/5, the other 1/5 split 6/5 : 3 -> 2/35, 1/7
    assert optimizer.evidence_shares(index, incumbent) == pytest.approx((2 / 35, 1 / 7, 4 / 5))
    # with only two rung-1 successes the base rung decides: all a, K = 3: S_prior = 24/5,
    # S_uniform = 3, S_inc = 6/5 -> incumbent 1/5, the other 4/5 split 8/13 : 5/13
    fewer = HistoryIndex(trials[:-1])
    assert optimizer.evidence_shares(fewer, fewer.by_id[6]) == pytest.approx((32 / 65, 4 / 13, 1 / 5))
    # before incumbent sampling (no incumbent): prior against uniform only, 24/5 : 3 -> 8/13, 5/13
    assert optimizer.evidence_shares(fewer, None) == pytest.approx((8 / 13, 5 / 13, 0.0))


def test_no_rung_with_eta_successes_leaves_everything_to_the_prior():
    optimizer = build("priorband", space())
    index = HistoryIndex([trial(0, 0, "b", 0.1), trial(1, 0, "b", 0.2)])
    assert optimizer.evidence_shares(index, index.by_id[0]) == (1.0, 0.0, 0.0)
    # rung 0: p_random = 1/(1 + 3^0) = 1/2, the prior the rest; rung 2: 1/(1 + 9) = 1/10
    assert optimizer.sampling_probabilities(0, index, index.by_id[0]) == (0.5, 0.5, 0.0)
    assert optimizer.sampling_probabilities(2, index, None) == pytest.approx((0.1, 0.9, 0.0))


@pytest.mark.parametrize("log_prior, log_incumbent, shares", [
    # weights 3 + 2 + 1 = 6; density 1 (log 0) scores 6, the uniform's 1/2 scores 3
    (-math.inf, 0.0, (0.0, 0.0, 1.0)),  # no prior density at the top configurations: PriorBand's all-incumbent
    (0.0, -math.inf, (2 / 3, 1 / 3, 0.0)),
    (-math.inf, -math.inf, (0.0, 1.0, 0.0)),  # neither says anything: all to exploration
])
def test_zero_densities_decide_the_shares_without_nan(monkeypatch, log_prior, log_incumbent, shares):
    optimizer = build("priorband", space())
    monkeypatch.setattr(optimizer, "_log_pdfs", lambda trials, centre: [
        log_prior if centre is None else log_incumbent] * len(trials))
    index = HistoryIndex([trial(i, 0, "b", 0.1 * (i + 1)) for i in range(3)])
    assert optimizer.evidence_shares(index, index.by_id[0]) == pytest.approx(shares, abs=1e-15)


def sampler_shares(optimizer, index, rung=0, draws=3000):
    samplers = [optimizer._sample(np.random.default_rng(i), rung, index)[1] for i in range(draws)]
    return {name: samplers.count(name) / draws for name in ("random", "prior", "incumbent")}


def test_sampling_mix_once_incumbent_sampling_is_active():
    optimizer = build("priorband", space())
    index = HistoryIndex(history(54, "b"))  # 27 + 54 = 81: one full bracket's budget spent
    assert optimizer.incumbent_sampling_active(index)
    incumbent = optimizer.incumbent(index)
    # rung 0, top 18, all b: S = W/5, W/2, 4W/5 (W = 18 + ... + 1): incumbent 0.8 / (0.8 + 0.2)
    # = 4/5, the other 1/5 split 0.2 : 0.5 -> 2/35, 1/7
    assert optimizer.evidence_shares(index, incumbent) == pytest.approx((2 / 35, 1 / 7, 4 / 5))
    # rung 0: p_geo = 1/2; p_random = 1/2 + 1/2 * 1/7 = 4/7, p_prior = 1/2 * 2/35 = 1/35,
    # p_incumbent = 1/2 * 4/5 = 2/5
    assert optimizer.sampling_probabilities(0, index, incumbent) == pytest.approx(
        (4 / 7, 1 / 35, 2 / 5))
    # rung 1: p_geo = 1/4; p_random = 1/4 + 3/4 * 1/7 = 5/14, p_prior = 3/4 * 2/35 = 3/70,
    # p_incumbent = 3/4 * 4/5 = 3/5
    assert optimizer.sampling_probabilities(1, index, incumbent) == pytest.approx((5 / 14, 3 / 70, 3 / 5))
    shares = sampler_shares(optimizer, index)
    tolerance = 4 * math.sqrt(0.25 / 3000)
    assert shares["random"] == pytest.approx(4 / 7, abs=tolerance)
    assert shares["incumbent"] == pytest.approx(2 / 5, abs=tolerance)
    assert shares["prior"] == pytest.approx(1 / 35, abs=tolerance)


def test_no_incumbent_samples_before_a_brackets_budget_is_spent():
    optimizer = build("priorband", space())
    index = HistoryIndex(history(53, "b"))  # 80 < 81
    assert not optimizer.incumbent_sampling_active(index)
    assert sampler_shares(optimizer, index, draws=1000)["incumbent"] == 0.0


def test_multi_objective_promotion_ranks_the_share_too():
    optimizer = build("priorband", space(), promotion="nds-random")
    index = HistoryIndex(history(54, "b"))
    assert 0.0 < optimizer.evidence_shares(index, optimizer.incumbent(index))[2] <= 1.0
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
    uniform_calls = []
    original_uniform = SearchSpace.uniform_log_pdf

    def counting_uniform(self, config):
        uniform_calls.append(dict(config))
        return original_uniform(self, config)

    monkeypatch.setattr(SearchSpace, "uniform_log_pdf", counting_uniform)
    first = optimizer.evidence_shares(index, index.by_id[0])
    assert len(calls) == 2 * 3  # prior and incumbent-centred density of the top 3
    assert len(uniform_calls) == 3
    assert optimizer.evidence_shares(index, index.by_id[0]) == first
    assert len(calls) == 2 * 3 and len(uniform_calls) == 3  # asked again: nothing recomputed
    # the same trial ids with other configurations (another history): the memo must not answer
    changed = [trial(i, 0, "a", 0.1 * (i + 1)) for i in range(3)]
    assert optimizer._log_pdfs(changed, None) == pytest.approx([math.log(0.8)] * 3)
    assert optimizer._log_pdfs(trials, None) == pytest.approx([math.log(0.2)] * 3)
    optimizer._uniform_log_pdfs(trials)
    assert optimizer._uniform_log_pdfs(changed) == pytest.approx([math.log(0.5)] * 3)
    assert len(uniform_calls) == 2 * 3  # a changed config is recomputed


def _truncated_normal_pdf(x, centre, std=0.25, lower=0.0, upper=1.0):
    """By hand: N(centre, std) restricted to [lower, upper], renormalised (the medium prior)."""
    cdf = lambda t: 0.5 * (1.0 + math.erf(t / math.sqrt(2.0)))  # noqa: E731
    mass = cdf((upper - centre) / std) - cdf((lower - centre) / std)
    z = (x - centre) / std
    return math.exp(-0.5 * z * z) / (std * math.sqrt(2.0 * math.pi)) / mass


def test_a_misleading_prior_loses_its_share_to_the_uniform():
    """The prior sits at x = 0.9, the best configurations at x = 0.1: the uniform explains them
    better than the prior, so exploration gets most of the prior's former share."""
    optimizer = build("priorband", SearchSpace([Float("x", 0.0, 1.0, 0.9)]))
    trials = [finished(Job(i, {"x": 0.1}, FIDELITIES[0], rung=0, bracket=0), 1.0 + i)
              for i in range(3)]
    index = HistoryIndex(trials)
    prior = _truncated_normal_pdf(0.1, 0.9)  # z = -3.2: about 0.01455
    uniform = 1.0  # 1 / (1 - 0)
    assert prior == pytest.approx(0.014555, abs=1e-5)
    # every top configuration is at 0.1, so the weights cancel: shares prior : uniform
    p_prior, p_uniform, p_incumbent = optimizer.evidence_shares(index, None)
    assert (p_prior, p_uniform, p_incumbent) == pytest.approx(
        (prior / (prior + uniform), uniform / (prior + uniform), 0.0), rel=1e-9)
    assert p_uniform > 0.98
    # rung 0: p_random = 1/2 + 1/2 * p_uniform, about 0.993 (PriorBand alone: 1/2)
    assert optimizer.sampling_probabilities(0, index, None)[0] == pytest.approx(
        0.5 + 0.5 * uniform / (prior + uniform), rel=1e-12)
    # an incumbent at 0.1 explains them better still: its centred prior has density ~2.435 there;
    # it takes its share from the prior (PriorBand's ratio), the rest is split as before
    incumbent = _truncated_normal_pdf(0.1, 0.1)
    p_incumbent = incumbent / (incumbent + prior)
    rest = 1.0 - p_incumbent
    assert optimizer.evidence_shares(index, trials[0]) == pytest.approx(
        (rest * prior / (prior + uniform), rest * uniform / (prior + uniform), p_incumbent), rel=1e-9)
    assert p_incumbent > 0.99


def test_every_priorband_variant_splits_by_the_same_evidence():
    index = HistoryIndex(history(54, "b"))
    for name in ("priorband", "priorband-bo", "regularized-priorband"):
        optimizer = build(name, space())
        assert optimizer.incumbent(index).config == {"c": "b"}
        assert optimizer.sampling_probabilities(0, index, optimizer.incumbent(index)) == \
            pytest.approx((4 / 7, 1 / 35, 2 / 5))
