"""ProductionDistribution: a PCFG with free per-rule vectors, fitted from derivations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hnas.errors import InvalidArchitecture, SamplingError
from hnas.grammar import parse
from hnas.sampling import GrammarArchitecture, ProductionDistribution
from hnas.sampling.structure import structure_of

from .helpers import TOY_SINGLE_SENTENCE, grammar_for

GRAMMAR = grammar_for(4)


@pytest.fixture(scope="module")
def architecture() -> GrammarArchitecture:
    return GrammarArchitecture(GRAMMAR, "medium")


@pytest.fixture(scope="module")
def sentences(architecture) -> list[str]:
    rng = np.random.default_rng(0)
    return [architecture.sample(rng, uniform=True) for _ in range(50)]


def test_fitted_frequencies_are_add_one_smoothed_counts(sentences):
    fitted = ProductionDistribution.fitted(GRAMMAR, sentences, smoothing=1.0)
    counts = np.ones(2)
    for sentence in sentences:
        for rule, alternative in fitted.productions(sentence):
            if rule == "enc_norm":
                counts[alternative] += 1
    np.testing.assert_allclose(fitted.probabilities("enc_norm"), counts / counts.sum())
    unseen = ProductionDistribution.fitted(GRAMMAR, [])
    np.testing.assert_allclose(unseen.probabilities("enc_norm"), [0.5, 0.5])


def test_log_prob_sums_the_chosen_productions(sentences):
    fitted = ProductionDistribution.fitted(GRAMMAR, sentences)
    sentence = sentences[0]
    expected = sum(math.log(fitted.probabilities(rule)[alternative])
                   for rule, alternative in fitted.productions(sentence))
    assert fitted.log_prob(sentence) == pytest.approx(expected)
    with pytest.raises(InvalidArchitecture):
        fitted.log_prob("not a sentence")


def test_productions_are_the_real_choices_of_the_derivation(sentences):
    structure = structure_of(GRAMMAR)
    tree = parse(GRAMMAR, sentences[0])
    used = structure.used_alternatives(tree)
    made = structure.choices_made(tree)
    assert made == [(rule, a) for rule, a in used if structure.choices[rule].size > 1]
    assert len(made) < len(used)    # single-alternative rules are no choices
    assert ProductionDistribution(GRAMMAR).productions(sentences[0]) == tuple(made)
    assert structure_of(TOY_SINGLE_SENTENCE).choices_made(parse(TOY_SINGLE_SENTENCE, "a b")) == []


def test_samples_remember_their_productions_and_draw_one_uniform_per_choice(sentences):
    fitted = ProductionDistribution.fitted(GRAMMAR, sentences)
    rng, twin = np.random.default_rng(3), np.random.default_rng(3)
    for _ in range(20):
        sentence, productions = fitted.sample_with_productions(rng)
        assert productions == tuple(structure_of(GRAMMAR).choices_made(parse(GRAMMAR, sentence)))
        assert fitted.log_prob(sentence) == fitted.log_prob_of(productions)
        twin.random(len(productions))
        assert rng.random() == twin.random()   # both streams stay in step


def test_zero_probabilities_are_never_drawn_and_score_minus_infinity(architecture):
    always_batch = ProductionDistribution(GRAMMAR, {"enc_norm": [0.0, 1.0]})
    for seed in range(20):
        draw = always_batch.sample(np.random.default_rng(seed))
        architecture.validate(draw)
        assert draw.split()[2] == "batch_norm"
    assert always_batch.log_prob(architecture.default) == -math.inf


@pytest.mark.parametrize("probabilities, message", [
    ({"enc_norm": [1.0, 2.0, 3.0]}, "enc_norm"),
    ({"enc_norm": [-1.0, 2.0]}, "non-negative"),
    ({"enc_norm": [0.0, 0.0]}, "positive sum"),
    ({"no_such_rule": [1.0]}, "not rules"),
])
def test_bad_probabilities_name_the_rule_and_what_was_expected(probabilities, message):
    with pytest.raises(SamplingError, match=message):
        ProductionDistribution(GRAMMAR, probabilities)


def test_unknown_rule_has_no_probabilities():
    with pytest.raises(SamplingError, match="'no_such_rule'"):
        ProductionDistribution(GRAMMAR).probabilities("no_such_rule")

