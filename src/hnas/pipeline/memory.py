"""`hnas search --gpu-memory GB`: configurations whose estimated training memory exceeds the budget are never trained.

The estimate is :func:`hnas.cfgunet.cost.training_memory` of the network a configuration trains (its
derivation on its plan: the default, 2D or ResEnc M plan as the trial would pick) at that plan's batch
and patch, with AMP and the configuration's optimizer. The engine only sees a
:class:`hnas.search.feasibility.ConfigFilter`; this module supplies its estimate and refuses, before
the run folder is written, a budget below every configuration it samples.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from hnas.cfgunet import compile_architecture
from hnas.cfgunet.cost import GIB, TrainingMemory, training_memory
from hnas.errors import SearchError
from hnas.pipeline.run import stored_residual_plan
from hnas.planning import Plan
from hnas.search import SearchSpace
from hnas.search.feasibility import ConfigFilter
from hnas.train.config import network_choice, train_config

FILTER_NAME = "estimated GPU training memory"
#: Configurations sampled to find the smallest a space holds before a run starts (uniform and prior, seeded).
BUDGET_CHECK_SAMPLES, BUDGET_CHECK_SEED = 200, 0


@dataclass(frozen=True)
class MemoryEstimator:
    """A configuration's estimated training memory on a run's plans (trials train on CUDA with AMP)."""

    plan: Plan
    grammar: str
    plan_2d: Plan | None = None
    grammar_2d: str | None = None
    residual_plan: Plan | None = None
    amp: bool = True

    @classmethod
    def of(cls, setup) -> "MemoryEstimator":
        """From a RunSetup or TrainSetup (both name their plans alike)."""
        return cls(setup.plan, setup.grammar, setup.plan_2d, setup.grammar_2d, setup.residual_plan)

    @classmethod
    def for_run(cls, setup, run_dir: Path) -> "MemoryEstimator":
        """On the plans a run's trials train on: its own copy of the ResEnc M plan (none in older runs)."""
        return replace(cls.of(setup), residual_plan=stored_residual_plan(run_dir, setup.residual_plan))

    def memory(self, config: Mapping[str, Any]) -> TrainingMemory:
        choice = network_choice(config, self.plan, self.grammar, plan_2d=self.plan_2d, grammar_2d=self.grammar_2d,
                                residual_plan=self.residual_plan)
        spec = compile_architecture(choice.grammar, choice.architecture, choice.plan,
                                    dropout_rate=choice.dropout_rate, deep_supervision=True)
        return training_memory(spec, tuple(choice.plan.patch_size), choice.plan.batch_size, amp=self.amp,
                               optimizer=train_config(config).optimizer)

    def gib(self, config: Mapping[str, Any]) -> float:
        return self.memory(config).total / GIB


def memory_filter(estimator: MemoryEstimator, budget_gib: float) -> ConfigFilter:
    return ConfigFilter(FILTER_NAME, estimator.gib, float(budget_gib), unit="GB")


def sampled_estimates(estimator: MemoryEstimator, space: SearchSpace, n: int = BUDGET_CHECK_SAMPLES,
                      seed: int = BUDGET_CHECK_SEED) -> list[float]:
    """Estimates (GiB) of the space's default and ``n`` seeded draws, half uniform (the extremes), half prior."""
    rng = np.random.default_rng(seed)
    configs = [space.default_config()]
    configs += [space.sample_uniform(rng) if i % 2 else space.sample_prior(rng) for i in range(n)]
    return [estimator.gib(config) for config in configs]


def check_memory_budget(budget_gib: float | None, estimator: MemoryEstimator, space: SearchSpace) -> None:
    """Refuse, before anything is written, a budget below every configuration sampled from the space."""
    if budget_gib is None:
        return
    estimates = sampled_estimates(estimator, space)
    smallest = min(estimates)
    if smallest > budget_gib:
        plan = estimator.plan
        raise SearchError(f"--gpu-memory {budget_gib:g} GB is below the estimated training memory of every "
                          f"configuration: the smallest of {len(estimates)} sampled needs {smallest:.3g} GB "
                          f"(the prior's centre {estimates[0]:.3g} GB; batch {plan.batch_size}, patch "
                          f"{'x'.join(map(str, plan.patch_size))}, AMP); expected a budget of at least "
                          f"{smallest:.3g} GB, or a smaller preset")


def describe_budget(budget_gib: float, estimator: MemoryEstimator, space: SearchSpace) -> str:
    """The line a search prints at its start."""
    default = estimator.gib(space.default_config())
    return (f"GPU memory budget: {budget_gib:g} GB of estimated training memory (AMP); the prior's centre "
            f"(nnU-Net's default unless --prior-from) needs {default:.3g} GB; configurations over the budget are drawn again, never trained")
