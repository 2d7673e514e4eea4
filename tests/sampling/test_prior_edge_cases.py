"""Prior edge cases: a centre without a confidence, integer ordinal values, bad centres, equality
(cases found by `make mutation`).

The bucket masses come from ``tests.sampling.helpers.bucket_mass`` (math.erf, written independently).
"""

from __future__ import annotations

import numpy as np
import pytest

from hnas.errors import SamplingError
from hnas.sampling import Prior, categorical_probabilities, ordinal_probabilities
from hnas.sampling.prior import cumulative_edges

from .helpers import bucket_mass, grammar_for


def test_a_centre_without_a_confidence_is_uniform():
    np.testing.assert_allclose(categorical_probabilities(4, 2, None), [0.25] * 4)
    np.testing.assert_allclose(ordinal_probabilities((1, 2, 3), 1, None), [1 / 3] * 3)


def test_a_confidence_without_a_centre_is_uniform():
    np.testing.assert_allclose(categorical_probabilities(4, None, "high"), [0.25] * 4)
    np.testing.assert_allclose(ordinal_probabilities((1, 2, 3, 4), None, "high"), [0.25] * 4)


def test_a_single_ordinal_value_has_all_the_mass():
    np.testing.assert_allclose(ordinal_probabilities((5,), 0, "high"), [1.0])


@pytest.mark.parametrize("confidence,fraction", [("low", 0.5), ("medium", 0.25), ("high", 0.125)])
def test_integer_ordinal_values_get_unit_buckets(confidence, fraction):
    values = (1, 2, 3, 4, 5)  # Python ints, as a grammar's block counts are
    std = (5 - 1) * fraction
    expected = [bucket_mass(v, 2, 1, 5, std) for v in values]
    np.testing.assert_allclose(ordinal_probabilities(values, 1, confidence), expected, rtol=1e-9)


def test_uniform_prior_with_centres_breaks_mode_ties_at_the_centre():
    grammar = grammar_for(4)
    default = Prior.from_grammar(grammar).structure.choices["dec_nonlin"].default
    other = (default + 2) % 5
    prior = Prior(grammar, None, {"dec_nonlin": other})
    np.testing.assert_allclose(prior.probabilities("dec_nonlin"), [0.2] * 5)
    used = dict(prior.structure.used_alternatives(prior.mode()))
    assert used["dec_nonlin"] == other
    assert dict(Prior.uniform(grammar).structure.used_alternatives(Prior.uniform(grammar).mode()))[
        "dec_nonlin"] == default


@pytest.mark.parametrize("centres", [{"no_such_rule": 0}, {"dec_nonlin": 5}, {"dec_nonlin": -1}])
def test_a_centre_outside_the_grammar_is_refused(centres):
    (rule, index), = centres.items()
    with pytest.raises(SamplingError) as refused:
        Prior(grammar_for(4), "medium", centres)
    assert str(refused.value) == f"prior centre {rule!r} -> alternative {index!r} is not in the grammar"


def test_priors_are_equal_only_with_the_same_grammar_confidence_and_centres():
    grammar = grammar_for(4)
    assert Prior.from_grammar(grammar, "medium") == Prior.from_grammar(grammar, "medium")
    assert Prior.from_grammar(grammar, "medium") != Prior.from_grammar(grammar, "high")
    assert Prior.from_grammar(grammar) != Prior.uniform(grammar)
    assert Prior.from_grammar(grammar) != Prior.from_grammar(grammar_for(5))
    assert Prior.uniform(grammar) != "uniform" and Prior.uniform(grammar) != None  # noqa: E711


def test_equal_priors_hash_alike_and_repr_names_the_confidence():
    grammar = grammar_for(4)
    medium, again, uniform = Prior.from_grammar(grammar), Prior.from_grammar(grammar), Prior.uniform(grammar)
    assert hash(medium) == hash(again) and hash(medium) != hash(uniform)
    assert len({medium, again, uniform}) == 2
    assert repr(medium) == f"Prior(confidence='medium', grammar sha256={medium.identity[:12]}...)"
    assert repr(uniform) == f"Prior(confidence='uniform', grammar sha256={uniform.identity[:12]}...)"


def test_sampling_edges_are_the_running_sum_ending_at_exactly_one():
    assert cumulative_edges(np.array([0.2, 0.3, 0.5])) == pytest.approx([0.2, 0.5, 1.0])
    edges = cumulative_edges(np.full(7, 1 / 7))  # a running sum of sevenths need not reach 1.0 exactly
    assert edges[-1] == 1.0 and edges[:-1] == pytest.approx([k / 7 for k in range(1, 7)])
    assert cumulative_edges(np.ones(1)) is None
    prior = Prior.from_grammar(grammar_for(4))
    vector = prior.probabilities("dec_nonlin")
    assert prior.cumulative.by_rule["dec_nonlin"][-1] == 1.0
    assert prior.cumulative.by_rule["dec_nonlin"][:-1] == pytest.approx(np.cumsum(vector)[:-1].tolist())
