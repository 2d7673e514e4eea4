"""Successive halving's promotions when trials fail, and the promotion rules on ties
(cases found by `make mutation`)."""

from __future__ import annotations

from hnas.search import Categorical, Job, SearchSpace, Trial

from .helpers import build, finished


def space() -> SearchSpace:
    return SearchSpace([Categorical("c", ("a", "b", "c", "d"), "a")])


def test_a_rung_short_of_successes_still_promotes_to_the_next_rung():
    """1..9, eta 3: a bracket of 9 at 1, 3 at 3, 1 at 9. Seven base trials fail: rung 1 gets only
    the two successes; once they finish, the best of them goes on to rung 2."""
    optimizer = build("successive-halving", space(), max_fidelity=9)
    history = [finished(Job(i, {"c": "a"}, 1, rung=0, bracket=0), 0.5 - i / 10) if i < 2
               else Trial.pending(Job(i, {"c": "b"}, 1, rung=0, bracket=0)).failed("boom") for i in range(9)]
    history += [finished(Job(9, {"c": "a"}, 3, rung=1, bracket=0, parent_id=1), 0.3),
                finished(Job(10, {"c": "a"}, 3, rung=1, bracket=0, parent_id=0), 0.2)]
    job = optimizer.ask(history)
    assert (job.trial_id, job.rung, job.bracket, job.parent_id, job.fidelity, job.sampler) == (
        11, 2, 0, 10, 9, "promotion")


def trials_on(points) -> list[Trial]:
    return [finished(Job(i, {"c": "a"}, 1, rung=0, bracket=0), loss, cost) for i, (loss, cost) in enumerate(points)]


def test_of_two_equally_good_trials_the_cheaper_one_is_promoted_first():
    optimizer = build("hyperband", space(), promotion="nds-crowding")
    first, second = trials_on([(1.0, 5.0), (1.0, 2.0)])  # the later one dominates: same loss, cheaper
    assert optimizer.rank([first, second], stream=(0, 0)) == [second, first]
    assert build("hyperband", space()).rank([first, second], stream=(0, 0)) == [first, second]


def test_nds_random_shuffles_a_front_reproducibly():
    optimizer = build("hyperband", space(), promotion="nds-random")
    front = trials_on([(1.0, 8.0), (2.0, 4.0), (3.0, 2.0), (4.0, 1.0), (5.0, 0.5), (6.0, 0.25)])
    orders = [[t.trial_id for t in optimizer.rank(front, stream=(0, rung))] for rung in range(20)]
    assert len({tuple(o) for o in orders}) > 1  # a random order inside the front ...
    assert {o[0] for o in orders} != {0}  # ... so the lowest loss is not always first
    again = [[t.trial_id for t in optimizer.rank(front, stream=(0, rung))] for rung in range(20)]
    assert again == orders  # ... but the same stream gives the same order
    two = front[:2]
    assert len({tuple(t.trial_id for t in optimizer.rank(two, stream=(0, r))) for r in range(20)}) == 2
