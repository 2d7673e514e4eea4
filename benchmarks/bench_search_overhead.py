"""Search-engine overhead per trial with 1,000 trials already in the history.

For every optimizer: build a 1,000-trial run (toy objective, SQLite storage), then time the
next trials' ask + store job (commit) + store outcome (commit) + tell, and the same through
``hnas.search.run(resume=True)`` end to end. Target: <= 20 ms per trial.

    python benchmarks/bench_search_overhead.py [--history 1000] [--trials 100]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

from hnas.pipeline.spaces import make_space
from hnas.search import OPTIMIZERS, RunStore, Trial, make_optimizer, run

MIN_FIDELITY, MAX_FIDELITY, ETA, SEED = 1, 81, 3, 0
TARGET_MS = 20.0


def toy_objective(context) -> dict:
    """Cheap stand-in for training: loss falls with fidelity, cost grows with it."""
    config = context.config
    loss = (math.log10(config["initial_lr"]) + 2.5) ** 2 + config["aug_factor"] * 0.05
    return {"loss": loss + 1.0 / context.fidelity, "cost": context.fidelity * (1 + config["aug_factor"])}


class _Context:
    def __init__(self, job):
        self.config, self.fidelity = job.config, job.fidelity


def _metadata(optimizer, space) -> dict:
    return {"space_hash": space.hash, "space": space.describe(), "architecture_identity": None,
            "architecture_key": None, "seed": SEED, "optimizer": optimizer.name,
            "optimizer_settings": optimizer.settings(), "objectives": ["loss", "cost"]}


def _one_trial(optimizer, store, history) -> float:
    started = time.perf_counter()
    job = optimizer.ask(history)
    history.append(store.add(job))
    result = toy_objective(_Context(job))
    trial = history[-1].succeeded(result["loss"], result["cost"])
    store.finish(trial)
    history[-1] = trial
    optimizer.tell(trial)
    return (time.perf_counter() - started) * 1000.0


def measure(name: str, history_size: int, trials: int, root: Path) -> dict:
    space = make_space("hpo+nas")
    optimizer = make_optimizer(name, space, min_fidelity=MIN_FIDELITY, max_fidelity=MAX_FIDELITY,
                               eta=ETA, seed=SEED)
    run_dir = root / name
    store = RunStore.create_or_resume(run_dir, _metadata(optimizer, space), resume=False)
    history: list[Trial] = []
    for _ in range(history_size):
        _one_trial(optimizer, store, history)
    times = [_one_trial(optimizer, store, history) for _ in range(trials)]
    store.close()
    # End to end: the public loop resuming the same run (loads the history once).
    started = time.perf_counter()
    run(toy_objective, space, optimizer=name, max_trials=history_size + 2 * trials,
        min_fidelity=MIN_FIDELITY, max_fidelity=MAX_FIDELITY, eta=ETA, run_dir=run_dir,
        seed=SEED, resume=True)
    loop_ms = (time.perf_counter() - started) * 1000.0 / trials
    return {"optimizer": name, "median": statistics.median(times),
            "p95": sorted(times)[int(0.95 * (len(times) - 1))], "max": max(times),
            "loop": loop_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=100)
    args = parser.parse_args()
    print(f"ask + tell + 2 commits per trial, {args.history} trials in the history, "
          f"{args.trials} measured (space hpo+nas, fidelity {MIN_FIDELITY}..{MAX_FIDELITY}, "
          f"eta {ETA}); target <= {TARGET_MS:g} ms")
    print(f"{'optimizer':<24}{'median ms':>10}{'p95 ms':>10}{'max ms':>10}{'run() ms':>10}  ok")
    with tempfile.TemporaryDirectory() as root:
        for name in OPTIMIZERS:
            row = measure(name, args.history, args.trials, Path(root))
            ok = "yes" if row["p95"] <= TARGET_MS and row["loop"] <= TARGET_MS else "NO"
            print(f"{row['optimizer']:<24}{row['median']:>10.2f}{row['p95']:>10.2f}"
                  f"{row['max']:>10.2f}{row['loop']:>10.2f}  {ok}")


if __name__ == "__main__":
    main()
