"""Module-level objectives, so worker processes (spawn, Dask) can unpickle them."""

from __future__ import annotations

import math
import os
import time


def quadratic(context) -> dict:
    config = context.config
    loss = (math.log10(config["initial_lr"]) + 2.5) ** 2 + 1.0 / context.fidelity
    return {"loss": loss, "cost": context.fidelity * (1 + config["aug_factor"]),
            "pid": os.getpid()}


def dies_on_trial_3(context) -> dict:
    """Kills its own worker process, as a segfault or an out-of-memory kill would."""
    if context.trial_id == 3:
        os._exit(7)
    return quadratic(context)


def dies_on_trial_3_counting_attempts(context) -> dict:
    """As :func:`dies_on_trial_3`, after appending one line per attempt to ``attempts`` in the trial's folder
    (a scheduler that re-ran the task on another worker would leave several lines)."""
    if context.trial_id == 3:
        with open(os.path.join(context.trial_dir, "attempts"), "a") as handle:
            handle.write(f"{os.getpid()}\n")
        os._exit(7)
    return quadratic(context)


def slow_quadratic(context) -> dict:
    time.sleep(0.2)
    return quadratic(context)


def reports_worker_tag(context) -> dict:
    """The quadratic's result plus the HNAS_TEST_WORKER_TAG its worker process was started with."""
    return {**quadratic(context), "tag": os.environ.get("HNAS_TEST_WORKER_TAG")}
