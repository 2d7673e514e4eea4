"""A user's fold split (nnU-Net's splits_final.json) given to `hnas search --splits` and `hnas train --folds
--splits`: checked before anything is written, copied into the run, used by training, validation and
every later step, and a different one refused once models use the first."""

from __future__ import annotations

import json

import pytest

from hnas.cli import main
from hnas.data import load_dataset
from hnas.errors import SearchError
from hnas.pipeline import cross_validate as cv
from hnas.pipeline.layout import RunFolder, stored_splits
from hnas.pipeline.run import SearchSettings, resolve
from hnas.pipeline.search import prepare_run_dir

from .conftest import run_cli


def _round_robin(case_ids, shift=0):
    """Fold k validates cases k and k + 5 (in sorted order): not nnU-Net's shuffled split."""
    ids = sorted(case_ids)
    return [{"train": [c for j, c in enumerate(ids) if (j + shift) % 5 != k],
             "val": [c for j, c in enumerate(ids) if (j + shift) % 5 == k]} for k in range(5)]


@pytest.fixture
def split_file(tmp_path, small_dataset):
    path = tmp_path / "my_splits.json"
    path.write_text(json.dumps(_round_robin(load_dataset(small_dataset).case_ids)))
    return path


def _settings(dataset, **changes):
    return SearchSettings(dataset=str(dataset), preset="cpu", max_stages=3, iterations_per_epoch=1, min_epochs=1,
                          max_epochs=1, **changes)


def test_a_searched_split_is_copied_into_the_run_and_trains_its_trials(tmp_path, small_dataset, split_file):
    run_dir = tmp_path / "run"
    setup = resolve(_settings(small_dataset, splits=str(split_file)))
    prepare_run_dir(run_dir, setup, resume=False)
    split_file.unlink()  # the run keeps its own copy
    stored = json.loads((run_dir / "splits_final.json").read_text())
    assert stored == _round_robin(load_dataset(small_dataset).case_ids)
    assert setup.train_setup(run_dir).splits == stored_splits(run_dir, small_dataset) == tuple(
        (tuple(f["train"]), tuple(f["val"])) for f in stored)
    assert SearchSettings.load(run_dir).splits == str(split_file.resolve())


def test_a_broken_split_is_refused_before_the_run_folder_is_made(capsys, tmp_path, small_dataset):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"train": ["synth_000"], "val": ["nobody"]}] * 5))
    code = main(["search", "--dataset", str(small_dataset), "--splits", str(bad), "--run-dir", str(tmp_path / "run"),
                 "--preset", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "names cases the dataset lacks: ['nobody']" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # one epoch of one iteration, then the validation case predicted
def test_cross_validation_follows_a_given_split_and_refuses_another_later(capsys, tmp_path, small_dataset, split_file,
                                                                          monkeypatch):
    monkeypatch.setenv("HNAS_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    prepare_run_dir(run_dir, resolve(_settings(small_dataset)), resume=False)
    run_cli(capsys, "train", "--run", run_dir, "--folds", "1", "--epochs", "1", "--default", "--splits", split_file)
    folds = _round_robin(load_dataset(small_dataset).case_ids)
    record = json.loads((run_dir / "cv" / "default_1ep" / "fold_1" / "fold.json").read_text())
    assert record["validation_cases"] == folds[1]["val"] and record["training_cases"] == folds[1]["train"]
    assert sorted(p.name for p in (run_dir / "cv" / "default_1ep" / "fold_1" / "validation").glob("*.nii.gz")) == [
        f"{case}.nii.gz" for case in folds[1]["val"]]
    assert json.loads(RunFolder(run_dir).cv_splits.read_text()) == folds
    provenance = json.loads((run_dir / "cv" / "default_1ep" / "model.json").read_text())["provenance"]
    assert provenance["split"].startswith("splits_final.json given with --splits, sha256 ")

    other = tmp_path / "other.json"
    other.write_text(json.dumps(_round_robin(load_dataset(small_dataset).case_ids, shift=1)))
    with pytest.raises(SearchError, match=r"gives other folds than .*cv/splits_final.json.*\['default_1ep'\]"):
        cv.cross_validate(run_dir, [cv.default_choice(run_dir)], [1], 1, splits=other)
    out = run_cli(capsys, "train", "--run", run_dir, "--folds", "1", "--epochs", "1", "--default")  # the stored one
    assert "already trained 1 epochs, skipped" in out
    run_cli(capsys, "evaluate", "--run", run_dir)  # validation checked against the stored split
