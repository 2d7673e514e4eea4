import json
import math

import numpy as np
import pytest
from scipy import stats

from hnas.errors import InvalidArchitecture, SearchSpaceError
from hnas.pipeline.spaces import make_space
from hnas.search.space import (
    Architecture,
    Categorical,
    Condition,
    Float,
    Int,
    Ordinal,
    SearchSpace,
)

from .fakes import WordArchitecture


def pmf(parameter, values):
    return np.exp([parameter.log_prior(v) for v in values])


# -- priors (docs/references.md, "Prior constants") ---------------------------------------------
def test_categorical_prior_weights_match_paper_constants():
    two = Categorical("norm", ("instance", "batch"), "instance", "medium")
    np.testing.assert_allclose(pmf(two, ["instance", "batch"]), [0.8, 0.2])
    five = Categorical("act", ("a", "b", "c", "d", "e"), "a", "medium")
    np.testing.assert_allclose(pmf(five, ["a", "b", "c", "d", "e"]), [0.5] + [0.125] * 4)
    low = Categorical("x", ("a", "b", "c"), "b", "low")
    high = Categorical("x", ("a", "b", "c"), "b", "high")
    np.testing.assert_allclose(pmf(low, ["a", "b", "c"]), [0.25, 0.5, 0.25])
    np.testing.assert_allclose(pmf(high, ["a", "b", "c"]), [0.125, 0.75, 0.125])


def test_integer_prior_is_bucket_mass_of_truncated_normal():
    stages = Int("stages", 3, 6, 6, confidence="medium")
    np.testing.assert_allclose(pmf(stages, [3, 4, 5, 6]), [0.001, 0.030, 0.307, 0.662], atol=6e-4)
    blocks = Int("blocks", 1, 4, 2, confidence="medium")
    np.testing.assert_allclose(pmf(blocks, [1, 2, 3, 4]), [0.235, 0.507, 0.235, 0.023], atol=6e-4)


def test_ordinal_prior_acts_on_the_index():
    scale = Ordinal("model_scale", (0.5, 1.0, 1.5, 2.0), 1.0, "medium")
    np.testing.assert_allclose(pmf(scale, [0.5, 1.0, 1.5, 2.0]), [0.235, 0.507, 0.235, 0.023],
                               atol=6e-4)


@pytest.mark.parametrize("confidence, fraction", [("low", 0.5), ("medium", 0.25), ("high", 0.125)])
def test_float_prior_is_truncated_normal(confidence, fraction):
    p = Float("fg", 0.0, 1.0, 0.33, confidence=confidence)
    std = fraction
    expected = stats.truncnorm((0 - 0.33) / std, (1 - 0.33) / std, loc=0.33, scale=std)
    for x in (0.0, 0.2, 0.33, 0.9):
        assert p.log_prior(x) == pytest.approx(expected.logpdf(x), rel=1e-9)


def test_log_float_prior_lives_in_log_space():
    lr = Float("lr", 1e-5, 1e-1, 1e-2, log=True, confidence="medium")
    lo, hi, c = math.log(1e-5), math.log(1e-1), math.log(1e-2)
    std = (hi - lo) * 0.25
    expected = stats.truncnorm((lo - c) / std, (hi - c) / std, loc=c, scale=std)
    assert lr.log_prior(1e-3) == pytest.approx(expected.logpdf(math.log(1e-3)), rel=1e-9)
    samples = np.log([lr.sample_prior(np.random.default_rng(i)) for i in range(400)])
    assert stats.kstest(samples, expected.cdf).pvalue > 0.01


def test_uniform_samples_cover_the_log_range_evenly():
    lr = Float("lr", 1e-5, 1e-1, 1e-2, log=True)
    rng = np.random.default_rng(0)
    logs = np.log10([lr.sample_uniform(rng) for _ in range(2000)])
    assert logs.min() >= -5 and logs.max() <= -1
    assert stats.kstest((logs + 5) / 4, "uniform").pvalue > 0.01


# -- conditions, validation ------------------------------------------------------------------------
def test_momentum_only_when_sgd_in_every_sampler():
    space = make_space("hpo")
    rng = np.random.default_rng(1)
    configs = [space.sample_uniform(rng) for _ in range(100)]
    configs += [space.sample_prior(rng) for _ in range(100)]
    configs += [space.mutate(c, rng) for c in configs[:100]]
    for config in configs:
        assert ("momentum" in config) == (config["optimizer"] == "SGD")
        space.validate(config)
    assert {c["optimizer"] for c in configs} == {"SGD", "Adam", "AdamW"}


@pytest.mark.parametrize("change, words", [
    ({"initial_lr": 0.5}, ["initial_lr", "0.5"]),
    ({"loss": "Focal"}, ["loss", "Focal"]),
    ({"optimizer": "Adam"}, ["momentum", "optimizer"]),
    ({"bogus": 1}, ["bogus"]),
    ({"aug_factor": float("nan")}, ["aug_factor", "nan"]),
])
def test_validation_names_parameter_and_value(change, words):
    space = make_space("hpo")
    config = {**space.default_config(), **change}
    with pytest.raises(SearchSpaceError) as error:
        space.validate(config)
    for word in words:
        assert word in str(error.value)


def test_validation_reports_missing_parameter():
    space = make_space("hpo")
    config = space.default_config()
    del config["momentum"]
    with pytest.raises(SearchSpaceError, match="momentum.*missing"):
        space.validate(config)


@pytest.mark.parametrize("make", [
    lambda: Float("x", 1.0, 0.0, 0.5),
    lambda: Float("x", 0.0, 1.0, 2.0),
    lambda: Float("x", 0.0, 1.0, 0.5, log=True),
    lambda: Int("x", 1, 5, 3, confidence="sure"),
    lambda: Categorical("x", ("a", "b"), "c"),
    lambda: SearchSpace([Float("x", 0, 1, 0.5), Float("x", 0, 1, 0.5)]),
    lambda: SearchSpace([Float("y", 0, 1, 0.5, condition=Condition("x", ("a",)))]),
])
def test_bad_definitions_are_refused(make):
    with pytest.raises(SearchSpaceError):
        make()


# -- mutation, re-centring ---------------------------------------------------------------------
def test_mutation_never_returns_the_parent_and_touches_about_half():
    space = make_space("hpo+nas")
    parent = space.default_config()
    changed = []
    for seed in range(300):
        child = space.mutate(parent, np.random.default_rng(seed))
        assert child != parent
        space.validate(child)
        changed.append(np.mean([child.get(k) != v for k, v in parent.items()]))
    assert np.mean(changed) == pytest.approx(0.5, abs=0.05)


def test_mutation_of_a_single_choice_space_fails_clearly():
    space = SearchSpace([Categorical("only", ("x",), "x")])
    with pytest.raises(SearchSpaceError, match="single"):
        space.mutate({"only": "x"}, np.random.default_rng(0))


def test_centered_on_moves_every_mode_to_the_incumbent():
    space = make_space("hpo")
    incumbent = {**space.default_config(), "optimizer": "Adam", "initial_lr": 1e-4,
                 "loss": "TopK"}
    del incumbent["momentum"]
    centred = space.centered_on(incumbent)
    assert centred.default_config() == incumbent
    assert centred["loss"].log_prior("TopK") == pytest.approx(math.log(4 / 7))
    assert centred["initial_lr"].log_prior(1e-4) > space["initial_lr"].log_prior(1e-4)
    assert centred["momentum"].default == 0.99
    assert centred.prior_log_pdf(incumbent) > space.prior_log_pdf(incumbent)


# -- description and hash ------------------------------------------------------------------------
def test_description_round_trips_through_json_and_keeps_the_hash():
    space = make_space("hpo+nas")
    text = json.dumps(space.describe())
    again = SearchSpace.from_description(json.loads(text))
    assert again.hash == space.hash
    assert again.default_config() == space.default_config()
    assert make_space("hpo+nas", confidence="high").hash != space.hash
    assert make_space("hpo").hash != space.hash


def test_architecture_parameter_uses_the_distribution():
    words = WordArchitecture()
    space = make_space("hnas", words)
    assert space.names == ("dropout_rate", "architecture")
    assert space.default_config() == {"dropout_rate": 0.2, "architecture": "a b a"}
    rng = np.random.default_rng(3)
    for _ in range(20):
        config = space.sample_prior(rng)
        space.validate(config)
        assert space.mutate(config, rng) != config
    prior = space.prior_log_pdf({"dropout_rate": 0.2, "architecture": "a b a"})
    centred = space.centered_on({"dropout_rate": 0.2, "architecture": "c c c"})
    assert centred.default_config()["architecture"] == "c c c"
    assert centred["architecture"].log_prior("c c c") == pytest.approx(3 * math.log(4 / 6))
    assert space.prior_log_pdf({"dropout_rate": 0.2, "architecture": "c c c"}) < prior
    with pytest.raises(InvalidArchitecture):
        space.validate({"dropout_rate": 0.2, "architecture": "a z a"})


def test_architecture_identity_is_part_of_the_hash_and_checked_on_rebuild():
    a, b = WordArchitecture(default="a b a"), WordArchitecture(default="b b b")
    space = make_space("hpo+hnas", a)
    assert make_space("hpo+hnas", b).hash != space.hash
    assert SearchSpace.from_description(space.describe(), architecture=a).hash == space.hash
    with pytest.raises(SearchSpaceError, match="identity"):
        SearchSpace.from_description(space.describe(), architecture=b)
    with pytest.raises(SearchSpaceError, match="needs an architecture"):
        SearchSpace.from_description(space.describe())


def test_architecture_parameter_rejects_non_distributions():
    with pytest.raises(SearchSpaceError, match="ArchitectureDistribution"):
        Architecture(object())


# -- the uniform distribution's log density (PriorBand scores it against the prior) ------------

@pytest.mark.parametrize("parameter, value, expected", [
    (Float("x", 2.0, 6.0, 3.0), 5.5, -math.log(4.0)),                       # 1 / (6 - 2)
    (Float("x", 1e-4, 1e-1, 1e-3, log=True), 0.05, -math.log(3 * math.log(10))),  # log axis: 1 / ln(1000)
    (Float("x", 0.5, 0.5, 0.5), 0.5, 0.0),                                   # a single point: mass 1
    (Int("n", 1, 8, 2), 7, -math.log(8)),                                    # 8 integers
    (Int("n", 1, 16, 4, log=True), 3, -math.log(16)),                        # uniform over the integers
    (Categorical("c", ("a", "b", "c"), "a"), "b", -math.log(3)),
    (Ordinal("o", (8, 16, 32, 64, 128), 32), 128, -math.log(5)),
])
def test_uniform_log_density_of_each_parameter_type(parameter, value, expected):
    assert parameter.log_uniform(value) == pytest.approx(expected, abs=1e-12)
    assert parameter.log_uniform(parameter.default) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("parameter", [Float("x", 2.0, 6.0, 3.0),
                                       Float("x", 1e-4, 1e-1, 1e-3, log=True)])
def test_uniform_and_prior_densities_share_the_axis_measure(parameter):
    """Both integrate to 1 over the same axis, so their ratio is a likelihood ratio."""
    lo, hi = parameter._axis_bounds
    axis = np.linspace(lo, hi, 20001)
    values = [parameter._from_axis(a) for a in axis]
    for log_pdf in (parameter.log_uniform, parameter.log_prior):
        density = np.exp([log_pdf(min(max(v, parameter.lower), parameter.upper)) for v in values])
        assert np.trapezoid(density, axis) == pytest.approx(1.0, abs=1e-6)


def test_uniform_pmfs_sum_to_one_and_match_the_uniform_sampler():
    rng = np.random.default_rng(0)
    for parameter, values in [(Int("n", 1, 16, 4, log=True), range(1, 17)),
                              (Categorical("c", ("a", "b", "c"), "a"), ("a", "b", "c")),
                              (Ordinal("o", (8, 16, 32, 64), 32), (8, 16, 32, 64))]:
        assert sum(math.exp(parameter.log_uniform(v)) for v in values) == pytest.approx(1.0)
        draws = [parameter.sample_uniform(rng) for _ in range(4000)]
        for v in values:
            assert draws.count(v) / 4000 == pytest.approx(math.exp(parameter.log_uniform(v)),
                                                          abs=4 * math.sqrt(0.25 / 4000))


def test_uniform_log_density_of_the_architecture_goes_through_the_distribution():
    parameter = Architecture(WordArchitecture())  # 3 positions, alphabet of 3: (1/3)^3
    assert parameter.log_uniform("c c c") == pytest.approx(3 * math.log(1 / 3))
    assert parameter.log_uniform("a b a") == pytest.approx(3 * math.log(1 / 3))
    assert parameter.log_prior("a b a") == pytest.approx(3 * math.log(4 / 6))  # the prior is not


def test_uniform_log_pdf_sums_over_active_parameters_only():
    space = SearchSpace([
        Categorical("optimizer", ("sgd", "adam"), "sgd"),
        Float("momentum", 0.0, 0.5, 0.25, condition=Condition("optimizer", ("sgd",))),
        Int("layers", 1, 4, 2),
        Architecture(WordArchitecture()),
    ])
    sgd = {"optimizer": "sgd", "momentum": 0.1, "layers": 3, "architecture": "a b c"}
    adam = {"optimizer": "adam", "layers": 3, "architecture": "a b c"}
    # sgd: 1/2 * 1/0.5 * 1/4 * (1/3)^3; adam: no momentum term
    assert space.uniform_log_pdf(sgd) == pytest.approx(
        math.log(1 / 2) + math.log(2) + math.log(1 / 4) + 3 * math.log(1 / 3))
    assert space.uniform_log_pdf(adam) == pytest.approx(
        math.log(1 / 2) + math.log(1 / 4) + 3 * math.log(1 / 3))
