"""`hnas train --folds`: the RUN/cv/ contract, locks, resuming; the slow end-to-end run also evaluates.

Metrics of hand-built cv/ folders (`hnas evaluate`) are in test_evaluate.py.
"""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from hnas.cli import main
from hnas.data import fold_split
from hnas.errors import SearchError
from hnas.pipeline import cross_validate as cv
from hnas.pipeline.layout import load_model_record
from hnas.pipeline.run import SearchSettings, resolve
from hnas.pipeline.search import prepare_run_dir

from .conftest import run_cli


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
    assert load_model_record(model_dir)["folds"] == [0, 1, 2, 3, 4]
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
    monkeypatch.setenv("HNAS_CACHE", str(tmp_path / "cache"))
    settings = SearchSettings(dataset=str(small_dataset), preset="cpu", max_stages=3, iterations_per_epoch=1,
                              min_epochs=1, max_epochs=1)
    run_dir = tmp_path / "run"  # the default needs no search: run.json, plan.json and grammar.lark suffice
    prepare_run_dir(run_dir, resolve(settings), resume=False)
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
    monkeypatch.setenv("HNAS_CACHE", str(tmp_path / "cache"))
    settings = SearchSettings(dataset=str(small_dataset), preset="cpu", max_stages=3, iterations_per_epoch=1,
                              min_epochs=1, max_epochs=1)
    run_dir = tmp_path / "run"
    prepare_run_dir(run_dir, resolve(settings), resume=False)
    model_dir = run_dir / "cv" / "default_1ep"
    with cv._training_lock(model_dir / "fold_1"):  # as if another process were training fold 1
        with pytest.raises(SearchError, match=r"1 cross-validation job\(s\) failed: default_1ep fold 1: SearchError: "
                                              r".*being trained by another process"):
            cv.cross_validate(run_dir, [cv.default_choice(run_dir)], [0, 1], 1, workers=2)
    assert load_model_record(model_dir)["folds"] == [0]
    assert (model_dir / "fold_0" / "checkpoint.pt").is_file() and not (model_dir / "fold_1" / "checkpoint.pt").exists()
    out = run_cli(capsys, "train", "--run", run_dir, "--folds", "0", "1", "--epochs", "1", "--default",
                  "--workers", "2")  # the rerun trains only the missing fold
    assert f"cross-validated: {model_dir}" in out
    assert load_model_record(model_dir)["folds"] == [0, 1]
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
