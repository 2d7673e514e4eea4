"""Search spaces: typed parameters with a default and a prior confidence.

Every parameter carries a prior centred on its default (docs/references.md, "Prior constants",
values in hnas.priors: categorical default weight 2/4/6 against 1 for every other choice; numeric truncated normal with std = range x
0.5/0.25/0.125, in log space for log parameters; integers and ordinals get the mass of
unit-wide buckets). ``SearchSpace.centered_on(config)`` gives the same family re-centred on an
incumbent, which PriorBand needs to weigh prior against incumbent sampling; ``mutate`` is its
local search (docs/references.md, "PriorBand"). One parameter may be an architecture drawn from a grammar; the space
only talks to it through :class:`ArchitectureDistribution`, so it knows nothing of U-Nets.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, Union, runtime_checkable

import numpy as np
from scipy import special

from hnas.errors import SearchSpaceError
from hnas.priors import CATEGORICAL_CENTRE_WEIGHT, CONFIDENCES, STD_FRACTION, Confidence

#: Local mutation (docs/references.md, "PriorBand"): per-parameter probability and std in the normalised space.
MUTATION_PROBABILITY = 0.5
MUTATION_STD = 0.25
#: A space whose mutation keeps returning the parent has (almost) a single configuration.
MAX_MUTATION_ATTEMPTS = 1000

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


@runtime_checkable
class ArchitectureDistribution(Protocol):
    """A prior-weighted distribution over architecture strings (a grammar plus its Prior).

    ``hnas.sampling`` implements it; the search engine only needs these members.

    Optionally it may also provide ``fit_density(architectures) -> ArchitectureDensity``: a
    density over its architectures fitted to the given ones, with ``log_prob(architecture)``
    and ``sample(rng)`` (for a grammar, add-one smoothed production frequencies). BOHB's model
    (:class:`hnas.search.model.FittableArchitectureDistribution`, where both protocols live)
    fits one to the good and one to the bad architectures when it is there, and falls back to
    word-per-position frequencies when it is not. It is not a required member, so that a
    distribution without a structure to model still satisfies this protocol.
    """

    default: str
    identity: str

    def sample(self, rng: np.random.Generator, *, uniform: bool = False,
               centered_on: str | None = None) -> str: ...

    def mutate(self, architecture: str, rng: np.random.Generator) -> str: ...

    def crossover(self, a: str, b: str, rng: np.random.Generator) -> str: ...

    def log_prob(self, architecture: str, *, uniform: bool = False,
                 centered_on: str | None = None) -> float: ...

    def validate(self, architecture: str) -> None: ...


@dataclass(frozen=True)
class Condition:
    """A parameter is active only while ``config[parent]`` is one of ``values``."""

    parent: str
    values: tuple[Any, ...]

    def holds(self, config: Mapping[str, Any]) -> bool:
        return self.parent in config and config[self.parent] in self.values

    def describe(self) -> dict[str, Any]:
        return {"parent": self.parent, "values": list(self.values)}


def _check_confidence(name: str, confidence: str) -> None:
    if confidence not in CONFIDENCES:
        raise SearchSpaceError(f"parameter {name!r}: confidence {confidence!r} is not one of "
                               f"{list(CONFIDENCES)}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


class _Numeric:
    """Shared maths of Float and Int: a linear or log axis mapped to the unit interval."""

    name: str
    lower: float
    upper: float
    log: bool
    default: Any
    confidence: str

    def _to_axis(self, value: float) -> float:
        return math.log(value) if self.log else float(value)

    def _from_axis(self, value: float) -> float:
        return math.exp(value) if self.log else float(value)

    @property
    def _axis_bounds(self) -> tuple[float, float]:
        return self._to_axis(self.lower), self._to_axis(self.upper)

    def _to_unit(self, value: float) -> float:
        lo, hi = self._axis_bounds
        return 0.0 if hi == lo else (self._to_axis(value) - lo) / (hi - lo)

    def _from_unit(self, unit: float) -> float:
        lo, hi = self._axis_bounds
        return self._from_axis(lo + unit * (hi - lo))

    @property
    def _prior_std(self) -> float:
        lo, hi = self._axis_bounds
        return (hi - lo) * STD_FRACTION[self.confidence]

    def _mutated_unit(self, value: float, rng: np.random.Generator) -> float:
        """A normal step in the unit space, redrawn until it lands inside the bounds."""
        centre = self._to_unit(value)
        while True:
            unit = centre + rng.normal(0.0, MUTATION_STD)
            if 0.0 <= unit <= 1.0:
                return unit

    def _check_bounds(self) -> None:
        if not (_is_number(self.lower) and _is_number(self.upper)) or not self.lower <= self.upper:
            raise SearchSpaceError(f"parameter {self.name!r}: bounds [{self.lower}, {self.upper}] "
                                   "must be numbers with lower <= upper")
        if self.log and self.lower <= 0:
            raise SearchSpaceError(f"parameter {self.name!r}: a log parameter needs lower > 0, "
                                   f"got {self.lower}")
        _check_confidence(self.name, self.confidence)


@dataclass(frozen=True)
class Float(_Numeric):
    """A real parameter on ``[lower, upper]``, optionally on a log axis."""

    name: str
    lower: float
    upper: float
    default: float
    log: bool = False
    confidence: Confidence = "medium"
    condition: Condition | None = None

    def __post_init__(self) -> None:
        self._check_bounds()
        self.check(self.default)

    def check(self, value: Any) -> float:
        if not _is_number(value) or not math.isfinite(float(value)):
            raise SearchSpaceError(f"parameter {self.name!r}: value {value!r} is not a finite number")
        if not self.lower <= float(value) <= self.upper:
            raise SearchSpaceError(f"parameter {self.name!r}: value {value!r} is outside "
                                   f"[{self.lower}, {self.upper}]")
        return float(value)

    @functools.cached_property
    def _truncation(self) -> tuple[float, float, float, float, float]:
        """(centre, std, cdf(a), cdf(b), log mass) of the prior's truncated normal."""
        lo, hi = self._axis_bounds
        centre, std = self._to_axis(self.default), self._prior_std
        a, b = (lo - centre) / std, (hi - centre) / std
        cdf_a, cdf_b = float(special.ndtr(a)), float(special.ndtr(b))
        return centre, std, cdf_a, cdf_b, math.log(cdf_b - cdf_a)

    def sample_uniform(self, rng: np.random.Generator) -> float:
        return self._clip(self._from_unit(rng.random()))

    def sample_prior(self, rng: np.random.Generator) -> float:
        if self.lower == self.upper:
            return float(self.lower)
        centre, std, cdf_a, cdf_b, _ = self._truncation
        z = float(special.ndtri(cdf_a + rng.random() * (cdf_b - cdf_a)))
        return self._clip(self._from_axis(centre + std * z))

    def log_prior(self, value: Any) -> float:
        if self.lower == self.upper:
            return 0.0
        centre, std, _, _, log_mass = self._truncation
        z = (self._to_axis(value) - centre) / std
        return -0.5 * z * z - _LOG_SQRT_2PI - math.log(std) - log_mass

    def log_uniform(self, value: Any) -> float:
        """Uniform density on the same axis as ``log_prior`` (a point mass when lower == upper)."""
        lo, hi = self._axis_bounds
        return 0.0 if hi == lo else -math.log(hi - lo)

    def mutate(self, value: Any, rng: np.random.Generator) -> float:
        return self._clip(self._from_unit(self._mutated_unit(value, rng)))

    def _clip(self, value: float) -> float:
        return min(self.upper, max(self.lower, float(value)))

    def describe(self) -> dict[str, Any]:
        return {"type": "float", "name": self.name, "lower": self.lower, "upper": self.upper,
                "default": self.default, "log": self.log, "confidence": self.confidence}


def _bucket_pmf(centres_on_axis: np.ndarray, edges_low: np.ndarray, edges_high: np.ndarray,
                centre: float, std: float) -> np.ndarray:
    """Mass of unit-wide buckets under a normal, renormalised (the buckets truncate it)."""
    if std == 0.0:
        return (centres_on_axis == centre).astype(float)
    mass = special.ndtr((edges_high - centre) / std) - special.ndtr((edges_low - centre) / std)
    return mass / mass.sum()


def _draw_index(pmf: np.ndarray, rng: np.random.Generator) -> int:
    index = int(np.searchsorted(np.cumsum(pmf), rng.random() * pmf.sum(), side="right"))
    return min(index, len(pmf) - 1)


@dataclass(frozen=True)
class Int(_Numeric):
    """An integer parameter on ``[lower, upper]``; the prior gives each integer its bucket's mass."""

    name: str
    lower: int
    upper: int
    default: int
    log: bool = False
    confidence: Confidence = "medium"
    condition: Condition | None = None

    def __post_init__(self) -> None:
        self._check_bounds()
        if int(self.lower) != self.lower or int(self.upper) != self.upper:
            raise SearchSpaceError(f"parameter {self.name!r}: integer bounds expected, got "
                                   f"[{self.lower}, {self.upper}]")
        if self.log and self.lower < 1:
            raise SearchSpaceError(f"parameter {self.name!r}: a log integer needs lower >= 1")
        self.check(self.default)

    def check(self, value: Any) -> int:
        if not _is_number(value) or not math.isfinite(float(value)) or int(value) != value:
            raise SearchSpaceError(f"parameter {self.name!r}: value {value!r} is not an integer")
        if not self.lower <= int(value) <= self.upper:
            raise SearchSpaceError(f"parameter {self.name!r}: value {value!r} is outside "
                                   f"[{self.lower}, {self.upper}]")
        return int(value)

    @functools.cached_property
    def _pmf(self) -> np.ndarray:
        values = np.arange(self.lower, self.upper + 1, dtype=float)
        axis = np.log if self.log else (lambda v: v)
        return _bucket_pmf(axis(values), axis(values - 0.5), axis(values + 0.5),
                           self._to_axis(self.default), self._prior_std)

    def sample_uniform(self, rng: np.random.Generator) -> int:
        return int(rng.integers(self.lower, self.upper + 1))

    def sample_prior(self, rng: np.random.Generator) -> int:
        return int(self.lower + _draw_index(self._pmf, rng))

    def log_prior(self, value: Any) -> float:
        mass = float(self._pmf[int(value) - self.lower])
        return math.log(mass) if mass > 0 else -math.inf

    def log_uniform(self, value: Any) -> float:
        return -math.log(self.upper - self.lower + 1)

    def mutate(self, value: Any, rng: np.random.Generator) -> int:
        return int(min(self.upper, max(self.lower, round(self._from_unit(
            self._mutated_unit(value, rng))))))

    def describe(self) -> dict[str, Any]:
        return {"type": "int", "name": self.name, "lower": self.lower, "upper": self.upper,
                "default": self.default, "log": self.log, "confidence": self.confidence}


def _check_choices(name: str, choices: tuple[Any, ...], default: Any, kind: str) -> None:
    if len(choices) == 0:
        raise SearchSpaceError(f"parameter {name!r}: a {kind} needs at least one choice")
    if len(set(map(repr, choices))) != len(choices):
        raise SearchSpaceError(f"parameter {name!r}: {kind} choices {list(choices)} repeat a value")
    if default not in choices:
        raise SearchSpaceError(f"parameter {name!r}: default {default!r} is not one of "
                               f"{list(choices)}")


@dataclass(frozen=True)
class Categorical:
    """An unordered choice; the prior weighs the default 2/4/6 against 1 for the others."""

    name: str
    choices: tuple[Any, ...]
    default: Any
    confidence: Confidence = "medium"
    condition: Condition | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "choices", tuple(self.choices))
        _check_choices(self.name, self.choices, self.default, "categorical")
        _check_confidence(self.name, self.confidence)

    def check(self, value: Any) -> Any:
        if value not in self.choices:
            raise SearchSpaceError(f"parameter {self.name!r}: value {value!r} is not one of "
                                   f"{list(self.choices)}")
        return value

    @functools.cached_property
    def _pmf(self) -> np.ndarray:
        weights = np.array([CATEGORICAL_CENTRE_WEIGHT[self.confidence] if c == self.default
                            else 1.0 for c in self.choices])
        return weights / weights.sum()

    def sample_uniform(self, rng: np.random.Generator) -> Any:
        return self.choices[int(rng.integers(len(self.choices)))]

    def sample_prior(self, rng: np.random.Generator) -> Any:
        return self.choices[_draw_index(self._pmf, rng)]

    def log_prior(self, value: Any) -> float:
        return math.log(float(self._pmf[self.choices.index(value)]))

    def log_uniform(self, value: Any) -> float:
        return -math.log(len(self.choices))

    def mutate(self, value: Any, rng: np.random.Generator) -> Any:
        others = [c for c in self.choices if c != value]
        return others[int(rng.integers(len(others)))] if others else value

    def describe(self) -> dict[str, Any]:
        return {"type": "categorical", "name": self.name, "choices": list(self.choices),
                "default": self.default, "confidence": self.confidence}


@dataclass(frozen=True)
class Ordinal:
    """An ordered choice; prior and mutation act on the index like an integer parameter."""

    name: str
    values: tuple[Any, ...]
    default: Any
    confidence: Confidence = "medium"
    condition: Condition | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(self.values))
        _check_choices(self.name, self.values, self.default, "ordinal")
        _check_confidence(self.name, self.confidence)

    @functools.cached_property
    def _index(self) -> Int:
        return Int(self.name, 0, len(self.values) - 1, self.values.index(self.default),
                   confidence=self.confidence)

    def check(self, value: Any) -> Any:
        if value not in self.values:
            raise SearchSpaceError(f"parameter {self.name!r}: value {value!r} is not one of "
                                   f"{list(self.values)}")
        return value

    def sample_uniform(self, rng: np.random.Generator) -> Any:
        return self.values[self._index.sample_uniform(rng)]

    def sample_prior(self, rng: np.random.Generator) -> Any:
        return self.values[self._index.sample_prior(rng)]

    def log_prior(self, value: Any) -> float:
        return self._index.log_prior(self.values.index(value))

    def log_uniform(self, value: Any) -> float:
        return -math.log(len(self.values))

    def mutate(self, value: Any, rng: np.random.Generator) -> Any:
        return self.values[self._index.mutate(self.values.index(value), rng)]

    def describe(self) -> dict[str, Any]:
        return {"type": "ordinal", "name": self.name, "values": list(self.values),
                "default": self.default, "confidence": self.confidence}


@dataclass(frozen=True)
class Architecture:
    """The grammar parameter: values are architecture strings of ``distribution``.

    ``center`` is None for the distribution's own prior and an architecture string for the
    incumbent-centred one (see ``SearchSpace.centered_on``).
    """

    distribution: ArchitectureDistribution
    name: str = "architecture"
    center: str | None = None
    condition: None = None
    _log_prob_cache: dict = field(default_factory=dict, compare=False, repr=False)
    _uniform_log_prob_cache: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        missing = [m for m in ("default", "identity", "sample", "mutate", "crossover", "log_prob",
                               "validate") if not hasattr(self.distribution, m)]
        if missing:
            raise SearchSpaceError(f"parameter {self.name!r}: {type(self.distribution).__name__} "
                                   f"is not an ArchitectureDistribution (lacks {missing})")

    @property
    def default(self) -> str:
        return self.center if self.center is not None else self.distribution.default

    def check(self, value: Any) -> str:
        if not isinstance(value, str):
            raise SearchSpaceError(f"parameter {self.name!r}: value {value!r} is not an "
                                   "architecture string")
        self.distribution.validate(value)
        return value

    def sample_uniform(self, rng: np.random.Generator) -> str:
        return self.distribution.sample(rng, uniform=True)

    def sample_prior(self, rng: np.random.Generator) -> str:
        return self.distribution.sample(rng, centered_on=self.center)

    def log_prior(self, value: Any) -> float:
        if value not in self._log_prob_cache:
            if len(self._log_prob_cache) > 4096:
                self._log_prob_cache.clear()
            self._log_prob_cache[value] = float(self.distribution.log_prob(
                value, centered_on=self.center))
        return self._log_prob_cache[value]

    def log_uniform(self, value: Any) -> float:
        """Log probability of the derivation under the uniform distribution over derivations."""
        if value not in self._uniform_log_prob_cache:
            if len(self._uniform_log_prob_cache) > 4096:
                self._uniform_log_prob_cache.clear()
            self._uniform_log_prob_cache[value] = float(self.distribution.log_prob(
                value, uniform=True))
        return self._uniform_log_prob_cache[value]

    def mutate(self, value: Any, rng: np.random.Generator) -> str:
        return self.distribution.mutate(value, rng)

    def describe(self) -> dict[str, Any]:
        return {"type": "architecture", "name": self.name,
                "identity": self.distribution.identity, "default": self.distribution.default}


Parameter = Union[Float, Int, Categorical, Ordinal, Architecture]


class SearchSpace:
    """An ordered set of parameters; conditions may only refer to earlier parameters."""

    def __init__(self, parameters: Sequence[Parameter]):
        self.parameters: tuple[Parameter, ...] = tuple(parameters)
        self._by_name: dict[str, Parameter] = {}
        for parameter in self.parameters:
            self._add(parameter)

    def _add(self, parameter: Parameter) -> None:
        if parameter.name in self._by_name:
            raise SearchSpaceError(f"parameter {parameter.name!r} is defined twice")
        condition = parameter.condition
        if condition is not None:
            parent = self._by_name.get(condition.parent)
            if parent is None:
                raise SearchSpaceError(f"parameter {parameter.name!r}: its condition refers to "
                                       f"{condition.parent!r}, which is not an earlier parameter")
            for value in condition.values:
                parent.check(value)
        existing = [p.name for p in self._by_name.values() if isinstance(p, Architecture)]
        if isinstance(parameter, Architecture) and existing:
            raise SearchSpaceError(f"parameter {parameter.name!r}: a space holds at most one "
                                   f"architecture parameter ({existing[0]!r} exists)")
        self._by_name[parameter.name] = parameter

    # -- container protocol -------------------------------------------------------------------
    def __iter__(self) -> Iterator[Parameter]:
        return iter(self.parameters)

    def __len__(self) -> int:
        return len(self.parameters)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __getitem__(self, name: str) -> Parameter:
        try:
            return self._by_name[name]
        except KeyError:
            raise SearchSpaceError(f"no parameter named {name!r}; the space has "
                                   f"{list(self._by_name)}") from None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    @property
    def architecture(self) -> Architecture | None:
        return next((p for p in self.parameters if isinstance(p, Architecture)), None)

    def __repr__(self) -> str:
        return f"SearchSpace({[p.name for p in self.parameters]})"

    # -- configurations -----------------------------------------------------------------------
    def _build(self, value_for) -> dict[str, Any]:
        config: dict[str, Any] = {}
        for parameter in self.parameters:
            if parameter.condition is None or parameter.condition.holds(config):
                config[parameter.name] = value_for(parameter, config)
        return config

    def default_config(self) -> dict[str, Any]:
        """The prior's mode: every active parameter at its default (or re-centred value)."""
        return self._build(lambda p, _: p.default)

    def sample_uniform(self, rng: np.random.Generator) -> dict[str, Any]:
        return self._build(lambda p, _: p.sample_uniform(rng))

    def sample_prior(self, rng: np.random.Generator) -> dict[str, Any]:
        return self._build(lambda p, _: p.sample_prior(rng))

    def prior_log_pdf(self, config: Mapping[str, Any]) -> float:
        """Log density of ``config`` under the prior (sum over its active parameters)."""
        return sum(p.log_prior(config[p.name]) for p in self.parameters if p.name in config)

    def uniform_log_pdf(self, config: Mapping[str, Any]) -> float:
        """Log density of ``config`` under ``sample_uniform``, in the units of ``prior_log_pdf``."""
        return sum(p.log_uniform(config[p.name]) for p in self.parameters if p.name in config)

    def centered_on(self, config: Mapping[str, Any]) -> "SearchSpace":
        """The same prior family with each parameter's mode moved to ``config``'s value."""
        moved = []
        for parameter in self.parameters:
            if parameter.name not in config:
                moved.append(parameter)
            elif isinstance(parameter, Architecture):
                moved.append(replace(parameter, center=config[parameter.name],
                                     _log_prob_cache={}))
            else:
                moved.append(replace(parameter, default=config[parameter.name]))
        return SearchSpace(moved)

    def mutate(self, config: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        """A local neighbour of ``config`` (docs/references.md, "PriorBand"), never ``config`` itself.

        Each active parameter mutates with probability 0.5; a parameter that a mutated parent
        switches on is drawn from the prior. Redrawn until the child differs from ``config``.
        """
        parent = dict(config)

        def value_for(parameter: Parameter, _: dict) -> Any:
            if parameter.name not in parent:
                return parameter.sample_prior(rng)
            if rng.random() < MUTATION_PROBABILITY:
                return parameter.mutate(parent[parameter.name], rng)
            return parent[parameter.name]

        for _ in range(MAX_MUTATION_ATTEMPTS):
            child = self._build(value_for)
            if child != parent:
                return child
        raise SearchSpaceError(f"could not mutate {parent} into a different configuration in "
                               f"{MAX_MUTATION_ATTEMPTS} attempts; does the space hold a single one?")

    def validate(self, config: Mapping[str, Any]) -> None:
        """Raise SearchSpaceError naming the parameter and value when ``config`` is not valid."""
        if not isinstance(config, Mapping):
            raise SearchSpaceError(f"a configuration must be a mapping, got {config!r}")
        unknown = [name for name in config if name not in self._by_name]
        if unknown:
            raise SearchSpaceError(f"unknown parameter(s) {unknown}; the space has "
                                   f"{list(self._by_name)}")
        for parameter in self.parameters:
            active = parameter.condition is None or parameter.condition.holds(config)
            if active and parameter.name not in config:
                raise SearchSpaceError(f"parameter {parameter.name!r} is missing from the "
                                       "configuration")
            if not active and parameter.name in config:
                cond = parameter.condition
                raise SearchSpaceError(
                    f"parameter {parameter.name!r} (value {config[parameter.name]!r}) is only "
                    f"used when {cond.parent} is one of {list(cond.values)}, but {cond.parent} is "
                    f"{config.get(cond.parent)!r}")
            if active:
                parameter.check(config[parameter.name])

    # -- description, hashing -----------------------------------------------------------------
    def describe(self) -> list[dict[str, Any]]:
        """A JSON-able description; ``from_description`` rebuilds the space from it."""
        described = []
        for parameter in self.parameters:
            entry = parameter.describe()
            if parameter.condition is not None:
                entry["condition"] = parameter.condition.describe()
            described.append(entry)
        return described

    @classmethod
    def from_description(cls, description: Sequence[Mapping[str, Any]], *,
                         architecture: ArchitectureDistribution | None = None) -> "SearchSpace":
        return cls([_parameter_from_description(entry, architecture) for entry in description])

    @property
    def hash(self) -> str:
        """sha256 of the canonical description; equal spaces (incl. grammar identity) match."""
        text = json.dumps(self.describe(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def _parameter_from_description(entry: Mapping[str, Any],
                                 architecture: ArchitectureDistribution | None) -> Parameter:
    kind = entry.get("type")
    condition = None
    if "condition" in entry:
        condition = Condition(entry["condition"]["parent"], tuple(entry["condition"]["values"]))
    common = {"name": entry["name"], "condition": condition}
    if kind in ("float", "int"):
        cls = Float if kind == "float" else Int
        return cls(lower=entry["lower"], upper=entry["upper"], default=entry["default"],
                   log=entry["log"], confidence=entry["confidence"], **common)
    if kind == "categorical":
        return Categorical(choices=tuple(entry["choices"]), default=entry["default"],
                           confidence=entry["confidence"], **common)
    if kind == "ordinal":
        return Ordinal(values=tuple(entry["values"]), default=entry["default"],
                       confidence=entry["confidence"], **common)
    if kind == "architecture":
        if architecture is None:
            raise SearchSpaceError(f"parameter {entry['name']!r} needs an architecture "
                                   "distribution (grammar + prior) to be rebuilt")
        if architecture.identity != entry["identity"]:
            raise SearchSpaceError(f"parameter {entry['name']!r}: the grammar/prior identity "
                                   f"{architecture.identity!r} differs from the described "
                                   f"{entry['identity']!r}")
        return Architecture(architecture, name=entry["name"])
    raise SearchSpaceError(f"parameter {entry.get('name')!r}: unknown type {kind!r}")


def values_within(space: SearchSpace, values: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """``values`` (another space's configuration) made valid for ``space``'s hyperparameters, with notes.

    Numbers are clipped to their range (integers rounded first); a categorical or ordinal value the
    space does not offer becomes its default (a numeric ordinal takes the nearest value); a value of
    the wrong kind becomes the default. Names ``space`` lacks and its architecture parameter are left
    out. Each note names a value that was moved, so a caller can say so.
    """
    moved: dict[str, Any] = {}
    notes: list[str] = []
    for parameter in space.parameters:
        if parameter.name not in values or isinstance(parameter, Architecture):
            continue
        value = values[parameter.name]
        within = _value_within(parameter, value)
        if within != value:
            notes.append(f"{parameter.name}: {value!r} {_why_moved(parameter, value)}, took {within!r}")
        moved[parameter.name] = within
    return moved, tuple(notes)


def _value_within(parameter: Parameter, value: Any) -> Any:
    if isinstance(parameter, (Float, Int)):
        if not _is_number(value) or not math.isfinite(float(value)):
            return parameter.default
        number = float(value) if isinstance(parameter, Float) else int(round(float(value)))
        return min(parameter.upper, max(parameter.lower, number))
    offered = parameter.choices if isinstance(parameter, Categorical) else parameter.values
    if any(value == choice and type(value) is type(choice) for choice in offered):
        return value
    if isinstance(parameter, Ordinal) and _is_number(value) and all(_is_number(v) for v in offered):
        return min(offered, key=lambda v: (abs(v - value), v))
    return parameter.default


def _why_moved(parameter: Parameter, value: Any) -> str:
    if isinstance(parameter, (Float, Int)):
        if not _is_number(value):
            return "is not a number"
        return f"is outside [{parameter.lower:g}, {parameter.upper:g}]" if not (
            parameter.lower <= float(value) <= parameter.upper) else "is not an integer"
    offered = parameter.choices if isinstance(parameter, Categorical) else parameter.values
    return f"is not one of {list(offered)}"
