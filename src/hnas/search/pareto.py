"""Pareto tools for minimised objectives: fronts, crowding, hypervolume, incumbent choice.

Points are rows of an ``(n, m)`` array; every objective is minimised.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from hnas.errors import SearchError

#: Reference value of the area-maximising incumbent on min-max normalised objectives
#: (docs/references.md, "Regularized PriorBand").
AREA_REFERENCE = 1.1


def _as_points(points: ArrayLike) -> np.ndarray:
    array = np.asarray(points, dtype=float)
    if array.ndim == 1 and array.size == 0:
        return array.reshape(0, 0)
    if array.ndim != 2:
        raise SearchError(f"objective points must be an (n, m) array, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise SearchError("objective points must be finite (failed trials carry no objectives)")
    return array


def dominates(a: ArrayLike, b: ArrayLike) -> bool:
    """``a`` is no worse than ``b`` everywhere and strictly better somewhere."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return bool(np.all(a <= b) and np.any(a < b))


def non_dominated_sort(points: ArrayLike) -> list[np.ndarray]:
    """Fronts (index arrays, ascending) from the Pareto front outwards (Deb et al.'s fast sort)."""
    y = _as_points(points)
    n = len(y)
    if n == 0:
        return []
    no_worse = np.all(y[:, None, :] <= y[None, :, :], axis=2)
    better = np.any(y[:, None, :] < y[None, :, :], axis=2)
    dominance = no_worse & better                 # dominance[i, j]: i dominates j
    dominated_by = dominance.sum(axis=0)          # how many points dominate j
    fronts = []
    current = np.flatnonzero(dominated_by == 0)
    while current.size:
        fronts.append(current)
        dominated_by = dominated_by - dominance[current].sum(axis=0)
        dominated_by[current] = -1                # never picked again
        current = np.flatnonzero(dominated_by == 0)
    return fronts


def pareto_front(points: ArrayLike) -> np.ndarray:
    """Indices (ascending) of the non-dominated points, without sorting the other fronts.

    In lexicographic order a point can only be dominated by an earlier one, so one pass
    that compares each point with the front kept so far is enough.
    """
    y = _as_points(points)
    if len(y) == 0:
        return np.array([], dtype=int)
    order = np.lexsort(y.T[::-1])
    if y.shape[1] == 2:
        return np.sort(_pareto_front_2d(y, order))
    kept: list[int] = []
    for i in order:
        if kept:
            front = y[kept]
            if np.any(np.all(front <= y[i], axis=1) & np.any(front < y[i], axis=1)):
                continue
        kept.append(int(i))
    return np.sort(np.array(kept, dtype=int))


def _pareto_front_2d(y: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Sweep in (y0, y1) order: a point survives unless an earlier one is at least as good in
    y1 and differs from it (an exact duplicate does not dominate)."""
    kept: list[int] = []
    best0 = best1 = np.inf
    for i, (a, b) in zip(order.tolist(), y[order].tolist()):
        if b < best1 or (b == best1 and a == best0):
            kept.append(i)
            if b < best1:
                best0, best1 = a, b
    return np.array(kept, dtype=int)


def crowding_distance(points: ArrayLike) -> np.ndarray:
    """NSGA-II crowding distance of each point within its set.

    Per objective the points are sorted; both extremes get infinity, an interior point adds
    ``(y[i+1] - y[i-1]) / (max - min)``. An objective on which all points agree adds nothing.
    """
    y = _as_points(points)
    n = len(y)
    distance = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for objective in range(y.shape[1]):
        order = np.argsort(y[:, objective], kind="stable")
        values = y[order, objective]
        distance[order[0]] = distance[order[-1]] = np.inf
        span = values[-1] - values[0]
        if span > 0:
            distance[order[1:-1]] += (values[2:] - values[:-2]) / span
    return distance


def rank_by_fronts_and_crowding(points: ArrayLike) -> np.ndarray:
    """All indices, best first: front by front, inside a front by crowding distance
    (descending), ties broken by the first (primary) objective, then by index."""
    y = _as_points(points)
    ranked: list[int] = []
    for front in non_dominated_sort(y):
        crowding = crowding_distance(y[front])
        order = np.lexsort((front, y[front, 0], -crowding))
        ranked.extend(front[order].tolist())
    return np.array(ranked, dtype=int)


def rank_by_fronts_randomly(points: ArrayLike, rng: np.random.Generator) -> np.ndarray:
    """All indices, best first: front by front, in random order inside a front."""
    ranked: list[int] = []
    for front in non_dominated_sort(points):
        ranked.extend(rng.permutation(front).tolist())
    return np.array(ranked, dtype=int)


def area_incumbent(points: ArrayLike, reference: float = AREA_REFERENCE) -> int:
    """Index of the front point maximising ``prod_j (reference - minmax(y_j))``
    (docs/references.md, "Regularized PriorBand").

    Objectives are min-max normalised over the Pareto front (an objective on which the front
    agrees normalises to 0). Ties go to the better primary objective.
    """
    y = _as_points(points)
    if len(y) == 0:
        raise SearchError("the area-maximising incumbent needs at least one point")
    front = pareto_front(y)
    values = y[front]
    low, span = values.min(axis=0), np.ptp(values, axis=0)
    normalised = np.divide(values - low, span, out=np.zeros_like(values), where=span > 0)
    area = np.prod(reference - normalised, axis=1)
    best = np.lexsort((front, values[:, 0], -area))[0]
    return int(front[best])


def hypervolume(points: ArrayLike, reference: ArrayLike) -> float:
    """Volume dominated by ``points`` and bounded by ``reference`` (exact, any dimension).

    Points that do not strictly dominate the reference on every objective add nothing.
    Two objectives are a sweep; more are sliced along the last objective recursively.
    """
    ref = np.asarray(reference, dtype=float)
    y = np.asarray(points, dtype=float)
    if y.size == 0:
        return 0.0
    y = _as_points(y)
    if y.shape[1] != ref.size:
        raise SearchError(f"reference point has {ref.size} objectives, points have {y.shape[1]}")
    y = y[np.all(y < ref, axis=1)]
    if len(y) == 0:
        return 0.0
    y = y[pareto_front(y)]
    return float(_hypervolume(y, ref))


def _hypervolume(y: np.ndarray, ref: np.ndarray) -> float:
    if y.shape[1] == 1:
        return float(ref[0] - y[:, 0].min())
    if y.shape[1] == 2:
        order = np.argsort(y[:, 0], kind="stable")
        volume, best_second = 0.0, ref[1]
        for x0, x1 in y[order]:
            if x1 < best_second:
                volume += (ref[0] - x0) * (best_second - x1)
                best_second = x1
        return volume
    order = np.argsort(y[:, -1], kind="stable")
    y = y[order]
    volume = 0.0
    for i in range(len(y)):
        upper = y[i + 1, -1] if i + 1 < len(y) else ref[-1]
        if upper > y[i, -1]:
            volume += _hypervolume(y[: i + 1, :-1], ref[:-1]) * (upper - y[i, -1])
    return volume
