"""Run NePS 0.17's PriorBand on the multi-fidelity Hartmann functions (a peer, not a dependency).

Executed by ``bench_priorband.py`` with the interpreter of NePS's own virtualenv:

    python neps_runner.py TASKS.json RESULTS.json

``TASKS.json`` holds ``{"src": <path of hnas' src>, "tasks": [task, ...]}``; each task names a
function, a prior, a seed and a budget (in max-fidelity evaluations). The function itself is
loaded from ``src/hnas/testing/hartmann.py`` (numpy only) so NePS sees exactly the function our
optimizers see. ``RESULTS.json`` gets, per task, every evaluation in order
(``config``, ``fidelity``, ``value``, ``cost``); the benchmark computes regret from them with the
same code it uses for our optimizers.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import random
import sys
import time
import warnings
from pathlib import Path


def _seed_everything(seed: int) -> None:
    """NePS samples from the global numpy and torch generators."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _search_space(function, prior: dict[str, float], confidence: str):
    import neps

    parameters = {name: neps.HPOFloat(lower=0.0, upper=1.0, prior=prior[name],
                                      prior_confidence=confidence)
                  for name in function.names}
    parameters["z"] = neps.HPOInteger(lower=int(function.z_min), upper=int(function.z_max),
                                      is_fidelity=True)
    return neps.SearchSpace(parameters)


def _hartmann_module(src: str):
    """Load ``hnas/testing/hartmann.py`` by path, so that no package ``__init__`` beyond
    ``hnas``'s runs in NePS's venv (which need not have hnas' dependencies); the module itself
    needs only numpy and ``hnas.errors``."""
    sys.path.insert(0, src)
    spec = importlib.util.spec_from_file_location(
        "hnas_hartmann", Path(src) / "hnas" / "testing" / "hartmann.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_task(task: dict, hartmann) -> dict:
    """One PriorBand run until the budget is spent; returns its evaluations in order."""
    import neps

    function = hartmann.MFHartmann(dims=task["dims"], bias=task["bias"], noise=task["noise"],
                          seed=task["seed"])
    _seed_everything(task["seed"])
    optimizer = neps.algorithms.priorband(
        _search_space(function, task["prior"], task["confidence"]),
        eta=task["eta"], sample_prior_first="highest_fidelity")
    loop = neps.AskAndTell(optimizer)
    evaluations, spent, started = [], 0.0, time.perf_counter()
    while spent < task["budget"] - 1e-9:
        trial = loop.ask()
        fidelity = int(trial.config["z"])
        config = {name: float(trial.config[name]) for name in function.names}
        value, cost = function(config, fidelity), function.cost(fidelity)
        loop.tell(trial, {"objective_to_minimize": value, "cost": cost})
        spent += cost
        evaluations.append({"config": config, "fidelity": fidelity, "value": value, "cost": cost})
    return {"key": task["key"], "evaluations": evaluations,
            "seconds": time.perf_counter() - started}


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: neps_runner.py TASKS.json RESULTS.json", file=sys.stderr)
        return 2
    request = json.loads(Path(argv[1]).read_text())
    hartmann = _hartmann_module(request["src"])
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    import neps

    results = []
    for task in request["tasks"]:
        results.append(run_task(task, hartmann))
        print(f"neps {task['key']}: {len(results[-1]['evaluations'])} evaluations in "
              f"{results[-1]['seconds']:.1f}s", file=sys.stderr, flush=True)
    Path(argv[2]).write_text(json.dumps({"neps_version": neps.__version__ if hasattr(
        neps, "__version__") else _installed_version(), "results": results}))
    return 0


def _installed_version() -> str:
    from importlib.metadata import version

    return version("neural-pipeline-search")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
