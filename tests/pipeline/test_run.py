"""A run's settings and what they resolve to: the plans and scale preset its trials train with (hnas.pipeline.run)."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from hnas.errors import SearchError, TrainingError
from hnas.pipeline.layout import PRESET_FILE, RESIDUAL_PLAN_FILE
from hnas.pipeline.run import SearchSettings, resolve, stored_preset, stored_settings
from hnas.pipeline.search import search
from hnas.planning.plan import Plan

from reliability.run_folders import fake_training, make_stored_run, settings_for


def test_a_new_run_stores_the_resenc_m_plan_its_residual_encoders_train_with(tmp_path):
    dataset, run_dir = make_stored_run(tmp_path)
    stored = Plan.load(run_dir / RESIDUAL_PLAN_FILE)
    setup = resolve(settings_for(dataset))
    assert stored == setup.residual_plan and stored.planner == "resenc_m"
    assert setup.train_setup(run_dir).residual_plan == stored


def test_a_run_written_before_resenc_plans_keeps_the_default_plan_and_resumes(tmp_path, monkeypatch):
    dataset, run_dir = make_stored_run(tmp_path)
    (run_dir / RESIDUAL_PLAN_FILE).unlink()
    setup = resolve(settings_for(dataset))
    assert setup.train_setup(run_dir).residual_plan is None
    fake_training(monkeypatch)
    search(settings_for(dataset, max_trials=4), run_dir, resume=True, progress=False)
    assert not (run_dir / RESIDUAL_PLAN_FILE).exists()


def test_a_new_run_stores_the_resolved_scale_preset(tmp_path):
    dataset, run_dir = make_stored_run(tmp_path)
    setup = resolve(settings_for(dataset))
    stored = stored_preset(run_dir, None)
    assert stored == setup.preset and stored.iterations_per_epoch == 1 and stored.max_epochs == 3
    assert setup.train_setup(run_dir).overlap == stored.overlap


def test_a_resumed_run_keeps_its_stored_preset_values_when_todays_differ(tmp_path, monkeypatch, capsys):
    dataset, run_dir = make_stored_run(tmp_path)
    today = resolve(settings_for(dataset)).preset
    replace(today, overlap=0.0, validation_cases=3).save(run_dir / PRESET_FILE)  # as an older hnas wrote it
    setup = resolve(settings_for(dataset))
    assert setup.train_setup(run_dir).overlap == 0.0 and setup.train_setup(run_dir).validation_cases == 3
    fake_training(monkeypatch)
    capsys.readouterr()
    search(settings_for(dataset, max_trials=4), run_dir, resume=True, progress=False)
    out = capsys.readouterr().out
    assert "window overlap 0.0" in out and "overlap 0.0 vs 0.5" in out and "validation_cases 3 vs None" in out


def test_a_run_written_before_presets_were_stored_takes_todays_values(tmp_path):
    dataset, run_dir = make_stored_run(tmp_path)
    (run_dir / PRESET_FILE).unlink()
    setup = resolve(settings_for(dataset))
    assert setup.train_setup(run_dir).overlap == setup.preset.overlap


def test_a_broken_preset_file_is_refused_by_name(tmp_path):
    dataset, run_dir = make_stored_run(tmp_path)
    (run_dir / PRESET_FILE).write_text('{"name": "cpu", "overlapp": 0.5}')
    with pytest.raises(TrainingError, match=r"preset\.json.*unknown keys \['overlapp'\]"):
        stored_preset(run_dir, None)
    (run_dir / PRESET_FILE).write_text("[1, 2]")
    with pytest.raises(TrainingError, match="not a scale preset file"):
        stored_preset(run_dir, None)


def _edit_run_json(run_dir, **changes):
    import json

    path = run_dir / "run.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize("changes, named", [({"preset": "nnunet"}, "preset 'nnunet' vs 'cpu'"),
                                            ({"preset": "gpu"}, "preset 'gpu' vs 'cpu'"),
                                            ({"iterations_per_epoch": 250}, "iterations_per_epoch 250 vs 1"),
                                            ({"max_epochs": 9, "eta": 2}, "max_epochs 9 vs 3; eta 2 vs 3")])
def test_a_run_json_edited_after_the_search_is_refused_naming_both_values(tmp_path, changes, named):
    dataset, run_dir = make_stored_run(tmp_path)
    _edit_run_json(run_dir, **changes)
    with pytest.raises(SearchError, match=r"run\.json.*disagrees with.*preset\.json.*" + re.escape(named)):
        stored_settings(run_dir)


def test_stored_settings_resolve_auto_to_the_preset_the_search_ran_with(tmp_path):
    dataset, run_dir = make_stored_run(tmp_path)
    _edit_run_json(run_dir, preset="auto")  # as a search with the default --preset writes it
    replace(stored_preset(run_dir, None), name="nnunet").save(run_dir / PRESET_FILE)  # searched on a GPU
    settings = stored_settings(run_dir)
    assert settings.preset == "nnunet" and settings == replace(SearchSettings.load(run_dir), preset="nnunet")


def test_stored_settings_of_an_untouched_run_are_run_json_itself(tmp_path):
    dataset, run_dir = make_stored_run(tmp_path)
    assert stored_settings(run_dir) == SearchSettings.load(run_dir)
    (run_dir / PRESET_FILE).unlink()  # a run written before preset.json: nothing to compare with
    _edit_run_json(run_dir, iterations_per_epoch=7)
    assert stored_settings(run_dir).iterations_per_epoch == 7


@pytest.mark.parametrize("field, value", [("fold", "0"), ("seed", None), ("dataset", 5), ("budget", "3"),
                                          ("max_trials", 2.5), ("workers", True), ("dataset_digest", [1])])
def test_a_wrongly_typed_run_json_field_is_named(tmp_path, field, value):
    import json

    from hnas.pipeline.run import SearchSettings

    SearchSettings().save(tmp_path)
    stored = json.loads((tmp_path / "run.json").read_text())
    (tmp_path / "run.json").write_text(json.dumps({**stored, field: value}))
    with pytest.raises(SearchError, match=f"has {field} .*; expected"):
        SearchSettings.load(tmp_path)


def test_a_run_json_folder_is_named(tmp_path):
    from hnas.pipeline.run import SearchSettings

    (tmp_path / "run.json").mkdir()
    with pytest.raises(SearchError, match="run.json' is a folder; expected the settings file"):
        SearchSettings.load(tmp_path)
