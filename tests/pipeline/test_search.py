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


def test_a_search_says_what_validating_a_trial_costs_before_the_first(tmp_path, monkeypatch, capsys):
    """5 tiny cases (24x28x26; the CPU preset's patch holds a whole case): fold 0 validates 1 case in 1 window."""
    from hnas.pipeline.run import resolve
    from hnas.pipeline.search import validation_cost

    dataset = tiny_dataset(tmp_path / "data")
    fake_training(monkeypatch)
    search(settings_for(dataset, max_trials=1), tmp_path / "run", progress=False)
    out = capsys.readouterr().out
    setup = resolve(settings_for(dataset))
    line = validation_cost(setup, setup.preset, None)
    patch = "x".join(map(str, setup.plan.patch_size))
    assert line == (f"validation per trial: 1 case(s) x ~1 sliding windows of {patch} (the median case, overlap 0.5) "
                    "= ~1 network passes after each rung's training")
    assert line in out and out.index(line) < out.index("search: space")
