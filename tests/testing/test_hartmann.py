"""The multi-fidelity Hartmann functions against published values and their own contract."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys

import numpy as np
import pytest

from hnas.errors import HnasError, SearchSpaceError
from hnas.testing.hartmann import (
    BIAS_NOISE,
    PRIOR_QUALITIES,
    RELATION_SHIFT,
    RELATIONS,
    MFHartmann,
    fidelity_cost,
    hartmann,
)


@pytest.fixture(params=["hartmann3", "hartmann6"])
def function(request) -> MFHartmann:
    return MFHartmann.named(request.param, seed=7)


def test_true_value_at_the_known_optima():
    # Published optima: -3.86278 at (0.114614, 0.555649, 0.852547); -3.32237 in 6-D.
    assert hartmann([0.114614, 0.555649, 0.852547]) == pytest.approx(-3.86278, abs=1e-5)
    assert hartmann([0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573]) == pytest.approx(
        -3.32237, abs=1e-5)


def test_optimum_property_matches_optimum_value(function):
    assert function.true_value(function.optimum) == pytest.approx(function.optimum_value, abs=1e-5)
    assert function.regret(function.optimum) == pytest.approx(0.0, abs=1e-5)


def test_true_value_at_the_medium_prior_of_hartmann3():
    f = MFHartmann.named("hartmann3")
    assert f.prior("medium") == {"x0": 0.1361, "x1": 0.5771, "x2": 0.8740}
    assert f.true_value(f.prior("medium")) == pytest.approx(-3.8036, abs=1e-3)


def test_prior_qualities_are_ordered_by_regret(function):
    good, medium, bad = (function.regret(function.prior(q)) for q in PRIOR_QUALITIES)
    assert 0 < good < medium < 0.1 < 3.0 < bad


def test_max_fidelity_without_noise_or_bias_equals_true_function(function):
    rng = np.random.default_rng(0)
    for x in rng.random((20, function.dims)):
        config = function.to_config(x)
        assert function(config, 100) == pytest.approx(function.true_value(config), abs=1e-12)


def test_no_bias_no_noise_gives_the_true_function_at_every_fidelity():
    f = MFHartmann(dims=3, bias=0.0, noise=0.0)
    config = f.prior("bad")
    for z in (1, 3, 11, 33, 100):
        assert f(config, z) == pytest.approx(f.true_value(config), abs=1e-12)


def test_low_fidelity_is_biased_upwards_and_noisy(function):
    config = function.prior("medium")
    truth = function.true_value(config)
    lows = [function(config, z) for z in (1, 2, 5)]
    assert all(value > truth for value in lows)
    # The bias alone at z=1 is bias * sum_i exp(...) > 0; noise adds a non-negative term.
    noiseless = MFHartmann(dims=function.dims, bias=function.bias, noise=0.0)
    assert function(config, 1) >= noiseless(config, 1) > truth


def test_cost_formula():
    assert fidelity_cost(100) == pytest.approx(1.0)
    assert fidelity_cost(1) == pytest.approx(0.05 + 0.95 * 1e-4)
    assert fidelity_cost(50) == pytest.approx(0.05 + 0.95 * 0.25)
    assert MFHartmann.named("hartmann6").cost(33) == pytest.approx(0.05 + 0.95 * 0.33 ** 2)


def test_same_seed_same_answer_different_seed_different_noise(function):
    config = function.prior("good")
    again = MFHartmann.named(f"hartmann{function.dims}", seed=7)
    other = MFHartmann.named(f"hartmann{function.dims}", seed=8)
    values = [function(config, z) for z in (1, 4, 20)]
    assert values == [again(config, z) for z in (1, 4, 20)]
    assert values != [other(config, z) for z in (1, 4, 20)]
    assert function(config, 4) == function(config, 4)


def test_named_variants_use_mf_prior_bench_bias_and_noise():
    f = MFHartmann.named("hartmann3", "bad")
    assert (f.bias, f.noise) == BIAS_NOISE["bad"] == (3.5, 4.0)
    assert (MFHartmann.named("hartmann6").bias, MFHartmann.named("hartmann6").noise) == (0.5, 0.1)


@pytest.mark.parametrize("bad_call, expected", [
    (lambda f: f({"x0": 0.1, "x1": 0.2}, 10), "lacks"),
    (lambda f: f({"x0": 0.1, "x1": 0.2, "x2": 1.5}, 10), "[0, 1]"),
    (lambda f: f(f.optimum, 0.5), "fidelity z=0.5"),
    (lambda f: f(f.optimum, math.nan), "fidelity"),
    (lambda f: f.prior("excellent"), "excellent"),
])
def test_bad_input_raises_an_hnas_error_naming_the_value(bad_call, expected):
    with pytest.raises(SearchSpaceError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        bad_call(MFHartmann.named("hartmann3"))


def test_bad_construction_is_refused():
    with pytest.raises(HnasError, match="dims=4"):
        MFHartmann(dims=4)
    with pytest.raises(HnasError, match="hartmann5"):
        MFHartmann.named("hartmann5")
    with pytest.raises(HnasError, match="awful"):
        MFHartmann.named("hartmann3", "awful")


# -- families of related tasks -------------------------------------------------------------------
def _x(config):
    return np.array(list(config.values()))


def test_same_is_the_source_and_a_family_ignores_the_task_it_is_asked_from(function):
    assert function.related("same") == function
    assert function.related("far").related("near") == function.related("near")
    assert function.related("unrelated").related("same") == function


@pytest.mark.parametrize("relation", ["near", "far"])
def test_shifted_tasks_move_the_optimum_towards_the_centre_and_keep_its_value(function, relation):
    task = function.related(relation)
    source = _x(function.optimum)
    step = _x(task.optimum) - source
    assert np.abs(step) == pytest.approx(np.full(function.dims, RELATION_SHIFT[relation]))
    assert np.all(np.sign(step) == np.sign(0.5 - source))
    assert task.true_value(task.optimum) == pytest.approx(function.optimum_value, abs=1e-5)
    assert task.optimum_value == function.optimum_value
    # the landscape moved: every point of the task is the source's point minus the step
    rng = np.random.default_rng(1)
    for x in rng.uniform(0.2, 0.8, (10, function.dims)):
        assert task.true_value(task.to_config(x)) == pytest.approx(hartmann(x - step), abs=1e-12)


def test_the_unrelated_task_mirrors_every_coordinate(function):
    task = function.related("unrelated")
    assert _x(task.optimum) == pytest.approx(1.0 - _x(function.optimum))
    assert task.regret(task.optimum) == pytest.approx(0.0, abs=1e-5)
    for x in np.random.default_rng(2).random((10, function.dims)):
        assert task.true_value(task.to_config(x)) == pytest.approx(hartmann(1.0 - x), abs=1e-12)
    # what the source learnt is useless there: its optimum is about as bad as a point can be
    assert task.regret(function.optimum) > 3.0


def test_the_shift_costs_the_source_optimum_what_the_module_says():
    # documented in hnas.testing.hartmann: regret of the source's optimum on near / far
    for name, near, far in [("hartmann3", 0.316, 2.170), ("hartmann6", 0.337, 2.054)]:
        f = MFHartmann.named(name)
        assert f.related("near").regret(f.optimum) == pytest.approx(near, abs=1e-3)
        assert f.related("far").regret(f.optimum) == pytest.approx(far, abs=1e-3)


def test_related_tasks_keep_bias_noise_seed_and_move_their_priors(function):
    task = function.related("near")
    assert (task.bias, task.noise, task.seed) == (function.bias, function.noise, function.seed)
    for quality in ("good", "medium"):
        assert task.regret(task.prior(quality)) == pytest.approx(
            function.regret(function.prior(quality)), abs=1e-9)
    # the low-fidelity bias still only raises the value
    assert task(task.optimum, 1) > task.true_value(task.optimum)
    assert task(task.optimum, 100) == pytest.approx(function.optimum_value, abs=1e-5)
    # a prior moved past the border is clipped into the cube
    assert all(0.0 <= v <= 1.0 for v in function.related("far").prior("bad").values())


def test_bad_relations_and_shifts_are_refused():
    f = MFHartmann.named("hartmann3")
    with pytest.raises(SearchSpaceError, match="'sideways'"):
        f.related("sideways")
    with pytest.raises(SearchSpaceError, match=r"shift=\[0.1, 0.1\] must be 3"):
        MFHartmann(dims=3, shift=(0.1, 0.1))
    with pytest.raises(SearchSpaceError, match="out of"):
        MFHartmann(dims=3, shift=(0.0, 0.0, 0.2))   # 0.853 + 0.2 > 1
    assert RELATIONS == ("same", "near", "far", "unrelated")


def test_lives_outside_the_engine_and_needs_only_numpy():
    code = ("import sys, hnas.testing.hartmann; "
            "print(sorted(m for m in ('hnas.search', 'lark', 'scipy') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
    assert importlib.util.find_spec("hnas.search.hartmann") is None
