"""fANOVA importance over a run's trials: the right parameter wins, exclusions are explained."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from hnas.pipeline.spaces import make_space
from hnas.sampling import GrammarArchitecture
from hnas.search import Job, Trial
from hnas.viz.importance import (
    ARCHITECTURE_FEATURES,
    MIN_TRIALS,
    RELIABLE_MIN_TRIALS,
    ImportanceError,
    architecture_features,
    hyperparameter_importance,
    importance_table,
    reliable_trial_count,
)

from .run_helpers import GRAMMAR, PLAN

pytest.importorskip("optuna", reason="hyperparameter importance needs optuna (pip install optuna scikit-learn)")
pytest.importorskip("sklearn", reason="optuna's fANOVA needs scikit-learn")


def sampled_trials(space, n, loss_of, *, fidelity=lambda i: 9.0, seed=0):
    rng = np.random.default_rng(seed)
    trials = []
    for i in range(n):
        config = space.sample_uniform(rng)
        job = Job(i, config, fidelity(i), rung=0)
        trials.append(Trial.pending(job).succeeded(loss_of(config, job.fidelity), cost=job.fidelity))
    return trials


def lr_only(config, fidelity):
    return (math.log10(config["initial_lr"]) + 2.0) ** 2


def test_the_parameter_that_drives_the_loss_is_the_most_important():
    space = make_space("hpo")
    trials = sampled_trials(space, 40, lr_only)
    result = hyperparameter_importance(trials, space.describe(), seed=0)
    assert result.available and result.n_trials == 40
    assert next(iter(result.values)) == "initial_lr" and result.values["initial_lr"] > 0.6
    assert math.isclose(sum(result.values.values()), 1.0, rel_tol=1e-6)
    assert list(result.values.values()) == sorted(result.values.values(), reverse=True)
    # momentum only exists for SGD trials: left out rather than imputed
    assert result.excluded == {"epochs": "one fidelity only", "momentum": "conditional: inactive in some trials"}
    assert hyperparameter_importance(trials, space.describe(), seed=0) == result  # deterministic


def test_fidelity_enters_when_trials_ran_at_several():
    space = make_space("hpo")
    trials = sampled_trials(space, 30, lambda c, f: 1.0 / f + 0.001 * c["aug_factor"], fidelity=lambda i: 3.0 ** (i % 3))
    result = hyperparameter_importance(trials, space.describe(), seed=0)
    assert next(iter(result.values)) == "epochs" and result.values["epochs"] > 0.8


def test_architecture_becomes_derived_features_with_the_grammar():
    space = make_space("hnas", GrammarArchitecture(GRAMMAR))

    def blocks_matter(config, fidelity):
        return architecture_features(config["architecture"], GRAMMAR, PLAN)[ARCHITECTURE_FEATURES[2]] / 30.0

    trials = sampled_trials(space, 30, blocks_matter, seed=1)
    rows, losses, excluded = importance_table(trials, space.describe(), grammar=GRAMMAR, plan=PLAN)
    assert set(rows[0]) == {"dropout_rate", *ARCHITECTURE_FEATURES}
    assert rows[0][ARCHITECTURE_FEATURES[1]] in ("conv", "residual") and isinstance(rows[0][ARCHITECTURE_FEATURES[0]], int)
    result = hyperparameter_importance(trials, space.describe(), grammar=GRAMMAR, plan=PLAN, seed=0)
    assert "architecture" not in result.values
    assert max(result.values, key=result.values.get) in (ARCHITECTURE_FEATURES[2], ARCHITECTURE_FEATURES[0])

    without_grammar = hyperparameter_importance(trials, space.describe(), seed=0)
    assert "no grammar.lark" in without_grammar.excluded["architecture"]
    assert set(without_grammar.values) == {"dropout_rate"}


def test_too_few_or_flat_trials_give_a_note_not_an_error():
    space = make_space("hpo")
    few = sampled_trials(space, MIN_TRIALS - 1, lr_only)
    result = hyperparameter_importance(few, space.describe())
    assert not result.available and f"fANOVA needs at least {MIN_TRIALS}" in result.note
    failed = [Trial.pending(Job(i, {"initial_lr": 0.01}, 9.0, rung=0)).failed("x") for i in range(10)]
    assert hyperparameter_importance(failed, space.describe()).n_trials == 0
    constant = [Trial.pending(Job(i, {"initial_lr": 0.01}, 9.0, rung=0)).succeeded(0.5, 1.0) for i in range(10)]
    flat = hyperparameter_importance(constant, space.describe())
    assert not flat.available and flat.excluded["initial_lr"] == "constant over the trials"
    same_loss = hyperparameter_importance(sampled_trials(space, 10, lambda c, f: 0.5), space.describe())
    assert not same_loss.available and "same loss" in same_loss.note


def test_reliable_trial_count_is_two_per_parameter_and_at_least_ten():
    assert reliable_trial_count(3) == RELIABLE_MIN_TRIALS == 10
    assert reliable_trial_count(7) == 14 and reliable_trial_count(13) == 26


def test_few_trials_are_computed_but_flagged_unreliable():
    space = make_space("hpo")
    few = hyperparameter_importance(sampled_trials(space, 8, lr_only), space.describe(), seed=0)
    assert few.available and few.n_trials == 8 and len(few.values) == 7  # shown, not hidden
    assert not few.reliable and few.min_reliable_trials == 14
    assert few.reliability_note.startswith("computed from 8 trials: unreliable below 14")


def test_enough_trials_carry_no_warning():
    space = make_space("hpo")
    many = hyperparameter_importance(sampled_trials(space, 14, lr_only), space.describe(), seed=0)
    assert many.reliable and many.n_trials == many.min_reliable_trials == 14
    assert many.reliability_note is None
    not_computed = hyperparameter_importance(sampled_trials(space, MIN_TRIALS - 1, lr_only), space.describe())
    assert not not_computed.reliable and not_computed.reliability_note is None  # its note says why instead


def test_missing_optuna_is_a_clear_error(monkeypatch):
    space = make_space("hpo")
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna -> ImportError
    with pytest.raises(ImportanceError, match="needs optuna and scikit-learn"):
        hyperparameter_importance(sampled_trials(space, 10, lr_only), space.describe())
