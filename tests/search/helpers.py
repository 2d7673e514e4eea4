"""Drive optimizers without storage: a toy objective and a simulated pool of workers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from hnas.pipeline.spaces import make_space
from hnas.search import Job, Trial, make_optimizer

from .fakes import WordArchitecture


def contract_space():
    """HPO parameters (with the momentum condition) plus a grammar-like architecture."""
    return make_space("hpo+hnas", WordArchitecture())


def toy_loss(config, fidelity: float) -> float:
    """Smooth in the hyperparameters, better at higher fidelity, architecture 'a' helps."""
    lr_term = (math.log10(config["initial_lr"]) + 2.5) ** 2
    arch_term = 0.1 * config.get("architecture", "").split().count("b")
    return lr_term + arch_term + config["aug_factor"] * 0.05 + 1.0 / fidelity


def toy_cost(config, fidelity: float) -> float:
    return fidelity * (1.0 + config["aug_factor"])


def build(name, space=None, *, seed=0, min_fidelity=1, max_fidelity=27, eta=3, **options):
    return make_optimizer(name, space or contract_space(), min_fidelity=min_fidelity,
                          max_fidelity=max_fidelity, eta=eta, seed=seed, **options)


@dataclass
class Simulation:
    history: list = field(default_factory=list)
    #: (history as the optimizer saw it, the job it answered) for every ask
    asks: list = field(default_factory=list)


def simulate(optimizer, n_trials: int, *, workers: int = 1, fails=lambda job: False,
             order_seed: int = 0) -> Simulation:
    """Run ``n_trials`` jobs with ``workers`` in flight; they finish in a seeded random order."""
    sim = Simulation()
    running: list[int] = []
    order = np.random.default_rng(order_seed)
    while len(sim.history) < n_trials or running:
        while len(running) < workers and len(sim.history) < n_trials:
            snapshot = list(sim.history)
            job = optimizer.ask(snapshot)
            assert isinstance(job, Job), f"ask returned {job!r} with {len(running)} pending"
            sim.asks.append((snapshot, job))
            sim.history.append(Trial.pending(job))
            running.append(job.trial_id)
        trial_id = running.pop(int(order.integers(len(running))))
        job = sim.history[trial_id].job
        if fails(job):
            trial = Trial.pending(job).failed("synthetic failure")
        else:
            trial = Trial.pending(job).succeeded(toy_loss(job.config, job.fidelity),
                                                 toy_cost(job.config, job.fidelity))
        sim.history[trial_id] = trial
        optimizer.tell(trial)
    return sim


def finished(job: Job, loss: float, cost: float | None = None) -> Trial:
    return Trial.pending(job).succeeded(loss, job.fidelity if cost is None else cost)
