"""BOHB's density model: kernel densities of good and bad configurations (Falkner et al. 2018).

For one budget (rung) the finished observations are sorted by loss (failed trials count as
infinitely bad, as in BOHB's reference code); the best ``max(N_min, floor(gamma * n))`` fit the
density l(x) of good configurations and the worst ``max(N_min, n - n_good)`` the density g(x)
of bad ones (BOHB's Algorithm 2; ``N_min`` = number of parameters + 1 by default). A proposal
samples candidates from l -- each a good observation perturbed by the KDE bandwidth times a
bandwidth factor -- and returns the one maximising l(x) / g(x).

The space is split by kind:

* numeric parameters (float, int, ordinal; log axes for log parameters) map to [0, 1] and get
  one product-Gaussian KDE from statsmodels (``KDEMultivariate``, normal-reference bandwidth,
  clipped below by ``min_bandwidth``: BOHB's settings). Values of inactive conditional
  parameters are imputed from an active observation of the same set (BOHB's rule), drawn
  with a generator seeded by the observation's trial id so the fit is a function of the data;
* categorical parameters get add-one smoothed frequencies among their active observations
  (statsmodels' unordered kernel infers the number of levels from the data, which breaks for
  choices that no good configuration uses yet);
* the architecture gets the distribution's own density when it can fit one
  (:class:`FittableArchitectureDistribution`; for a grammar, per-rule production frequencies
  among the good and the bad derivations: two smoothed PCFGs, candidates derived top-down
  from the good one); for any other :class:`~hnas.search.space.ArchitectureDistribution`,
  word-per-position frequencies, candidates from good architectures, each mutated with
  probability 0.5.

``log l(x) - log g(x)`` is the sum of the three parts' log ratios.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
from scipy import special

from hnas.errors import SearchError
from hnas.search.space import (
    MUTATION_PROBABILITY,
    Architecture,
    ArchitectureDistribution,
    Categorical,
    Float,
    Int,
    Ordinal,
    SearchSpace,
)

#: BOHB's defaults (hpbandster ``BOHB``): top 15 % are "good", 64 candidates per proposal,
#: candidates drawn with 3x the KDE bandwidth, bandwidths clipped below at 1e-3.
TOP_FRACTION = 0.15
CANDIDATES = 64
BANDWIDTH_FACTOR = 3.0
MIN_BANDWIDTH = 1e-3
#: Add-one (Laplace) smoothing of categorical and word frequencies.
SMOOTHING = 1.0
_IMPUTATION_STREAM = 2
_FIT_MEMO_SIZE = 8


@dataclass(frozen=True)
class Observation:
    """A finished trial as the model sees it; failed trials have ``loss = inf``."""

    trial_id: int
    config: Mapping[str, Any]
    loss: float


# -- the architecture part ---------------------------------------------------------------------
@runtime_checkable
class ArchitectureDensity(Protocol):
    """A density over a distribution's architectures, fitted to some of them."""

    def log_prob(self, architecture: str) -> float: ...

    def sample(self, rng: np.random.Generator) -> str: ...


@runtime_checkable
class FittableArchitectureDistribution(ArchitectureDistribution, Protocol):
    """An :class:`~hnas.search.space.ArchitectureDistribution` that fits its own densities.

    ``fit_density`` is that protocol's optional member (``GrammarArchitecture`` fits a smoothed
    PCFG to the derivations); distributions without it get :class:`_WordDensity`.
    """

    def fit_density(self, architectures: Sequence[str]) -> ArchitectureDensity: ...


class _FittedDensity:
    """The distribution's own densities of the good and the bad architectures; candidates are
    drawn from the good one."""

    def __init__(self, distribution: FittableArchitectureDistribution, good: Sequence[str],
                 bad: Sequence[str]):
        self.good = distribution.fit_density(good)
        self.bad = distribution.fit_density(bad)

    def candidates(self, rng: np.random.Generator, count: int) -> list[str]:
        return [self.good.sample(rng) for _ in range(count)]

    def log_ratio(self, architectures: Sequence[str]) -> np.ndarray:
        return np.array([self.good.log_prob(a) - self.bad.log_prob(a) for a in architectures])


class _WordDensity:
    """For architecture distributions that fit no density of their own: word-per-position
    frequencies; candidates are good architectures, each mutated with probability 0.5."""

    def __init__(self, parameter: Architecture, good: Sequence[str], bad: Sequence[str]):
        self.distribution = parameter.distribution
        self.good_architectures = list(good)
        vocabulary: dict[int, set[str]] = {}
        for architecture in [*good, *bad]:
            for position, word in enumerate(architecture.split()):
                vocabulary.setdefault(position, set()).add(word)
        # one extra level per position for the words no observation used
        self.levels = {position: len(words) + 1 for position, words in vocabulary.items()}
        self.good, self.bad = _word_counts(good), _word_counts(bad)

    def _log_prob(self, architecture: str, counts: tuple[Counter, int]) -> float:
        counter, total = counts
        return math.fsum(
            math.log((counter[position, word] + SMOOTHING)
                     / (total + SMOOTHING * self.levels.get(position, 1)))
            for position, word in enumerate(architecture.split()))

    def candidates(self, rng: np.random.Generator, count: int) -> list[str]:
        sentences = []
        for _ in range(count):
            parent = self.good_architectures[int(rng.integers(len(self.good_architectures)))]
            mutate = rng.random() < MUTATION_PROBABILITY
            sentences.append(self.distribution.mutate(parent, rng) if mutate else parent)
        return sentences

    def log_ratio(self, architectures: Sequence[str]) -> np.ndarray:
        return np.array([self._log_prob(a, self.good) - self._log_prob(a, self.bad)
                         for a in architectures])


def _word_counts(architectures: Sequence[str]) -> tuple[Counter, int]:
    return Counter((p, w) for a in architectures for p, w in enumerate(a.split())), \
        len(architectures)


def _architecture_density(parameter: Architecture, good: Sequence[str], bad: Sequence[str]):
    """The distribution's own densities when it can fit them (a grammar's PCFGs), else words."""
    if isinstance(parameter.distribution, FittableArchitectureDistribution):
        return _FittedDensity(parameter.distribution, good, bad)
    return _WordDensity(parameter, good, bad)


# -- the numeric and categorical parts ----------------------------------------------------------
def _axis(parameter: Float | Int) -> tuple[float, float]:
    if parameter.log:
        return math.log(parameter.lower), math.log(parameter.upper)
    return float(parameter.lower), float(parameter.upper)


def to_unit(parameter: Float | Int | Ordinal, value: Any) -> float:
    """A numeric parameter's value on [0, 1] (log axis for log parameters)."""
    if isinstance(parameter, Ordinal):
        last = len(parameter.values) - 1
        return parameter.values.index(value) / last if last else 0.0
    lo, hi = _axis(parameter)
    position = math.log(value) if parameter.log else float(value)
    return (position - lo) / (hi - lo) if hi > lo else 0.0


def from_unit(parameter: Float | Int | Ordinal, unit: float) -> Any:
    """Inverse of :func:`to_unit`; integers and ordinals round to the nearest value."""
    unit = min(1.0, max(0.0, float(unit)))
    if isinstance(parameter, Ordinal):
        return parameter.values[int(round(unit * (len(parameter.values) - 1)))]
    lo, hi = _axis(parameter)
    position = lo + unit * (hi - lo)
    value = math.exp(position) if parameter.log else position
    if isinstance(parameter, Int):
        return int(min(parameter.upper, max(parameter.lower, round(value))))
    return float(min(parameter.upper, max(parameter.lower, value)))


def _active(parameter, config: Mapping[str, Any]) -> bool:
    return parameter.condition is None or parameter.condition.holds(config)


class _NumericDensity:
    """statsmodels' product-Gaussian KDE of unit-cube rows, marginalised over inactive values.

    ``KDEMultivariate`` (normal-reference rule) picks the bandwidths; the density it defines,
    mean_i prod_j N(x_j; X_ij, h_j), is evaluated here for a whole batch of points at once
    (its own ``pdf`` loops over points in Python) and in log space, so far-away points keep
    their order instead of all underflowing to zero. A point is scored on the dimensions
    active in it; training rows are complete (inactive values imputed).
    """

    def __init__(self, data: np.ndarray, min_bandwidth: float):
        self.data = data
        self.bandwidth = np.zeros(data.shape[1])
        if data.shape[1]:
            from statsmodels.nonparametric.kernel_density import KDEMultivariate  # pandas: lazy

            # the generator is unused by this bandwidth rule; passing one keeps statsmodels quiet
            kde = KDEMultivariate(data, var_type="c" * data.shape[1], bw="normal_reference",
                                  rng=np.random.default_rng(0))
            self.bandwidth = np.clip(kde.bw, min_bandwidth, None)

    def log_pdf(self, points: np.ndarray) -> np.ndarray:
        """Log density of each row of ``points`` (NaN = inactive, marginalised out)."""
        from scipy import stats  # a second to import: only once a model is in use

        active = ~np.isnan(points)
        kernel = stats.norm.logpdf(np.where(active, points, 0.0)[:, None, :], loc=self.data[None],
                                   scale=self.bandwidth)
        per_row = np.where(active[:, None, :], kernel, 0.0).sum(axis=2)
        result = special.logsumexp(per_row, axis=1) - math.log(len(self.data))
        return np.where(active.any(axis=1), result, 0.0)


class _Split:
    """The observations of one side (good or bad), fitted part by part."""

    def __init__(self, layout: "_Layout", observations: Sequence[Observation], seed: int,
                 min_bandwidth: float):
        self.observations = observations
        self.numeric = _NumericDensity(layout.numeric_matrix(observations, seed), min_bandwidth)
        self.categorical = {
            p.name: _smoothed_frequencies(p, [o.config[p.name] for o in observations
                                              if p.name in o.config])
            for p in layout.categorical}
        self.architectures = [o.config[layout.architecture.name] for o in observations] \
            if layout.architecture is not None else []


def _smoothed_frequencies(parameter: Categorical, values: Sequence[Any]) -> np.ndarray:
    counts = np.full(len(parameter.choices), SMOOTHING)
    for value in values:
        counts[parameter.choices.index(value)] += 1.0
    return counts / counts.sum()


class _Layout:
    """Which parameter goes to which part of the model."""

    def __init__(self, space: SearchSpace):
        self.space = space
        self.numeric = [p for p in space if isinstance(p, (Float, Int, Ordinal))]
        self.numeric_index = {p.name: j for j, p in enumerate(self.numeric)}
        self.categorical = [p for p in space if isinstance(p, Categorical)]
        self.architecture = space.architecture

    def unit_rows(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Configurations on the unit cube; NaN where a parameter is inactive."""
        rows = [[to_unit(p, c[p.name]) if p.name in c else np.nan for p in self.numeric]
                for c in configs]
        return np.array(rows, dtype=float).reshape(len(configs), len(self.numeric))

    def numeric_matrix(self, observations: Sequence[Observation], seed: int) -> np.ndarray:
        """Unit-cube rows; an inactive value is copied from a random active row of the same
        set, or drawn uniformly when there is none (BOHB's imputation)."""
        matrix = self.unit_rows([o.config for o in observations])
        missing = np.isnan(matrix)
        if not missing.any():
            return matrix
        filled = matrix.copy()
        for i in np.flatnonzero(missing.any(axis=1)):
            rng = np.random.default_rng([seed, _IMPUTATION_STREAM, observations[i].trial_id])
            for j in np.flatnonzero(missing[i]):
                donors = np.flatnonzero(~missing[:, j])
                filled[i, j] = matrix[donors[int(rng.integers(len(donors)))], j] \
                    if donors.size else rng.random()
        return filled

    def decode(self, unit: np.ndarray, categorical: Mapping[str, int],
               architecture: str | None) -> dict[str, Any]:
        """A configuration from model coordinates, keeping only the active parameters."""
        config: dict[str, Any] = {}
        for parameter in self.space:
            if not _active(parameter, config):
                continue
            if parameter.name in self.numeric_index:
                config[parameter.name] = from_unit(parameter,
                                                   unit[self.numeric_index[parameter.name]])
            elif isinstance(parameter, Categorical):
                config[parameter.name] = parameter.choices[categorical[parameter.name]]
            else:
                config[parameter.name] = architecture
        return config


class FittedModel:
    """l(x) and g(x) of one rung, and proposals that maximise their ratio."""

    def __init__(self, layout: _Layout, good: _Split, bad: _Split, rung: int, *,
                 bandwidth_factor: float):
        self.layout, self.good, self.bad, self.rung = layout, good, bad, rung
        self.bandwidth_factor = bandwidth_factor
        self.architecture = None
        if layout.architecture is not None:
            self.architecture = _architecture_density(layout.architecture, good.architectures,
                                                      bad.architectures)

    @property
    def n_good(self) -> int:
        return len(self.good.observations)

    @property
    def n_bad(self) -> int:
        return len(self.bad.observations)

    def log_ratio(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """log l(x) - log g(x) of each configuration, over its active parameters."""
        points = self.layout.unit_rows(configs)
        ratio = self.good.numeric.log_pdf(points) - self.bad.numeric.log_pdf(points)
        for p in self.layout.categorical:
            log_good = np.log(self.good.categorical[p.name])
            log_bad = np.log(self.bad.categorical[p.name])
            ratio += np.array([log_good[i] - log_bad[i] if i is not None else 0.0 for i in
                               (p.choices.index(c[p.name]) if p.name in c else None
                                for c in configs)])
        if self.architecture is not None:
            ratio += self.architecture.log_ratio([c[self.layout.architecture.name]
                                                  for c in configs])
        return ratio

    def candidates(self, rng: np.random.Generator, count: int) -> list[dict[str, Any]]:
        """``count`` configurations drawn from l (numeric values at bandwidth_factor x the
        bandwidth, categorical values and architectures from the good frequencies)."""
        numeric = self._numeric_candidates(rng, count)
        categorical = {p.name: rng.choice(len(p.choices), size=count,
                                          p=self.good.categorical[p.name])
                       for p in self.layout.categorical}
        architectures = self.architecture.candidates(rng, count) \
            if self.architecture is not None else [None] * count
        return [self.layout.decode(numeric[i], {n: int(v[i]) for n, v in categorical.items()},
                                   architectures[i]) for i in range(count)]

    def propose(self, rng: np.random.Generator, count: int = CANDIDATES) -> dict[str, Any]:
        """The candidate with the highest l/g (the first one wins a tie)."""
        candidates = self.candidates(rng, count)
        return candidates[int(np.argmax(self.log_ratio(candidates)))]

    def _numeric_candidates(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """Good rows perturbed by truncated normals on [0, 1] (BOHB's sampling from l)."""
        data = self.good.numeric.data
        if data.shape[1] == 0:
            return np.zeros((count, 0))
        from scipy import stats

        centres = data[rng.integers(len(data), size=count)]
        scale = np.broadcast_to(self.good.numeric.bandwidth * self.bandwidth_factor, centres.shape)
        return stats.truncnorm.rvs((0.0 - centres) / scale, (1.0 - centres) / scale, loc=centres,
                                   scale=scale, size=centres.shape, random_state=rng)


class DensityModel:
    """Fits :class:`FittedModel` for a rung's observations; BOHB's split and thresholds.

    A rung qualifies once it holds ``min_points + 2`` observations (BOHB's Algorithm 2);
    ``min_points`` (N_min) defaults to the number of parameters + 1 and must exceed the number
    of numeric parameters, or the KDE would have fewer points than dimensions.
    """

    def __init__(self, space: SearchSpace, *, min_points: int | None = None,
                 top_fraction: float = TOP_FRACTION, candidates: int = CANDIDATES,
                 bandwidth_factor: float = BANDWIDTH_FACTOR,
                 min_bandwidth: float = MIN_BANDWIDTH, seed: int = 0):
        self.layout = _Layout(space)
        numeric = len(self.layout.numeric)
        self.min_points = len(space) + 1 if min_points is None else min_points
        if isinstance(self.min_points, bool) or not isinstance(self.min_points, (int, np.integer)) \
                or self.min_points <= max(numeric, 0) or self.min_points < 1:
            raise SearchError(f"min_points must be an integer > {numeric} (the number of numeric "
                              f"parameters) and >= 1, got {min_points!r}")
        check_fraction("top_fraction", top_fraction, upper_open=True)
        check_positive("bandwidth_factor", bandwidth_factor)
        check_positive("min_bandwidth", min_bandwidth)
        if isinstance(candidates, bool) or not isinstance(candidates, (int, np.integer)) \
                or candidates < 1:
            raise SearchError(f"candidates must be a positive integer, got {candidates!r}")
        self.min_points = int(self.min_points)
        self.top_fraction, self.candidates = float(top_fraction), int(candidates)
        self.bandwidth_factor, self.min_bandwidth = float(bandwidth_factor), float(min_bandwidth)
        self.seed = seed
        self._memo: OrderedDict[tuple, FittedModel] = OrderedDict()

    def settings(self) -> dict[str, Any]:
        return {"min_points": self.min_points, "top_fraction": self.top_fraction,
                "candidates": self.candidates, "bandwidth_factor": self.bandwidth_factor,
                "min_bandwidth": self.min_bandwidth}

    @property
    def points_needed(self) -> int:
        return self.min_points + 2

    def split(self, observations: Sequence[Observation]
              ) -> tuple[list[Observation], list[Observation]]:
        """(good, bad): best max(N_min, floor(gamma n)) and worst max(N_min, n - n_good)."""
        ranked = sorted(observations, key=lambda o: (o.loss, o.trial_id))
        n = len(ranked)
        n_good = max(self.min_points, int(math.floor(self.top_fraction * n)))
        n_bad = max(self.min_points, n - n_good)
        return ranked[:n_good], ranked[n - n_bad:]

    def fit(self, observations: Sequence[Observation], rung: int = 0) -> FittedModel | None:
        """The model of one rung's observations, or None while there are too few."""
        if len(observations) < self.points_needed:
            return None
        key = (rung, tuple(sorted((o.trial_id, o.loss, tuple(sorted(o.config.items())))
                                  for o in observations)))
        fitted = self._memo.get(key)
        if fitted is None:
            good, bad = self.split(observations)
            fitted = FittedModel(
                self.layout, _Split(self.layout, good, self.seed, self.min_bandwidth),
                _Split(self.layout, bad, self.seed, self.min_bandwidth), rung,
                bandwidth_factor=self.bandwidth_factor)
            self._memo[key] = fitted
            if len(self._memo) > _FIT_MEMO_SIZE:
                self._memo.popitem(last=False)
        return fitted

    def fit_highest(self, by_rung: Mapping[int, Sequence[Observation]]) -> FittedModel | None:
        """The model of the highest rung (budget) with enough observations."""
        for rung in sorted(by_rung, reverse=True):
            fitted = self.fit(by_rung[rung], rung)
            if fitted is not None:
                return fitted
        return None


def check_fraction(name: str, value: Any, *, upper_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (0.0 < value < 1.0 if upper_open else 0.0 <= value <= 1.0):
        bounds = "(0, 1)" if upper_open else "[0, 1]"
        raise SearchError(f"{name} must be a number in {bounds}, got {value!r}")


def check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value <= 0:
        raise SearchError(f"{name} must be a positive number, got {value!r}")
