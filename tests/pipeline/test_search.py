"""`hnas search` started in a run folder (hnas.pipeline.search); refusals and resuming are in tests/reliability."""

from __future__ import annotations

from hnas.pipeline.search import search

from reliability.run_folders import fake_training, settings_for, tiny_dataset


def test_a_search_with_two_workers_gives_each_its_environment(tmp_path, monkeypatch, capsys):
    import os

    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    dataset = tiny_dataset(tmp_path / "data")
    fake_training(monkeypatch)
    summary = search(settings_for(dataset, workers=2, max_trials=4), tmp_path / "run", progress=False)
    assert "workers: 2 local processes, 2 torch thread(s) each" in capsys.readouterr().out
    assert len(summary.history) == 4 and all(t.is_success for t in summary.history)
    assert {t.extra["omp_threads"] for t in summary.history} == {"2"}  # Dask's own default is 1


def test_an_unschedulable_epoch_range_is_refused_in_flags_and_writes_nothing(tmp_path, capsys, monkeypatch):
    from hnas.cli import main

    monkeypatch.setenv("HNAS_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    code = main(["search", "--run-dir", str(run_dir), "--preset", "cpu", "--optimizer", "hyperband",
                 "--min-epochs", "2", "--max-epochs", "3", "--eta", "3", "--max-stages", "3", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "--max-epochs 3 / --min-epochs 2 = 1.5 is below --eta 3; pass --min-epochs 1 or less" in err
    assert "min_fidelity" not in err
    assert not run_dir.exists()  # no run.json, plan.json or grammar.lark left behind
