import os

import pytest

from hnas.pipeline.spaces import make_space
from hnas.search import run
from hnas.search.loop import trial_dir

from . import objectives

pytest.importorskip("distributed", reason="the Dask executor needs dask[distributed]")


def test_dask_local_cluster_runs_trials_and_survives_a_dying_worker(tmp_path):
    """A trial that kills its worker fails once: the local cluster allows no retries (allowed-failures 0),
    so Dask neither re-runs it on the other worker (which it would kill too) nor restarts it."""
    summary = run(objectives.dies_on_trial_3_counting_attempts, make_space("hpo"), optimizer="hyperband",
                  max_trials=12, min_fidelity=1, max_fidelity=9, executor="dask", workers=2,
                  run_dir=tmp_path)
    history = summary.history
    assert len(history) == 12
    assert history[3].state == "failed" and "KilledWorker" in history[3].error
    attempts = (trial_dir(tmp_path, 3) / "attempts").read_text().split()
    assert len(attempts) == 1, f"trial 3 ran {len(attempts)} times (worker pids {attempts}); expected once"
    assert all(t.is_success for t in history if t.trial_id != 3)
    assert len({t.extra["pid"] for t in history if t.is_success}) >= 2
    assert all(t.parent_id != 3 for t in history)


def test_dask_executor_uses_an_existing_scheduler(tmp_path):
    import distributed

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        summary = run(objectives.quadratic, make_space("hpo"), optimizer="random", max_trials=4,
                      min_fidelity=9, max_fidelity=9, executor="dask",
                      scheduler=cluster.scheduler_address, run_dir=tmp_path)
    assert all(t.is_success for t in summary.history) and len(summary.history) == 4


@pytest.mark.parametrize("executor", ["dask", "processes"])
def test_local_workers_start_with_their_own_environment(tmp_path, executor):
    envs = [{"HNAS_TEST_WORKER_TAG": "gpu0"}, {"HNAS_TEST_WORKER_TAG": "gpu1"}]
    summary = run(objectives.reports_worker_tag, make_space("hpo"), optimizer="random", max_trials=8,
                  min_fidelity=9, max_fidelity=9, executor=executor, workers=2, worker_env=envs, run_dir=tmp_path)
    tags = {}
    for trial in summary.history:
        assert trial.is_success
        tags.setdefault(trial.extra["pid"], set()).add(trial.extra["tag"])
    assert all(len(t) == 1 for t in tags.values())  # a worker keeps its environment
    seen = set().union(*tags.values())
    assert seen <= {"gpu0", "gpu1"} and (len(tags) == 1 or seen == {"gpu0", "gpu1"})


def test_worker_env_needs_one_mapping_per_worker(tmp_path):
    from hnas.errors import SearchError

    with pytest.raises(SearchError, match="worker_env has 1 entries; expected one mapping of str to str per worker"):
        run(objectives.quadratic, make_space("hpo"), optimizer="random", max_trials=1, min_fidelity=9,
            max_fidelity=9, executor="processes", workers=2, worker_env=[{"A": "1"}], run_dir=tmp_path)


def test_a_local_cluster_leaves_the_search_process_threads_alone(tmp_path, monkeypatch):
    import os

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "3")
    run(objectives.dies_on_trial_3, make_space("hpo"), optimizer="random", max_trials=6, min_fidelity=9,
        max_fidelity=9, executor="dask", workers=2, run_dir=tmp_path)  # a worker dies: its Nanny spawns another
    # Dask's Nanny sets OMP_NUM_THREADS=1 etc. in the process that spawns workers; later work here would crawl
    assert "OMP_NUM_THREADS" not in os.environ and os.environ["MKL_NUM_THREADS"] == "3"


def reports_daemonic_or_dies_on_trial_3(context) -> dict:
    """Whether the worker process is daemonic (module level, so a Dask worker unpickles it); trial 3 kills it."""
    import multiprocessing

    if context.trial_id == 3:
        os._exit(7)
    return {**objectives.quadratic(context), "daemon": multiprocessing.current_process().daemon}


def test_local_cluster_workers_are_not_daemonic_so_trials_can_start_data_loader_workers(tmp_path):
    """Dask's Nanny starts daemonic workers by default, and a daemonic process may not start children: the
    DataLoader would drop its augmentation workers. A worker the Nanny restarts after a death is checked too."""
    import dask

    from hnas.search.executors import TrialContext, make_executor

    def context(trial_id):
        return TrialContext(trial_id=trial_id, config={"initial_lr": 0.01, "aug_factor": 0.0}, fidelity=9,
                            max_fidelity=9, rung=0, bracket=0, trial_dir=tmp_path / str(trial_id))

    default = dask.config.get("distributed.worker.daemon")
    executor = make_executor("dask", reports_daemonic_or_dies_on_trial_3, workers=1)
    try:
        executor.submit(context(1))
        first, = executor.wait()
        executor.submit(context(3))
        died, = executor.wait()
        executor.submit(context(4))
        restarted, = executor.wait()
    finally:
        executor.close()
    assert first.state == "success" and first.extra["daemon"] is False
    assert died.state == "failed" and "KilledWorker" in died.error
    assert restarted.state == "success" and restarted.extra["daemon"] is False
    assert restarted.extra["pid"] != first.extra["pid"]
    assert dask.config.get("distributed.worker.daemon") == default  # closing gives the setting back
