"""The sampler contract (shared by every sampler), mutation and crossover."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from conftest import isotropic_plan
from hnas.errors import GrammarError, SamplingError
from hnas.grammar import default_architecture, parse, unparse
from hnas.sampling import Prior, PriorSampler, Sampler, UniformSampler, crossover, mutate
from hnas.sampling import samplers as samplers_module

from .helpers import TOY_INLINED, TOY_RECURSIVE, TOY_SINGLE_SENTENCE, grammar_for

GRAMMAR = grammar_for(6, "extended")
INCUMBENT = ("unet res_encoder batch_norm gelu dropout max_pool bottleneck_block se 2b down 6b down 1b down 7b "
             "res_decoder batch_norm elu dropout up 4b up 3b up 1b")


def _samplers() -> dict[str, Sampler]:
    prior = Prior.from_grammar(GRAMMAR, "medium")
    return {
        "uniform": UniformSampler(GRAMMAR),
        "prior-low": PriorSampler(Prior.from_grammar(GRAMMAR, "low")),
        "prior-medium": PriorSampler(prior),
        "prior-high": PriorSampler(Prior.from_grammar(GRAMMAR, "high")),
        "incumbent": PriorSampler(prior.centered_on(parse(GRAMMAR, INCUMBENT))),
    }


SAMPLERS = _samplers()


@pytest.fixture(params=list(SAMPLERS))
def sampler(request) -> Sampler:
    return SAMPLERS[request.param]


def test_follows_the_protocol(sampler):
    assert isinstance(sampler, Sampler)
    assert sampler.grammar == GRAMMAR


def test_samples_are_the_trees_parse_returns(sampler):
    rng = np.random.default_rng(1)
    for _ in range(50):
        tree = sampler.sample(rng)
        sentence = unparse(tree)
        assert tree == parse(GRAMMAR, sentence)
        assert unparse(parse(GRAMMAR, sentence)) == sentence


def test_string_and_tree_paths_draw_the_same_sentence(sampler):
    for seed in range(50):
        tree = sampler.sample(np.random.default_rng(seed))
        assert sampler.sample_string(np.random.default_rng(seed)) == unparse(tree)


def test_a_seed_determines_the_samples(sampler):
    first = [sampler.sample_string(np.random.default_rng(7)) for _ in range(3)]
    rng_a, rng_b = np.random.default_rng(11), np.random.default_rng(11)
    assert [unparse(sampler.sample(rng_a)) for _ in range(20)] == [unparse(sampler.sample(rng_b)) for _ in range(20)]
    assert len(set(first)) == 1
    assert len({sampler.sample_string(np.random.default_rng(s)) for s in range(20)}) > 1


def test_log_prob_is_finite_and_at_most_zero(sampler):
    rng = np.random.default_rng(3)
    for _ in range(20):
        value = sampler.log_prob(sampler.sample(rng))
        assert math.isfinite(value) and value <= 0.0


@pytest.mark.parametrize("bad", [0, None, np.random.RandomState(0)])
def test_needs_a_numpy_generator(sampler, bad):
    with pytest.raises(SamplingError, match="numpy.random.Generator"):
        sampler.sample_string(bad)


def _production_counts(sampler: Sampler, prior: Prior, n: int, seed: int) -> dict[str, Counter]:
    counts: dict[str, Counter] = {}
    rng = np.random.default_rng(seed)
    for _ in range(n):
        for rule, alternative, _path in prior.structure.productions(sampler.sample(rng)):
            counts.setdefault(rule, Counter())[alternative] += 1
    return counts


@pytest.mark.parametrize("name", ["prior-medium", "prior-high", "incumbent"])
def test_prior_sampling_frequencies_converge_to_the_prior(name):
    """Every production's frequency lies within 4.5 binomial standard deviations of its probability."""
    sampler = SAMPLERS[name]
    prior = sampler.prior
    counts = _production_counts(sampler, prior, 3000, seed=2024)
    for rule, counter in counts.items():
        used = sum(counter.values())
        p = prior.probabilities(rule)
        for alternative, probability in enumerate(p):
            frequency = counter[alternative] / used
            bound = 4.5 * math.sqrt(probability * (1 - probability) / used) + 1 / used
            assert abs(frequency - probability) <= bound, (rule, alternative, frequency, probability, used)


@pytest.mark.parametrize("n,options", [(6, "paper"), (8, "extended")])
def test_uniform_sampler_hits_every_alternative(n, options):
    grammar = grammar_for(n, options)
    prior = Prior.uniform(grammar)
    counts = _production_counts(UniformSampler(grammar), prior, 4000, seed=5)
    for rule, choice in prior.structure.choices.items():
        assert set(counts.get(rule, ())) == set(range(choice.size)), rule


def test_mutation_changes_exactly_one_subtree_and_keeps_the_parent():
    prior = Prior.from_grammar(GRAMMAR, "high")
    parent = parse(GRAMMAR, INCUMBENT)
    before = unparse(parent)
    rng = np.random.default_rng(0)
    children = {unparse(mutate(parent, rng, prior)) for _ in range(200)}
    assert before not in children and len(children) > 20
    assert unparse(parent) == before  # not modified in place
    for child in children:
        assert parse(GRAMMAR, child)


def test_mutation_resamples_from_the_given_distribution():
    """Mutating the default under a high prior mostly lands next to it; uniform resampling roams wider."""
    default = Prior.from_grammar(GRAMMAR, "high").mode()
    high, uniform = Prior.from_grammar(GRAMMAR, "high"), Prior.uniform(GRAMMAR)
    rng = np.random.default_rng(4)
    mean_high = np.mean([high.log_prob(mutate(default, rng, high)) for _ in range(300)])
    mean_uniform = np.mean([high.log_prob(mutate(default, rng, uniform)) for _ in range(300)])
    assert mean_high > mean_uniform


def test_mutation_falls_back_to_another_alternative(monkeypatch):
    monkeypatch.setattr(samplers_module, "MUTATION_ATTEMPTS", 0)
    prior = Prior.from_grammar(GRAMMAR, "high")
    parent = prior.mode()
    rng = np.random.default_rng(9)
    for _ in range(100):
        child = mutate(parent, rng, prior)
        assert child != parent and child == parse(GRAMMAR, unparse(child))


def test_mutation_of_a_single_sentence_grammar_is_refused():
    prior = Prior.uniform(TOY_SINGLE_SENTENCE)
    with pytest.raises(SamplingError, match="single sentence"):
        mutate(prior.mode(), np.random.default_rng(0), prior)


def test_crossover_prefers_children_unlike_both_parents():
    grammar = grammar_for(4)
    a = parse(grammar, default_architecture(isotropic_plan(4)))
    b = parse(grammar, "unet conv_encoder batch_norm relu dropout 1b down 3b down 4b down 1b "
                       "conv_decoder batch_norm gelu dropout up 3b up 4b up 1b")
    rng = np.random.default_rng(0)
    for _ in range(100):
        child = crossover(a, b, rng)
        assert child != a and child != b
        assert child == parse(grammar, unparse(child))
    assert unparse(a) == default_architecture(isotropic_plan(4))  # parents untouched


def test_crossover_swaps_same_head_subtrees_across_stage_counts():
    grammar = grammar_for(6)
    a = parse(grammar, default_architecture(isotropic_plan(6)))
    b = parse(grammar, "unet conv_encoder instance_norm leaky_relu no_dropout 4b down 4b down 4b "
                       "conv_decoder instance_norm leaky_relu no_dropout up 3b up 3b")
    rng = np.random.default_rng(1)
    children = {unparse(crossover(a, b, rng)) for _ in range(200)}
    for child in children:
        tokens = child.split()
        assert tokens.count("down") == 5 and tokens.count("up") == 5  # a's six stages survive
    assert any(" 4b " in child for child in children) and any(" 3b" in child for child in children)


def test_crossover_of_parents_differing_once_returns_the_other_parent():
    grammar = grammar_for(4)
    a = parse(grammar, default_architecture(isotropic_plan(4)))
    b = parse(grammar, default_architecture(isotropic_plan(4)).replace("leaky_relu", "relu", 1))
    assert crossover(a, b, np.random.default_rng(0)) == b


def test_crossover_of_equal_parents_is_a_copy():
    grammar = grammar_for(4)
    a = parse(grammar, default_architecture(isotropic_plan(4)))
    child = crossover(a, parse(grammar, unparse(a)), np.random.default_rng(0))
    assert child == a and child is not a


@pytest.mark.parametrize("grammar,match", [(TOY_RECURSIVE, "recursive"), (TOY_INLINED, "inlined")])
def test_unsupported_grammars_are_refused(grammar, match):
    with pytest.raises(GrammarError, match=match):
        Prior.uniform(grammar)
