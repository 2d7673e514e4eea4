"""What made each cross-validated model and fold, recorded beside them and checked before they are used.

A model folder's model.json names the settings its folds were trained with (configuration,
epochs, iterations, the scale preset's values, the plan and grammar, the dataset and its content
digest, the split); each fold's fold.json repeats them, lists the fold's validation cases, the
digest of its checkpoint, and per validation case the digests of its inputs (images, label) and
of the two files predicted for it. So:

- a second process or a rerun with other settings is refused, naming what differs;
- a validation prediction counts only when both files are complete and are those the fold wrote
  (each is written under a temporary name and renamed, then recorded);
- find-best, evaluate and predict refuse outputs whose inputs changed since they were made (a
  label edited, a case added) or that another model's folder supplied.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from hnas.data import Dataset, load_dataset
from hnas.data.dataset import Case, content_digest
from hnas.data.io import file_digest
from hnas.data.splits import N_FOLDS, SPLIT_SEED, SPLITS_FILE, split_of
from hnas.errors import SearchError, TrainingError
from hnas.grammar import grammar_hash
from hnas.pipeline.layout import (PREDICTION_ENDINGS, RunFolder, fold_folder, load_fold_record, prediction_file,
                                  require_folder, stored_splits)
from hnas.train.checkpoint import CHECKPOINT_NAME

SPLIT = f"KFold({N_FOLDS}, shuffle=True, random_state={SPLIT_SEED}) over the sorted case ids (nnU-Net)"
#: model.json fields a fold shares with its model (everything but the name and the list of folds).
SETTINGS = ("trial_id", "config", "epochs", "iterations_per_epoch", "provenance")
#: Provenance fields that must agree; the dataset's path may change (a moved copy has the same digest).
COMPARED = ("preset", "plan", "grammar", "dataset_digest", "split")


def plain(value):
    """``value`` as JSON reads it back (tuples become lists), so stored and new records compare equal."""
    return json.loads(json.dumps(value))


def model_provenance(run_dir: Path, preset, grammar: str, dataset: Path, splits: tuple | None = None) -> dict:
    """The inputs every fold of a model is made from, besides its configuration and epochs."""
    plan = RunFolder(run_dir).plan
    return plain({"preset": asdict(preset), "plan": file_digest(plan) if plan.is_file() else None,
                  "grammar": grammar_hash(grammar), "dataset": str(Path(dataset).resolve()),
                  "dataset_digest": content_digest(load_dataset(dataset)), "split": describe_split(splits)})


def describe_split(splits: tuple | None) -> str:
    """nnU-Net's default split by its rule; a user's split file by its content's digest."""
    if splits is None:
        return SPLIT
    text = json.dumps([[list(train), list(val)] for train, val in splits], sort_keys=True)
    return f"{SPLITS_FILE} given with --splits, sha256 {hashlib.sha256(text.encode()).hexdigest()[:16]}"


def settings_differences(stored: dict, wanted: dict) -> list[str]:
    """``field: stored A, given B`` for every setting two model records disagree on."""
    differences = []
    for field in SETTINGS:
        old, new = stored.get(field), wanted.get(field)
        if field == "provenance":
            if old is None:  # a model folder written before provenance was recorded: its other fields decide
                continue
            differences += [f"{key}: stored {_short(old.get(key))}, given {_short(new.get(key))}"
                            for key in COMPARED if old.get(key) != new.get(key)]
        elif old != new:
            differences.append(f"{field}: stored {_short(old)}, given {_short(new)}")
    return differences


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def fold_settings(model_record: dict) -> dict:
    return {field: model_record.get(field) for field in SETTINGS}


def new_fold_record(model_record: dict, fold: int, dataset: Dataset, checkpoint: Path,
                    splits: tuple | None = None) -> dict:
    """fold.json for a fold just trained: its model and settings, split, checkpoint digest; nothing predicted yet."""
    training, validation = split_of(dataset.case_ids, fold, splits)
    return plain({"model": model_record["name"], "fold": fold, "settings": fold_settings(model_record),
                  "checkpoint": file_digest(checkpoint), "labels": [list(pair) for pair in dataset.labels],
                  "training_cases": list(training), "validation_cases": list(validation), "validation": {}})


def check_fold_record(fold_dir: Path, model_record: dict, fold: int) -> dict | None:
    """A fold's fold.json, refused when it belongs to another model, fold or settings (None: not trained yet)."""
    record = load_fold_record(fold_dir)
    if record is None:
        return None
    where = f"{str(fold_dir)!r} (fold.json)"
    if record["model"] != model_record["name"] or record["fold"] != fold:
        raise TrainingError(f"{where} belongs to model {record['model']!r} fold {record['fold']}; expected "
                            f"{model_record['name']!r} fold {fold} (a fold folder copied from another model?)")
    differences = settings_differences(record["settings"], plain(fold_settings(model_record)))
    if differences:
        raise TrainingError(f"{where} was trained with other settings (" + "; ".join(differences)
                            + "); remove the fold folder to train it again with these")
    return record


def case_inputs(case: Case) -> dict:
    """Digests of what a validation prediction is made from and scored against."""
    images = "+".join(file_digest(p) for p in case.image_files)
    return {"images": images, "label": file_digest(case.label_file) if case.label_file else None}


def output_digests(model_dir: Path, fold: int, case_id: str) -> dict[str, str | None]:
    paths = {ending: prediction_file(model_dir, fold, case_id, ending) for ending in PREDICTION_ENDINGS}
    return {ending: file_digest(p) if p.is_file() else None for ending, p in paths.items()}


def prediction_is_current(entry: dict | None, inputs: dict, model_dir: Path, fold: int, case_id: str) -> bool:
    """A recorded validation prediction of these inputs whose two files are still those written."""
    if not entry or any(entry.get(k) != v for k, v in inputs.items()):
        return False
    return output_digests(model_dir, fold, case_id) == {e: entry.get(e) for e in PREDICTION_ENDINGS}


def checked_validation(model_dir: Path, fold: int, dataset: Dataset) -> tuple[list[str], list[str]]:
    """``(predicted, missing)`` validation cases of a model's fold, each predicted one checked.

    Refused: a fold without fold.json (cross-validated before hnas recorded it, or not by hnas),
    a fold whose validation cases are no longer the split of today's cases, a case whose image
    or label changed since it was predicted, and a prediction file that is not the one written.
    """
    fold_dir = require_folder(fold_folder(model_dir, fold), f"fold {fold} of model {Path(model_dir).name!r}")
    rerun = f"rerun `hnas train --run RUN --folds {fold} ...` for {Path(model_dir).name!r} to predict it again"
    record = load_fold_record(fold_dir) if fold_dir.is_dir() else None
    if record is None:
        raise TrainingError(f"{str(fold_dir)!r} has no fold.json recording its validation predictions (made by an "
                            f"older hnas, or missing); {rerun} (a trained fold is not trained again)")
    if record["model"] != Path(model_dir).name or record["fold"] != fold:
        raise TrainingError(f"{str(fold_dir)!r} holds fold {record['fold']} of model {record['model']!r}; expected "
                            f"fold {fold} of {Path(model_dir).name!r}")
    labels = plain([list(pair) for pair in dataset.labels])
    if record.get("labels") is not None and record["labels"] != labels:
        raise TrainingError(f"the labels of dataset {str(dataset.root)!r} changed since {str(fold_dir)!r} was "
                            f"cross-validated ({record['labels']} then, {labels} now in dataset.json); restore "
                            "dataset.json, or cross-validate again in a new run")
    today = list(split_of(dataset.case_ids, fold, stored_splits(Path(model_dir).parent.parent, dataset, True))[1])
    if record["validation_cases"] != today:
        added = sorted(set(today) - set(record["validation_cases"]))
        gone = sorted(set(record["validation_cases"]) - set(today))
        raise TrainingError(f"the cases of dataset {str(dataset.root)!r} changed since {str(fold_dir)!r} was "
                            f"cross-validated (fold {fold} now validates {added or 'no new'} cases, no longer "
                            f"{gone or 'none'}); the split no longer matches: cross-validate again in a new run")
    changed, altered, predicted, missing = [], [], [], []
    for case_id in today:
        entry = record["validation"].get(case_id)
        if entry is None:
            missing.append(case_id)
            continue
        inputs = case_inputs(dataset.case(case_id))
        if any(entry.get(k) != v for k, v in inputs.items()):
            changed.append(case_id)
        else:
            now = output_digests(model_dir, fold, case_id)
            altered += [str(prediction_file(model_dir, fold, case_id, e)) for e in PREDICTION_ENDINGS
                        if now[e] != entry.get(e)]
            if now == {e: entry.get(e) for e in PREDICTION_ENDINGS}:
                predicted.append(case_id)
    if changed:
        raise TrainingError(f"the image or label of case(s) {changed[:5]} of dataset {str(dataset.root)!r} changed "
                            f"since {str(fold_dir)!r} predicted them; the model's validation no longer matches the "
                            "data: restore the files, or cross-validate again in a new run")
    if altered:
        raise TrainingError(f"{altered[0]!r}" + (f" (and {len(altered) - 1} more)" if len(altered) > 1 else "")
                            + f" is not the file cross-validation wrote (truncated, edited or removed); {rerun}")
    return predicted, missing


def check_dataset_unchanged(run_dir: Path, dataset: Path, stored_digest: str | None) -> None:
    """Refuse to cross-validate a run whose dataset changed since the search (run.json's content digest)."""
    if stored_digest is None:
        return  # a run started before hnas stored the digest
    if not Path(dataset).is_dir():
        raise SearchError(f"the dataset of run {str(run_dir)!r}, {str(dataset)!r}, does not exist any more; expected "
                          "the folder the search ran on (its path is stored in run.json)")
    now = content_digest(load_dataset(dataset))
    if now != stored_digest:
        raise SearchError(f"dataset {str(dataset)!r} changed since run {str(run_dir)!r} searched it (content digest "
                          f"{stored_digest[:12]} then, {now[:12]} now: a case or label added, removed or edited); "
                          "restore it, or search the changed dataset in a new run")


def checkpoint_matches(fold_dir: Path, record: dict | None) -> bool:
    """The fold's checkpoint is the one recorded when it was trained (True for folds without a record)."""
    if record is None or record.get("checkpoint") is None:
        return True
    path = Path(fold_dir) / CHECKPOINT_NAME
    return path.is_file() and file_digest(path) == record["checkpoint"]
