"""BOHB's density model: good-vs-bad densities over numeric, categorical, conditional and
architecture parameters."""

from __future__ import annotations

import ast
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from statsmodels.nonparametric.kernel_density import KDEMultivariate

from conftest import isotropic_plan
from hnas.errors import SearchError
from hnas.grammar import make_grammar
from hnas.sampling import GrammarArchitecture
from hnas.search import Architecture, Categorical, Condition, Float, Int, Ordinal, SearchSpace
from hnas.search import model as model_module
from hnas.search.model import (
    ArchitectureDensity,
    DensityModel,
    FittableArchitectureDistribution,
    Observation,
)

from .fakes import WordArchitecture


def observe(space, loss, n, seed=0):
    rng = np.random.default_rng(seed)
    configs = [space.sample_uniform(rng) for _ in range(n)]
    return [Observation(i, c, loss(c)) for i, c in enumerate(configs)]


@lru_cache(maxsize=None)
def grammar_architecture() -> GrammarArchitecture:
    return GrammarArchitecture(make_grammar(isotropic_plan(4)), "medium")


# -- numeric parameters --------------------------------------------------------------------------
def test_one_dimension_prefers_the_good_region_and_proposes_there():
    space = SearchSpace([Float("x", 0.0, 1.0, 0.5)])
    model = DensityModel(space).fit(observe(space, lambda c: (c["x"] - 0.2) ** 2, 40))
    near, far = model.log_ratio([{"x": 0.2}, {"x": 0.8}])
    assert near > far
    proposals = [model.propose(np.random.default_rng(s))["x"] for s in range(40)]
    assert abs(np.median(proposals) - 0.2) < 0.1


def test_two_dimensions_with_log_and_integer_axes():
    space = SearchSpace([Float("lr", 1e-5, 1e-1, 1e-3, log=True), Int("width", 1, 64, 8)])

    def loss(c):  # best at lr = 1e-2 and width = 48
        return (math.log10(c["lr"]) + 2) ** 2 + ((c["width"] - 48) / 16) ** 2

    model = DensityModel(space).fit(observe(space, loss, 60))
    good, bad = model.log_ratio([{"lr": 1e-2, "width": 48}, {"lr": 1e-5, "width": 2}])
    assert good > bad
    proposals = [model.propose(np.random.default_rng(s)) for s in range(30)]
    for config in proposals:
        space.validate(config)
        assert isinstance(config["width"], int) and isinstance(config["lr"], float)
    uniform = [space.sample_uniform(np.random.default_rng(100 + s)) for s in range(30)]
    assert np.mean([loss(c) for c in proposals]) < 0.5 * np.mean([loss(c) for c in uniform])


def test_numeric_density_is_statsmodels_kde_with_the_normal_reference_bandwidth():
    space = SearchSpace([Float("a", 0.0, 1.0, 0.5), Float("b", 0.0, 1.0, 0.5),
                         Ordinal("c", (1, 2, 4, 8), 2)])
    observations = observe(space, lambda c: c["a"] + c["b"], 30)
    model = DensityModel(space).fit(observations)
    good = np.array([[o.config["a"], o.config["b"], (1, 2, 4, 8).index(o.config["c"]) / 3]
                     for o in model.good.observations])
    reference = KDEMultivariate(good, "ccc", bw="normal_reference", rng=np.random.default_rng(0))
    np.testing.assert_allclose(model.good.numeric.bandwidth, reference.bw)
    points = np.random.default_rng(1).random((5, 3))
    np.testing.assert_allclose(model.good.numeric.log_pdf(points), np.log(reference.pdf(points)))


# -- categorical and conditional parameters ------------------------------------------------------
def test_categorical_frequencies_are_smoothed_and_prefer_good_choices():
    space = SearchSpace([Categorical("opt", ("sgd", "adam", "rms"), "sgd"),
                         Float("x", 0.0, 1.0, 0.5)])
    model = DensityModel(space).fit(observe(space, lambda c: (c["opt"] != "adam") + c["x"], 40))
    adam, sgd = model.log_ratio([{"opt": "adam", "x": 0.3}, {"opt": "sgd", "x": 0.3}])
    assert adam > sgd
    assert np.all(model.good.categorical["opt"] > 0)   # unseen choices stay possible
    chosen = [model.propose(np.random.default_rng(s))["opt"] for s in range(40)]
    assert chosen.count("adam") > 20


def test_conditional_parameters_are_imputed_for_fitting_and_left_out_when_inactive():
    space = SearchSpace([
        Categorical("optimizer", ("SGD", "Adam"), "SGD"),
        Float("momentum", 0.5, 0.99, 0.9, condition=Condition("optimizer", ("SGD",))),
        Float("lr", 0.0, 1.0, 0.5)])

    def loss(c):  # SGD with high momentum is best
        return c["lr"] + (1.0 - c["momentum"] if c["optimizer"] == "SGD" else 1.0)

    observations = observe(space, loss, 40)
    model = DensityModel(space).fit(observations)
    assert not np.isnan(model.good.numeric.data).any()
    again = DensityModel(space).fit(observations)   # imputation is a function of the data
    np.testing.assert_array_equal(model.bad.numeric.data, again.bad.numeric.data)
    high, low, adam = model.log_ratio([{"optimizer": "SGD", "momentum": 0.98, "lr": 0.1},
                                       {"optimizer": "SGD", "momentum": 0.52, "lr": 0.1},
                                       {"optimizer": "Adam", "lr": 0.1}])
    assert high > low and np.isfinite(adam)
    for seed in range(30):
        config = model.propose(np.random.default_rng(seed))
        space.validate(config)   # momentum present exactly when the optimizer is SGD


# -- the architecture ----------------------------------------------------------------------------
def swap(architecture: str, **words: str) -> str:
    return " ".join(words.get(w, w) for w in architecture.split())


def test_production_density_ranks_good_productions_above_bad_ones():
    distribution = grammar_architecture()
    space = SearchSpace([Float("x", 0.0, 1.0, 0.5), Architecture(distribution)])

    def loss(c):  # ELU and dropout help, batch norm hurts
        words = c["architecture"].split()
        return words.count("batch_norm") - words.count("elu") - words.count("dropout") + c["x"]

    model = DensityModel(space).fit(observe(space, loss, 60))
    good = swap(distribution.default, leaky_relu="elu", no_dropout="dropout")
    bad = swap(distribution.default, instance_norm="batch_norm", leaky_relu="relu")
    good_ratio, bad_ratio = model.log_ratio([{"x": 0.5, "architecture": good},
                                             {"x": 0.5, "architecture": bad}])
    assert good_ratio > bad_ratio
    elu = model.architecture.good.structure.production_index["enc_nonlin"][("ELU",)]
    assert model.architecture.good.probabilities("enc_nonlin")[elu] \
        > model.architecture.bad.probabilities("enc_nonlin")[elu]
    proposals = [model.propose(np.random.default_rng(s))["architecture"] for s in range(30)]
    for proposal in proposals:
        distribution.validate(proposal)
    assert np.mean([p.split().count("elu") for p in proposals]) > 2 * 2 / 5  # uniform: 2 x 1/5


def test_architectures_without_a_grammar_use_word_frequencies():
    assert not isinstance(WordArchitecture(), FittableArchitectureDistribution)
    space = SearchSpace([Float("x", 0.0, 1.0, 0.5), Architecture(WordArchitecture())])
    model = DensityModel(space).fit(
        observe(space, lambda c: c["architecture"].split().count("b") + c["x"], 40))
    mostly_a, mostly_b = model.log_ratio([{"x": 0.5, "architecture": "a a c"},
                                          {"x": 0.5, "architecture": "b b b"}])
    assert mostly_a > mostly_b
    for seed in range(10):
        space.validate(model.propose(np.random.default_rng(seed)))


class _FirstWordDensity:
    """Scores architectures by how often their first word starts the fitted ones."""

    def __init__(self, architectures):
        self.first = [a.split()[0] for a in architectures]

    def log_prob(self, architecture):
        return math.log((self.first.count(architecture.split()[0]) + 1) / (len(self.first) + 3))

    def sample(self, rng):
        return " ".join([self.first[int(rng.integers(len(self.first)))], "a", "a"])


class FittableWords(WordArchitecture):
    """A non-grammar distribution that fits its own densities through the protocol."""

    def __init__(self):
        super().__init__()
        self.fitted = []

    def fit_density(self, architectures):
        self.fitted.append(list(architectures))
        return _FirstWordDensity(architectures)


def test_the_model_uses_the_distributions_own_density_when_it_has_one():
    distribution = FittableWords()
    assert isinstance(distribution, FittableArchitectureDistribution)
    space = SearchSpace([Float("x", 0.0, 1.0, 0.5), Architecture(distribution)])
    model = DensityModel(space).fit(
        observe(space, lambda c: (c["architecture"][0] != "c") + c["x"], 40))
    assert isinstance(model.architecture.good, ArchitectureDensity)
    good = [o.config["architecture"] for o in model.good.observations]
    bad = [o.config["architecture"] for o in model.bad.observations]
    assert distribution.fitted == [good, bad]
    c_first, a_first = model.log_ratio([{"x": 0.5, "architecture": "c a a"},
                                        {"x": 0.5, "architecture": "a a a"}])
    assert c_first > a_first
    for seed in range(10):
        proposal = model.propose(np.random.default_rng(seed))["architecture"]
        assert proposal.endswith(" a a") and proposal.split()[0] in {a.split()[0] for a in good}


def test_the_engines_model_imports_no_grammar_code():
    """The grammar's density comes through the protocol, so the engine stays grammar-agnostic."""
    tree = ast.parse(Path(model_module.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {m for m in imported if m.split(".")[0] == "lark"
                or m.startswith(("hnas.grammar", "hnas.sampling"))}


# -- thresholds and the good/bad split ------------------------------------------------------------
def test_model_needs_min_points_plus_two_observations():
    space = SearchSpace([Float("x", 0.0, 1.0, 0.5), Float("y", 0.0, 1.0, 0.5)])
    model = DensityModel(space)
    assert model.min_points == 3   # parameters + 1
    observations = observe(space, lambda c: c["x"], 5)
    assert model.fit(observations[:4]) is None
    assert model.fit(observations) is not None
    assert model.fit_highest({0: observe(space, lambda c: c["x"], 30), 2: observations[:4]}).rung \
        == 0
    assert model.fit_highest({0: observations, 2: observations}).rung == 2


def test_split_takes_the_top_fraction_and_failures_count_as_worst():
    space = SearchSpace([Float("x", 0.0, 1.0, 0.5)])
    model = DensityModel(space, min_points=2)
    observations = [Observation(i, {"x": i / 40}, float(i)) for i in range(40)]
    observations[0] = Observation(0, {"x": 0.0}, math.inf)
    good, bad = model.split(observations)
    assert [o.trial_id for o in good] == list(range(1, 7))    # floor(0.15 * 40) = 6
    assert len(bad) == 34 and bad[-1].trial_id == 0
    small_good, small_bad = model.split(observations[1:5])     # n = 4: N_min each, overlapping
    assert len(small_good) == len(small_bad) == 2


@pytest.mark.parametrize("options, message", [
    ({"min_points": 1}, "min_points"),
    ({"min_points": 2.5}, "min_points"),
    ({"top_fraction": 1.0}, "top_fraction"),
    ({"bandwidth_factor": 0}, "bandwidth_factor"),
    ({"min_bandwidth": -1.0}, "min_bandwidth"),
    ({"candidates": 0}, "candidates"),
])
def test_bad_settings_name_the_setting(options, message):
    space = SearchSpace([Float("x", 0.0, 1.0, 0.5), Float("y", 0.0, 1.0, 0.5)])
    with pytest.raises(SearchError, match=message):
        DensityModel(space, **options)
