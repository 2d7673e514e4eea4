import json
import sqlite3

import numpy as np
import pytest

from hnas.errors import SearchError
from hnas.search import Job, RunStore, Trial
from hnas.search.storage import database_path

METADATA = {"space_hash": "abc", "architecture_identity": "g1", "seed": 0,
            "optimizer": "priorband", "optimizer_settings": {"eta": 3, "max_fidelity": 9},
            "objectives": ["loss", "cost"], "architecture_key": "architecture"}


def open_store(run_dir, resume=False, **changes):
    return RunStore.create_or_resume(run_dir, {**METADATA, **changes}, resume=resume,
                                     architecture_key="architecture")


def test_trials_round_trip_exactly(tmp_path):
    config = {"initial_lr": 0.1 / 3, "optimizer": "SGD", "model_scale": 1.0,
              "architecture": "a b a"}
    with open_store(tmp_path) as store:
        pending = store.add(Job(0, config, 3.0, rung=1, bracket=2, sampler="prior"))
        store.add(Job(1, config, 9.0, rung=2, bracket=2, parent_id=0, sampler="promotion"))
        done = pending.succeeded(0.25, 12.5, {"dice": np.array([0.8, 0.9])}, worker="w",
                                 started_at=1.0, finished_at=2.0)
        store.finish(done)
        history = store.history()
    assert history[0] == Trial(done.job, "success", 0.25, 12.5, None, {"dice": [0.8, 0.9]}, "w",
                               1.0, 2.0)
    assert history[1].state == "pending" and history[1].parent_id == 0
    row = sqlite3.connect(database_path(tmp_path)).execute(
        "SELECT architecture FROM trials WHERE trial_id = 0").fetchone()
    assert row == ("a b a",)


def test_database_uses_wal(tmp_path):
    open_store(tmp_path).close()
    mode = sqlite3.connect(database_path(tmp_path)).execute("PRAGMA journal_mode").fetchone()
    assert mode == ("wal",)


def test_existing_run_needs_resume(tmp_path):
    open_store(tmp_path).close()
    with pytest.raises(SearchError, match="already holds a search.*resume"):
        open_store(tmp_path)
    open_store(tmp_path, resume=True).close()


@pytest.mark.parametrize("changes, words", [
    ({"seed": 1}, ["seed", "stored 0", "now 1"]),
    ({"space_hash": "xyz"}, ["space_hash"]),
    ({"architecture_identity": "g2"}, ["architecture_identity", "g1", "g2"]),
    ({"optimizer": "hyperband"}, ["optimizer", "priorband", "hyperband"]),
    ({"optimizer_settings": {"eta": 2, "max_fidelity": 9}}, ["optimizer_settings.eta"]),
])
def test_resume_refuses_a_different_run_and_says_what_differs(tmp_path, changes, words):
    open_store(tmp_path).close()
    with pytest.raises(SearchError, match="cannot resume") as error:
        open_store(tmp_path, resume=True, **changes)
    for word in words:
        assert word in str(error.value)


def test_only_pending_trials_can_be_finished(tmp_path):
    with open_store(tmp_path) as store:
        trial = store.add(Job(0, {}, 1.0, rung=0))
        with pytest.raises(SearchError, match="pending"):
            store.finish(trial)
        store.finish(trial.failed("boom"))
        with pytest.raises(SearchError, match="not a pending trial"):
            store.finish(trial.succeeded(1.0, 1.0))


def test_open_existing_reads_metadata_and_refuses_missing_runs(tmp_path):
    open_store(tmp_path).close()
    with RunStore.open_existing(tmp_path) as store:
        assert store.metadata()["optimizer_settings"] == {"eta": 3, "max_fidelity": 9}
        assert json.loads(json.dumps(store.metadata()))["seed"] == 0
    with pytest.raises(SearchError, match="holds no search"):
        RunStore.open_existing(tmp_path / "nothing")
