"""GrammarArchitecture: the search engine's architecture parameter, on strings."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from conftest import isotropic_plan
from hnas.errors import InvalidArchitecture, SamplingError
from hnas.grammar import default_architecture, parse
from hnas.sampling import GrammarArchitecture, Prior, ProductionDistribution

from .helpers import grammar_for

GRAMMAR = grammar_for(5)
INCUMBENT = ("unet res_encoder batch_norm gelu dropout 2b down 6b down 1b down 9b "
             "conv_decoder batch_norm elu dropout up 4b up 3b up 1b")


@pytest.fixture(scope="module")
def architecture() -> GrammarArchitecture:
    return GrammarArchitecture(GRAMMAR, "medium")


def test_matches_the_search_engines_protocol(architecture):
    space = pytest.importorskip("hnas.search.space")
    assert isinstance(architecture, space.ArchitectureDistribution)
    parameter = space.Architecture(architecture)
    rng = np.random.default_rng(0)
    assert parameter.check(parameter.sample_prior(rng)) and parameter.check(parameter.sample_uniform(rng))
    assert math.isfinite(parameter.log_prior(architecture.default))


def test_fits_production_densities_for_the_search_engines_model(architecture):
    model = pytest.importorskip("hnas.search.model")
    assert isinstance(architecture, model.FittableArchitectureDistribution)
    rng = np.random.default_rng(0)
    sentences = [architecture.sample(rng, uniform=True) for _ in range(30)]
    density = architecture.fit_density(sentences)
    assert isinstance(density, model.ArchitectureDensity)
    reference = ProductionDistribution.fitted(GRAMMAR, sentences)
    for rule in density.structure.choice_rules:
        np.testing.assert_array_equal(density.probabilities(rule), reference.probabilities(rule))
    assert density.log_prob(sentences[1]) == reference.log_prob(sentences[1])
    architecture.validate(density.sample(rng))


def test_default_is_nnunets_network_and_identity_is_the_priors(architecture):
    assert architecture.default == default_architecture(isotropic_plan(5))
    assert architecture.identity == Prior.from_grammar(GRAMMAR, "medium").identity


def test_identity_tells_grammars_and_confidences_apart():
    identities = {GrammarArchitecture(grammar_for(n), c).identity
                  for n in (4, 5) for c in ("low", "medium", "high", "uniform")}
    assert len(identities) == 8


def test_accepts_a_prior_object():
    prior = Prior.from_grammar(GRAMMAR, "high").centered_on(parse(GRAMMAR, INCUMBENT))
    architecture = GrammarArchitecture(GRAMMAR, prior)
    assert architecture.default == INCUMBENT  # the centred prior's mode is the incumbent
    assert architecture.identity == prior.identity


@pytest.mark.parametrize("bad", ["average", "", 0.5])
def test_bad_prior_names_the_value(bad):
    with pytest.raises(SamplingError, match=repr(bad)):
        GrammarArchitecture(GRAMMAR, bad)


def test_prior_of_another_grammar_is_refused():
    with pytest.raises(SamplingError, match="different grammar"):
        GrammarArchitecture(GRAMMAR, Prior.from_grammar(grammar_for(4)))


def test_samples_are_sentences_and_follow_the_chosen_distribution(architecture):
    rng = np.random.default_rng(0)
    draws = {kind: [architecture.sample(rng, **kwargs) for _ in range(400)]
             for kind, kwargs in [("prior", {}), ("uniform", {"uniform": True}),
                                  ("incumbent", {"centered_on": INCUMBENT})]}
    for sentences in draws.values():
        for sentence in sentences:
            architecture.validate(sentence)
    residual = {kind: np.mean([s.startswith("unet res_encoder") for s in sentences])
                for kind, sentences in draws.items()}
    assert residual["prior"] < 0.3 < residual["uniform"] < 0.7
    four_stages = [s for s in draws["incumbent"] if s.count(" down ") == 3]  # the incumbent's stage count
    assert len(four_stages) > 0.5 * len(draws["incumbent"])
    assert np.mean([s.startswith("unet res_encoder") for s in four_stages]) > 0.7  # its encoder choice


def test_uniform_and_centred_at_once_is_refused(architecture):
    with pytest.raises(SamplingError, match="pick one"):
        architecture.sample(np.random.default_rng(0), uniform=True, centered_on=INCUMBENT)


def test_log_prob_under_the_prior_and_the_incumbent(architecture):
    prior = Prior.from_grammar(GRAMMAR, "medium")
    assert architecture.log_prob(architecture.default) == pytest.approx(prior.log_prob(prior.mode()))
    assert architecture.log_prob(INCUMBENT, centered_on=INCUMBENT) > architecture.log_prob(INCUMBENT)
    assert architecture.log_prob(architecture.default, centered_on=INCUMBENT) < architecture.log_prob(
        architecture.default)


@pytest.mark.parametrize("bad", ["unet conv_encoder", "unet banana", "", 42])
def test_invalid_architectures_raise_invalid_architecture(architecture, bad):
    with pytest.raises(InvalidArchitecture):
        architecture.validate(bad)
    with pytest.raises(InvalidArchitecture):
        architecture.log_prob(bad)
    with pytest.raises(InvalidArchitecture):
        architecture.sample(np.random.default_rng(0), centered_on=bad)


def test_mutation_never_returns_the_parent(architecture):
    for seed in range(200):
        child = architecture.mutate(INCUMBENT, np.random.default_rng(seed))
        assert child != INCUMBENT
        architecture.validate(child)


def test_crossover_is_a_sentence(architecture):
    for seed in range(100):
        child = architecture.crossover(architecture.default, INCUMBENT, np.random.default_rng(seed))
        architecture.validate(child)
        assert child not in (architecture.default, INCUMBENT)


def test_same_seed_same_results(architecture):
    def run(seed: int) -> tuple[str, str, str, str]:
        rng = np.random.default_rng(seed)
        return (architecture.sample(rng), architecture.sample(rng, uniform=True),
                architecture.mutate(INCUMBENT, rng), architecture.crossover(INCUMBENT, architecture.default, rng))
    assert run(3) == run(3)
    assert run(3) != run(4)


def test_uniform_distribution_keeps_nnunets_default():
    assert GrammarArchitecture(GRAMMAR, "uniform").default == default_architecture(isotropic_plan(5))


@pytest.mark.parametrize("prior", ["medium", "uniform"])
def test_survives_pickling(prior):
    original = GrammarArchitecture(GRAMMAR, prior)
    original.log_prob(INCUMBENT, centered_on=INCUMBENT)  # fill the cache: it must not travel
    copy = pickle.loads(pickle.dumps(original))
    assert (copy.identity, copy.default, copy.grammar) == (original.identity, original.default, original.grammar)
    assert copy.sample(np.random.default_rng(5)) == original.sample(np.random.default_rng(5))


def test_uniform_log_prob_is_the_uniform_priors(architecture):
    """PriorBand scores the uniform distribution by this (``Prior.uniform(grammar).log_prob``)."""
    uniform = Prior.uniform(GRAMMAR)
    for sentence in (architecture.default, INCUMBENT):
        assert architecture.log_prob(sentence, uniform=True) == uniform.log_prob(parse(GRAMMAR, sentence))
    assert architecture.log_prob(INCUMBENT, uniform=True) != architecture.log_prob(INCUMBENT)
    with pytest.raises(SamplingError, match="pick one"):
        architecture.log_prob(INCUMBENT, uniform=True, centered_on=INCUMBENT)
