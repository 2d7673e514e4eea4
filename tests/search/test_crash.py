"""Crash safety: SIGKILL the search process at random points, resume, compare.

A killed run may lose only the trial that was running (it stays pending and is re-run as the
same job); no finished trial is lost, changed or evaluated again, and with the serial executor
the final history equals that of an uninterrupted run with the same seed.
"""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hnas.pipeline.spaces import make_space
from hnas.search import run
from hnas.search.storage import database_path

from .fakes import WordArchitecture

TESTS = Path(__file__).resolve().parents[1]
SRC = TESTS.parent / "src"
MAX_TRIALS = 45
SEED = 11
#: PriorBand, and the model-based optimizers whose density model kicks in within MAX_TRIALS.
OPTIMIZERS = ["priorband", "bohb", "priorband-bo"]
#: Each killed process of a model-based run re-imports statsmodels; their kill tests are slow
#: (tests/search/test_bohb.py resumes them in-process after an interrupted trial).
KILLED = ["priorband"] + [pytest.param(name, marks=pytest.mark.slow) for name in OPTIMIZERS[1:]]

# The search as a separate process: an optimizer over HPO + a grammar-like architecture; the
# objective logs every start (to spot re-evaluations) and sleeps a little so kills land
# inside trials as well as between them.
SCRIPT = """
import sys, time
from pathlib import Path
from hnas.pipeline.spaces import make_space
from hnas.search import run
from search.fakes import WordArchitecture
from search.test_crash import objective

run_dir = Path(sys.argv[1])
run(objective, make_space("hpo+hnas", WordArchitecture()), optimizer=sys.argv[4],
    max_trials=int(sys.argv[2]), min_fidelity=1, max_fidelity=9, run_dir=run_dir, seed=int(sys.argv[3]),
    resume=True)
"""


def objective(context):
    log = Path(context.trial_dir).parents[1] / "executions.log"
    with open(log, "a") as handle:
        handle.write(f"{context.trial_id}\n")
    if os.environ.get("HNAS_CRASH_TEST_SLEEP"):
        time.sleep(float(os.environ["HNAS_CRASH_TEST_SLEEP"]))
    config = context.config
    loss = (np.log10(config["initial_lr"]) + 2.5) ** 2 + config["architecture"].count("b") * 0.1
    return {"loss": float(loss + 1 / context.fidelity), "cost": context.fidelity}


def _finished_rows(run_dir):
    path = database_path(run_dir)
    if not path.exists():
        return {}
    with sqlite3.connect(path) as db:
        try:
            rows = db.execute("SELECT trial_id, config, fidelity, rung, bracket, parent_id, state, "
                              "loss, cost, error FROM trials WHERE state != 'pending'").fetchall()
        except sqlite3.OperationalError:  # schema not written yet
            return {}
    return {row[0]: row for row in rows}


def _start(run_dir, max_trials, optimizer):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS)]),
           "HNAS_CRASH_TEST_SLEEP": "0.01"}
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(run_dir), str(max_trials),
                             str(SEED), optimizer], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def _log_lines(run_dir):
    log = run_dir / "executions.log"
    return [int(x) for x in log.read_text().split()] if log.exists() else []


@pytest.mark.parametrize("optimizer", KILLED)
def test_sigkill_at_random_points_loses_and_duplicates_nothing(tmp_path, optimizer):
    rng = np.random.default_rng(0)
    run_dir = tmp_path / "killed"
    snapshots = []
    for target in sorted(rng.choice(np.arange(3, MAX_TRIALS - 3), size=4, replace=False)):
        process = _start(run_dir, MAX_TRIALS, optimizer)
        deadline = time.monotonic() + 60
        while len(_finished_rows(run_dir)) < target and process.poll() is None:
            assert time.monotonic() < deadline, "the search made no progress"
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.012))  # anywhere inside the next trial or commit
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()
        snapshots.append((_finished_rows(run_dir), len(_log_lines(run_dir))))
    finish = _start(run_dir, MAX_TRIALS, optimizer)
    _, errors = finish.communicate(timeout=120)
    assert finish.returncode == 0, errors.decode()

    final = _finished_rows(run_dir)
    assert sorted(final) == list(range(MAX_TRIALS))
    executions = _log_lines(run_dir)
    for finished, log_length in snapshots:
        # nothing finished before a kill was lost, changed, or evaluated again afterwards
        assert all(final[trial_id] == row for trial_id, row in finished.items())
        assert not set(executions[log_length:]) & set(finished)

    straight_dir = tmp_path / "straight"
    run(objective, make_space("hpo+hnas", WordArchitecture()), optimizer=optimizer,
        max_trials=MAX_TRIALS, min_fidelity=1, max_fidelity=9, run_dir=straight_dir, seed=SEED)
    assert _finished_rows(straight_dir) == final
    assert len(set(executions)) == MAX_TRIALS
    print(f"{len(executions) - MAX_TRIALS} interrupted trial(s) re-run after "
          f"{len(snapshots)} kills")


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_uninterrupted_runs_are_reproducible(tmp_path, optimizer):
    space = make_space("hpo+hnas", WordArchitecture())
    for name in ("a", "b"):
        run(objective, space, optimizer=optimizer, max_trials=MAX_TRIALS, min_fidelity=1,
            max_fidelity=9, run_dir=tmp_path / name, seed=SEED)
    assert _finished_rows(tmp_path / "a") == _finished_rows(tmp_path / "b")
