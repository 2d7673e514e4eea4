"""`hnas train --folds` and `hnas evaluate`: the RUN/cv/ contract, resuming, metrics.csv and summary.json.

The fast tests build the cv/ folders by hand (no training); the end-to-end one trains for real.
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

from hnas import cross_validation as cv
from hnas.cli import main
from hnas.errors import DatasetError, SearchError
from hnas.runs import SearchSettings
from hnas.train import fold_split


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    from hnas.data import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("data"), n_cases=5, shape=(24, 28, 26), seed=3)


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


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
    summary = cv.summarize(rows)
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
    cases, labels = cv.read_test_set(test_dir)
    assert [c[0] for c in cases] == ["synth_000", "synth_001"]
    assert cases[0][2].name == "synth_000.nii.gz" and labels[0] == ("background", 0)
    assert len(cv.read_test_set(small_dataset)[0]) == 5  # a dataset folder works as a test set too
    (test_dir / "labelsTs" / "synth_001.nii.gz").unlink()
    with pytest.raises(DatasetError, match="synth_001"):
        cv.read_test_set(test_dir)
    (test_dir / "dataset.json").unlink()  # then the label names come from the model
    (test_dir / "imagesTs" / "synth_001_0000.nii.gz").unlink()
    assert cv.read_test_set(test_dir, (("background", 0), ("x", 1)))[1] == (("background", 0), ("x", 1))
    with pytest.raises(DatasetError, match="no dataset.json"):
        cv.read_test_set(test_dir)


def test_an_msd_dataset_folder_with_4d_images_is_a_test_set(tmp_path):
    from hnas.data import read_images

    from data.builders import msd_dataset

    root = msd_dataset(tmp_path / "Task01_Test", channel_names=("T1", "T2"))
    cases, labels = cv.read_test_set(root)
    assert [c.case_id for c in cases] == ["hippo_1", "hippo_2"] and labels[1] == ("left", 1)
    case = cases[0]
    assert case.image_files == [root / "imagesTr" / "hippo_1.nii.gz"] * 2 and case.channel_in_file == (0, 1)
    volume = read_images(case.image_files, case.channel_in_file)
    assert volume.array.shape == (2, 6, 7, 8)  # both channels, not the 4D file read as one 3D image


def test_train_refuses_cross_validation_options_without_folds_and_bad_folds(capsys, tmp_path):
    assert main(["train", "--run", str(tmp_path), "--epochs", "1", "--default"]) == 1
    assert "need --folds" in capsys.readouterr().err
    assert main(["train", "--run", str(tmp_path), "--epochs", "1", "--trial", "1", "2"]) == 1
    assert "need --folds" in capsys.readouterr().err
    with pytest.raises(SearchError, match="fold 5 does not exist"):
        cv.check_folds([0, 5])
    with pytest.raises(SearchError, match="repeat"):
        cv.check_folds([1, 1])


def test_a_model_folder_keeps_its_training_settings(tmp_path):
    choice = cv.ModelChoice(3, {"lr": 0.01})
    model_dir = tmp_path / choice.name(4)
    assert model_dir.name == "trial_00003_4ep" and cv.ModelChoice(None, {}).name(4) == "default_4ep"
    record = cv._model_record(model_dir, choice, 4, 10)
    record["folds"] = [0]
    model_dir.mkdir()
    (model_dir / "model.json").write_text(json.dumps(record))
    assert cv._model_record(model_dir, choice, 4, 10)["folds"] == [0]  # resumes with the folds done
    with pytest.raises(SearchError, match="cannot add folds"):
        cv._model_record(model_dir, choice, 4, 20)  # other iterations per epoch would mix two trainings
    (model_dir / "model.json").write_text("{damaged")
    with pytest.raises(SearchError, match="cannot be read as JSON"):
        cv._model_record(model_dir, choice, 4, 10)


def _record_fold_in_another_process(model_dir, fold):
    record = {"name": model_dir.name, "trial_id": None, "config": {}, "epochs": 4, "iterations_per_epoch": 10,
              "folds": []}  # loaded before any process had written model.json
    cv._add_fold(model_dir, record, fold)


def test_parallel_processes_recording_folds_of_one_model_keep_every_fold(tmp_path):
    import multiprocessing

    model_dir = tmp_path / "cv" / "default_4ep"
    model_dir.mkdir(parents=True)
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_record_fold_in_another_process, args=(model_dir, fold)) for fold in range(5)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [w.exitcode for w in workers] == [0] * 5
    assert cv.load_model_record(model_dir)["folds"] == [0, 1, 2, 3, 4]
    assert sorted(p.name for p in model_dir.iterdir()) == ["model.json", "model.lock"]  # no temporary left


def test_a_fold_being_trained_by_another_process_is_refused_with_its_pid(tmp_path):
    import os

    fold_dir = tmp_path / "cv" / "default_4ep" / "fold_1"
    with cv._training_lock(fold_dir):
        with pytest.raises(SearchError, match=rf"fold_1'.*another process \(pid {os.getpid()}\)"):
            with cv._training_lock(fold_dir):  # its own open file: flock refuses it as it would another process
                pass
    with cv._training_lock(fold_dir):  # released at the end of the block
        pass


@pytest.mark.slow  # 15 s alone on the loaded 2-core machine (most of it torch's first optimizer and planning)
def test_default_on_one_fold_follows_the_contract_and_resumes(capsys, tmp_path, small_dataset, monkeypatch):
    from hnas import runs

    monkeypatch.setenv("HNAS_CACHE", str(tmp_path / "cache"))
    settings = SearchSettings(dataset=str(small_dataset), preset="cpu", max_stages=3, iterations_per_epoch=1,
                              min_epochs=1, max_epochs=1)
    run_dir = tmp_path / "run"  # the default needs no search: run.json, plan.json and grammar.lark suffice
    runs.prepare_run_dir(run_dir, runs.resolve(settings), resume=False)
    run_cli(capsys, "train", "--run", run_dir, "--folds", "2", "--epochs", "1", "--default")
    model_dir = run_dir / "cv" / "default_1ep"
    record = json.loads((model_dir / "model.json").read_text())
    assert record == {"name": "default_1ep", "trial_id": None, "config": cv.default_choice(run_dir).config,
                      "epochs": 1, "iterations_per_epoch": 1, "folds": [2]}
    (case,) = fold_split([f"synth_{i:03d}" for i in range(5)], 2)[1]
    assert sorted(p.name for p in (model_dir / "fold_2" / "validation").iterdir()) == [f"{case}.nii.gz",
                                                                                        f"{case}.npz"]
    stamp = (model_dir / "fold_2" / "checkpoint.pt").stat().st_mtime_ns
    (model_dir / "fold_2" / "validation" / f"{case}.npz").unlink()  # interrupted while predicting
    out = run_cli(capsys, "train", "--run", run_dir, "--folds", "2", "--epochs", "1", "--default")
    assert "already trained 1 epochs, skipped" in out
    assert (model_dir / "fold_2" / "checkpoint.pt").stat().st_mtime_ns == stamp
    assert (model_dir / "fold_2" / "validation" / f"{case}.npz").is_file()


def test_parallel_folds_train_in_worker_processes_and_a_refused_fold_does_not_stop_the_others(
        capsys, tmp_path, small_dataset, monkeypatch):
    from hnas import runs

    monkeypatch.setenv("HNAS_CACHE", str(tmp_path / "cache"))
    settings = SearchSettings(dataset=str(small_dataset), preset="cpu", max_stages=3, iterations_per_epoch=1,
                              min_epochs=1, max_epochs=1)
    run_dir = tmp_path / "run"
    runs.prepare_run_dir(run_dir, runs.resolve(settings), resume=False)
    model_dir = run_dir / "cv" / "default_1ep"
    with cv._training_lock(model_dir / "fold_1"):  # as if another process were training fold 1
        with pytest.raises(SearchError, match=r"1 cross-validation job\(s\) failed: default_1ep fold 1: SearchError: "
                                              r".*being trained by another process"):
            cv.cross_validate(run_dir, [cv.default_choice(run_dir)], [0, 1], 1, workers=2)
    assert cv.load_model_record(model_dir)["folds"] == [0]
    assert (model_dir / "fold_0" / "checkpoint.pt").is_file() and not (model_dir / "fold_1" / "checkpoint.pt").exists()
    out = run_cli(capsys, "train", "--run", run_dir, "--folds", "0", "1", "--epochs", "1", "--default",
                  "--workers", "2")  # the rerun trains only the missing fold
    assert f"cross-validated: {model_dir}" in out
    assert cv.load_model_record(model_dir)["folds"] == [0, 1]
    assert all(len(list((model_dir / f"fold_{k}" / "validation").glob("*.nii.gz"))) == 1 for k in (0, 1))


TINY = ["--preset", "cpu", "--space", "hpo+hnas", "--optimizer", "random", "--min-epochs", "1", "--max-epochs", "1",
        "--iterations-per-epoch", "1", "--no-progress", "--seed", "0"]


@pytest.mark.slow
def test_cross_validate_default_and_trials_then_evaluate(capsys, tmp_path, small_dataset, monkeypatch):
    monkeypatch.setenv("HNAS_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    run_cli(capsys, "search", "--dataset", small_dataset, "--max-stages", "3", *TINY, "--max-trials", "2",
            "--run-dir", run_dir)
    run_cli(capsys, "train", "--run", run_dir, "--folds", "0", "1", "--epochs", "1", "--default", "--trial", "1")
    incumbent = cv.trial_choice(run_dir)
    assert [c.trial_id for c in cv.pareto_choices(run_dir, 5)][0] == incumbent.trial_id

    data_ids = sorted(p.name[: -len(".nii.gz")] for p in (small_dataset / "labelsTr").iterdir())
    for name in ("default_1ep", "trial_00001_1ep"):
        model_dir = run_dir / "cv" / name
        record = json.loads((model_dir / "model.json").read_text())
        assert record["name"] == name and record["epochs"] == 1 and record["folds"] == [0, 1]
        assert record["iterations_per_epoch"] == 1 and record["trial_id"] == (None if name[0] == "d" else 1)
        for fold in (0, 1):
            fold_dir = model_dir / f"fold_{fold}"
            assert (fold_dir / "checkpoint.pt").is_file()
            (case,) = fold_split(data_ids, fold)[1]
            label = nib.load(fold_dir / "validation" / f"{case}.nii.gz")
            source = nib.load(small_dataset / "labelsTr" / f"{case}.nii.gz")
            assert label.shape == source.shape and np.allclose(label.affine, source.affine)
            with np.load(fold_dir / "validation" / f"{case}.npz") as stored:
                probabilities = stored["probabilities"]
            # hnas arrays are (z, y, x): the NIfTI axes reversed
            assert probabilities.dtype == np.float16 and probabilities.shape == (3, *source.shape[::-1])
            assert np.allclose(probabilities.astype(np.float32).sum(axis=0), 1.0, atol=1e-2)
    default_config = json.loads((run_dir / "cv" / "default_1ep" / "model.json").read_text())["config"]
    assert default_config == cv.default_choice(run_dir).config

    stamp = (run_dir / "cv" / "default_1ep" / "fold_0" / "checkpoint.pt").stat().st_mtime_ns
    out = run_cli(capsys, "train", "--run", run_dir, "--folds", "0", "1", "--epochs", "1", "--default")
    assert out.count("already trained 1 epochs, skipped") == 2
    assert (run_dir / "cv" / "default_1ep" / "fold_0" / "checkpoint.pt").stat().st_mtime_ns == stamp

    out = run_cli(capsys, "evaluate", "--run", run_dir)
    summary = json.loads((run_dir / "evaluation" / "validation" / "summary.json").read_text())
    assert set(summary["models"]) == {"default_1ep", "trial_00001_1ep"}
    assert all(m["cases"] == 2 for m in summary["models"].values())
    assert "trial_00001_1ep vs default_1ep: no test" in out

    out = run_cli(capsys, "evaluate", "--run", run_dir, "--test-dir", small_dataset, "-o", tmp_path / "test")
    with open(tmp_path / "test" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["fold"] for r in rows} == {"ensemble"} and len({r["case"] for r in rows}) == 5
    assert len(list((tmp_path / "test" / "predictions" / "default_1ep").glob("*.nii.gz"))) == 5
