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

from .conftest import run_cli


def fake_model(run_dir, name, dataset, folds, *, damage):
    """A cv/<name>/ folder whose validation predictions are the true labels, damaged by ``damage(label)``."""
    from hnas.data import load_dataset

    data = load_dataset(dataset)
    model_dir = run_dir / "cv" / name
    for fold in folds:
        out = model_dir / f"fold_{fold}" / "validation"
        out.mkdir(parents=True)
        for case_id in fold_split(data.case_ids, fold)[1]:
            source = nib.load(data.case(case_id).label_file)
            label = damage(np.asarray(source.dataobj).astype(np.int16))
            nib.save(nib.Nifti1Image(label, source.affine, source.header), out / f"{case_id}.nii.gz")
    record = {"name": name, "trial_id": None if name.startswith("default") else 1, "config": {}, "epochs": 1,
              "iterations_per_epoch": 1, "folds": list(folds)}
    (model_dir / "model.json").write_text(json.dumps(record))
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
