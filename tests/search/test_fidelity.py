import pytest

from hnas.errors import SearchError
from hnas.pipeline.spaces import make_space
from hnas.search import OPTIMIZERS, make_optimizer
from hnas.search.fidelity import FidelitySchedule


def test_rungs_and_bracket_shapes_for_1_to_81():
    schedule = FidelitySchedule(1, 81, 3)
    assert schedule.max_rung == 4
    assert schedule.fidelities == (1, 3, 9, 27, 81)
    shapes = [list(schedule.bracket_sizes(h).values()) for h in (4, 3, 2, 1, 0)]
    assert shapes == [[81, 27, 9, 3, 1], [27, 9, 3, 1], [9, 3, 1], [6, 2], [5]]
    assert list(schedule.bracket_sizes(1)) == [3, 4]


def test_paper_epochs_round_to_whole_rungs():
    assert FidelitySchedule(10, 1000, 3).fidelities == (12, 37, 111, 333, 1000)


def test_fractional_fidelities_stay_fractional():
    assert FidelitySchedule(0.5, 4.5, 3).fidelities == pytest.approx((0.5, 1.5, 4.5))


def test_bracket_cost_counts_only_what_promotions_add():
    # 81 x 1 + 27 x (3-1) + 9 x (9-3) + 3 x (27-9) + 1 x (81-27)
    assert FidelitySchedule(1, 81, 3).bracket_cost(4) == 297
    assert FidelitySchedule(1, 81, 3).bracket_cost(0) == 5 * 81


@pytest.mark.parametrize("name", [n for n in OPTIMIZERS if n != "random"])
def test_single_rung_setups_are_refused(name):
    with pytest.raises(SearchError, match="at least two rungs.*eta = 3"):
        make_optimizer(name, make_space("hpo"), min_fidelity=1, max_fidelity=2)


def test_random_search_accepts_a_single_fidelity():
    optimizer = make_optimizer("random", make_space("hpo"), min_fidelity=5, max_fidelity=5)
    assert optimizer.ask([]).fidelity == 5


@pytest.mark.parametrize("low, high, eta", [(0, 10, 3), (5, 1, 3), (1, 10, 1), (1, 10, 2.5),
                                            (1, float("inf"), 3)])
def test_invalid_schedules_are_refused(low, high, eta):
    with pytest.raises(SearchError):
        FidelitySchedule(low, high, eta)
