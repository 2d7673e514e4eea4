"""`hnas search --gpu-memory GB`: refused before anything is written when no configuration fits; otherwise
over-budget configurations are never trained, and status and report show how many were pruned.

The tiny dataset (24x28x26 cases, CPU preset, 2 stages) gives networks of ~6 to ~21 MiB of estimated training
memory, so a budget of 0.01 GB (10.24 MiB) prunes about half of the sampled configurations.
"""

from __future__ import annotations

import json

import pytest

from hnas.errors import SearchError
from hnas.pipeline.memory import MemoryEstimator
from hnas.pipeline.report import load_report_run, write_report
from hnas.pipeline.run import resolve
from hnas.pipeline.search import resumed_settings, search
from hnas.pipeline.status import status_text
from hnas.search import RunStore

from reliability.run_folders import fake_training, settings_for, tiny_dataset

BUDGET = 0.01  # GB (GiB)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def budget_run(dataset, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    with pytest.MonkeyPatch.context() as patch:
        fake_training(patch)
        search(settings_for(dataset, gpu_memory=BUDGET, optimizer="priorband", max_trials=8), run_dir,
               progress=False)
    return run_dir


def test_a_budget_below_every_configuration_is_refused_in_one_line_and_writes_nothing(dataset, tmp_path, capsys):
    from hnas.cli import main

    run_dir = tmp_path / "run"
    code = main(["search", "--dataset", str(dataset), "--run-dir", str(run_dir), "--preset", "cpu", "--max-stages", "2",
                 "--gpu-memory", "0.001", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "--gpu-memory 0.001 GB is below the estimated training memory of every configuration: the smallest of 201 " \
           "sampled needs 0.00" in err
    assert not run_dir.exists()


def test_over_budget_configurations_are_never_trained_and_the_count_is_stored(budget_run):
    setup = resolve(settings_for_run(budget_run))
    estimator = MemoryEstimator.of(setup)
    with RunStore.open_existing(budget_run) as store:
        history, pruned = store.history(), store.pruned_configurations()
        assert store.metadata()["config_filter"] == {"name": "estimated GPU training memory", "limit": BUDGET,
                                                     "unit": "GB"}
    assert len(history) == 8 and pruned > 0
    assert all(estimator.gib(t.config) <= BUDGET for t in history)
    assert json.loads((budget_run / "run.json").read_text())["gpu_memory"] == BUDGET


def test_status_and_report_show_the_budget_and_the_pruned_count(budget_run, tmp_path):
    with RunStore.open_existing(budget_run) as store:
        pruned = store.pruned_configurations()
    line = f"estimated GPU training memory limit 0.01 GB: {pruned} sampled configurations over it pruned"
    assert line in status_text(budget_run)
    assert load_report_run(budget_run).pruned == pruned
    report = write_report([budget_run], tmp_path / "report")
    assert "Estimated GPU training memory limit 0.01 GB" in report.read_text()


def test_a_run_without_a_budget_shows_no_pruning(dataset, tmp_path, monkeypatch):
    fake_training(monkeypatch)
    search(settings_for(dataset, max_trials=1), tmp_path / "run", progress=False)
    assert "pruned" not in status_text(tmp_path / "run")


def test_a_resume_with_another_budget_is_refused(budget_run):
    with pytest.raises(SearchError, match=r"--gpu-memory 0.5 given, the run has 0.01"):
        resumed_settings(budget_run, {"gpu_memory": 0.5})
    assert resumed_settings(budget_run, {"gpu_memory": BUDGET}).gpu_memory == BUDGET


def settings_for_run(run_dir):
    from hnas.pipeline.run import SearchSettings

    return SearchSettings.load(run_dir)
