"""The run-folder layout: paths of every name, model.json's checks, best_configuration.json's members."""

from __future__ import annotations

import json

import pytest

from hnas.errors import SearchError, TrainingError
from hnas.pipeline import layout
from hnas.pipeline.layout import RunFolder


def test_run_folder_paths_are_the_documented_names(tmp_path):
    folder = RunFolder(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in (folder.settings, folder.plan, folder.grammar, folder.preset,
                                                         folder.residual_plan, folder.summary, folder.database,
                                                         folder.best_configuration)] == [
        "run.json", "plan.json", "grammar.lark", "preset.json", "plan_resenc_m.json", "summary.md", "search.sqlite",
        "cv/best_configuration.json"]
    assert folder.retrain(7, 27).relative_to(tmp_path).as_posix() == "retrain/trial_00007_27ep"
    assert folder.evaluation(None).relative_to(tmp_path).as_posix() == "evaluation/validation"
    assert folder.evaluation(tmp_path / "Dataset9_Test").relative_to(tmp_path).as_posix() == \
        "evaluation/test_Dataset9_Test"


@pytest.mark.parametrize("trial_id, epochs, name", [(None, 27, "default_27ep"), (3, 9, "trial_00003_9ep")])
def test_model_names(trial_id, epochs, name):
    assert layout.model_name(trial_id, epochs) == name


def test_prediction_files_live_in_the_fold_validation_folder(tmp_path):
    path = layout.prediction_file(tmp_path / "m", 2, "case_1", ".npz")
    assert path.relative_to(tmp_path).as_posix() == "m/fold_2/validation/case_1.npz"


def test_fold_dirs_are_in_fold_order_and_skip_strays(tmp_path):
    for name in ("fold_10", "fold_2", "fold_x", "other"):
        (tmp_path / name).mkdir()
    (tmp_path / "fold_3").write_text("a file, not a fold")
    assert [p.name for p in layout.fold_dirs(tmp_path)] == ["fold_2", "fold_10"]


def test_model_record_round_trip_and_damage_is_named(tmp_path):
    record = {"name": "m", "folds": [0, 2], "value": 1.5}
    layout.replace_model_record(tmp_path, record)
    assert layout.load_model_record(tmp_path) == record
    assert not list(tmp_path.glob(".model.json.*"))  # the temporary file was renamed into place
    (tmp_path / "model.json").write_text(json.dumps({"folds": [True]}))
    with pytest.raises(SearchError, match="expected a JSON object whose folds are fold numbers"):
        layout.load_model_record(tmp_path)
    (tmp_path / "model.json").write_text("{")
    with pytest.raises(SearchError, match="cannot be read as JSON"):
        layout.load_model_record(tmp_path)


def test_model_dirs_list_only_folders_with_a_record(tmp_path):
    for name in ("b", "a", "c"):
        (tmp_path / "cv" / name).mkdir(parents=True)
    for name in ("a", "b"):
        layout.replace_model_record(tmp_path / "cv" / name, {"folds": []})
    assert [p.name for p in layout.model_dirs(tmp_path)] == ["a", "b"]
    with pytest.raises(SearchError, match=r"no cross-validated model \['c'\]"):
        layout.model_dirs(tmp_path, ["c"])


def test_best_configuration_members_and_decision(tmp_path):
    result = {"best": {"members": ["a", "b"]}, "postprocessing": {"description": "none"}}
    path = layout.write_best_configuration(tmp_path, result)
    assert layout.read_best_configuration(path) == (["a", "b"], {"description": "none"})
    path.write_text(json.dumps({"best": {"members": []}}))
    with pytest.raises(TrainingError, match="best.members"):
        layout.read_best_configuration(path)


def test_write_json_refuses_nan_where_asked(tmp_path):
    with pytest.raises(ValueError):
        layout.write_json(tmp_path / "x.json", {"dice": float("nan")}, allow_nan=False)
