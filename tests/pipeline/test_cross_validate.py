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
from hnas.data import load_dataset
from hnas.data.dataset import content_digest
from hnas.errors import SearchError, TrainingError
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


PROVENANCE = {"preset": {"name": "cpu"}, "plan": "p1", "grammar": "g1", "dataset": "/data/a",
              "dataset_digest": "d1", "split": "KFold"}


def test_a_model_folder_keeps_its_training_settings(tmp_path):
    choice = cv.ModelChoice(3, {"lr": 0.01})
    model_dir = tmp_path / choice.name(4)
    assert model_dir.name == "trial_00003_4ep" and cv.ModelChoice(None, {}).name(4) == "default_4ep"
    record = cv._claim_model(model_dir, choice, 4, 10, PROVENANCE)
    assert load_model_record(model_dir) == record  # claimed: written at once, so a second process sees it
    cv._add_fold(model_dir, record, 0)
    assert cv._claim_model(model_dir, choice, 4, 10, PROVENANCE)["folds"] == [0]  # resumes with the folds done
    moved = {**PROVENANCE, "dataset": "/elsewhere/a"}  # the same content at another path is the same dataset
    assert cv._claim_model(model_dir, choice, 4, 10, moved)["folds"] == [0]
    with pytest.raises(SearchError, match="iterations_per_epoch: stored 10, given 20"):
        cv._claim_model(model_dir, choice, 4, 20, PROVENANCE)  # other iterations per epoch would mix two trainings
    for key, value in [("preset", {"name": "nnunet"}), ("plan", "p2"), ("grammar", "g2"), ("dataset_digest", "d2")]:
        with pytest.raises(SearchError, match=f"{key}: stored"):
            cv._claim_model(model_dir, choice, 4, 10, {**PROVENANCE, key: value})
    with pytest.raises(SearchError, match="config: stored"):
        cv._claim_model(model_dir, cv.ModelChoice(3, {"lr": 0.1}), 4, 10, PROVENANCE)
    assert load_model_record(model_dir)["folds"] == [0]  # a refusal changes nothing
    (model_dir / "model.json").write_text("{damaged")
    with pytest.raises(TrainingError, match="cannot be read as JSON"):
        cv._claim_model(model_dir, choice, 4, 10, PROVENANCE)


def test_a_process_with_other_settings_cannot_add_a_fold_after_another_claimed_the_folder(tmp_path):
    model_dir = tmp_path / "default_4ep"
    mine = cv._claim_model(model_dir, cv.ModelChoice(None, {}), 4, 10, PROVENANCE)
    theirs = {**mine, "iterations_per_epoch": 20}  # as if claimed before model.json existed, with other settings
    with pytest.raises(SearchError, match="iterations_per_epoch: stored 10, given 20"):
        cv._add_fold(model_dir, theirs, 1)
    assert load_model_record(model_dir)["folds"] == []


def _record_fold_in_another_process(model_dir, fold):
    record = {"name": model_dir.name, "trial_id": None, "config": {}, "epochs": 4, "iterations_per_epoch": 10,
              "folds": [], "provenance": PROVENANCE}  # loaded before any process had written model.json
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
    provenance = record.pop("provenance")
    assert record == {"name": "default_1ep", "trial_id": None, "config": cv.default_choice(run_dir).config,
                      "epochs": 1, "iterations_per_epoch": 1, "folds": [2]}
    assert provenance["dataset"] == str(small_dataset.resolve()) and provenance["preset"]["name"] == "cpu"
    assert provenance["dataset_digest"] == content_digest(load_dataset(small_dataset))
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


def test_cross_validation_outputs_are_tied_to_their_inputs(capsys, tmp_path, small_dataset, monkeypatch):
    """run.json names the dataset absolutely with its digest; fold.json records what each output was made from."""
    import shutil

    from hnas.pipeline.layout import load_fold_record
    from hnas.pipeline.provenance import checked_validation

    monkeypatch.setenv("HNAS_CACHE", str(tmp_path / "cache"))
    dataset = tmp_path / "data"
    shutil.copytree(small_dataset, dataset)
    monkeypatch.chdir(tmp_path)
    settings = SearchSettings(dataset="data", preset="cpu", max_stages=3, iterations_per_epoch=1, min_epochs=1,
                              max_epochs=1)
    run_dir = tmp_path / "run"
    prepare_run_dir(run_dir, resolve(settings), resume=False)
    stored = json.loads((run_dir / "run.json").read_text())
    assert stored["dataset"] == str(dataset.resolve())  # not "data": another working folder has other data
    assert stored["dataset_digest"] == content_digest(load_dataset(dataset))

    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "data").mkdir(parents=True)  # a folder of the same relative name must not be picked up
    monkeypatch.chdir(elsewhere)
    run_cli(capsys, "train", "--run", run_dir, "--folds", "2", "--epochs", "1", "--default")
    model_dir = run_dir / "cv" / "default_1ep"
    record = load_fold_record(model_dir / "fold_2")
    (case,) = record["validation_cases"]
    assert record["model"] == "default_1ep" and set(record["validation"][case]) == {"images", "label", ".nii.gz",
                                                                                     ".npz"}
    assert checked_validation(model_dir, 2, load_dataset(dataset)) == ([case], [])

    npz = model_dir / "fold_2" / "validation" / f"{case}.npz"
    npz.write_bytes(npz.read_bytes()[:30])  # truncated: a rerun must not count it as done
    out = run_cli(capsys, "train", "--run", run_dir, "--folds", "2", "--epochs", "1", "--default")
    assert "already trained" in out and "wrote 1 validation prediction(s)" in out
    assert checked_validation(model_dir, 2, load_dataset(dataset)) == ([case], [])

    before = {p: p.read_bytes() for p in model_dir.rglob("*") if p.is_file()}
    assert main(["train", "--run", str(run_dir), "--folds", "2", "--epochs", "1", "--default",
                 "--iterations-per-epoch", "2"]) == 1
    assert "iterations_per_epoch: stored 1, given 2" in capsys.readouterr().err
    label = next((dataset / "labelsTr").iterdir())
    label.write_bytes(next(p for p in (dataset / "labelsTr").iterdir() if p != label).read_bytes())
    assert main(["train", "--run", str(run_dir), "--folds", "3", "--epochs", "1", "--default"]) == 1
    assert "changed since run" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in model_dir.rglob("*") if p.is_file()} == before  # refusals wrote nothing


def test_validation_predictions_are_never_written_through_a_link(tmp_path):
    from hnas.errors import TrainingError

    (tmp_path / "labelsTr").mkdir()
    fold_dir = tmp_path / "cv" / "default_1ep" / "fold_0"
    fold_dir.mkdir(parents=True)
    (fold_dir / "validation").symlink_to(tmp_path / "labelsTr")  # would overwrite the dataset's labels
    with pytest.raises(TrainingError, match="is a link .* never written through a link"):
        cv.predict_validation(fold_dir, None, 0, {"validation": {}})
    assert list((tmp_path / "labelsTr").iterdir()) == []


def test_a_configuration_asked_for_twice_is_cross_validated_once_saying_so():
    default = cv.ModelChoice(None, {"lr": 0.01, "architecture": "s"})
    incumbent = cv.ModelChoice(13, {"architecture": "s", "lr": 0.01})  # the same values, another key order
    other = cv.ModelChoice(7, {"lr": 0.02, "architecture": "s"})
    lines = []
    kept = cv.distinct_choices([default, incumbent, other, other], 9, log=lines.append)
    assert kept == [default, other]
    assert lines == ["trial 13 has the configuration of the default configuration: cross-validated once, as "
                     "default_9ep"]  # the same trial twice is the same name: nothing to say
