"""`hnas evaluate`: metrics.csv and summary.json of cross-validated models, the Wilcoxon pairs, test sets.

The cv/ folders are built by hand (no training); the end-to-end run is in test_cross_validate.py.
"""

from __future__ import annotations

import csv
import json
import math
import shutil

import nibabel as nib
import numpy as np
import pytest
from scipy.stats import wilcoxon

from hnas.cli import main
from hnas.data import fold_split
from hnas.errors import DatasetError
from hnas.pipeline import evaluate
from hnas.pipeline.run import SearchSettings

from .conftest import model_record, record_fold, run_cli


def fake_model(run_dir, name, dataset, folds, *, damage):
    """A cv/<name>/ folder whose validation predictions are the true labels, damaged by ``damage(label)``."""
    from hnas.data import load_dataset

    data = load_dataset(dataset)
    model_dir = run_dir / "cv" / name
    model_dir.mkdir(parents=True)
    (model_dir / "model.json").write_text(json.dumps(model_record(name, folds)))
    for fold in folds:
        out = model_dir / f"fold_{fold}" / "validation"
        out.mkdir(parents=True)
        for case_id in fold_split(data.case_ids, fold)[1]:
            source = nib.load(data.case(case_id).label_file)
            label = damage(np.asarray(source.dataobj).astype(np.int16))
            nib.save(nib.Nifti1Image(label, source.affine, source.header), out / f"{case_id}.nii.gz")
    for fold in folds:
        record_fold(model_dir, fold, dataset)
    return model_dir


def erase_class_2(label):
    return np.where(label == 2, 0, label).astype(np.int16)


def test_evaluate_validation_folds_writes_csv_json_and_table(capsys, tmp_path, small_dataset):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    SearchSettings(dataset=str(small_dataset)).save(run_dir)
    fake_model(run_dir, "default_1ep", small_dataset, [0, 1], damage=lambda label: label)
    fake_model(run_dir, "trial_00001_1ep", small_dataset, [0, 1], damage=erase_class_2)

    out = run_cli(capsys, "evaluate", "--run", run_dir, "-o", tmp_path / "eval")
    assert out.index("default_1ep") < out.index("trial_00001_1ep")  # the default first in the table
    assert "no test (only 2 paired cases" in out
    with open(tmp_path / "eval" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["model", "fold", "case", "class", "dice", "hd95"]
    assert len(rows) == 2 * 2 * 2  # models x validation cases (one per fold of 5 cases) x classes
    perfect = [r for r in rows if r["model"] == "default_1ep"]
    assert all(float(r["dice"]) == 1.0 and float(r["hd95"]) == 0.0 for r in perfect)
    erased = [r for r in rows if r["model"] == "trial_00001_1ep" and r["class"] == "substructure"]
    assert all(float(r["dice"]) == 0.0 and math.isnan(float(r["hd95"])) for r in erased)

    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    default, trial = summary["models"]["default_1ep"], summary["models"]["trial_00001_1ep"]
    assert default["dice"] == {"mean": 1.0, "std": 0.0, "n": 2} and default["folds"] == ["0", "1"]
    assert trial["dice"]["mean"] == pytest.approx(0.5)  # organ 1.0, substructure 0.0 in every case
    assert trial["per_class"]["substructure"]["hd95"] == {"mean": None, "std": None, "n": 0}
    (pair,) = summary["pairs"]
    assert pair["baseline"] == "default_1ep" and pair["model"] == "trial_00001_1ep"
    assert (pair["n"], pair["statistic"], pair["p"]) == (2, None, None)
    assert pair["reason"] == "only 2 paired cases; the Wilcoxon test needs at least 6"

    # one model by name; an unknown name is refused with the available ones
    run_cli(capsys, "evaluate", "--run", run_dir, "--models", "trial_00001_1ep", "-o", tmp_path / "one")
    assert list(json.loads((tmp_path / "one" / "summary.json").read_text())["models"]) == ["trial_00001_1ep"]
    assert main(["evaluate", "--run", str(run_dir), "--models", "nope"]) == 1
    assert "no cross-validated model ['nope']" in capsys.readouterr().err


def _evaluated_run(tmp_path, dataset, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    SearchSettings(dataset=str(dataset)).save(run_dir)
    fake_model(run_dir, "default_1ep", dataset, [0, 1], damage=lambda label: label)
    run_cli(capsys, "evaluate", "--run", run_dir)
    return run_dir


def test_an_earlier_evaluation_is_kept_unless_overwrite(capsys, tmp_path, small_dataset):
    run_dir = _evaluated_run(tmp_path, small_dataset, capsys)
    metrics = run_dir / "evaluation" / "validation" / "metrics.csv"
    before = metrics.read_bytes()
    metrics.write_text("my notes\n")
    assert main(["evaluate", "--run", str(run_dir)]) == 1
    err = capsys.readouterr().err
    assert "metrics.csv' already exists" in err and "--overwrite" in err and metrics.read_text() == "my notes\n"
    run_cli(capsys, "evaluate", "--run", run_dir, "--overwrite")
    assert metrics.read_bytes() == before


@pytest.mark.parametrize("where", ["cv", "cv/default_1ep", "test"])
def test_evaluate_does_not_write_inside_what_it_reads(capsys, tmp_path, small_dataset, where):
    run_dir = _evaluated_run(tmp_path, small_dataset, capsys)
    out = small_dataset if where == "test" else run_dir / where
    argv = ["evaluate", "--run", str(run_dir), "-o", str(out)] + (["--test-dir", str(small_dataset)]
                                                                   if where == "test" else [])
    assert main(argv) == 1
    assert "which evaluate reads; expected an output folder elsewhere" in capsys.readouterr().err
    assert not (out / "metrics.csv").exists()


def test_a_fold_still_missing_cases_is_refused_not_scored_on_fewer(capsys, tmp_path, small_dataset):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    SearchSettings(dataset=str(small_dataset)).save(run_dir)
    model_dir = fake_model(run_dir, "default_1ep", small_dataset, [0, 1], damage=lambda label: label)
    fold_json = model_dir / "fold_1" / "fold.json"
    record = json.loads(fold_json.read_text())
    record["validation"] = {}  # interrupted before its case was recorded
    fold_json.write_text(json.dumps(record))
    assert main(["evaluate", "--run", str(run_dir)]) == 1
    assert "fold 1 of model 'default_1ep' has 0 of 1 validation cases predicted" in capsys.readouterr().err


def test_models_scored_on_different_cases_are_flagged(capsys, tmp_path, small_dataset):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    SearchSettings(dataset=str(small_dataset)).save(run_dir)
    fake_model(run_dir, "default_1ep", small_dataset, [0, 1], damage=lambda label: label)
    fake_model(run_dir, "trial_00001_1ep", small_dataset, [0], damage=erase_class_2)
    with pytest.warns(evaluate.EvaluationWarning, match=r"different cases \(default_1ep: 2, trial_00001_1ep: 1\).*"
                                                         r"the 1 cases all of them have"):
        evaluate.evaluate_run(run_dir, out_dir=tmp_path / "eval", log=lambda _: None)


def test_summary_pairs_every_model_with_the_default_by_case():
    rng = np.random.default_rng(0)
    rows = []
    default_dice, other_dice = rng.uniform(0.6, 0.8, 8), rng.uniform(0.7, 0.9, 8)
    for i in range(8):
        for cls in ("a", "b"):
            rows.append({"model": "default_2ep", "fold": str(i % 3), "case": f"c{i}", "class": cls,
                         "dice": default_dice[i], "hd95": 1.0})
            rows.append({"model": "trial_00004_2ep", "fold": str(i % 3), "case": f"c{i}", "class": cls,
                         "dice": other_dice[i], "hd95": 2.0})
    summary = evaluate.summarize(rows)
    expected = wilcoxon(other_dice - default_dice)
    (pair,) = summary["pairs"]
    assert pair["n"] == 8 and pair["p"] == pytest.approx(expected.pvalue)
    assert pair["statistic"] == pytest.approx(expected.statistic)
    model = summary["models"]["default_2ep"]
    assert model["dice"]["mean"] == pytest.approx(default_dice.mean())
    assert model["dice"]["std"] == pytest.approx(default_dice.std())
    assert sorted(model["dice_per_fold"]) == ["0", "1", "2"]
    assert model["dice_per_fold"]["0"] == pytest.approx(default_dice[[0, 3, 6]].mean())


def test_a_labelled_test_folder_in_nnunet_layout(tmp_path, small_dataset):
    test_dir = tmp_path / "Dataset900_Test"
    (test_dir / "imagesTs").mkdir(parents=True)
    (test_dir / "labelsTs").mkdir()
    shutil.copy(small_dataset / "dataset.json", test_dir)
    for image in sorted((small_dataset / "imagesTr").iterdir())[:2]:
        (test_dir / "imagesTs" / image.name).symlink_to(image)
        case = image.name[: -len("_0000.nii.gz")]
        (test_dir / "labelsTs" / f"{case}.nii.gz").symlink_to(small_dataset / "labelsTr" / f"{case}.nii.gz")
    cases, labels = evaluate.read_test_set(test_dir)
    assert [c[0] for c in cases] == ["synth_000", "synth_001"]
    assert cases[0][2].name == "synth_000.nii.gz" and labels[0] == ("background", 0)
    assert len(evaluate.read_test_set(small_dataset)[0]) == 5  # a dataset folder works as a test set too
    (test_dir / "labelsTs" / "synth_001.nii.gz").unlink()
    with pytest.raises(DatasetError, match="synth_001"):
        evaluate.read_test_set(test_dir)
    (test_dir / "dataset.json").unlink()  # then the label names come from the model
    (test_dir / "imagesTs" / "synth_001_0000.nii.gz").unlink()
    assert evaluate.read_test_set(test_dir, (("background", 0), ("x", 1)))[1] == (("background", 0), ("x", 1))
    with pytest.raises(DatasetError, match="no dataset.json"):
        evaluate.read_test_set(test_dir)


def test_an_msd_dataset_folder_with_4d_images_is_a_test_set(tmp_path):
    from hnas.data import read_images

    from data.builders import msd_dataset

    root = msd_dataset(tmp_path / "Task01_Test", channel_names=("T1", "T2"))
    cases, labels = evaluate.read_test_set(root)
    assert [c.case_id for c in cases] == ["hippo_1", "hippo_2"] and labels[1] == ("left", 1)
    case = cases[0]
    assert case.image_files == [root / "imagesTr" / "hippo_1.nii.gz"] * 2 and case.channel_in_file == (0, 1)
    volume = read_images(case.image_files, case.channel_in_file)
    assert volume.array.shape == (2, 6, 7, 8)  # both channels, not the 4D file read as one 3D image


# ---------------------------------------------------------------- geometry of a labelled test set (issue 18)

SYNTHETIC_LABELS = (("background", 0), ("organ", 1), ("substructure", 2))


@pytest.fixture(scope="module")
def test_model(tmp_path_factory):
    """RUN/cv/default_1ep: one fold of an untrained 3-stage network at 1 mm with the synthetic data's labels."""
    from conftest import isotropic_plan, untrained_checkpoint

    run_dir = tmp_path_factory.mktemp("run")
    model_dir = run_dir / "cv" / "default_1ep"
    untrained_checkpoint(model_dir / "fold_0" / "checkpoint.pt", isotropic_plan(3, patch=16, base=4, top=16), 0,
                         SYNTHETIC_LABELS)
    (model_dir / "model.json").write_text(json.dumps({"name": "default_1ep", "trial_id": None, "config": {},
                                                      "epochs": 1, "iterations_per_epoch": 1, "folds": [0]}))
    return model_dir


def labelled_test_set(root, small_dataset, cases=("synth_000", "synth_001")):
    """imagesTs/labelsTs (copies, so tests may damage them) and the dataset's dataset.json."""
    (root / "imagesTs").mkdir(parents=True)
    (root / "labelsTs").mkdir()
    shutil.copy(small_dataset / "dataset.json", root)
    for case in cases:
        shutil.copy(small_dataset / "imagesTr" / f"{case}_0000.nii.gz", root / "imagesTs")
        shutil.copy(small_dataset / "labelsTr" / f"{case}.nii.gz", root / "labelsTs")
    return root


def _refused_before_any_prediction(test_model, test_dir, out, match):
    with pytest.raises(DatasetError, match=match) as info:
        evaluate.ensemble_test_rows(test_model, test_dir, out, log=lambda line: None)
    assert "\n" not in str(info.value)
    assert not list(out.rglob("*.nii.gz"))
    return str(info.value)


def test_a_clean_test_set_is_scored(test_model, small_dataset, tmp_path):
    test_dir = labelled_test_set(tmp_path / "test", small_dataset)
    rows = evaluate.ensemble_test_rows(test_model, test_dir, tmp_path / "out", log=lambda line: None)
    assert sorted({row["case"] for row in rows}) == ["synth_000", "synth_001"]
    assert {row["class"] for row in rows} == {"organ", "substructure"}


def test_a_test_label_shifted_20_mm_is_refused_naming_both_files(test_model, small_dataset, tmp_path):
    from data.builders import shifted

    test_dir = labelled_test_set(tmp_path / "test", small_dataset)
    label = shifted(test_dir / "labelsTs" / "synth_001.nii.gz", (20.0, 0.0, 0.0))
    message = _refused_before_any_prediction(test_model, test_dir, tmp_path / "out", "affine mismatch")
    assert str(label) in message and str(test_dir / "imagesTs" / "synth_001_0000.nii.gz") in message
    assert "20 mm" in message


def test_a_test_label_on_another_spacing_is_refused_naming_both(test_model, small_dataset, tmp_path):
    test_dir = labelled_test_set(tmp_path / "test", small_dataset)
    label = test_dir / "labelsTs" / "synth_000.nii.gz"
    source = nib.load(str(label))
    nib.save(nib.Nifti1Image(np.asarray(source.dataobj), np.diag([1.0, 1.0, 2.0, 1.0])), str(label))
    message = _refused_before_any_prediction(test_model, test_dir, tmp_path / "out", "spacing mismatch")
    assert f"label {str(label)!r} (2.0, 1.0, 1.0)" in message and "synth_000_0000.nii.gz' (1.0, 1.0, 1.0)" in message


def test_extra_values_in_a_test_label_are_refused_naming_them(test_model, small_dataset, tmp_path):
    test_dir = labelled_test_set(tmp_path / "test", small_dataset)
    label = test_dir / "labelsTs" / "synth_001.nii.gz"
    source = nib.load(str(label))
    data = np.asarray(source.dataobj).copy()
    data[0, 0, 0] = 5
    nib.save(nib.Nifti1Image(data, source.affine, source.header), str(label))
    message = _refused_before_any_prediction(test_model, test_dir, tmp_path / "out", r"holds values \[5\]")
    assert "synth_001.nii.gz" in message and "expected only [0, 1, 2]" in message


def test_a_test_set_with_other_labels_than_the_model_is_refused_naming_both(test_model, small_dataset, tmp_path):
    test_dir = labelled_test_set(tmp_path / "test", small_dataset)
    meta = json.loads((test_dir / "dataset.json").read_text())
    meta["labels"] = {"background": 0, "tumour": 1, "edema": 2}
    (test_dir / "dataset.json").write_text(json.dumps(meta))
    message = _refused_before_any_prediction(test_model, test_dir, tmp_path / "out", "other labels")
    assert str(test_dir / "dataset.json") in message and "'tumour': 1" in message and "'organ': 1" in message
    assert str(test_model) in message


def test_a_test_image_with_a_nan_voxel_size_is_refused_naming_it(test_model, small_dataset, tmp_path):
    from data.builders import set_stored_pixdim

    test_dir = labelled_test_set(tmp_path / "test", small_dataset)
    image = set_stored_pixdim(test_dir / "imagesTs" / "synth_001_0000.nii.gz", 0, float("nan"))
    message = _refused_before_any_prediction(test_model, test_dir, tmp_path / "out", "voxel size")
    assert str(image) in message and "(nan, 1.0, 1.0)" in message


def test_a_zero_pixdim_in_a_test_label_warns_like_plan(test_model, small_dataset, tmp_path):
    from data.builders import set_stored_pixdim
    from hnas.data import DatasetWarning

    test_dir = labelled_test_set(tmp_path / "test", small_dataset, cases=("synth_000",))
    set_stored_pixdim(test_dir / "labelsTs" / "synth_000.nii.gz", 2, 0.0)
    with pytest.warns(DatasetWarning, match=r"store pixdim 0 \(no spacing; read as 1 mm\): '.*synth_000.nii.gz'"):
        evaluate.ensemble_test_rows(test_model, test_dir, tmp_path / "out", log=lambda line: None)


def test_a_prediction_on_another_grid_than_its_label_is_refused(small_dataset, tmp_path):
    label = small_dataset / "labelsTr" / "synth_000.nii.gz"
    source = nib.load(str(label))
    prediction = tmp_path / "synth_000.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(source.dataobj), np.diag([1.0, 1.5, 1.0, 1.0])), str(prediction))
    with pytest.raises(DatasetError, match=rf"prediction/label spacing mismatch: prediction {str(prediction)!r} "
                                           r"\(1.0, 1.5, 1.0\), label '.*synth_000.nii.gz' \(1.0, 1.0, 1.0\)"):
        evaluate._case_rows("m", "0", "synth_000", prediction, label, SYNTHETIC_LABELS)


def test_a_prediction_with_values_outside_the_labels_is_refused(small_dataset, tmp_path):
    label = small_dataset / "labelsTr" / "synth_000.nii.gz"
    source = nib.load(str(label))
    data = np.asarray(source.dataobj).astype(np.int16)
    data[1, 1, 1] = 7
    prediction = tmp_path / "synth_000.nii.gz"
    nib.save(nib.Nifti1Image(data, source.affine, source.header), str(prediction))
    with pytest.raises(DatasetError, match=r"synth_000.nii.gz' holds values \[7\]"):
        evaluate._case_rows("m", "0", "synth_000", prediction, label, SYNTHETIC_LABELS)


def test_a_validation_label_affine_only_warns_as_plan_did(small_dataset, tmp_path):
    """Validation folds were trained on such data (plan warned); a test set is refused (above)."""
    from data.builders import shifted
    from hnas.data import DatasetWarning

    labels = SYNTHETIC_LABELS
    label = shifted(small_dataset / "labelsTr" / "synth_000.nii.gz", (0.0, 5.0, 0.0), tmp_path / "label.nii.gz")
    prediction = small_dataset / "labelsTr" / "synth_000.nii.gz"  # written on the image's grid
    with pytest.warns(DatasetWarning, match="affine"):
        rows = evaluate._case_rows("m", "0", "synth_000", prediction, label, labels)
    assert {row["dice"] for row in rows} == {1.0}
    with pytest.raises(DatasetError, match="affine mismatch"):
        evaluate._case_rows("m", "ensemble", "synth_000", prediction, label, labels, strict=True)


def test_cli_evaluate_refuses_a_shifted_test_label_in_one_line(capsys, test_model, small_dataset, tmp_path):
    from data.builders import shifted

    test_dir = labelled_test_set(tmp_path / "test", small_dataset)
    shifted(test_dir / "labelsTs" / "synth_000.nii.gz", (20.0, 0.0, 0.0))
    code = main(["evaluate", "--run", str(test_model.parent.parent), "--test-dir", str(test_dir), "-o",
                 str(tmp_path / "eval")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and err.startswith("hnas: error: image/label affine mismatch")


def test_fold_folders_model_json_does_not_list_are_named_not_scored(capsys, tmp_path, small_dataset):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    SearchSettings(dataset=str(small_dataset)).save(run_dir)
    model_dir = fake_model(run_dir, "default_1ep", small_dataset, [0, 1], damage=lambda label: label)
    (model_dir / "model.json").write_text(json.dumps(model_record("default_1ep", [0])))
    with pytest.warns(evaluate.EvaluationWarning, match=r"\['fold_1'\] not evaluated: model.json lists folds \[0\]"):
        summary, _ = evaluate.evaluate_run(run_dir, out_dir=tmp_path / "eval", log=lambda _: None)
    assert summary["models"]["default_1ep"]["folds"] == ["0"]


def test_label_maps_fold_json_does_not_record_are_named_not_scored(capsys, tmp_path, small_dataset):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    SearchSettings(dataset=str(small_dataset)).save(run_dir)
    model_dir = fake_model(run_dir, "default_1ep", small_dataset, [0], damage=lambda label: label)
    validation = model_dir / "fold_0" / "validation"
    shutil.copy(next(validation.glob("*.nii.gz")), validation / "copied_in.nii.gz")
    with pytest.warns(evaluate.EvaluationWarning, match=r"\['copied_in.nii.gz'\] not evaluated: fold.json"):
        summary, _ = evaluate.evaluate_run(run_dir, out_dir=tmp_path / "eval", log=lambda _: None)
    assert summary["models"]["default_1ep"]["cases"] == 1


def test_a_test_set_in_20_mm_voxels_is_refused_unless_unusual_inputs_are_allowed(test_model, small_dataset, tmp_path,
                                                                                 monkeypatch):
    """Image and label agree, but at 20x the model's voxel size (a header in cm?) the windows run for minutes."""
    from hnas.train import prediction
    from hnas.train.prediction import InputLimits

    test_dir = labelled_test_set(tmp_path / "test", small_dataset, cases=("synth_000",))
    for path in (test_dir / "imagesTs" / "synth_000_0000.nii.gz", test_dir / "labelsTs" / "synth_000.nii.gz"):
        source = nib.load(str(path))
        coarse = np.asarray(source.dataobj)[::4, ::4, ::4].copy()  # the same extent, resampled to a quarter
        nib.save(nib.Nifti1Image(coarse, source.affine @ np.diag([20.0, 20.0, 20.0, 1.0])), str(path))
    message = _refused_before_any_prediction(test_model, test_dir, tmp_path / "out", "20x coarser")
    assert "synth_000_0000.nii.gz" in message and "--allow-unusual-inputs" in message

    def reached(*args, **kwargs):
        raise RuntimeError("sliding window reached")

    monkeypatch.setattr(prediction, "sliding_window_logits", reached)
    with pytest.raises(RuntimeError, match="sliding window reached"), pytest.warns(prediction.PredictionWarning,
                                                                                    match="expect a long prediction"):
        evaluate.ensemble_test_rows(test_model, test_dir, tmp_path / "out", limits=InputLimits.lifted(),
                                    log=lambda line: None)


# ---------------------------------------------------------------- honest comparisons (issue 17)


def _two_models(root, configs):
    folders = []
    for name, config in zip(("default_1ep", "trial_00003_1ep"), configs):
        folder = root / "cv" / name
        folder.mkdir(parents=True)
        (folder / "model.json").write_text(json.dumps(model_record(name, [0], config=config)))
        folders.append(folder)
    return folders


def test_a_model_with_the_baselines_configuration_gets_no_test_and_is_named(tmp_path):
    folders = _two_models(tmp_path, [{"lr": 0.01}, {"lr": 0.01}])
    facts = evaluate.model_facts(folders, test_dir=None)
    rows = [{"model": m, "fold": "0", "case": f"c{i}", "class": "organ", "dice": d, "hd95": 1.0}
            for m in ("default_1ep", "trial_00003_1ep") for i, d in enumerate([0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97])]
    rows = [dict(r, dice=r["dice"] - 0.01) if r["model"] == "default_1ep" else r for r in rows]
    (pair,) = evaluate.summarize(rows, facts)["pairs"]
    assert pair["p"] is None and "the same network trained twice" in pair["reason"]
    assert evaluate.summarize(rows)["pairs"][0]["p"] is not None  # without the facts: a real test (W = 0)


def test_the_post_processing_each_model_was_scored_with_is_stated_and_mixed_ones_warned(tmp_path):
    from hnas.train.postprocessing import Postprocessing

    default, trial = _two_models(tmp_path, [{"lr": 0.01}, {"lr": 0.02}])
    (default / "postprocessing.json").write_text(json.dumps(Postprocessing(((1, 2),)).to_dict()))
    facts = evaluate.model_facts([default, trial], test_dir=tmp_path)
    assert facts["default_1ep"]["postprocessing"].startswith("keep the largest connected component of labels 1+2")
    assert facts["trial_00003_1ep"]["postprocessing"] == "none"
    with pytest.warns(evaluate.EvaluationWarning, match=r"different post-processing \(default_1ep: largest "
                                                        r"component: labels 1\+2; trial_00003_1ep: none\).*"
                                                        r"--no-postprocessing"):
        evaluate._warn_different_postprocessing(facts)
    alone = evaluate.model_facts([default, trial], test_dir=tmp_path, postprocessing=False)
    assert {fact["postprocessing"] for fact in alone.values()} == {"none"}
    assert evaluate.model_facts([default, trial], test_dir=None)["default_1ep"]["postprocessing"] == "none"
    rows = [{"model": m, "fold": "ensemble", "case": "c0", "class": "organ", "dice": 0.9, "hd95": 1.0}
            for m in facts]
    table = evaluate.summary_table(evaluate.summarize(rows, facts))
    assert "| post-processing |" in table and "largest component: labels 1+2 |" in table


# ---------------------------------------------------------------- case by case: today's numbers, flat memory

# evaluate's output on test_find_best.stream_run at hnas 779af65: summary numbers and metrics.csv's digest
GOLDEN_EVALUATION = {'models': {'default_2ep': {'cases': 10,
                            'dice': {'mean': 0.5200611929098764, 'std': 0.01430921028098979, 'n': 10},
                            'hd95': {'mean': 7.026156934102376, 'std': 2.9638488423016933, 'n': 30},
                            'dice_over_folds': {'mean': 0.5200611929098764, 'std': 0.012087078405577734, 'n': 5}},
            'trial_00003_2ep': {'cases': 10,
                                'dice': {'mean': 0.416565086444219, 'std': 0.007393433912892537, 'n': 10},
                                'hd95': {'mean': 7.225709406534831, 'std': 2.9315719947900485, 'n': 30},
                                'dice_over_folds': {'mean': 0.416565086444219,
                                                    'std': 0.004413931130081705,
                                                    'n': 5}},
            'trial_00005_2ep': {'cases': 10,
                                'dice': {'mean': 0.6584321995576222, 'std': 0.021288215183390684, 'n': 10},
                                'hd95': {'mean': 6.3111135244369505, 'std': 3.4981588755536976, 'n': 30},
                                'dice_over_folds': {'mean': 0.6584321995576223,
                                                    'std': 0.007085221771150355,
                                                    'n': 5}},
            'trial_00008_2ep': {'cases': 10,
                                'dice': {'mean': 0.3347898128132025, 'std': 0.015137851879568232, 'n': 10},
                                'hd95': {'mean': 7.477935099601746, 'std': 2.7418001469264435, 'n': 30},
                                'dice_over_folds': {'mean': 0.3347898128132026,
                                                    'std': 0.014080712839665293,
                                                    'n': 5}}},
 'pairs': [{'model': 'trial_00003_2ep', 'n': 10, 'statistic': 0.0, 'p': 0.001953125},
           {'model': 'trial_00005_2ep', 'n': 10, 'statistic': 0.0, 'p': 0.001953125},
           {'model': 'trial_00008_2ep', 'n': 10, 'statistic': 0.0, 'p': 0.001953125}]}
GOLDEN_METRICS_SHA256 = "6fc264efec1041e421cd927cd42e6810b3e8ed8165cc255f110ce0b255d60e3d"  # csv: \r\n lines


@pytest.fixture(scope="module")
def stream_evaluation_run(tmp_path_factory):
    from .test_find_best import stream_dataset, stream_run

    root = tmp_path_factory.mktemp("stream")
    return stream_run(root / "run", stream_dataset(root / "Dataset991_Stream"))


def test_evaluate_writes_the_numbers_it_always_wrote(stream_evaluation_run, tmp_path):
    """metrics.csv byte for byte and summary.json's means, stds and Wilcoxon tests as at hnas 779af65."""
    import hashlib

    summary, out = evaluate.evaluate_run(stream_evaluation_run, out_dir=tmp_path / "eval", log=lambda _: None)
    assert hashlib.sha256((out / "metrics.csv").read_bytes()).hexdigest() == GOLDEN_METRICS_SHA256
    assert {"models": {m: {k: v[k] for k in ("cases", "dice", "hd95", "dice_over_folds")}
                       for m, v in summary["models"].items()},
            "pairs": [{k: p[k] for k in ("model", "n", "statistic", "p")} for p in summary["pairs"]]} == \
        GOLDEN_EVALUATION
    assert json.loads((out / "summary.json").read_text()) == summary


def test_evaluate_reads_one_case_at_a_time(stream_evaluation_run, tmp_path, monkeypatch):
    """Each case's prediction and label are dropped before the next case is read: at most one map (the
    case's prediction, while its label is read) is alive at a read, however many cases the folds hold."""
    from .test_find_best import live_arrays

    alive = live_arrays(monkeypatch, evaluate, "read_label_map")
    evaluate.evaluate_run(stream_evaluation_run, names=["default_2ep", "trial_00005_2ep"], out_dir=tmp_path / "e",
                          log=lambda _: None)
    assert len(alive) == 2 * 10 * 2  # two models, ten cases, prediction and label
    assert max(alive) == 1
