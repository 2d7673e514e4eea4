"""Run folders and the plans their trials train on (hnas.runs)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from hnas import runs
from hnas.errors import TrainingError
from hnas.grammar.plan import Plan

from reliability.run_folders import fake_training, make_stored_run, settings_for, tiny_dataset


def test_a_new_run_stores_the_resenc_m_plan_its_residual_encoders_train_with(tmp_path):
    dataset, run_dir = make_stored_run(tmp_path)
    stored = Plan.load(run_dir / runs.RESIDUAL_PLAN_FILE)
    setup = runs.resolve(settings_for(dataset))
    assert stored == setup.residual_plan and stored.planner == "resenc_m"
    assert setup.train_setup(run_dir).residual_plan == stored


def test_a_run_written_before_resenc_plans_keeps_the_default_plan_and_resumes(tmp_path, monkeypatch):
    dataset, run_dir = make_stored_run(tmp_path)
    (run_dir / runs.RESIDUAL_PLAN_FILE).unlink()
    setup = runs.resolve(settings_for(dataset))
    assert setup.train_setup(run_dir).residual_plan is None
    fake_training(monkeypatch)
    runs.search(settings_for(dataset, max_trials=4), run_dir, resume=True, progress=False)
    assert not (run_dir / runs.RESIDUAL_PLAN_FILE).exists()


def test_a_new_run_stores_the_resolved_scale_preset(tmp_path):
    dataset, run_dir = make_stored_run(tmp_path)
    setup = runs.resolve(settings_for(dataset))
    stored = runs.stored_preset(run_dir, None)
    assert stored == setup.preset and stored.iterations_per_epoch == 1 and stored.max_epochs == 3
    assert setup.train_setup(run_dir).overlap == stored.overlap


def test_a_resumed_run_keeps_its_stored_preset_values_when_todays_differ(tmp_path, monkeypatch, capsys):
    dataset, run_dir = make_stored_run(tmp_path)
    today = runs.resolve(settings_for(dataset)).preset
    replace(today, overlap=0.0, validation_cases=3).save(run_dir / runs.PRESET_FILE)  # as an older hnas wrote it
    setup = runs.resolve(settings_for(dataset))
    assert setup.train_setup(run_dir).overlap == 0.0 and setup.train_setup(run_dir).validation_cases == 3
    fake_training(monkeypatch)
    capsys.readouterr()
    runs.search(settings_for(dataset, max_trials=4), run_dir, resume=True, progress=False)
    out = capsys.readouterr().out
    assert "window overlap 0.0" in out and "overlap 0.0 vs 0.5" in out and "validation_cases 3 vs None" in out


def test_a_run_written_before_presets_were_stored_takes_todays_values(tmp_path):
    dataset, run_dir = make_stored_run(tmp_path)
    (run_dir / runs.PRESET_FILE).unlink()
    setup = runs.resolve(settings_for(dataset))
    assert setup.train_setup(run_dir).overlap == setup.preset.overlap


def test_a_broken_preset_file_is_refused_by_name(tmp_path):
    dataset, run_dir = make_stored_run(tmp_path)
    (run_dir / runs.PRESET_FILE).write_text('{"name": "cpu", "overlapp": 0.5}')
    with pytest.raises(TrainingError, match=r"preset\.json.*unknown keys \['overlapp'\]"):
        runs.stored_preset(run_dir, None)
    (run_dir / runs.PRESET_FILE).write_text("[1, 2]")
    with pytest.raises(TrainingError, match="not a scale preset file"):
        runs.stored_preset(run_dir, None)


def test_parallel_workers_on_a_cpu_share_its_cores_as_torch_threads(monkeypatch):
    import os

    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert runs.worker_environments(1) is None  # one worker has the machine to itself
    assert runs.worker_environments(3) == [{"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}] * 3
    assert runs.worker_environments(16) == [{"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}] * 16


def test_parallel_workers_with_cuda_each_see_one_gpu_round_robin(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert [env["CUDA_VISIBLE_DEVICES"] for env in runs.worker_environments(3)] == ["0", "1", "0"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, 5")  # the user's own selection is kept
    assert [env["CUDA_VISIBLE_DEVICES"] for env in runs.worker_environments(3)] == ["3", "5", "3"]


def test_a_search_with_two_workers_gives_each_its_environment(tmp_path, monkeypatch, capsys):
    import os

    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    dataset = tiny_dataset(tmp_path / "data")
    fake_training(monkeypatch)
    summary = runs.search(settings_for(dataset, workers=2, max_trials=4), tmp_path / "run", progress=False)
    assert "workers: 2 local processes, 2 torch thread(s) each" in capsys.readouterr().out
    assert len(summary.history) == 4 and all(t.is_success for t in summary.history)
    assert {t.extra["omp_threads"] for t in summary.history} == {"2"}  # Dask's own default is 1
