"""Property tests over 500 seeds for every stage count N in 2..8, paper and extended grammars."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hnas.grammar import parse, unparse
from hnas.sampling import Prior, PriorSampler, UniformSampler, crossover, mutate

from .helpers import OPTIONS, STAGE_COUNTS, grammar_for

SEEDS = range(500)


def _assert_is_parsed_derivation(grammar: str, tree) -> str:
    sentence = unparse(tree)
    parsed = parse(grammar, sentence)
    assert parsed == tree, sentence
    assert unparse(parsed) == sentence
    return sentence


@pytest.mark.parametrize("n", STAGE_COUNTS)
@pytest.mark.parametrize("options", OPTIONS)
def test_samples_mutations_and_crossovers_are_valid(n, options):
    grammar = grammar_for(n, options)
    prior = Prior.from_grammar(grammar, "medium")
    prior_sampler, uniform_sampler = PriorSampler(prior), UniformSampler(grammar)
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        tree = prior_sampler.sample(rng)
        sentence = _assert_is_parsed_derivation(grammar, tree)
        assert prior_sampler.sample_string(np.random.default_rng(seed)) == sentence
        other_sentence = uniform_sampler.sample_string(rng)
        other = parse(grammar, other_sentence)
        assert unparse(other) == other_sentence

        child = mutate(tree, rng, prior)
        assert child != tree
        _assert_is_parsed_derivation(grammar, child)

        offspring = crossover(tree, other, rng)
        _assert_is_parsed_derivation(grammar, offspring)
        if tree != other:
            assert offspring != tree

        assert math.isfinite(prior.log_prob(tree)) and math.isfinite(prior.log_prob(offspring))
