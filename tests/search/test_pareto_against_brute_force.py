"""The Pareto tools against brute-force references and hand values (cases found by `make mutation`).

The references are written from the definitions, in plain Python, independently of
``hnas.search.pareto``:

* hypervolume of integer points: the number of unit cells ``[c, c + 1)`` inside the reference
  box that some point weakly dominates (the dominated region is the union of the boxes
  ``[p, reference)``, a union of whole cells when every coordinate is an integer);
* fronts: peel off the points no remaining point dominates;
* crowding distance: NSGA-II's definition with Python's (stable) sort, so a tie keeps input order.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from hnas.errors import SearchError
from hnas.search.pareto import (
    area_incumbent,
    crowding_distance,
    hypervolume,
    non_dominated_sort,
    pareto_front,
    rank_by_fronts_and_crowding,
    rank_by_fronts_randomly,
)


def weakly_dominates(p, c) -> bool:
    return all(a <= b for a, b in zip(p, c))


def strictly_dominates(a, b) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def cell_count_hypervolume(points, reference) -> int:
    cells = itertools.product(*(range(r) for r in reference))
    return sum(1 for c in cells if any(weakly_dominates(p, c) for p in points))


def peeled_fronts(points) -> list[list[int]]:
    left, fronts = set(range(len(points))), []
    while left:
        front = sorted(i for i in left if not any(strictly_dominates(points[j], points[i]) for j in left))
        fronts.append(front)
        left -= set(front)
    return fronts


def reference_crowding(points) -> list[float]:
    n, m = len(points), len(points[0])
    if n <= 2:
        return [math.inf] * n
    distance = [0.0] * n
    for k in range(m):
        order = sorted(range(n), key=lambda i: points[i][k])  # stable
        low, high = points[order[0]][k], points[order[-1]][k]
        distance[order[0]] = distance[order[-1]] = math.inf
        if high > low:
            for before, i, after in zip(order, order[1:], order[2:]):
                distance[i] += (points[after][k] - points[before][k]) / (high - low)
    return distance


def random_integer_points(rng, n, reference):
    return [tuple(int(rng.integers(0, r + 2)) for r in reference) for _ in range(n)]  # some outside the box


# --------------------------------------------------------------------------- hypervolume


@pytest.mark.parametrize("reference", [(9,), (6, 9), (4, 7, 5), (3, 5, 4, 3)])
def test_hypervolume_counts_the_dominated_cells(reference):
    rng = np.random.default_rng(len(reference))
    for n in (1, 2, 3, 5, 8):
        for _ in range(6):
            points = random_integer_points(rng, n, reference)
            assert hypervolume(points, reference) == pytest.approx(cell_count_hypervolume(points, reference)), points


def test_hypervolume_by_hand_with_an_unequal_reference():
    assert hypervolume([(3,), (1,), (2,)], (5,)) == pytest.approx(4)
    assert hypervolume([(1, 2)], (3, 7)) == pytest.approx(2 * 5)
    # boxes [1,4]x[3,10] and [2,4]x[1,10]: 21 + 18 - overlap 14
    assert hypervolume([(1, 3), (2, 1)], (4, 10)) == pytest.approx(25)
    # boxes [0,3)x[0,5)x[2,4) and [2,3)x[3,5)x[0,4), overlap [2,3)x[3,5)x[2,4): slabs 2 thick
    assert hypervolume([(0, 0, 2), (2, 3, 0)], (3, 5, 4)) == pytest.approx(3 * 5 * 2 + 1 * 2 * 4 - 1 * 2 * 2)


def test_points_outside_or_on_the_reference_add_nothing():
    assert hypervolume([(5, 5)], (4, 4)) == 0.0
    assert hypervolume([(4, 1), (1, 4)], (4, 4)) == 0.0
    assert hypervolume([(4, 1), (2, 2)], (4, 4)) == pytest.approx(4)


# --------------------------------------------------------------------------- fronts


@pytest.mark.parametrize("m", [2, 3])
def test_fronts_match_peeling_with_ties_and_duplicates(m):
    rng = np.random.default_rng(m)
    for n in (1, 2, 7, 20):
        for _ in range(5):
            points = [tuple(int(v) for v in rng.integers(0, 4, m)) for _ in range(n)]  # many ties
            expected = peeled_fronts(points)
            assert [f.tolist() for f in non_dominated_sort(points)] == expected
            assert pareto_front(points).tolist() == expected[0]
            ranked = rank_by_fronts_and_crowding(points).tolist()
            assert [sorted(ranked[a:a + len(f)]) for a, f in zip(
                np.cumsum([0] + [len(f) for f in expected]), expected)] == expected


def test_a_single_point_is_its_own_front():
    assert [f.tolist() for f in non_dominated_sort([(3.0, 1.0)])] == [[0]]
    assert rank_by_fronts_and_crowding([(3.0, 1.0)]).tolist() == [0]


def test_an_empty_ranking_is_still_an_index_array():
    trials = np.array(["a", "b"])
    for ranking in (rank_by_fronts_and_crowding(np.zeros((0, 2))),
                    rank_by_fronts_randomly(np.zeros((0, 2)), np.random.default_rng(0))):
        assert ranking.dtype.kind == "i" and ranking.size == 0
        assert trials[ranking].size == 0


# --------------------------------------------------------------------------- crowding


def test_crowding_matches_the_definition_with_ties_in_input_order():
    rng = np.random.default_rng(7)
    for n in (3, 5, 17, 24, 40):  # numpy's default sort is unstable from 17 elements on
        for _ in range(4):
            points = [tuple(float(v) for v in rng.integers(0, 5, 2)) for _ in range(n)]
            assert crowding_distance(points).tolist() == pytest.approx(reference_crowding(points))


def test_crowding_of_a_front_inside_the_unit_square():
    # every objective spans less than 1; the middle point's neighbours are the extremes on both
    assert crowding_distance([(0.0, 0.8), (0.2, 0.4), (0.6, 0.0)])[1] == pytest.approx(1 + 1)


# --------------------------------------------------------------------------- area incumbent


def test_area_incumbent_normalises_each_objective_by_its_own_minimum():
    # normalised front: (0, 1), (0.5, 1/6), (1, 0) -> areas 0.11, 0.6 * (1.1 - 1/6), 0.11
    assert area_incumbent([(10, 0.3), (11, 0.05), (12, 0.0)]) == 1


def test_area_incumbent_tie_goes_to_the_better_primary_objective():
    # normalised (1, 0) and (0, 1): both areas (1.1 - 1) * 1.1
    assert area_incumbent([(1.0, 0.0), (0.0, 1.0)]) == 1
    assert area_incumbent([(0.0, 1.0), (1.0, 0.0)]) == 0


def test_an_objective_the_front_agrees_on_normalises_to_zero():
    # objective 0 is 0 everywhere; the others normalise to (0, 1), (.5, .5), (1, 0)
    assert area_incumbent([(0, 1, 3), (0, 2, 2), (0, 3, 1)]) == 1
    assert area_incumbent([(0, 3, 1), (0, 2, 2), (0, 1, 3)]) == 1


def test_refusals_say_what_is_missing():
    with pytest.raises(SearchError) as refused:
        area_incumbent(np.zeros((0, 2)))
    assert str(refused.value) == "the area-maximising incumbent needs at least one point"
    with pytest.raises(SearchError) as refused:
        hypervolume([(1, 2)], (3, 3, 3))
    assert str(refused.value) == "reference point has 3 objectives, points have 2"


@pytest.mark.parametrize("empty", [[], (), np.zeros(0), np.zeros((0, 2))])
def test_no_points_give_empty_integer_answers(empty):
    assert pareto_front(empty).dtype.kind == "i" and pareto_front(empty).size == 0
    assert non_dominated_sort(empty) == []
    assert crowding_distance(empty).size == 0
    assert rank_by_fronts_and_crowding(empty).dtype.kind == "i" and rank_by_fronts_and_crowding(empty).size == 0


@pytest.mark.parametrize("points, message", [
    ([1.0, 2.0], "objective points must be an (n, m) array, got shape (2,)"),
    ([[[1.0, 2.0]]], "objective points must be an (n, m) array, got shape (1, 1, 2)"),
    ([(1.0, float("nan"))], "objective points must be finite (failed trials carry no objectives)"),
    ([(1.0, float("inf"))], "objective points must be finite (failed trials carry no objectives)"),
])
def test_points_that_are_no_finite_matrix_are_refused(points, message):
    for tool in (pareto_front, non_dominated_sort, crowding_distance):
        with pytest.raises(SearchError) as refused:
            tool(points)
        assert str(refused.value) == message
