"""Every name in a run folder, in one place; model.json and best_configuration.json are read and written here.

A run folder (``hnas search --run-dir RUN``)::

    run.json        the settings the run was started with (dataset, preset, space, optimizer, ...)
    plan.json       the plan networks are built on (the scale preset already applied)
    preset.json     the scale preset's resolved values (iterations, epochs, validation overlap, ...)
    grammar.lark    the grammar architectures come from
    plan_2d.json, grammar_2d.lark   nnU-Net's 2d plan and its grammar (pipeline spaces only)
    plan_resenc_m.json   nnU-Net's ResEnc M plan: residual encoders train with its patch and batch
    search.sqlite   the search engine's history (one row per trial, WAL; named by hnas.search)
    trials/NNNNN/   one folder per trial: its checkpoint (named by hnas.search)
    summary.md      incumbent and Pareto front, rewritten when a search call ends
    retrain/trial_NNNNN_<E>ep/      `hnas train` without --folds
    cv/<name>/model.json            name, trial_id (None: default), config, epochs, iterations_per_epoch, folds
    cv/<name>/postprocessing.json   find-best's decision for a single best model
    cv/<name>/fold_<k>/checkpoint.pt                the trainer's checkpoint for fold k
    cv/<name>/fold_<k>/validation/<case>.nii.gz     label map in the original image geometry
    cv/<name>/fold_<k>/validation/<case>.npz        ``probabilities``: float16 softmax [K, *label shape]
    cv/best_configuration.json      `hnas find-best`: the best model or pair and its post-processing
    evaluation/validation/, evaluation/test_<name>/   `hnas evaluate`: metrics.csv and summary.json
    report/         `hnas report`

``<name>`` is ``trial_<id:05d>_<E>ep`` (a trial's configuration) or ``default_<E>ep`` (the search
space's default configuration: nnU-Net's, with the plan's default network).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hnas.errors import SearchError, TrainingError
from hnas.search.storage import database_path

RUN_FILE = "run.json"
PLAN_FILE = "plan.json"
GRAMMAR_FILE = "grammar.lark"
PLAN_2D_FILE = "plan_2d.json"
GRAMMAR_2D_FILE = "grammar_2d.lark"
RESIDUAL_PLAN_FILE = "plan_resenc_m.json"
PRESET_FILE = "preset.json"
SUMMARY_FILE = "summary.md"
TRIALS_DIR = "trials"
RETRAIN_DIR = "retrain"
CV_DIR = "cv"
MODEL_FILE = "model.json"
BEST_FILE = "best_configuration.json"
POSTPROCESSING_FILE = "postprocessing.json"
TRAIN_LOCK = "train.lock"  # in a fold folder: held while one process trains and predicts that fold
MODEL_LOCK = "model.lock"  # in a model folder: held while one process updates model.json
VALIDATION_DIR = "validation"
EVALUATION_DIR = "evaluation"
METRICS_FILE = "metrics.csv"
EVALUATION_SUMMARY_FILE = "summary.json"
REPORT_DIR = "report"
PREDICTION_ENDINGS = (".nii.gz", ".npz")  # a validation case is predicted when both exist


class RunFolder:
    """The paths of one run folder (nothing is created or read here)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.root)!r})"

    settings = property(lambda self: self.root / RUN_FILE)
    plan = property(lambda self: self.root / PLAN_FILE)
    grammar = property(lambda self: self.root / GRAMMAR_FILE)
    plan_2d = property(lambda self: self.root / PLAN_2D_FILE)
    grammar_2d = property(lambda self: self.root / GRAMMAR_2D_FILE)
    residual_plan = property(lambda self: self.root / RESIDUAL_PLAN_FILE)
    preset = property(lambda self: self.root / PRESET_FILE)
    summary = property(lambda self: self.root / SUMMARY_FILE)
    database = property(lambda self: database_path(self.root))
    trials = property(lambda self: self.root / TRIALS_DIR)
    cv = property(lambda self: self.root / CV_DIR)
    best_configuration = property(lambda self: self.root / CV_DIR / BEST_FILE)
    report = property(lambda self: self.root / REPORT_DIR)

    def retrain(self, trial_id: int, epochs: int) -> Path:
        return self.root / RETRAIN_DIR / f"trial_{trial_id:05d}_{epochs}ep"

    def model(self, name: str) -> Path:
        return self.root / CV_DIR / name

    def evaluation(self, test_dir: str | Path | None) -> Path:
        """Where `hnas evaluate` writes by default: validation folds or one test set."""
        return self.root / EVALUATION_DIR / (VALIDATION_DIR if test_dir is None else f"test_{Path(test_dir).name}")


def model_name(trial_id: int | None, epochs: int) -> str:
    """A cross-validated model's folder name: ``default_<E>ep`` or ``trial_<id:05d>_<E>ep``."""
    return f"default_{epochs}ep" if trial_id is None else f"trial_{trial_id:05d}_{epochs}ep"


def fold_folder(model_dir: Path, fold: int) -> Path:
    return Path(model_dir) / f"fold_{fold}"


def validation_folder(model_dir: Path, fold: int) -> Path:
    return fold_folder(model_dir, fold) / VALIDATION_DIR


def prediction_file(model_dir: Path, fold: int, case: str, ending: str) -> Path:
    """A saved validation prediction: ``.nii.gz`` label map or ``.npz`` softmax."""
    return validation_folder(model_dir, fold) / f"{case}{ending}"


def fold_dirs(model_dir: Path) -> tuple[Path, ...]:
    """A model folder's ``fold_<k>`` folders, in fold order."""
    found = [p for p in Path(model_dir).glob("fold_*") if p.is_dir() and p.name[5:].isdigit()]
    return tuple(sorted(found, key=lambda p: int(p.name[5:])))


# ---------------------------------------------------------------- model.json


def model_dirs(run_dir: str | Path, names: Sequence[str] | None = None) -> list[Path]:
    """The run's cross-validated model folders (all, or ``names`` in that order)."""
    root = RunFolder(run_dir).cv
    available = sorted(p.name for p in root.iterdir() if (p / MODEL_FILE).is_file()) if root.is_dir() else []
    if not names:
        if not available:
            raise SearchError(f"run {str(run_dir)!r} has no cross-validated models in {str(root)!r}; expected "
                              "`hnas train --run RUN --folds ...` first")
        return [root / n for n in available]
    missing = [n for n in names if n not in available]
    if missing:
        raise SearchError(f"run {str(run_dir)!r} has no cross-validated model {missing}; expected one of {available}")
    return [root / n for n in names]


def load_model_record(model_dir: Path) -> dict:
    """A model folder's model.json; a damaged one is named (not a traceback)."""
    path = Path(model_dir) / MODEL_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SearchError(f"{str(path)!r} cannot be read as JSON ({exc}); expected the model.json that "
                          "`hnas train --folds` writes") from exc
    folds = record.get("folds") if isinstance(record, dict) else None
    if not isinstance(folds, list) or not all(isinstance(f, int) and not isinstance(f, bool) for f in folds):
        raise SearchError(f"{str(path)!r} has folds {folds!r}; expected a JSON object whose folds are fold numbers")
    return record


def replace_model_record(model_dir: Path, record: dict) -> None:
    """Write model.json atomically (a reader never sees half of it); the caller holds the model lock."""
    path = Path(model_dir) / MODEL_FILE
    temporary = path.with_name(f".{MODEL_FILE}.{os.getpid()}")
    write_json(temporary, record)
    os.replace(temporary, path)


# ---------------------------------------------------------------- best_configuration.json, postprocessing.json


def write_best_configuration(run_dir: Path, result: dict) -> Path:
    path = RunFolder(run_dir).best_configuration
    write_json(path, result, allow_nan=False)
    return path


def read_best_configuration(path: Path) -> tuple[list[str], dict | None]:
    """``(best.members, postprocessing)`` of a best_configuration.json, read once.

    Members are model folder names beside the file (RUN/cv); the decision is None when absent.
    """
    data = read_json_object(path)
    members = (data.get("best") or {}).get("members") if isinstance(data.get("best"), dict) else None
    if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
        raise TrainingError(f"{str(path)!r} has best.members {members!r}; expected a list of model folder names "
                            "(a file written by `hnas find-best`)")
    return members, data.get("postprocessing") or None


def write_postprocessing(model_dir: Path, decision: dict) -> Path:
    path = Path(model_dir) / POSTPROCESSING_FILE
    write_json(path, decision, allow_nan=False)
    return path


def read_postprocessing(model_dir: Path) -> tuple[dict, Path] | None:
    """A model folder's post-processing decision and its path, or None when it has none."""
    path = Path(model_dir) / POSTPROCESSING_FILE
    return (read_json_object(path), path) if path.is_file() else None


# ---------------------------------------------------------------- JSON


def read_json_object(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise TrainingError(f"{str(path)!r} cannot be read as JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise TrainingError(f"{str(path)!r} holds {type(data).__name__}; expected a JSON object")
    return data


def write_json(path: Path, data: Any, *, allow_nan: bool = True) -> None:
    """Indented JSON with a final newline; numpy scalars are written as numbers."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=_json_default, allow_nan=allow_nan) + "\n")


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
