"""What made each fold and model is recorded and checked: stale, altered or foreign outputs are refused by name."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from hnas.data import fold_split, load_dataset, make_synthetic_dataset, write_label_map
from hnas.data.dataset import content_digest
from hnas.errors import SearchError, TrainingError
from hnas.pipeline import provenance
from hnas.pipeline.layout import load_fold_record

from .conftest import model_record, record_fold


@pytest.fixture
def dataset(tmp_path):
    return make_synthetic_dataset(tmp_path / "data", n_cases=6, shape=(16, 17, 16), seed=5)


def predicted_model(tmp_path, dataset, name="default_1ep", folds=(0,)):
    """A model folder whose folds predicted every validation case as its true label, recorded in fold.json."""
    data = load_dataset(dataset)
    model_dir = tmp_path / "run" / "cv" / name
    model_dir.mkdir(parents=True)
    (model_dir / "model.json").write_text(json.dumps(model_record(name, folds)))
    for fold in folds:
        out = model_dir / f"fold_{fold}" / "validation"
        out.mkdir(parents=True)
        for case_id in fold_split(data.case_ids, fold)[1]:
            case = data.case(case_id)
            label = np.asarray(nib.load(case.label_file).dataobj).astype(np.int16)
            write_label_map(label.transpose(), case.image_files[0], out / f"{case_id}.nii.gz")
            np.savez_compressed(out / f"{case_id}.npz", probabilities=np.zeros((3, 2), np.float16))
        record_fold(model_dir, fold, dataset)
    return model_dir


def test_a_recorded_fold_lists_every_validation_case_as_predicted(tmp_path, dataset):
    model_dir = predicted_model(tmp_path, dataset)
    predicted, missing = provenance.checked_validation(model_dir, 0, load_dataset(dataset))
    assert predicted == list(fold_split(load_dataset(dataset).case_ids, 0)[1]) and missing == []


def test_a_case_not_recorded_yet_is_missing_not_predicted(tmp_path, dataset):
    model_dir = predicted_model(tmp_path, dataset)
    record = load_fold_record(model_dir / "fold_0")
    case_id = record["validation_cases"][0]
    del record["validation"][case_id]  # as if killed after writing the files, before recording them
    (model_dir / "fold_0" / "fold.json").write_text(json.dumps(record))
    assert provenance.checked_validation(model_dir, 0, load_dataset(dataset))[1] == [case_id]


@pytest.mark.parametrize("ending", [".nii.gz", ".npz"])
def test_a_truncated_prediction_file_is_refused_by_path(tmp_path, dataset, ending):
    model_dir = predicted_model(tmp_path, dataset)
    case_id = load_fold_record(model_dir / "fold_0")["validation_cases"][0]
    path = model_dir / "fold_0" / "validation" / f"{case_id}{ending}"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(TrainingError, match=rf"{case_id}{ending.replace('.', '[.]')}' is not the file cross-validation "
                                            r"wrote .* rerun `hnas train --run RUN --folds 0"):
        provenance.checked_validation(model_dir, 0, load_dataset(dataset))


def test_a_label_edited_after_cross_validation_is_refused_by_case(tmp_path, dataset):
    model_dir = predicted_model(tmp_path, dataset)
    data = load_dataset(dataset)
    case_id = load_fold_record(model_dir / "fold_0")["validation_cases"][0]
    label_file = data.case(case_id).label_file
    image = nib.load(label_file)
    edited = np.asarray(image.dataobj).copy()
    edited[0, 0, 0] = 2 if edited[0, 0, 0] != 2 else 1
    nib.save(nib.Nifti1Image(edited, image.affine, image.header), label_file)
    with pytest.raises(TrainingError, match=rf"case\(s\) \['{case_id}'\] .* changed since"):
        provenance.checked_validation(model_dir, 0, load_dataset(dataset))


def test_a_case_added_to_the_dataset_changes_the_split_and_is_refused(tmp_path, dataset):
    model_dir = predicted_model(tmp_path, dataset)
    first = load_dataset(dataset).cases[0]
    shutil.copy(first.image_files[0], dataset / "imagesTr" / "zz_999_0000.nii.gz")
    shutil.copy(first.label_file, dataset / "labelsTr" / "zz_999.nii.gz")
    with pytest.raises(TrainingError, match="changed since .* was cross-validated .*split no longer matches"):
        provenance.checked_validation(model_dir, 0, load_dataset(dataset))


def test_a_fold_without_fold_json_asks_for_a_rerun(tmp_path, dataset):
    model_dir = predicted_model(tmp_path, dataset)
    (model_dir / "fold_0" / "fold.json").unlink()
    with pytest.raises(TrainingError, match="no fold.json .* rerun `hnas train --run RUN --folds 0"):
        provenance.checked_validation(model_dir, 0, load_dataset(dataset))


def test_a_fold_copied_from_another_model_is_refused(tmp_path, dataset):
    model_dir = predicted_model(tmp_path, dataset)
    other = tmp_path / "run" / "cv" / "trial_00002_1ep"
    shutil.copytree(model_dir, other)
    (other / "model.json").write_text(json.dumps(model_record(other.name, [0])))
    with pytest.raises(TrainingError, match="holds fold 0 of model 'default_1ep'; expected fold 0 of 'trial_00002_1ep'"):
        provenance.checked_validation(other, 0, load_dataset(dataset))


def test_fold_records_refuse_other_models_and_other_settings(tmp_path):
    record = {**model_record("default_1ep", [0]), "provenance": {"preset": {"name": "cpu"}, "dataset_digest": "a"}}
    fold_dir = tmp_path / "fold_0"
    fold_dir.mkdir()
    assert provenance.check_fold_record(fold_dir, record, 0) is None  # not trained yet
    stored = {"model": "default_1ep", "fold": 0, "settings": provenance.fold_settings(record),
              "validation_cases": [], "validation": {}}
    (fold_dir / "fold.json").write_text(json.dumps(stored))
    assert provenance.check_fold_record(fold_dir, record, 0) == stored
    with pytest.raises(TrainingError, match="belongs to model 'default_1ep' fold 0; expected 'trial_00001_1ep'"):
        provenance.check_fold_record(fold_dir, {**record, "name": "trial_00001_1ep"}, 0)
    with pytest.raises(TrainingError, match="epochs: stored 1, given 3"):
        provenance.check_fold_record(fold_dir, {**record, "epochs": 3}, 0)
    with pytest.raises(TrainingError, match="dataset_digest: stored \"a\", given \"b\""):
        provenance.check_fold_record(fold_dir, {**record, "provenance": {**record["provenance"],
                                                                        "dataset_digest": "b"}}, 0)


def test_a_changed_or_moved_dataset_is_caught_by_its_digest(tmp_path, dataset):
    digest = content_digest(load_dataset(dataset))
    provenance.check_dataset_unchanged(tmp_path, dataset, digest)
    provenance.check_dataset_unchanged(tmp_path, dataset, None)  # a run from before digests were stored
    first, second = load_dataset(dataset).cases[:2]
    first.label_file.write_bytes(second.label_file.read_bytes())
    with pytest.raises(SearchError, match="changed since run .* searched it .content digest"):
        provenance.check_dataset_unchanged(tmp_path, dataset, digest)
    with pytest.raises(SearchError, match="does not exist any more"):
        provenance.check_dataset_unchanged(tmp_path, tmp_path / "moved", digest)


def test_settings_differences_name_each_field_and_ignore_the_dataset_path():
    stored = {**model_record("default_1ep", []), "provenance": {"preset": {"a": 1}, "plan": "p", "grammar": "g",
                                                          "dataset": "/a", "dataset_digest": "d", "split": "s"}}
    assert provenance.settings_differences(stored, json.loads(json.dumps(stored))) == []
    moved = {**stored, "provenance": {**stored["provenance"], "dataset": "/b"}}
    assert provenance.settings_differences(stored, moved) == []
    changed = {**stored, "iterations_per_epoch": 7, "provenance": {**stored["provenance"], "plan": "q"}}
    assert provenance.settings_differences(stored, changed) == ["iterations_per_epoch: stored 1, given 7",
                                                                'plan: stored "p", given "q"']
    legacy = {k: v for k, v in stored.items() if k != "provenance"}
    assert provenance.settings_differences(legacy, changed) == ["iterations_per_epoch: stored 1, given 7"]


def test_labels_renamed_in_dataset_json_since_cross_validation_are_refused(tmp_path, dataset):
    model_dir = predicted_model(tmp_path, dataset)
    record = load_fold_record(model_dir / "fold_0")
    record["labels"] = [list(pair) for pair in load_dataset(dataset).labels]
    (model_dir / "fold_0" / "fold.json").write_text(json.dumps(record))
    provenance.checked_validation(model_dir, 0, load_dataset(dataset))
    described = json.loads((dataset / "dataset.json").read_text())
    described["labels"] = {("bg" if v == 0 else f"class_{v}"): v for v in described["labels"].values()}
    (dataset / "dataset.json").write_text(json.dumps(described))
    with pytest.raises(TrainingError, match="labels of dataset .* changed since .* in dataset.json"):
        provenance.checked_validation(model_dir, 0, load_dataset(dataset))


def test_a_model_json_that_is_a_folder_is_named_not_skipped(tmp_path):
    from hnas.pipeline.layout import load_model_record, model_dirs

    (tmp_path / "cv" / "default_1ep" / "model.json").mkdir(parents=True)
    (folder,) = model_dirs(tmp_path)
    with pytest.raises(TrainingError, match="model.json' is a folder"):
        load_model_record(folder)
