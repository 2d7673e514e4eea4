"""Priors over a grammar's productions, samplers, mutation, crossover, log-probabilities, and
production distributions fitted from derivations (BOHB's density over architectures).

No torch here. Everything takes an explicit ``numpy.random.Generator``; samples are
``lark.Tree`` derivations equal to what ``hnas.grammar.parse`` returns for their sentence,
or the sentence itself on the fast path (``sample_string``).
"""

from hnas.sampling.architecture import GrammarArchitecture
from hnas.sampling.prior import (
    Prior,
    categorical_probabilities,
    log_prob,
    ordinal_probabilities,
)
from hnas.sampling.productions import ProductionDistribution
from hnas.sampling.samplers import PriorSampler, Sampler, UniformSampler, crossover, mutate

__all__ = [
    "GrammarArchitecture", "Prior",
    "PriorSampler", "ProductionDistribution", "Sampler", "UniformSampler", "categorical_probabilities",
    "crossover", "log_prob", "mutate", "ordinal_probabilities",
]
