"""Prior: the published probabilities, confidence levels, re-centring, mode and log_prob."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lark import Token, Tree

from conftest import isotropic_plan
from hnas.errors import InvalidArchitecture, SamplingError
from hnas.grammar import default_architecture, parse, stage_range, unparse
from hnas.sampling import Prior, categorical_probabilities, log_prob, ordinal_probabilities

from .helpers import OPTIONS, STAGE_COUNTS, bucket_mass, grammar_for


def test_published_stage_probabilities():
    prior = Prior.from_grammar(grammar_for(6), "medium")  # stages 3..6, default 6
    np.testing.assert_allclose(prior.probabilities("network"), [0.001, 0.030, 0.307, 0.662], atol=5e-4)


def test_published_block_probabilities():
    prior = Prior.from_grammar(grammar_for(6), "medium")  # blocks 1..4, default 2
    np.testing.assert_allclose(prior.probabilities("conv_block1"), [0.235, 0.507, 0.235, 0.023], atol=5e-4)


@pytest.mark.parametrize("confidence,default_weight", [("low", 2), ("medium", 4), ("high", 6)])
def test_categorical_default_weight_against_one(confidence, default_weight):
    prior = Prior.from_grammar(grammar_for(4), confidence)
    np.testing.assert_allclose(prior.probabilities("enc_norm"),
                               np.array([default_weight, 1]) / (default_weight + 1))
    np.testing.assert_allclose(prior.probabilities("dec_nonlin"),
                               np.array([default_weight, 1, 1, 1, 1]) / (default_weight + 4))


def test_medium_categorical_examples_from_the_paper():
    prior = Prior.from_grammar(grammar_for(4), "medium")
    np.testing.assert_allclose(prior.probabilities("enc_dropout"), [0.8, 0.2])
    np.testing.assert_allclose(prior.probabilities("enc_nonlin"), [0.5, 0.125, 0.125, 0.125, 0.125])


@pytest.mark.parametrize("confidence,fraction", [("low", 0.5), ("medium", 0.25), ("high", 0.125)])
def test_ordinal_std_is_a_fraction_of_the_range(confidence, fraction):
    prior = Prior.from_grammar(grammar_for(6), confidence)
    # res_block4: 1..12 blocks, ResEnc M default 6
    expected = [bucket_mass(v, 6, 1, 12, 11 * fraction) for v in range(1, 13)]
    np.testing.assert_allclose(prior.probabilities("res_block4"), expected, rtol=1e-9)


def test_uniform_prior_and_single_alternatives():
    prior = Prior.uniform(grammar_for(6))
    np.testing.assert_allclose(prior.probabilities("enc_nonlin"), np.full(5, 0.2))
    np.testing.assert_allclose(prior.probabilities("network"), np.full(4, 0.25))
    assert prior.is_uniform and prior.confidence is None
    np.testing.assert_array_equal(Prior.from_grammar(grammar_for(6)).probabilities("decoder6"), [1.0])


@pytest.mark.parametrize("bad", ["Medium", "", "very high", None, 3])
def test_bad_confidence_names_the_value(bad):
    with pytest.raises(SamplingError, match=repr(bad).replace("(", r"\(")):
        Prior.from_grammar(grammar_for(4), bad)


def test_unknown_rule_is_a_sampling_error():
    with pytest.raises(SamplingError, match="'no_such_rule'"):
        Prior.from_grammar(grammar_for(4)).probabilities("no_such_rule")


def test_probability_vectors_are_read_only():
    vector = Prior.from_grammar(grammar_for(4)).probabilities("network")
    with pytest.raises(ValueError):
        vector[0] = 1.0


@settings(max_examples=60, deadline=None)
@given(lower=st.integers(-5, 5), width=st.integers(1, 12), data=st.data(),
       confidence=st.sampled_from(["low", "medium", "high"]))
def test_ordinal_probabilities_peak_at_the_centre_and_fall_off(lower, width, data, confidence):
    values = tuple(float(v) for v in range(lower, lower + width + 1))
    centre = data.draw(st.integers(0, width))
    p = ordinal_probabilities(values, centre, confidence)
    assert p.sum() == pytest.approx(1.0)
    assert int(np.argmax(p)) == centre
    assert np.all(np.diff(p[: centre + 1]) > 0) and np.all(np.diff(p[centre:]) < 0)
    mirrored = ordinal_probabilities(values, width - centre, confidence)
    np.testing.assert_allclose(p, mirrored[::-1], rtol=1e-6, atol=1e-12)


def test_ordinal_probabilities_by_hand():
    """Values 1, 2, 3 centred on 2, medium: std = (3 - 1) * 0.25 = 0.5, buckets [0.5, 1.5], [1.5, 2.5],
    [2.5, 3.5] are -3..-1, -1..1, 1..3 standard deviations: masses 0.157305, 0.682689, 0.157305 of 0.997300."""
    p = ordinal_probabilities((1.0, 2.0, 3.0), 1, "medium")
    np.testing.assert_allclose(p, np.array([0.1573054, 0.6826895, 0.1573054]) / 0.9973002, rtol=1e-6)
    np.testing.assert_allclose(ordinal_probabilities((1.0, 2.0, 3.0), None, None), [1 / 3] * 3)


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.integers(-40, 40), min_size=2, max_size=8, unique=True).map(
           lambda v: tuple(x / 4 for x in v)),
       data=st.data(), confidence=st.sampled_from(["low", "medium", "high"]))
def test_ordinal_probabilities_are_truncated_normal_bucket_masses(values, data, confidence):
    """Against scipy's truncated normal, for unevenly spaced values in any order (the model_scale choice is
    0.5, 1, 1.5, 2): each value's bucket reaches the midpoints with its sorted neighbours and half a gap past
    the ends; the normal is centred on the centre's value with std = range x 0.5 / 0.25 / 0.125."""
    from scipy.stats import truncnorm

    centre = data.draw(st.integers(0, len(values) - 1))
    ordered = sorted(values)
    edges = ([ordered[0] - (ordered[1] - ordered[0]) / 2]
             + [(a + b) / 2 for a, b in zip(ordered, ordered[1:])]
             + [ordered[-1] + (ordered[-1] - ordered[-2]) / 2])
    std = (ordered[-1] - ordered[0]) * {"low": 0.5, "medium": 0.25, "high": 0.125}[confidence]
    mean = values[centre]
    dist = truncnorm((edges[0] - mean) / std, (edges[-1] - mean) / std, loc=mean, scale=std)
    mass = {v: dist.cdf(edges[i + 1]) - dist.cdf(edges[i]) for i, v in enumerate(ordered)}
    np.testing.assert_allclose(ordinal_probabilities(values, centre, confidence), [mass[v] for v in values],
                               rtol=1e-6, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(size=st.integers(2, 12), data=st.data(), confidence=st.sampled_from(["low", "medium", "high"]))
def test_categorical_probabilities_favour_only_the_centre(size, data, confidence):
    centre = data.draw(st.integers(0, size - 1))
    p = categorical_probabilities(size, centre, confidence)
    others = np.delete(p, centre)
    assert p.sum() == pytest.approx(1.0)
    assert np.all(others == others[0]) and p[centre] > others[0]


def test_ordinal_values_that_repeat_are_refused():
    with pytest.raises(SamplingError, match="repeat"):
        ordinal_probabilities((1.0, 2.0, 2.0), 0, "medium")


@pytest.mark.parametrize("n", STAGE_COUNTS)
@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("confidence", ["low", "medium", "high"])
def test_mode_is_the_nnunet_default(n, options, confidence):
    prior = Prior.from_grammar(grammar_for(n, options), confidence)
    mode = prior.mode()
    assert unparse(mode) == default_architecture(isotropic_plan(n), OPTIONS[options])
    assert mode == parse(prior.grammar, unparse(mode))


@pytest.mark.parametrize("n", STAGE_COUNTS)
def test_log_prob_of_the_default_matches_a_hand_computation(n):
    prior = Prior.from_grammar(grammar_for(n), "medium")
    tree = parse(prior.grammar, default_architecture(isotropic_plan(n)))
    lowest = min(stage_range(n))  # ceil(n/2), but never fewer than 2 stages
    stage = bucket_mass(n, n, lowest, n, (n - lowest) * 0.25) if n > lowest else 1.0
    expected = (math.log(stage)
                + math.log(0.8)  # conv encoder (vs residual)
                + 2 * (math.log(0.8) + math.log(0.5) + math.log(0.8))  # norm, nonlin, dropout x enc/dec
                + (2 * n - 1) * math.log(bucket_mass(2, 2, 1, 4, 0.75)))  # n encoder + n-1 decoder blocks of 2
    assert log_prob(tree, prior) == pytest.approx(expected, rel=1e-12)
    stage_choice = math.log(1 / (n - lowest + 1)) if n > lowest else 0.0
    assert Prior.uniform(prior.grammar).log_prob(tree) == pytest.approx(
        stage_choice + 5 * math.log(0.5)  # encoder type, 2 norms, 2 dropouts
        + 2 * math.log(0.2) + (2 * n - 1) * math.log(0.25))  # 2 nonlinearities, blocks


def test_log_prob_rejects_a_tree_of_another_grammar():
    tree = parse(grammar_for(6), default_architecture(isotropic_plan(6)))
    with pytest.raises(InvalidArchitecture, match="'network' has children 'net6'"):
        log_prob(tree, Prior.from_grammar(grammar_for(4)))


def test_centered_on_moves_the_centre_of_used_choices_only():
    grammar = grammar_for(6)
    prior = Prior.from_grammar(grammar, "medium")
    incumbent = parse(grammar, "unet res_encoder batch_norm gelu dropout 2b down 6b down 1b "
                               "conv_decoder instance_norm relu no_dropout up 4b up 3b")
    centred = prior.centered_on(incumbent)
    assert centred.centres["network"] == 0 and centred.centres["encoder3"] == 1
    np.testing.assert_allclose(centred.probabilities("enc_norm"), [0.2, 0.8])
    np.testing.assert_allclose(centred.probabilities("enc_nonlin"), [0.125, 0.125, 0.125, 0.125, 0.5])
    # res_block2: 1..6 blocks, re-centred on the incumbent's 6 (std = 5 * 0.25)
    np.testing.assert_allclose(centred.probabilities("res_block2"),
                               [bucket_mass(v, 6, 1, 6, 1.25) for v in range(1, 7)], rtol=1e-9)
    np.testing.assert_allclose(centred.probabilities("dec_nonlin"), [0.125, 0.5, 0.125, 0.125, 0.125])
    # Not used by the incumbent: keeps nnU-Net's centre.
    np.testing.assert_array_equal(centred.probabilities("conv_block1"), prior.probabilities("conv_block1"))
    np.testing.assert_array_equal(centred.probabilities("encoder6"), prior.probabilities("encoder6"))
    assert unparse(centred.mode()).startswith("unet res_encoder batch_norm gelu dropout 2b down 6b down 1b")
    assert centred.log_prob(incumbent) > prior.log_prob(incumbent)
    assert centred.identity != prior.identity and centred.confidence == "medium"


def test_centering_on_the_default_changes_nothing():
    prior = Prior.from_grammar(grammar_for(5), "high")
    assert prior.centered_on(prior.mode()) == prior


def test_uniform_prior_stays_uniform_when_centred():
    uniform = Prior.uniform(grammar_for(5))
    assert uniform.centered_on(Prior.from_grammar(grammar_for(5)).mode()) is uniform


def test_identity_depends_on_grammar_and_confidence():
    ids = {Prior.from_grammar(grammar_for(n), c).identity for n in (4, 5) for c in ("low", "medium", "high")}
    ids.add(Prior.uniform(grammar_for(4)).identity)
    assert len(ids) == 7
    assert Prior.from_grammar(grammar_for(4)).identity == Prior.from_grammar(grammar_for(4)).identity


def test_uniform_mode_breaks_ties_towards_the_grammars_default():
    assert unparse(Prior.uniform(grammar_for(6)).mode()) == default_architecture(isotropic_plan(6))


def test_centres_are_read_only_and_priors_pickle():
    prior = Prior.from_grammar(grammar_for(5), "low").centered_on(
        parse(grammar_for(5), default_architecture(isotropic_plan(5), encoder="residual")))
    with pytest.raises(TypeError):
        prior.centres["network"] = 0
    copy = pickle.loads(pickle.dumps(prior))
    assert copy == prior and copy.mode() == prior.mode()


@pytest.mark.parametrize("not_a_derivation", [
    "unet conv_encoder",  # a string, not a tree
    Tree("enc_norm", [Token("INSTANCE_NORM", "instance_norm")]),  # a subtree, not rooted at the start
    Tree("architecture", ["unet", "network"]),  # children that are neither Trees nor Tokens
])
def test_log_prob_and_centering_need_a_derivation(not_a_derivation):
    prior = Prior.from_grammar(grammar_for(4))
    with pytest.raises(InvalidArchitecture):
        prior.log_prob(not_a_derivation)
    with pytest.raises(InvalidArchitecture):
        prior.centered_on(not_a_derivation)
