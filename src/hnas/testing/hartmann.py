"""Multi-fidelity Hartmann-3 / Hartmann-6: the synthetic suite PriorBand was benchmarked on.

Restated from mf-prior-bench (github.com/automl/mf-prior-bench,
``src/mfpbench/synthetic/hartmann/generators.py`` ``MFHartmann3``/``MFHartmann6`` and
``benchmark.py`` ``MFHartmannBenchmark``) so the benchmark needs no package that pins numpy < 2.

With ``s = log(z / z_min) / log(z_max / z_min)`` (0 at the lowest fidelity, 1 at the highest)::

    value(x, z) = -sum_i (alpha_i - bias * (1 - s)) * exp(-sum_j A_ij (x_j - P_ij)^2)
                  + noise * (1 - s) * |N(0, 1)|
    cost(z)     = 0.05 + 0.95 * (z / z_max)^2

The bias flattens the function at low fidelity and the half-normal noise shrinks linearly in
``s``; both vanish at ``z_max``, where ``value`` is the ordinary Hartmann function. Both terms
only ever *raise* the value, so a low-fidelity observation never looks better than the truth.
The noise draw is a pure function of ``(seed, z, x)``: asking twice gives the same answer, as
in mf-prior-bench (which seeds with ``seed * z * hash(x)``; we seed a ``SeedSequence`` with the
bit patterns instead, so the stream differs but the law is the same).

Priors (the default configuration a prior-based optimizer starts from), one rule for both
functions so that "medium" means the same thing in 3-D and 6-D:

* ``good``: the optimum nudged by about 0.01 per coordinate (regret ~0.014).
* ``medium``: the optimum shifted by +0.0215 in every coordinate (regret 0.059 in 3-D, 0.064
  in 6-D). This is mf-prior-bench's medium prior to 4 decimals: its
  ``src/priors/mfh3_good-medium.yaml`` is (0.13609, 0.57713, 0.87402), the Hartmann-3 optimum
  + 0.02147, and ``mfh6_good-medium.yaml`` shifts the Hartmann-6 optimum the same way.
* ``bad``: a far corner. Hartmann-3's is mf-prior-bench's ``src/priors/mfh3_good-bad.yaml``
  (0.94811, 0.99283, 0.01720) to 3 decimals (regret 3.86); Hartmann-6's is the
  ``priors/mfh6_good-bad.yaml`` of mf-prior-bench as of January 2023 (commit 06eb22d, regret
  3.31; later versions moved it to another corner).

Families of related tasks, for transfer between searches (``MFHartmann.related``): a task
evaluates the source function at ``m(x) - shift``, where ``m`` is the identity or the mirror
``x -> 1 - x``. ``near`` and ``far`` shift every coordinate of the optimum by 0.05 / 0.15 (a
fifth / three fifths of a medium prior's std) towards the cube's centre, the only direction
that keeps both optima inside; the landscape moves, its shape and optimum value stay. The
source's optimum then has regret 0.32 / 2.17 on Hartmann-3's ``near`` / ``far`` task (0.34 /
2.05 in 6-D): its peaks are narrow. ``unrelated`` mirrors every coordinate, so its optimum
lies 1.05 (3-D) / 1.14 (6-D) from the source's and what a search learnt on the source points
the wrong way. Every task keeps the source's optimum value, bias, noise and seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from hnas.errors import SearchSpaceError

FIDELITY_MIN = 1
FIDELITY_MAX = 100

#: (bias, noise) of mf-prior-bench's variants; ``default`` is the plain ``mfh3``/``mfh6``.
BIAS_NOISE: dict[str, tuple[float, float]] = {
    "default": (0.5, 0.1),
    "good": (2.5, 2.0),
    "moderate": (3.0, 3.0),
    "bad": (3.5, 4.0),
    "terrible": (4.0, 5.0),
}

_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])

_A3 = np.array([[3.0, 10.0, 30.0], [0.1, 10.0, 35.0], [3.0, 10.0, 30.0], [0.1, 10.0, 35.0]])
_P3 = 1e-4 * np.array([[3689, 1170, 2673], [4699, 4387, 7470],
                       [1091, 8732, 5547], [381, 5743, 8828]], dtype=float)

_A6 = np.array([[10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
                [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
                [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
                [17.0, 8.0, 0.05, 10.0, 0.1, 14.0]])
_P6 = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886],
                       [2329, 4135, 8307, 3736, 1004, 9991],
                       [2348, 1451, 3522, 2883, 3047, 6650],
                       [4047, 8828, 8732, 5743, 1091, 381]], dtype=float)

_OPTIMUM_X = {
    3: (0.114614, 0.555649, 0.852547),
    6: (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573),
}
_OPTIMUM_VALUE = {3: -3.86278, 6: -3.32237}

# good = optimum + a fixed offset of about 0.01 per coordinate ("near the optimum", not on it).
_PRIORS: dict[int, dict[str, tuple[float, ...]]] = {
    3: {
        "good": (0.1246, 0.5456, 0.8625),
        "medium": (0.1361, 0.5771, 0.8740),
        "bad": (0.948, 0.993, 0.017),
    },
    6: {
        "good": (0.2117, 0.1400, 0.4869, 0.2653, 0.3216, 0.6473),
        "medium": (0.2232, 0.1715, 0.4984, 0.2968, 0.3332, 0.6788),
        "bad": (0.5754493751896697, 0.2030994787482454, 0.9165857231092207,
                0.892483485150527, 0.017974851929293933, 0.20838768358601334),
    },
}
PRIOR_QUALITIES: tuple[str, ...] = ("good", "medium", "bad")
FUNCTION_DIMS: dict[str, int] = {"hartmann3": 3, "hartmann6": 6}
#: A task family: the source itself, its optimum shifted a little / a lot, a mirrored task.
RELATIONS: tuple[str, ...] = ("same", "near", "far", "unrelated")
#: How far ``near`` / ``far`` move each coordinate of the optimum (towards the cube's centre).
RELATION_SHIFT: dict[str, float] = {"near": 0.05, "far": 0.15}


def fidelity_cost(z: float, z_max: float = FIDELITY_MAX) -> float:
    """Cost of one evaluation at fidelity ``z``: 1.0 at ``z_max`` (Kandasamy et al. 2017, p. 18)."""
    return 0.05 + 0.95 * (float(z) / z_max) ** 2


def hartmann(x: Sequence[float]) -> float:
    """The ordinary (noise-free, full-fidelity) Hartmann function of ``len(x)`` = 3 or 6."""
    point = _as_point(x, len(x))
    a, p = _matrices(point.size)
    return float(-np.sum(_ALPHA * _bumps(point, a, p)))


@dataclass(frozen=True)
class MFHartmann:
    """One multi-fidelity Hartmann instance; configs are dicts ``{"x0": .., "x1": .., ...}``."""

    dims: int
    bias: float = 0.5
    noise: float = 0.1
    seed: int = 1337
    z_min: float = FIDELITY_MIN
    z_max: float = FIDELITY_MAX
    #: the task evaluates the source function at ``m(x) - shift`` (empty: no shift) ...
    shift: tuple[float, ...] = ()
    #: ... where ``m`` mirrors every coordinate (``1 - x``) when True
    mirrored: bool = False

    def __post_init__(self) -> None:
        if self.dims not in _OPTIMUM_X:
            raise SearchSpaceError(f"Hartmann dims={self.dims!r} is not supported; expected 3 or 6")
        object.__setattr__(self, "shift", tuple(float(v) for v in self.shift))
        if self.shift and (len(self.shift) != self.dims or not np.all(np.isfinite(self.shift))):
            raise SearchSpaceError(f"shift={list(self.shift)} must be {self.dims} finite numbers "
                                   "(or empty)")
        if not np.all((self._task_point(_OPTIMUM_X[self.dims]) >= 0)
                      & (self._task_point(_OPTIMUM_X[self.dims]) <= 1)):
            raise SearchSpaceError(f"shift={list(self.shift)} moves the optimum out of "
                                   f"[0, 1]^{self.dims}; expected a smaller shift")
        if not 0 < self.z_min < self.z_max:
            raise SearchSpaceError(
                f"fidelity bounds ({self.z_min}, {self.z_max}) are invalid; expected 0 < min < max")
        if self.bias < 0 or self.noise < 0:
            raise SearchSpaceError(
                f"bias={self.bias} and noise={self.noise} must both be >= 0")

    @classmethod
    def named(cls, name: str, variant: str = "default", seed: int = 1337) -> MFHartmann:
        """``named("hartmann3", "bad")``: mf-prior-bench's ``mfh3_bad`` (bias 3.5, noise 4)."""
        if name not in FUNCTION_DIMS:
            raise SearchSpaceError(f"unknown function {name!r}; expected one of {sorted(FUNCTION_DIMS)}")
        if variant not in BIAS_NOISE:
            raise SearchSpaceError(f"unknown variant {variant!r}; expected one of {sorted(BIAS_NOISE)}")
        bias, noise = BIAS_NOISE[variant]
        return cls(dims=FUNCTION_DIMS[name], bias=bias, noise=noise, seed=seed)

    def related(self, relation: str) -> MFHartmann:
        """The task of this family related to the source as ``relation`` says (``RELATIONS``).

        The family is the source function's (this one's dims, bias, noise and seed, without its
        own shift or mirror): ``same`` is the source, ``near`` / ``far`` move each coordinate of
        the optimum by ``RELATION_SHIFT`` towards 0.5, ``unrelated`` mirrors every coordinate.
        """
        if relation not in RELATIONS:
            raise SearchSpaceError(f"unknown relation {relation!r}; expected one of {RELATIONS}")
        source = replace(self, shift=(), mirrored=False)
        if relation in RELATION_SHIFT:
            towards_centre = np.sign(0.5 - np.asarray(_OPTIMUM_X[self.dims]))
            return replace(source, shift=tuple(RELATION_SHIFT[relation] * towards_centre))
        return replace(source, mirrored=relation == "unrelated")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f"x{i}" for i in range(self.dims))

    @property
    def optimum(self) -> dict[str, float]:
        return self.to_config(self._task_point(_OPTIMUM_X[self.dims]))

    @property
    def optimum_value(self) -> float:
        return _OPTIMUM_VALUE[self.dims]

    def prior(self, quality: str) -> dict[str, float]:
        """The ``good`` / ``medium`` / ``bad`` prior (default) configuration.

        A shifted or mirrored task moves it with its optimum (clipped into the cube)."""
        if quality not in PRIOR_QUALITIES:
            raise SearchSpaceError(f"unknown prior {quality!r}; expected one of {PRIOR_QUALITIES}")
        return self.to_config(np.clip(self._task_point(_PRIORS[self.dims][quality]), 0.0, 1.0))

    def to_config(self, x: Sequence[float]) -> dict[str, float]:
        point = _as_point(x, self.dims)
        return {name: float(v) for name, v in zip(self.names, point)}

    def to_point(self, config: Mapping[str, float]) -> np.ndarray:
        missing = [n for n in self.names if n not in config]
        if missing:
            raise SearchSpaceError(f"config {dict(config)!r} lacks {missing}; expected keys {self.names}")
        return _as_point([config[n] for n in self.names], self.dims)

    def true_value(self, config: Mapping[str, float]) -> float:
        """The noise-free value at the highest fidelity (what regret is measured on)."""
        a, p = _matrices(self.dims)
        return float(-np.sum(_ALPHA * _bumps(self._source_point(self.to_point(config)), a, p)))

    def regret(self, config: Mapping[str, float]) -> float:
        return self.true_value(config) - self.optimum_value

    def cost(self, z: float) -> float:
        return fidelity_cost(self._check_fidelity(z), self.z_max)

    def __call__(self, config: Mapping[str, float], z: float) -> float:
        """The observed (biased, noisy) value of ``config`` at fidelity ``z``."""
        point = self.to_point(config)
        z = self._check_fidelity(z)
        gap = 1.0 - np.log(z / self.z_min) / np.log(self.z_max / self.z_min)
        a, p = _matrices(self.dims)
        value = -np.sum((_ALPHA - self.bias * gap) * _bumps(self._source_point(point), a, p))
        return float(value + abs(self._noise_rng(point, z).normal()) * self.noise * gap)

    def _source_point(self, point: np.ndarray) -> np.ndarray:
        """Where the source function is evaluated for this task's ``point`` (may leave the cube)."""
        moved = 1.0 - point if self.mirrored else point
        return moved - np.asarray(self.shift) if self.shift else moved

    def _task_point(self, source_point: Sequence[float]) -> np.ndarray:
        """The inverse of ``_source_point``: where this task puts a point of the source."""
        moved = np.asarray(source_point, dtype=float)
        moved = moved + np.asarray(self.shift) if self.shift else moved
        return 1.0 - moved if self.mirrored else moved

    def _noise_rng(self, point: np.ndarray, z: float) -> np.random.Generator:
        bits = np.concatenate([[z], point]).astype(np.float64).view(np.uint64)
        return np.random.default_rng(np.random.SeedSequence([self.seed, *map(int, bits)]))

    def _check_fidelity(self, z: float) -> float:
        z = float(z)
        if not (np.isfinite(z) and self.z_min <= z <= self.z_max):
            raise SearchSpaceError(f"fidelity z={z!r} is outside [{self.z_min}, {self.z_max}]")
        return z


def _matrices(dims: int) -> tuple[np.ndarray, np.ndarray]:
    return (_A3, _P3) if dims == 3 else (_A6, _P6)


def _bumps(point: np.ndarray, a: np.ndarray, p: np.ndarray) -> np.ndarray:
    return np.exp(-np.sum(a * (point - p) ** 2, axis=1))


def _as_point(x: Sequence[float], dims: int) -> np.ndarray:
    point = np.asarray(x, dtype=float).reshape(-1)
    if point.size != dims or dims not in _OPTIMUM_X:
        raise SearchSpaceError(f"Hartmann point {list(point)!r} has {point.size} coordinates; "
                               f"expected {dims} (3 or 6)")
    if not (np.all(np.isfinite(point)) and np.all((point >= 0) & (point <= 1))):
        raise SearchSpaceError(f"Hartmann point {list(point)!r} must lie in [0, 1]^{dims}")
    return point
