"""Small search runs for report/plot/importance tests: a cheap synthetic objective, no training.

The run folder looks like one `hnas search` writes (run.json, plan.json, grammar.lark,
search.sqlite), with a hand-built plan.
"""

from __future__ import annotations

import math
from pathlib import Path

from conftest import isotropic_plan
from hnas.grammar import make_grammar
from hnas.pipeline.run import SearchSettings
from hnas.pipeline.spaces import make_space
from hnas.sampling import GrammarArchitecture
from hnas.search import run

PLAN = isotropic_plan(4, patch=64, base=8, top=64)
GRAMMAR = make_grammar(PLAN)


def synthetic_objective(context) -> dict:
    """Loss from the learning rate, the architecture's block count and the fidelity; cost grows with
    blocks and epochs (and accumulates over rungs, as training runtime does)."""
    config = context.config
    blocks = sum(int(w[:-1]) for w in config.get("architecture", "").split() if w.endswith("b") and w[:-1].isdigit())
    lr_term = 0.05 * (math.log10(config.get("initial_lr", 1e-2)) + 2.0) ** 2
    loss = min(0.95, 0.1 + lr_term + 0.01 * abs(blocks - 14) + 0.3 / context.fidelity)
    return {"loss": loss, "cost": context.fidelity * (1.0 + 0.1 * blocks), "dice": 1.0 - loss}


def make_run(run_dir: Path, *, optimizer: str = "priorband", space: str = "hpo+hnas", seed: int = 0,
             max_trials: int = 20, objective=synthetic_objective, settings_file: bool = True) -> Path:
    architecture = GrammarArchitecture(GRAMMAR, "medium") if space in ("hpo+hnas", "hnas") else None
    run(objective, make_space(space, architecture), optimizer=optimizer, max_trials=max_trials, min_fidelity=1,
        max_fidelity=9, eta=3, run_dir=run_dir, seed=seed)
    if settings_file:  # what hnas.pipeline.search.prepare_run_dir writes beside the history
        SearchSettings(space=space, optimizer=optimizer, max_trials=max_trials, min_epochs=1, max_epochs=9, eta=3,
                       seed=seed).save(run_dir)
        PLAN.save(run_dir / "plan.json")
        (run_dir / "grammar.lark").write_text(GRAMMAR)
    return run_dir
