"""A grammar plus its prior as the search engine's architecture parameter.

The search engine (``hnas.search.space.ArchitectureDistribution``) knows architectures only as
strings; this adapter parses, samples and varies them with the tree-level tools of this
package and hands strings back.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from lark import Tree

from hnas.errors import SamplingError
from hnas.grammar.parsing import parse, unparse
from hnas.sampling.prior import UNIFORM, Prior
from hnas.sampling.productions import ProductionDistribution
from hnas.sampling.samplers import PriorSampler, UniformSampler, crossover, mutate

#: Incumbent-centred priors kept per distribution (PriorBand asks for the same few repeatedly).
CENTRED_CACHE_SIZE = 256


class GrammarArchitecture:
    """Architecture strings of ``grammar``, distributed by ``prior``.

    ``prior`` is a :class:`Prior` of this grammar or a confidence (``"low"``, ``"medium"``,
    ``"high"``: centred on the grammar's defaults; ``"uniform"``: no prior).

    ``default`` is the prior's mode (nnU-Net's network for a prior from the grammar and for the
    uniform prior, whose ties go to the grammar's defaults);
    ``identity`` is the prior's sha256 over grammar text, confidence and centres, so a stored
    run can refuse to resume on a different distribution. Mutation resamples a subtree
    *uniformly* (local search should not be pulled back towards the prior's centre; for a
    single choice it means "another alternative", as for categorical hyperparameters).
    """

    def __init__(self, grammar: str, prior: Prior | str = "medium"):
        if isinstance(prior, str):
            prior = Prior.uniform(grammar) if prior == UNIFORM else Prior.from_grammar(grammar, prior)
        if not isinstance(prior, Prior):
            raise SamplingError(f"prior must be a Prior or a confidence name, got {type(prior).__name__} {prior!r}")
        if prior.grammar != grammar:
            raise SamplingError("the prior belongs to a different grammar (its grammar text differs)")
        self.grammar = grammar
        self.prior = prior
        self.identity: str = prior.identity
        self.default: str = unparse(prior.mode())
        self._prior_sampler = PriorSampler(prior)
        self._uniform = Prior.uniform(grammar)
        self._uniform_sampler = UniformSampler(grammar)
        self._centred_sampler = lru_cache(maxsize=CENTRED_CACHE_SIZE)(self._make_centred_sampler)

    def tree(self, architecture: str) -> Tree:
        """Derivation tree of ``architecture`` (InvalidArchitecture if it is not a sentence)."""
        return parse(self.grammar, architecture)

    def validate(self, architecture: str) -> None:
        self.tree(architecture)

    def sample(self, rng: np.random.Generator, *, uniform: bool = False, centered_on: str | None = None) -> str:
        """A sentence from the prior, the uniform distribution, or the prior re-centred on an incumbent."""
        if uniform and centered_on is not None:
            raise SamplingError(f"sample() got uniform=True and centered_on={centered_on!r}; pick one")
        if uniform:
            return self._uniform_sampler.sample_string(rng)
        return self._sampler(centered_on).sample_string(rng)

    def log_prob(self, architecture: str, *, uniform: bool = False, centered_on: str | None = None) -> float:
        """Log probability of ``architecture``'s derivation under the prior, the uniform
        distribution (``Prior.uniform``), or the prior re-centred on an incumbent."""
        if uniform and centered_on is not None:
            raise SamplingError(f"log_prob() got uniform=True and centered_on={centered_on!r}; pick one")
        if uniform:
            return self._uniform.log_prob(self.tree(architecture))
        return self._sampler(centered_on).log_prob(self.tree(architecture))

    def mutate(self, architecture: str, rng: np.random.Generator) -> str:
        """A sentence that differs from ``architecture`` in one resampled subtree."""
        return unparse(mutate(self.tree(architecture), rng, self._uniform))

    def crossover(self, a: str, b: str, rng: np.random.Generator) -> str:
        """``a`` with one subtree replaced by a same-head subtree of ``b``."""
        return unparse(crossover(self.tree(a), self.tree(b), rng))

    def fit_density(self, architectures: Sequence[str]) -> ProductionDistribution:
        """Add-one smoothed production frequencies of ``architectures`` (BOHB's density over them).

        This is the optional member of the engine's ``ArchitectureDistribution``: with it, the
        model scores and derives whole derivations instead of counting words per position.
        """
        return ProductionDistribution.fitted(self.grammar, architectures)

    def _sampler(self, centered_on: str | None) -> PriorSampler:
        if centered_on is None:
            return self._prior_sampler
        return self._centred_sampler(centered_on)

    def _make_centred_sampler(self, centre: str) -> PriorSampler:
        return PriorSampler(self.prior.centered_on(self.tree(centre)))

    def __reduce__(self):
        """Pickle as (grammar, prior) so a search space can travel to worker processes."""
        return (GrammarArchitecture, (self.grammar, self.prior))

    def __repr__(self) -> str:
        return f"GrammarArchitecture({self.prior!r}, default={self.default!r})"
