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


def _record(folder_name: str, **changes) -> dict:
    return {"name": folder_name, "trial_id": None, "config": {"lr": 0.01}, "epochs": 2, "iterations_per_epoch": 3,
            "folds": [0, 2], **changes}


def test_model_record_round_trip_and_damage_is_named(tmp_path):
    folder = tmp_path / "default_2ep"
    record = _record(folder.name)
    layout.replace_model_record(folder, record)
    assert layout.load_model_record(folder) == record
    assert not list(folder.glob(".model.json.*"))  # the temporary file was renamed into place
    (folder / "model.json").write_text("{")
    with pytest.raises(TrainingError, match="cannot be read as JSON"):
        layout.load_model_record(folder)


@pytest.mark.parametrize("field, value", [
    ("folds", [True]), ("folds", "0"), ("folds", [0, 0]), ("folds", [5]), ("folds", None),
    ("epochs", "x"), ("epochs", 0), ("epochs", 2.5), ("iterations_per_epoch", None), ("trial_id", "3"),
    ("trial_id", -1), ("config", [1]), ("provenance", "yes"), ("name", 5), ("name", "../elsewhere"),
    ("name", "/abs/path"), ("name", "other_2ep")])
def test_every_model_record_field_is_checked_and_named(tmp_path, field, value):
    folder = tmp_path / "default_2ep"
    layout.replace_model_record(folder, _record(folder.name, **{field: value}))
    with pytest.raises(TrainingError, match=f"has {field} .*expected"):
        layout.load_model_record(folder)


def test_a_model_record_that_is_not_an_object_or_is_a_folder_is_named(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.json").write_text("[1, 2]")
    with pytest.raises(TrainingError, match="holds list; expected the model.json"):
        layout.load_model_record(tmp_path / "m")
    (tmp_path / "n" / "model.json").mkdir(parents=True)
    with pytest.raises(TrainingError, match="is a folder; expected the model.json"):
        layout.load_model_record(tmp_path / "n")


@pytest.mark.parametrize("name", ["../x", "a/b", "/abs", "..", ".", ".hidden", "", "a\\b", 7, None, "a..b"])
def test_names_read_from_files_must_be_plain(name):
    with pytest.raises(TrainingError, match="expected a plain model folder name"):
        layout.check_plain_name(name, "f.json", "member")


def test_plain_names_of_hnas_models_pass():
    for name in ("default_5ep", "trial_00003_100ep", "my-model+v2"):
        assert layout.check_plain_name(name, "f.json", "member") == name


def test_a_link_out_of_the_run_is_refused(tmp_path):
    (tmp_path / "cv").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "cv" / "inside").mkdir()
    (tmp_path / "cv" / "escape").symlink_to(tmp_path / "outside")
    assert layout.inside_folder(tmp_path / "cv", "inside", "f.json") == tmp_path / "cv" / "inside"
    with pytest.raises(TrainingError, match="leads outside"):
        layout.inside_folder(tmp_path / "cv", "escape", "f.json")


def test_a_file_where_a_folder_belongs_is_named(tmp_path):
    (tmp_path / "cv").write_text("not a folder")
    with pytest.raises(TrainingError, match="is not a folder; expected the run's cross-validation folder"):
        layout.model_dirs(tmp_path)
    assert layout.require_folder(tmp_path / "new", "x") == tmp_path / "new"


def test_fold_record_fields_are_checked(tmp_path):
    assert layout.load_fold_record(tmp_path) is None
    good = {"model": "m", "fold": 0, "settings": {}, "validation_cases": ["a"], "validation": {}}
    layout.replace_fold_record(tmp_path, good)
    assert layout.load_fold_record(tmp_path) == good
    for field, value in [("model", 1), ("fold", "0"), ("settings", []), ("validation_cases", "a"),
                         ("validation", {"a": 1})]:
        layout.replace_fold_record(tmp_path, {**good, field: value})
        with pytest.raises(TrainingError, match=f"has {field} "):
            layout.load_fold_record(tmp_path)


def test_model_dirs_list_only_folders_with_a_record(tmp_path):
    for name in ("b", "a", "c"):
        (tmp_path / "cv" / name).mkdir(parents=True)
    for name in ("a", "b"):
        layout.replace_model_record(tmp_path / "cv" / name, _record(name, folds=[]))
    assert [p.name for p in layout.model_dirs(tmp_path)] == ["a", "b"]
    with pytest.raises(SearchError, match=r"no cross-validated model \['c'\]"):
        layout.model_dirs(tmp_path, ["c"])


def test_best_configuration_members_and_decision(tmp_path):
    result = {"best": {"members": ["a", "b"]}, "postprocessing": {"description": "none"}}
    path = layout.write_best_configuration(tmp_path, result)
    assert layout.read_best_configuration(path) == (["a", "b"], {"description": "none"})
    for bad in ({"best": {"members": []}}, {"best": ["a"]}, {"best": {"members": [1]}},
                {"best": {"members": ["a", "a"]}}, {"best": {"members": "a"}}, {"best": {"members": ["../x"]}},
                {"best": {"members": ["/etc"]}}, {"best": {"members": ["a"]}, "postprocessing": "none"}):
        path.write_text(json.dumps(bad))
        with pytest.raises(TrainingError, match="best.members|members entry|postprocessing"):
            layout.read_best_configuration(path)


def test_write_json_refuses_nan_where_asked(tmp_path):
    with pytest.raises(ValueError):
        layout.write_json(tmp_path / "x.json", {"dice": float("nan")}, allow_nan=False)
