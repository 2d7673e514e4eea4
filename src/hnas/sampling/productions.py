"""Production distributions: a grammar with an arbitrary probability vector per rule (a PCFG).

Unlike :class:`~hnas.sampling.prior.Prior` (centred on one alternative per choice) the vectors
are free, e.g. production frequencies fitted from derivations with add-one smoothing. BOHB's
density model fits one to the good and one to the bad architectures of a rung (through
:meth:`GrammarArchitecture.fit_density <hnas.sampling.architecture.GrammarArchitecture.fit_density>`)
and proposes sentences derived top-down from the good one.

Derivations and their choices come from :class:`~hnas.sampling.structure.GrammarStructure`.
Sampling draws one uniform per choice it makes, as it makes it (not ``max_draws`` up front as
the samplers do): a seeded model-based run consumes its generator exactly as it always has, so
its proposals stay reproducible across versions.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np

from hnas.errors import SamplingError
from hnas.grammar.parsing import parse, unparse
from hnas.sampling.prior import cumulative_edges, rule_vector
from hnas.sampling.structure import GrammarStructure, structure_of

#: Add-one (Laplace) smoothing of fitted production frequencies.
SMOOTHING = 1.0
#: Architectures whose choices are remembered per grammar (parsing is the slow part of scoring).
PRODUCTIONS_MEMO_SIZE = 4096

#: (rule, alternative index) of each real choice (> 1 alternative) of one derivation, in preorder.
Productions = tuple[tuple[str, int], ...]


class _ProductionsMemo:
    """The productions of recently seen architectures of one grammar, shared by all its distributions.

    A model scores the same candidates under its good and its bad distribution, and sampled
    candidates are scored right after they are drawn: remembering spares parsing them again.
    """

    def __init__(self, grammar: str):
        self.grammar = grammar
        self.structure = structure_of(grammar)
        self._productions: OrderedDict[str, Productions] = OrderedDict()

    def of(self, architecture: str) -> Productions:
        """Productions of ``architecture``'s derivation (InvalidArchitecture if it has none)."""
        cached = self._productions.get(architecture)
        if cached is None:
            tree = parse(self.grammar, architecture)
            cached = self.remember(architecture, tuple(self.structure.choices_made(tree)))
        return cached

    def remember(self, architecture: str, productions: Productions) -> Productions:
        self._productions[architecture] = productions
        if len(self._productions) > PRODUCTIONS_MEMO_SIZE:
            self._productions.popitem(last=False)
        return productions


@lru_cache(maxsize=16)
def _memo(grammar: str) -> _ProductionsMemo:
    return _ProductionsMemo(grammar)


class _GeneratorDraws:
    """``draws`` for :meth:`GrammarStructure.build_tree` that asks the generator as it goes.

    build_tree reads each position once, in increasing order, so every read is the next uniform
    and a derivation consumes exactly one ``rng.random()`` per choice it makes.
    """

    def __init__(self, rng: np.random.Generator):
        self._rng = rng

    def __getitem__(self, position: int) -> float:
        return self._rng.random()


class ProductionDistribution:
    """A probabilistic grammar: one probability vector per rule over its alternatives.

    Rules not given are uniform. Sentences are derived top-down, so every sample is in the
    grammar. Build a fitted one with :meth:`fitted`.
    """

    def __init__(self, grammar: str, probabilities: Mapping[str, Sequence[float]] | None = None):
        self.grammar = grammar
        self.structure: GrammarStructure = structure_of(grammar)
        self._memo = _memo(grammar)
        given = probabilities or {}
        sizes = {rule: choice.size for rule, choice in self.structure.choices.items()}
        self._probabilities: dict[str, np.ndarray] = {
            rule: np.full(size, 1.0 / size) if given.get(rule) is None else _checked(rule, given[rule], size)
            for rule, size in sizes.items()}
        unknown = sorted(set(given) - set(sizes))
        if unknown:
            raise SamplingError(f"production probabilities name {unknown}, which are not rules of the grammar; "
                                f"expected some of {sorted(sizes)}")
        with np.errstate(divide="ignore"):  # a zero probability is a log of -inf, as it should
            self._log = {rule: np.log(vector) for rule, vector in self._probabilities.items()}
        self._edges = {rule: cumulative_edges(vector) for rule, vector in self._probabilities.items()}

    @classmethod
    def fitted(cls, grammar: str, architectures: Sequence[str], smoothing: float = SMOOTHING
               ) -> "ProductionDistribution":
        """Production frequencies among ``architectures`` plus ``smoothing`` per alternative."""
        memo = _memo(grammar)
        counts = {rule: np.full(choice.size, float(smoothing)) for rule, choice in memo.structure.choices.items()}
        for architecture in architectures:
            for rule, alternative in memo.of(architecture):
                counts[rule][alternative] += 1.0
        return cls(grammar, {rule: c for rule, c in counts.items() if c.sum() > 0})

    def probabilities(self, rule: str) -> np.ndarray:
        """Probability vector over ``rule``'s alternatives (grammar order)."""
        return rule_vector(self._probabilities, rule)

    def productions(self, architecture: str) -> Productions:
        """(rule, alternative) of every real choice ``architecture``'s derivation makes."""
        return self._memo.of(architecture)

    def log_prob(self, architecture: str) -> float:
        """Log probability of ``architecture``'s derivation (InvalidArchitecture if none)."""
        return self.log_prob_of(self._memo.of(architecture))

    def log_prob_of(self, productions: Sequence[tuple[str, int]]) -> float:
        """Log probability of a derivation given by its productions (as :meth:`productions` lists them)."""
        log = self._log
        return math.fsum(log[rule][alternative] for rule, alternative in productions)

    def sample(self, rng: np.random.Generator) -> str:
        return self.sample_with_productions(rng)[0]

    def sample_with_productions(self, rng: np.random.Generator) -> tuple[str, Productions]:
        """A sentence derived top-down and the productions its derivation chose."""
        structure = self.structure
        tree, _ = structure.build_tree(structure.start, self._edges, _GeneratorDraws(rng))
        sentence = unparse(tree)
        return sentence, self._memo.remember(sentence, tuple(structure.choices_made(tree)))


def _checked(rule: str, vector: Sequence[float], size: int) -> np.ndarray:
    """``vector`` normalised, once it is ``size`` finite non-negative numbers with a positive sum."""
    values = np.asarray(vector, dtype=float)
    if values.shape != (size,) or not np.all(np.isfinite(values)) or np.any(values < 0) or values.sum() <= 0:
        raise SamplingError(f"rule {rule!r} needs {size} non-negative probabilities with a positive sum, "
                            f"got {list(np.atleast_1d(values))}")
    return values / values.sum()
