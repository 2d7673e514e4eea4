"""BOHB and PriorBand+BO: when the model takes over, what it replaces, and resuming runs."""

from __future__ import annotations

import math
from collections import Counter
from functools import lru_cache

import numpy as np
import pytest
from scipy import stats

from conftest import isotropic_plan
from hnas.errors import SearchError
from hnas.grammar import make_grammar
from hnas.pipeline.spaces import make_space
from hnas.sampling import GrammarArchitecture
from hnas.search import (
    Categorical,
    Condition,
    Float,
    SearchSpace,
    load_run,
    run,
)

from .fakes import WordArchitecture
from .helpers import Simulation, build, finished


def small_space() -> SearchSpace:
    return SearchSpace([Float("x", 0.0, 1.0, 0.5), Float("y", 0.0, 1.0, 0.5),
                        Categorical("kind", ("a", "b"), "a")])


def small_loss(config, fidelity) -> float:
    return (config["x"] - 0.7) ** 2 + (config["y"] - 0.2) ** 2 \
        + 0.1 * (config["kind"] == "a") + 1.0 / fidelity


def drive(optimizer, n_trials: int, loss=small_loss) -> Simulation:
    """Serial ask/tell with a given objective (helpers.simulate has its own toy loss)."""
    sim = Simulation()
    for _ in range(n_trials):
        snapshot = list(sim.history)
        job = optimizer.ask(snapshot)
        sim.asks.append((snapshot, job))
        trial = finished(job, loss(job.config, job.fidelity))
        sim.history.append(trial)
        optimizer.tell(trial)
    return sim


def enough_observations(snapshot, needed: int) -> bool:
    per_rung = Counter(t.rung for t in snapshot if t.is_finished)
    return any(count >= needed for count in per_rung.values())


def new_configs(sim: Simulation):
    return [(snapshot, job) for snapshot, job in sim.asks if job.parent_id is None]


# -- BOHB ----------------------------------------------------------------------------------------
def test_bohb_is_hyperband_until_a_rung_has_min_points_plus_two_observations():
    optimizer = build("bohb", small_space())
    hyperband = build("hyperband", small_space())
    needed = optimizer.model.min_points + 2
    assert (optimizer.model.min_points, needed) == (4, 6)
    sim = drive(optimizer, 120)
    before = [(s, j) for s, j in sim.asks if not enough_observations(s, needed)]
    assert len([j for _, j in before if j.parent_id is None]) >= needed
    for snapshot, job in before:
        assert hyperband.ask(snapshot) == job
    assert any(job.sampler == "model" for _, job in new_configs(sim))


@pytest.mark.parametrize("fraction", [0.0, 1 / 3, 1.0])
def test_bohb_keeps_its_random_fraction(fraction):
    optimizer = build("bohb", small_space(), random_fraction=fraction, candidates=8)
    sim = drive(optimizer, 400)
    needed = optimizer.model.min_points + 2
    active = [j.sampler for s, j in new_configs(sim) if enough_observations(s, needed)]
    random = active.count("random")
    assert set(active) <= {"random", "model"}
    if fraction in (0.0, 1.0):
        assert random == fraction * len(active)
    else:
        assert len(active) > 150
        assert stats.binomtest(random, len(active), fraction).pvalue > 0.01


def test_bohb_model_proposals_beat_its_random_ones():
    sim = drive(build("bohb", small_space(), seed=5), 250)
    losses = {"model": [], "random": []}
    for trial in sim.history:
        if trial.parent_id is None and trial.job.sampler in losses:
            losses[trial.job.sampler].append(small_loss(trial.config, math.inf))
    assert len(losses["model"]) > 40
    assert np.median(losses["model"]) < 0.5 * np.median(losses["random"])


def test_bohb_over_a_grammar_architecture_proposes_valid_derivations():
    distribution = GrammarArchitecture(make_grammar(isotropic_plan(4)), "medium")
    space = make_space("hnas", distribution)

    def loss(config, fidelity):
        words = config["architecture"].split()
        return words.count("batch_norm") - words.count("elu") + config["dropout_rate"] \
            + 1.0 / fidelity

    sim = drive(build("bohb", space, seed=1), 150, loss)
    model_jobs = [j for _, j in sim.asks if j.sampler == "model"]
    assert len(model_jobs) > 10
    for job in model_jobs:
        space.validate(job.config)
    elu = np.mean([j.config["architecture"].split().count("elu") for j in model_jobs])
    assert elu > 2 * 2 / 5   # twice the uniform share of ELU layers (encoder + decoder)


# -- PriorBand+BO ---------------------------------------------------------------------------------
def test_priorband_bo_is_priorband_until_its_model_activates():
    optimizer = build("priorband-bo", small_space(), seed=2)
    priorband = build("priorband", small_space(), seed=2)
    sim = drive(optimizer, 300)
    needed = optimizer.model.min_points + 2
    ready = [enough_observations(snapshot, needed) for snapshot, _ in sim.asks]
    assert ready.count(False) >= needed
    for (snapshot, job), active in zip(sim.asks, ready):
        if not active:
            assert priorband.ask(snapshot) == job
    fresh = {job.sampler for (_, job), active in zip(sim.asks, ready)
             if active and job.parent_id is None}
    assert {"model", "random", "prior", "incumbent"} <= fresh


def test_priorband_bo_hands_the_uniform_share_to_bohbs_sampler():
    optimizer = build("priorband-bo", small_space(), seed=3, candidates=8)
    sim = drive(optimizer, 500)
    needed = optimizer.model.min_points + 2
    samplers = Counter(job.sampler for snapshot, job in new_configs(sim)
                       if job.rung == 0 and enough_observations(snapshot, needed))
    total = sum(samplers.values())
    assert total > 100
    # at the base rung p_random = 1 / (1 + eta^0) = 1/2, of which BOHB keeps 1/3 uniform
    assert stats.binomtest(samplers["model"], total, 1 / 3).pvalue > 0.01
    assert stats.binomtest(samplers["random"], total, 1 / 6).pvalue > 0.01


# -- settings, resuming ----------------------------------------------------------------------------
def test_settings_carry_the_model_options():
    optimizer = build("bohb", small_space(), random_fraction=0.25, min_points=5)
    settings = optimizer.settings()
    assert settings["optimizer"] == "bohb"
    assert settings["random_fraction"] == 0.25 and settings["min_points"] == 5
    assert {"top_fraction", "candidates", "bandwidth_factor", "min_bandwidth"} <= set(settings)
    other = build("priorband-bo", small_space()).settings()
    assert {"min_points", "random_fraction"} <= set(other)


@pytest.mark.parametrize("name, options, message", [
    ("bohb", {"random_fraction": 1.5}, "random_fraction"),
    ("bohb", {"min_points": 1}, "min_points"),
    ("priorband-bo", {"top_fraction": 0.0}, "top_fraction"),
    ("priorband-bo", {"random_fraction": -0.1}, "random_fraction"),
    ("hyperband", {"min_points": 5}, "does not accept"),
])
def test_bad_options_are_refused_by_name(name, options, message):
    with pytest.raises(SearchError, match=message):
        build(name, small_space(), **options)


class Interrupt(KeyboardInterrupt):
    """Raised inside one trial: the loop dies with that trial pending, as on a crash."""


def objective_factory(interrupt_at: int | None):
    state = {"armed": interrupt_at is not None}

    def objective(context):
        if state["armed"] and context.trial_id == interrupt_at:
            state["armed"] = False
            raise Interrupt
        config = context.config
        loss = (math.log10(config["initial_lr"]) + 2.5) ** 2 \
            + config["architecture"].count("b") * 0.1
        return {"loss": loss + 1.0 / context.fidelity, "cost": context.fidelity}

    return objective


@lru_cache(maxsize=None)
def conditional_space() -> SearchSpace:
    return make_space("hpo+hnas", WordArchitecture())


@pytest.mark.parametrize("name", ["bohb", "priorband-bo"])
def test_a_run_interrupted_mid_trial_resumes_into_the_uninterrupted_history(tmp_path, name):
    settings = dict(optimizer=name, min_fidelity=1, max_fidelity=9, seed=4, max_trials=60)
    with pytest.raises(Interrupt):
        run(objective_factory(interrupt_at=37), conditional_space(), run_dir=tmp_path / "cut",
            **settings)
    assert sum(t.is_finished for t in load_run(tmp_path / "cut").history) == 37
    resumed = run(objective_factory(None), conditional_space(), run_dir=tmp_path / "cut",
                  resume=True, **settings)
    straight = run(objective_factory(None), conditional_space(), run_dir=tmp_path / "straight",
                   **settings)
    strip = [(t.job, t.state, t.loss, t.cost) for t in straight.history]
    assert [(t.job, t.state, t.loss, t.cost) for t in resumed.history] == strip
    assert any(t.job.sampler == "model" for t in straight.history[37:])


def test_resuming_with_other_model_settings_is_refused(tmp_path):
    settings = dict(optimizer="bohb", min_fidelity=1, max_fidelity=9, seed=0, max_trials=5)
    run(objective_factory(None), conditional_space(), run_dir=tmp_path, **settings)
    with pytest.raises(SearchError, match="random_fraction"):
        run(objective_factory(None), conditional_space(), run_dir=tmp_path, resume=True,
            optimizer_options={"random_fraction": 0.5}, **{**settings, "max_trials": 10})


def test_conditional_space_model_jobs_respect_conditions():
    space = SearchSpace([
        Categorical("optimizer", ("SGD", "Adam"), "SGD"),
        Float("momentum", 0.5, 0.99, 0.9, condition=Condition("optimizer", ("SGD",))),
        Float("lr", 0.0, 1.0, 0.5)])

    def loss(config, fidelity):
        return config["lr"] + (1 - config.get("momentum", 0.0)) + 1.0 / fidelity

    sim = drive(build("bohb", space, seed=3), 150, loss)
    model_jobs = [j for _, j in sim.asks if j.sampler == "model"]
    assert len(model_jobs) > 20
    for job in model_jobs:
        space.validate(job.config)
    assert Counter(j.config["optimizer"] for j in model_jobs)["SGD"] > len(model_jobs) / 2
