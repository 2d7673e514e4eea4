"""FidelitySchedule at its boundaries, and what its refusals say (cases found by `make mutation`).

Expected numbers are worked out by hand: 10 / 4 = 2.5 < eta = 3, and 10 / 3 = 3.33333 (``:g``).
"""

from __future__ import annotations

import pytest

from hnas.errors import SearchError
from hnas.search.fidelity import FidelitySchedule


def test_eta_2_is_the_smallest_halving():
    assert FidelitySchedule(1, 8, 2).fidelities == (1, 2, 4, 8)
    with pytest.raises(SearchError, match=r"^eta must be an integer >= 2, got 1$"):
        FidelitySchedule(1, 8, 1)


@pytest.mark.parametrize("low, high", [("1", 10), (1, "10"), (None, 10), (1, [10])])
def test_bounds_that_are_not_numbers_are_refused_by_name(low, high):
    with pytest.raises(SearchError) as refused:
        FidelitySchedule(low, high)
    assert str(refused.value) == ("fidelity bounds must satisfy 0 < min_fidelity <= max_fidelity, got "
                                  f"min_fidelity={low!r}, max_fidelity={high!r}")


def test_two_rungs_are_enough_for_multi_fidelity():
    schedule = FidelitySchedule(1, 3)
    assert schedule.max_rung == 1
    schedule.require_multiple_rungs("hyperband")  # no error


def test_a_single_rung_refusal_says_how_to_fix_it():
    with pytest.raises(SearchError) as refused:
        FidelitySchedule(4, 10).require_multiple_rungs("hyperband")
    assert str(refused.value) == (
        "hyperband needs at least two rungs, but max_fidelity / min_fidelity = 10 / 4 = 2.5 is below "
        "eta = 3; lower min_fidelity to at most 3.33333, lower eta, or use random search")


def test_rungs_and_halvings_outside_the_schedule_are_named():
    schedule = FidelitySchedule(1, 27)
    with pytest.raises(SearchError, match=r"^rung 4 is outside the schedule's rungs 0\.\.3$"):
        schedule.fidelity(4)
    with pytest.raises(SearchError, match=r"^a bracket may halve 0\.\.3 times, got 4$"):
        schedule.bracket_sizes(4)
