"""PriorBand and Regularized PriorBand specifics (docs/references.md), against hand examples."""

import math

import numpy as np
import pytest

from hnas.search import NO_BRACKET, Categorical, Job, SearchSpace, Trial, final_incumbent
from hnas.search.optimizers import HistoryIndex

from .helpers import build, contract_space, finished, simulate


def test_default_configuration_comes_first_at_max_fidelity():
    optimizer = build("priorband")
    job = optimizer.ask([])
    assert job.config == contract_space().default_config()
    assert (job.fidelity, job.rung, job.bracket, job.sampler) == (27, 3, NO_BRACKET, "default")
    assert optimizer.ask([finished(job, 1.0)]).bracket == 0


@pytest.mark.parametrize("rung, expected", [(0, 0.5), (1, 0.25), (2, 0.1), (3, 1 / 28)])
def test_random_share_per_rung_before_incumbent_sampling(rung, expected):
    optimizer = build("priorband")
    index = HistoryIndex([])
    draws = 3000
    samplers = [optimizer._sample(np.random.default_rng(i), rung, index)[1] for i in range(draws)]
    share = samplers.count("random") / draws
    assert share == pytest.approx(expected, abs=4 * math.sqrt(expected * (1 - expected) / draws))
    assert set(samplers) <= {"random", "prior"}


def _job(trial_id, rung, bracket=0, parent=None, config=None, fidelities=(1, 3, 9, 27)):
    return Job(trial_id, config or {"c": "a"}, fidelities[rung], rung=rung, bracket=bracket,
               parent_id=parent)


def _priorband_history(n_rung0, *, default_state="success", last_pending=False,
                       promotions=()):
    """Default at b_max = 27, then ``n_rung0`` base-rung trials and chains of promotions."""
    history = [Trial(_job(0, 3, NO_BRACKET))]
    history[0] = (history[0].succeeded(0.5, 27) if default_state == "success"
                  else history[0].failed("boom"))
    for i in range(1, n_rung0 + 1):
        history.append(finished(_job(i, 0), 1.0))
    for rung, parents in promotions:
        for parent in parents:
            history.append(finished(_job(len(history), rung, parent=parent), 0.9))
    if last_pending:
        history[-1] = Trial.pending(history[-1].job)
    return history


def test_incumbent_sampling_waits_for_a_full_brackets_budget():
    optimizer = build("priorband", SearchSpace([Categorical("c", ("a", "b"), "a")]))
    # A full most-exploratory bracket at 1..27 spends 27*1 + 9*2 + 3*6 + 1*18 = 81.
    assert optimizer.schedule.bracket_cost(3) == 81
    assert not optimizer.incumbent_sampling_active(HistoryIndex(_priorband_history(53)))  # 80
    assert optimizer.incumbent_sampling_active(HistoryIndex(_priorband_history(54)))  # 81
    # pending trials have not spent their budget yet
    assert not optimizer.incumbent_sampling_active(
        HistoryIndex(_priorband_history(54, last_pending=True)))


def test_promotions_count_only_the_fidelity_they_add():
    optimizer = build("priorband", SearchSpace([Categorical("c", ("a", "b"), "a")]))
    rung1 = (1, list(range(1, 10)))
    # 27 (default) + 27 x 1 + 9 x (3 - 1) = 72 < 81
    assert not optimizer.incumbent_sampling_active(
        HistoryIndex(_priorband_history(27, promotions=[rung1])))
    # + 2 x (9 - 3) = 84 >= 81
    rung2 = (2, [28, 29])
    assert optimizer.incumbent_sampling_active(
        HistoryIndex(_priorband_history(27, promotions=[rung1, rung2])))


def test_incumbent_sampling_needs_a_result_at_max_fidelity():
    optimizer = build("priorband", SearchSpace([Categorical("c", ("a", "b"), "a")]))
    history = _priorband_history(100, default_state="failed")
    assert not optimizer.incumbent_sampling_active(HistoryIndex(history))


def test_incumbent_share_uses_the_highest_rung_with_at_least_eta_results():
    space = SearchSpace([Categorical("c", ("a", "b"), "a")])  # prior a 0.8 / b 0.2
    optimizer = build("priorband", space, max_fidelity=9)
    history = []

    def add(rung, value, loss):
        history.append(finished(_job(len(history), rung, config={"c": value}, fidelities=(1, 3, 9)),
                                loss))

    for value, loss in [("a", 0.5), ("a", 0.6), ("a", 0.7)]:  # exactly eta at rung 1
        add(1, value, loss)
    for value, loss in [("b", 0.1), ("b", 0.2), ("a", 0.3), ("a", 0.4)]:  # eta + 1 at rung 2
        add(2, value, loss)
    index = HistoryIndex(history)
    incumbent = optimizer.incumbent(index)
    assert incumbent.config == {"c": "b"} and incumbent.loss == 0.1
    # rung 2: K = max(4 // 3, 3) = 3 -> b (w 3), b (w 2), a (w 1)
    # S_prior = 3*.2 + 2*.2 + 1*.8 = 1.8; S_uniform = (3 + 2 + 1) * .5 = 3;
    # S_inc = 3*.8 + 2*.8 + 1*.2 = 4.2. Incumbent 4.2 / (4.2 + 1.8) = 0.7; the other 0.3 split
    # prior : uniform = 1.8 : 3 -> 0.1125, 0.1875
    assert optimizer.evidence_shares(index, incumbent) == pytest.approx((0.1125, 0.1875, 0.7))


def test_incumbent_jobs_mutate_the_incumbent_and_never_return_it():
    optimizer = build("priorband")
    sim = simulate(optimizer, 250)
    incumbent_jobs = [(snap, job) for snap, job in sim.asks if job.sampler == "incumbent"]
    assert len(incumbent_jobs) > 10
    for snapshot, job in incumbent_jobs:
        incumbent = optimizer.incumbent(HistoryIndex(snapshot))
        assert job.config != incumbent.config
        changed = [k for k in job.config if job.config.get(k) != incumbent.config.get(k)]
        assert 0 < len(changed) < len(job.config)


def test_samplers_mix_as_priorband_prescribes():
    samplers = [t.job.sampler for t in simulate(build("priorband"), 250).history]
    assert samplers[0] == "default"
    assert {"random", "prior", "incumbent", "promotion"} <= set(samplers)


# -- Regularized PriorBand --------------------------------------------------------------------
# (loss, cost) of the nine base-rung trials of bracket 0 (fidelities 1, 3, 9; 9 -> 3 -> 1).
RUNG0 = [(0.1, 9), (0.2, 5), (0.3, 3), (0.5, 1), (0.25, 6), (0.6, 2), (0.35, 3.5), (0.9, 8),
         (0.4, 2.5)]


def _bracket_with_finished_base(name):
    optimizer = build(name, max_fidelity=9)
    default = optimizer.ask([]) if name != "hyperband" else None
    history = [finished(default, 0.3, 9)] if default else []
    configs = []
    for loss, cost in RUNG0:
        job = optimizer.ask(history)
        assert (job.bracket, job.rung) == (0, 0)
        configs.append(job.trial_id)
        history.append(finished(job, loss, cost))
    return optimizer, history, configs


def _promote(optimizer, history, count):
    promoted = []
    for _ in range(count):
        job = optimizer.ask(history)
        assert (job.bracket, job.rung) == (0, 1)
        promoted.append(job.parent_id)
        history.append(Trial.pending(job))
    return promoted


def test_regularized_promotions_follow_fronts_and_crowding():
    optimizer, history, ids = _bracket_with_finished_base("regularized-priorband")
    # front 1 = (0.1,9) (0.2,5) (0.3,3) (0.4,2.5) (0.5,1); crowding: the extremes (0.1,9) and
    # (0.5,1) infinite, (0.2,5) = 0.5 + 6/8 is the largest interior one -> promote those three.
    promoted = _promote(optimizer, history, 3)
    assert promoted == [ids[0], ids[3], ids[1]]
    next_job = optimizer.ask(history)  # rung 1 is full and pending: the next bracket starts
    assert next_job.parent_id is None and next_job.bracket == 1


def test_single_objective_promotions_take_the_lowest_losses():
    optimizer, history, ids = _bracket_with_finished_base("hyperband")
    assert _promote(optimizer, history, 3) == [ids[0], ids[1], ids[4]]


def test_regularized_promotion_always_keeps_the_most_accurate():
    optimizer = build("regularized-priorband", max_fidelity=9)
    history = [finished(optimizer.ask([]), 0.3, 9)]
    for loss, cost in [(0.9, 1), (0.2, 8), (0.5, 4)] + [(0.95, 9)] * 6:  # trials 1..9
        history.append(finished(optimizer.ask(history), loss, cost))
    for _ in range(3):  # rung 1 takes the front 1: trials 2, 1, 3 (crowding, then loss)
        history.append(Trial.pending(optimizer.ask(history)))
    assert [t.parent_id for t in history[10:13]] == [2, 1, 3]
    # at rung 1 all three are non-dominated; both extremes have infinite crowding and the
    # single slot of rung 2 goes to the more accurate one (trial 10, loss 0.15)
    outcome = {2: (0.15, 9), 1: (0.6, 1), 3: (0.3, 5)}
    for i in range(10, 13):
        history[i] = finished(history[i].job, *outcome[history[i].parent_id])
    top = optimizer.ask(history)
    assert (top.rung, top.parent_id) == (2, 10)


def test_regularized_incumbent_maximises_the_normalised_area():
    optimizer = build("regularized-priorband", max_fidelity=9)
    history = []
    for loss, cost in [(0.1, 10), (0.2, 4), (0.5, 1), (0.6, 5)]:
        job = Job(len(history), {"c": len(history)}, 9, rung=2)
        history.append(finished(job, loss, cost))
    assert optimizer.incumbent(HistoryIndex(history)).trial_id == 1
    assert build("priorband", max_fidelity=9).incumbent(HistoryIndex(history)).trial_id == 0


def test_final_incumbent_is_best_loss_at_the_highest_fidelity():
    history = [finished(Job(0, {}, 1, rung=0), 0.01), finished(Job(1, {}, 9, rung=2), 0.3),
               finished(Job(2, {}, 9, rung=2), 0.2), Trial.pending(Job(3, {}, 9, rung=2))]
    assert final_incumbent(history).trial_id == 2
    assert final_incumbent([]) is None


def test_multi_objective_hyperband_promotes_from_the_first_front():
    optimizer, history, ids = _bracket_with_finished_base("hyperband")
    optimizer = build("hyperband", max_fidelity=9, promotion="nds-random")
    promoted = _promote(optimizer, history, 3)
    front = {ids[i] for i in (0, 1, 2, 3, 8)}
    assert set(promoted) <= front and len(set(promoted)) == 3
