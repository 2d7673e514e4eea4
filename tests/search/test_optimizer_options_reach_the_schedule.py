"""What the optimizer constructors and ``make_optimizer`` pass on, default and refuse
(cases found by `make mutation`)."""

from __future__ import annotations

import pytest

from hnas.errors import SearchError
from hnas.search import NO_BRACKET, OPTIMIZERS, Categorical, SearchSpace, make_optimizer
from hnas.search.fidelity import FidelitySchedule
from hnas.search.optimizers import HistoryIndex, best_by_loss

from .helpers import build, contract_space, finished

NAMES = list(OPTIMIZERS)


def tiny_space() -> SearchSpace:
    return SearchSpace([Categorical("c", ("a", "b"), "a")])


@pytest.mark.parametrize("name", NAMES)
def test_eta_defaults_to_3_and_seed_to_0(name):
    optimizer = OPTIMIZERS[name](tiny_space(), min_fidelity=1, max_fidelity=27)
    assert optimizer.schedule.eta == 3 and optimizer.settings()["eta"] == 3
    assert optimizer.seed == 0
    assert make_optimizer(name, tiny_space(), min_fidelity=1, max_fidelity=27).seed == 0


@pytest.mark.parametrize("name", NAMES)
def test_eta_reaches_the_fidelity_schedule(name):
    optimizer = build(name, tiny_space(), min_fidelity=1, max_fidelity=16, eta=2)
    assert optimizer.schedule == FidelitySchedule(1, 16, 2)
    assert optimizer.schedule.fidelities == (1, 2, 4, 8, 16)
    assert optimizer.settings()["eta"] == 2


def test_settings_name_the_schedule_and_the_promotion_rule():
    assert build("random", tiny_space()).settings() == {
        "optimizer": "random", "min_fidelity": 1, "max_fidelity": 27, "eta": 3}
    assert build("hyperband", tiny_space(), promotion="nds-random").settings() == {
        "optimizer": "hyperband", "min_fidelity": 1, "max_fidelity": 27, "eta": 3, "promotion": "nds-random"}
    assert build("regularized-priorband", tiny_space()).settings()["promotion"] == "nds-crowding"


@pytest.mark.parametrize("seed", [1.5, True, "3", -1, None])
def test_a_seed_must_be_a_non_negative_integer(seed):
    with pytest.raises(SearchError, match="seed must be a non-negative integer"):
        build("random", tiny_space(), seed=seed)


def test_a_space_that_is_no_search_space_is_named():
    with pytest.raises(SearchError, match=r"^random needs a SearchSpace, got dict$"):
        OPTIMIZERS["random"]({"c": ("a", "b")}, min_fidelity=1, max_fidelity=27)


def test_a_single_rung_schedule_is_refused_naming_the_optimizer():
    with pytest.raises(SearchError, match=r"^successive-halving needs at least two rungs"):
        build("successive-halving", tiny_space(), min_fidelity=10, max_fidelity=27)


@pytest.mark.parametrize("name, accepts", [
    ("random", "none"),
    ("regularized-priorband", "none"),
    ("hyperband", "['promotion']"),
    ("priorband", "['promotion']"),
])
def test_unknown_options_are_refused_listing_what_is_accepted(name, accepts):
    with pytest.raises(SearchError) as refused:
        build(name, tiny_space(), colour="red")
    assert str(refused.value) == (f"optimizer {name!r} does not accept option(s) ['colour']; "
                                  f"it accepts {accepts}")


def test_random_search_jobs_are_marked_random_outside_any_bracket():
    job = build("random", contract_space()).ask([])
    assert (job.sampler, job.bracket, job.rung, job.fidelity, job.parent_id) == ("random", NO_BRACKET, 3, 27, None)


def test_best_by_loss_of_nothing_is_none_and_ties_go_to_the_earlier_trial():
    assert best_by_loss([]) is None
    optimizer = build("random", tiny_space())
    first = finished(optimizer.ask([]), 0.5)
    second = finished(optimizer.ask([first]), 0.5)
    assert best_by_loss([second, first]) is first


def test_a_promotion_adds_only_the_fidelity_above_its_parent():
    optimizer = build("hyperband", tiny_space(), max_fidelity=9)  # first bracket: 9 at 1, 3 at 3, 1 at 9
    history = []
    for _ in range(10):  # the nine base trials, then the first promotion (of the lowest loss)
        job = optimizer.ask(history)
        history.append(finished(job, float(job.trial_id)))
    index = HistoryIndex(history)
    base, promotion = history[0], history[9]
    assert promotion.parent_id == 0 and (base.fidelity, promotion.fidelity) == (1, 3)
    assert index.added_fidelity(base) == 1 and index.added_fidelity(promotion) == 3 - 1
    assert index.finished_fidelity == 9 * 1 + (3 - 1)


def test_repr_names_the_class_its_settings_and_seed():
    assert repr(build("random", tiny_space(), seed=4)) == (
        "RandomSearch({'optimizer': 'random', 'min_fidelity': 1, 'max_fidelity': 27, 'eta': 3}, seed=4)")
