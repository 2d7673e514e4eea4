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
