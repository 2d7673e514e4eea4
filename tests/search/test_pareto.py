import numpy as np
import pytest

from hnas.errors import SearchError
from hnas.search.pareto import (
    area_incumbent,
    crowding_distance,
    dominates,
    hypervolume,
    non_dominated_sort,
    pareto_front,
    rank_by_fronts_and_crowding,
    rank_by_fronts_randomly,
)

POINTS = [(1, 5), (2, 3), (3, 4), (4, 1), (2, 2), (5, 5)]


def test_dominance():
    assert dominates((1, 1), (1, 2))
    assert not dominates((1, 2), (1, 2))
    assert not dominates((1, 3), (2, 2))


def test_non_dominated_sort_by_hand():
    fronts = [f.tolist() for f in non_dominated_sort(POINTS)]
    assert fronts == [[0, 3, 4], [1], [2], [5]]
    assert pareto_front(POINTS).tolist() == [0, 3, 4]
    assert non_dominated_sort(np.zeros((0, 2))) == []


def test_crowding_distance_by_hand():
    three = crowding_distance([(1, 5), (2, 2), (4, 1)])
    assert np.isinf(three[[0, 2]]).all()
    assert three[1] == pytest.approx((4 - 1) / 3 + (5 - 1) / 4)
    four = crowding_distance([(0, 4), (1, 2), (2, 1), (4, 0)])
    assert four[1] == pytest.approx(2 / 4 + 3 / 4)
    assert four[2] == pytest.approx(3 / 4 + 2 / 4)
    assert np.isinf(crowding_distance([(1, 1), (2, 0)])).all()


def test_crowding_ignores_an_objective_the_points_agree_on():
    distance = crowding_distance([(0, 1), (1, 1), (3, 1)])
    assert distance[1] == pytest.approx(3 / 3)


def test_rank_orders_fronts_then_crowding_then_primary_objective():
    points = [(0.1, 9), (0.2, 5), (0.3, 3), (0.5, 1), (0.25, 6), (0.4, 2.5)]
    # front 1: 0, 1, 2, 5, 3; crowding: 0 and 3 infinite, 1 = 0.5 + 6/8, 2 = 0.5 + 2.5/8,
    # 5 = 0.5 + 2/8; front 2: point 4 (dominated by 1).
    assert rank_by_fronts_and_crowding(points).tolist() == [0, 3, 1, 2, 5, 4]


def test_random_rank_keeps_fronts_in_order():
    ranks = {tuple(rank_by_fronts_randomly(POINTS, np.random.default_rng(s)).tolist())
             for s in range(20)}
    assert len(ranks) > 1
    for rank in ranks:
        assert sorted(rank[:3]) == [0, 3, 4] and rank[3:] == (1, 2, 5)


def test_hypervolume_two_objectives_by_hand():
    assert hypervolume([(1, 3), (2, 2), (3, 1)], (4, 4)) == pytest.approx(3 + 2 + 1)
    assert hypervolume([(1, 3), (2, 2), (3, 1), (3, 3), (5, 0)], (4, 4)) == pytest.approx(6)
    assert hypervolume([], (1, 1)) == 0.0


def test_hypervolume_three_objectives_by_hand():
    assert hypervolume([(1, 1, 1)], (2, 2, 2)) == pytest.approx(1)
    # 2*2*1 + 1*1*2 - overlap 1*1*1
    assert hypervolume([(0, 0, 1), (1, 1, 0)], (2, 2, 2)) == pytest.approx(5)


def test_area_incumbent_by_hand():
    points = [(0.1, 10), (0.2, 4), (0.5, 1), (0.6, 5)]
    # normalised front: (0, 1), (0.25, 1/3), (1, 0) -> areas 0.11, 0.85 * 0.7667, 0.11
    assert area_incumbent(points) == 1
    assert area_incumbent([(0.3, 2.0)]) == 0


def test_bad_points_are_refused():
    with pytest.raises(SearchError):
        non_dominated_sort([(1.0, float("nan"))])
    with pytest.raises(SearchError):
        hypervolume([(1, 2)], (3, 3, 3))
