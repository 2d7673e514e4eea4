"""Priors over a grammar's productions, samplers, mutation, crossover and log-probabilities.

No torch here. Everything takes an explicit ``numpy.random.Generator``; samples are
``lark.Tree`` derivations equal to what ``hnas.grammar.parse`` returns for their sentence,
or the sentence itself on the fast path (``sample_string``).
"""

from hnas.sampling.architecture import GrammarArchitecture
from hnas.sampling.prior import (
    CATEGORICAL_CENTRE_WEIGHT,
    CONFIDENCES,
    ORDINAL_STD_FRACTION,
    Prior,
    categorical_probabilities,
    log_prob,
    ordinal_probabilities,
)
from hnas.sampling.samplers import PriorSampler, Sampler, UniformSampler, crossover, mutate

__all__ = [
    "CATEGORICAL_CENTRE_WEIGHT", "CONFIDENCES", "GrammarArchitecture", "ORDINAL_STD_FRACTION", "Prior",
    "PriorSampler", "Sampler", "UniformSampler", "categorical_probabilities", "crossover", "log_prob",
    "mutate", "ordinal_probabilities",
]
