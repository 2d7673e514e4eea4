"""Shared by the pipeline tests: a small synthetic dataset and a CLI call that must succeed."""

from __future__ import annotations

import pytest

from hnas.cli import main


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    """Five 24x28x26 synthetic cases: enough for nnU-Net's five folds."""
    from hnas.data import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("data"), n_cases=5, shape=(24, 28, 26), seed=3)


def run_cli(capsys, *argv):
    """Run `hnas ARGV`, insist on exit 0 and return what it printed."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def model_record(name: str, folds, **fields) -> dict:
    """A model.json as `hnas train --folds` writes it (settings of a hand-made model folder; each name its own
    configuration, so two folders are two networks)."""
    return {"name": name, "trial_id": None if name.startswith("default") else int(name.split("_")[1]),
            "config": {"hand-made": name}, "epochs": 1, "iterations_per_epoch": 1, "folds": list(folds), **fields}


def record_fold(model_dir, fold: int, dataset_dir) -> dict:
    """fold.json for a hand-made fold folder (its model.json written first): every validation case whose label
    map exists counts as predicted, as `hnas train --folds` records it after writing the files."""
    from hnas.data import fold_split, load_dataset
    from hnas.pipeline.layout import fold_folder, load_model_record, replace_fold_record
    from hnas.pipeline.provenance import case_inputs, fold_settings, output_digests

    data = load_dataset(dataset_dir)
    validation = list(fold_split(data.case_ids, fold)[1])
    entries = {}
    for case_id in validation:
        outputs = output_digests(model_dir, fold, case_id)
        if outputs[".nii.gz"] is not None:
            entries[case_id] = {**case_inputs(data.case(case_id)), **outputs}
    record = {"model": model_dir.name, "fold": fold, "settings": fold_settings(load_model_record(model_dir)),
              "checkpoint": None,
              "validation_cases": validation, "validation": entries}
    replace_fold_record(fold_folder(model_dir, fold), record)
    return record
