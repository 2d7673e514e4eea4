"""Run folders and the plans their trials train on (hnas.runs)."""

from __future__ import annotations

from hnas import runs
from hnas.grammar.plan import Plan

from reliability.run_folders import fake_training, make_stored_run, settings_for


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
