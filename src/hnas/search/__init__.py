"""Search engine: spaces, fidelity schedule, optimizers, Pareto tools, storage, executors, loop.

It optimises any objective callable over a :class:`SearchSpace` whose one special parameter
may be an architecture string from a grammar; it knows nothing of U-Nets and never imports
torch. Start with :func:`run`; optimizers can also be driven directly through the ask/tell
protocol in :mod:`hnas.search.types`.
"""

from hnas.search.bohb import BOHB, PriorBandBO  # also registers "bohb" and "priorband-bo"
from hnas.search.executors import EXECUTORS, Outcome, TrialContext, make_executor
from hnas.search.fidelity import FidelitySchedule
from hnas.search.loop import Progress, RunSummary, budget_spent, load_run, run, trial_dir
from hnas.search.model import DensityModel
from hnas.search.optimizers import (
    OPTIMIZERS,
    PROMOTIONS,
    Hyperband,
    PriorBand,
    RandomSearch,
    RegularizedPriorBand,
    SuccessiveHalving,
    final_incumbent,
    make_optimizer,
)
from hnas.search.pareto import (
    area_incumbent,
    crowding_distance,
    dominates,
    hypervolume,
    non_dominated_sort,
    pareto_front,
)
from hnas.search.space import (
    Architecture,
    ArchitectureDistribution,
    Categorical,
    Condition,
    Float,
    Int,
    Ordinal,
    SearchSpace,
)
from hnas.search.storage import RunStore
from hnas.search.types import NO_BRACKET, Job, Optimizer, Trial

__all__ = [
    "EXECUTORS", "NO_BRACKET", "OPTIMIZERS", "PROMOTIONS",
    "BOHB", "Architecture", "ArchitectureDistribution", "Categorical", "Condition",
    "DensityModel", "FidelitySchedule", "Float", "Hyperband", "Int", "Job", "Optimizer", "Ordinal",
    "Outcome", "PriorBand", "PriorBandBO", "Progress", "RandomSearch",
    "RegularizedPriorBand", "RunStore", "RunSummary", "SearchSpace", "SuccessiveHalving",
    "Trial", "TrialContext",
    "area_incumbent", "budget_spent", "crowding_distance", "dominates", "final_incumbent",
    "hypervolume", "load_run", "make_executor", "make_optimizer",
    "non_dominated_sort", "pareto_front", "run", "trial_dir",
]
