import pytest

from hnas.search import make_space, run

from . import objectives

pytest.importorskip("distributed", reason="the Dask executor needs dask[distributed]")


def test_dask_local_cluster_runs_trials_and_survives_a_dying_worker(tmp_path):
    summary = run(objectives.dies_on_trial_3, make_space("hpo"), optimizer="hyperband",
                  max_trials=12, min_fidelity=1, max_fidelity=9, executor="dask", workers=2,
                  run_dir=tmp_path)
    history = summary.history
    assert len(history) == 12
    assert history[3].state == "failed" and "KilledWorker" in history[3].error
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
