"""Contract tests every optimizer passes."""

from collections import Counter, defaultdict

import pytest

from hnas.errors import SearchError
from hnas.pipeline.spaces import make_space
from hnas.search import NO_BRACKET, OPTIMIZERS, Optimizer, Trial, make_optimizer
from hnas.search.fidelity import FidelitySchedule

from .helpers import build, simulate

NAMES = list(OPTIMIZERS)
MULTI_FIDELITY = [n for n in NAMES if n != "random"]


@pytest.mark.parametrize("name", NAMES)
def test_implements_the_protocol_and_reports_settings(name):
    optimizer = build(name)
    assert isinstance(optimizer, Optimizer)
    assert optimizer.name == name
    assert optimizer.settings()["optimizer"] == name
    assert optimizer.settings()["eta"] == 3


@pytest.mark.parametrize("name", NAMES)
def test_jobs_are_valid_and_follow_the_fidelity_schedule(name):
    optimizer = build(name)
    space, schedule = optimizer.space, FidelitySchedule(1, 27, 3)
    history = simulate(optimizer, 150).history
    assert [t.trial_id for t in history] == list(range(150))
    per_rung = defaultdict(int)
    for trial in history:
        space.validate(trial.config)
        assert trial.fidelity == schedule.fidelity(trial.rung)
        per_rung[trial.bracket, trial.rung] += 1
        if trial.parent_id is not None:
            parent = history[trial.parent_id]
            assert parent.is_success and parent.config == trial.config
            assert (parent.rung + 1, parent.bracket) == (trial.rung, trial.bracket)
    for (bracket, rung), count in per_rung.items():
        if bracket != NO_BRACKET:
            halvings = optimizer.halvings(bracket)
            assert count <= schedule.bracket_sizes(halvings)[rung]
    if name == "random":
        assert {t.fidelity for t in history} == {27}
    else:
        assert {t.fidelity for t in history} == {1, 3, 9, 27}


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_jobs_other_seed_other_jobs(name):
    first = [t.job for t in simulate(build(name, seed=3), 60).history]
    again = [t.job for t in simulate(build(name, seed=3), 60).history]
    other = [t.job for t in simulate(build(name, seed=4), 60).history]
    assert first == again
    assert first != other


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("workers", [1, 4])
def test_replaying_a_stored_history_gives_the_same_jobs(name, workers):
    sim = simulate(build(name, seed=7), 120, workers=workers)
    fresh = build(name, seed=7)
    for snapshot, job in sim.asks:
        assert fresh.ask(snapshot) == job


@pytest.mark.parametrize("name", MULTI_FIDELITY)
def test_failed_trials_are_never_promoted(name):
    def fails(job):
        return job.trial_id % 3 == 1

    history = simulate(build(name), 200, fails=fails).history
    failed = {t.trial_id for t in history if t.state == "failed"}
    parents = [t.parent_id for t in history if t.parent_id is not None]
    assert failed and parents
    assert not failed & set(parents)


@pytest.mark.parametrize("name", MULTI_FIDELITY)
def test_all_failures_end_a_bracket_without_promotions(name):
    history = simulate(build(name), 80, fails=lambda job: True).history
    assert all(t.parent_id is None for t in history)


@pytest.mark.parametrize("name", NAMES)
def test_pending_trials_never_block_and_rungs_promote_only_when_complete(name):
    sim = simulate(build(name), 200, workers=6)
    jumped_ahead = False
    for snapshot, job in sim.asks:
        if job.parent_id is not None:
            below = [t for t in snapshot if (t.bracket, t.rung) == (job.bracket, job.rung - 1)]
            assert all(t.is_finished for t in below)
        open_brackets = {t.bracket for t in snapshot if not t.is_finished}
        if open_brackets and job.bracket > max(open_brackets):
            jumped_ahead = True
    if name != "random":
        assert jumped_ahead


def test_pending_parent_is_not_promoted_even_when_told_out_of_order():
    optimizer = build("hyperband")
    history = []
    for _ in range(27):  # fill the base rung of bracket 0 (27 configs at fidelity 1)
        history.append(Trial.pending(optimizer.ask(history)))
    for trial in history[:26]:
        history[trial.trial_id] = trial.succeeded(1.0, 1.0)
    job = optimizer.ask(history)
    assert job.parent_id is None and job.bracket == 1


def test_ask_uses_the_next_trial_id():
    optimizer = build("priorband")
    history = simulate(optimizer, 10).history
    assert optimizer.ask(history).trial_id == 10


def test_tell_refuses_a_pending_trial():
    optimizer = build("hyperband")
    job = optimizer.ask([])
    with pytest.raises(SearchError, match="still pending"):
        optimizer.tell(Trial.pending(job))


def test_registry_errors_name_the_choices():
    with pytest.raises(SearchError, match="priorband"):
        make_optimizer("smac", make_space("hpo"), min_fidelity=1, max_fidelity=9)
    with pytest.raises(SearchError, match="promotion"):
        make_optimizer("hyperband", make_space("hpo"), min_fidelity=1, max_fidelity=9,
                       promotion="best")
    with pytest.raises(SearchError, match="does not accept"):
        make_optimizer("random", make_space("hpo"), min_fidelity=1, max_fidelity=9,
                       promotion="loss")
    with pytest.raises(SearchError, match="seed"):
        make_optimizer("random", make_space("hpo"), min_fidelity=1, max_fidelity=9, seed=-1)


def test_hyperband_cycles_bracket_shapes_from_most_exploratory():
    optimizer = build("hyperband")
    history = simulate(optimizer, 200).history
    base_rungs = {}
    for trial in history:
        if trial.parent_id is None:
            base_rungs.setdefault(trial.bracket, trial.rung)
    assert [base_rungs[b] for b in range(6)] == [0, 1, 2, 3, 0, 1]
    sizes = Counter((t.bracket, t.rung) for t in history if t.bracket == 0)
    assert [sizes[0, r] for r in range(4)] == [27, 9, 3, 1]


def test_successive_halving_repeats_the_most_exploratory_bracket():
    history = simulate(build("successive-halving"), 90).history
    assert {t.rung for t in history if t.parent_id is None} == {0}
    per_bracket = Counter(t.bracket for t in history)
    assert per_bracket == {0: 40, 1: 40, 2: 10}  # 27 + 9 + 3 + 1 per bracket


def test_hyperband_promotes_the_lowest_losses():
    history = simulate(build("hyperband"), 40).history
    rung0 = sorted((t for t in history if (t.bracket, t.rung) == (0, 0)), key=lambda t: t.loss)
    promoted = [t.parent_id for t in history if (t.bracket, t.rung) == (0, 1)]
    assert promoted == [t.trial_id for t in rung0[:9]]
