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
    cv/<name>/model.json            name, trial_id (None: default), config, epochs, iterations_per_epoch, folds,
                                    provenance (preset, plan, grammar, dataset and its content digest, split)
    cv/<name>/postprocessing.json   find-best's decision for a single best model
    cv/<name>/fold_<k>/checkpoint.pt                the trainer's checkpoint for fold k
    cv/<name>/fold_<k>/fold.json    the model and settings the fold was trained with, its split, and per validation
                                    case the digests of its inputs and of the two files predicted for it
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
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hnas.data.splits import N_FOLDS, SPLITS_FILE, load_splits
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
FOLD_FILE = "fold.json"
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
    splits = property(lambda self: self.root / SPLITS_FILE)  # the user's split (`hnas search --splits`)
    cv_splits = property(lambda self: self.root / CV_DIR / SPLITS_FILE)  # `hnas train --folds --splits`
    report = property(lambda self: self.root / REPORT_DIR)

    def retrain(self, trial_id: int, epochs: int) -> Path:
        return self.root / RETRAIN_DIR / f"trial_{trial_id:05d}_{epochs}ep"

    def model(self, name: str) -> Path:
        return self.root / CV_DIR / name

    def evaluation(self, test_dir: str | Path | None) -> Path:
        """Where `hnas evaluate` writes by default: validation folds or one test set."""
        return self.root / EVALUATION_DIR / (VALIDATION_DIR if test_dir is None else f"test_{Path(test_dir).name}")


def stored_splits(run_dir: Path, dataset, cross_validation: bool = False) -> tuple | None:
    """The run's split: `hnas train --folds --splits` (for cross-validation), then `hnas search --splits`.

    None means nnU-Net's default split. The run folder keeps its own copy, so the user's file may
    move or change afterwards. ``dataset``: a folder or a loaded Dataset (its case ids check the file).
    """
    folder = RunFolder(run_dir)
    for path in ([folder.cv_splits] if cross_validation else []) + [folder.splits]:
        if path.is_file():
            return load_splits(path, _case_ids(dataset))
    return None


def write_splits(path: Path, splits: tuple) -> None:
    """``splits`` as nnU-Net's splits_final.json (what `nnUNetv2_train` reads from its preprocessed folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([{"train": list(train), "val": list(val)} for train, val in splits], indent=2) + "\n")


def _case_ids(dataset) -> list[str]:
    from hnas.data import load_dataset

    return list(dataset.case_ids) if hasattr(dataset, "case_ids") else list(load_dataset(dataset).case_ids)


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
    """A model folder's ``fold_<k>`` folders, in fold order (files and other names are not folds)."""
    found = [p for p in Path(model_dir).glob("fold_*") if p.is_dir() and p.name[5:].isdigit()]
    return tuple(sorted(found, key=lambda p: int(p.name[5:])))


def stray_folds(model_dir: Path, folds: Sequence[int]) -> list[str]:
    """``fold_*`` entries of a model folder that are not the folds ``folds`` (strays, copies, files)."""
    wanted = {fold_folder(model_dir, k).name for k in folds}
    return sorted(p.name for p in Path(model_dir).glob("fold_*") if p.name not in wanted)


# ---------------------------------------------------------------- names and folders read back from files

#: A model folder name as hnas writes it (``default_5ep``, ``trial_00003_5ep``): no separators, no leading dot.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def check_plain_name(name: object, source: str | Path, field: str) -> str:
    """A folder name read from a file, refused unless it names a folder *beside* the others (no path)."""
    if not isinstance(name, str) or not _PLAIN_NAME.fullmatch(name) or ".." in name:
        raise TrainingError(f"{str(source)!r} has {field} {name!r}; expected a plain model folder name such as "
                            "'trial_00003_5ep' (no path separators, no '..')")
    return name


def inside_folder(root: Path, name: str, source: str | Path) -> Path:
    """``root / name``, refused when a link makes it lead outside ``root``."""
    path = Path(root) / name
    if not path.resolve().is_relative_to(Path(root).resolve()):
        raise TrainingError(f"{str(path)!r} (named in {str(source)!r}) leads outside {str(root)!r}; expected a "
                            "model folder inside the run")
    return path


def require_folder(path: Path, what: str) -> Path:
    """Refuse a file (or anything else) where a folder of the run must be or will be made."""
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not path.is_dir():
        raise TrainingError(f"{str(path)!r} is not a folder; expected {what} (move the file away)")
    return path


# ---------------------------------------------------------------- model.json


def model_dirs(run_dir: str | Path, names: Sequence[str] | None = None) -> list[Path]:
    """The run's cross-validated model folders (all, or ``names`` in that order)."""
    root = require_folder(RunFolder(run_dir).cv, "the run's cross-validation folder")
    available = sorted(p.name for p in root.iterdir() if p.is_dir() and (p / MODEL_FILE).exists()) \
        if root.is_dir() else []
    if not names:
        if not available:
            raise SearchError(f"run {str(run_dir)!r} has no cross-validated models in {str(root)!r}; expected "
                              "`hnas train --run RUN --folds ...` first")
        return [root / n for n in available]
    missing = [n for n in names if n not in available]
    if missing:
        raise SearchError(f"run {str(run_dir)!r} has no cross-validated model {missing}; expected one of {available}")
    return [root / n for n in names]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


#: model.json's fields and what each must hold (checked on every read: the file may be edited by hand).
_MODEL_FIELDS = {
    "trial_id": (lambda v: v is None or (_is_int(v) and v >= 0), "a trial number or null (the default)"),
    "config": (lambda v: isinstance(v, dict), "a JSON object of hyperparameters"),
    "epochs": (lambda v: _is_int(v) and v >= 1, "a positive number of epochs"),
    "iterations_per_epoch": (lambda v: _is_int(v) and v >= 1, "a positive number of iterations"),
    "folds": (lambda v: isinstance(v, list) and all(_is_int(f) and 0 <= f < N_FOLDS for f in v)
              and len(set(v)) == len(v), f"a list of distinct fold numbers in 0..{N_FOLDS - 1}"),
    "provenance": (lambda v: v is None or isinstance(v, dict), "a JSON object"),
}


def load_model_record(model_dir: Path) -> dict:
    """A model folder's model.json, every field checked; a damaged one is named (not a traceback).

    Its ``name`` must be the folder's own: names are used as paths (prediction folders), so a
    ``../`` or a foreign name would write elsewhere.
    """
    path = Path(model_dir) / MODEL_FILE
    record = read_json_object(path, "the model.json that `hnas train --folds` writes")
    if record.get("name") != Path(model_dir).name:
        raise TrainingError(f"{str(path)!r} has name {record.get('name')!r}; expected its folder's name "
                            f"{Path(model_dir).name!r}")
    for field, (valid, expected) in _MODEL_FIELDS.items():
        if field not in record and field == "provenance":
            continue  # written by hnas before provenance was recorded
        if field not in record or not valid(record[field]):
            raise TrainingError(f"{str(path)!r} has {field} {record.get(field)!r}; expected {expected}")
    return record


def replace_model_record(model_dir: Path, record: dict) -> None:
    """Write model.json atomically (a reader never sees half of it); the caller holds the model lock."""
    replace_json(Path(model_dir) / MODEL_FILE, record)


# ---------------------------------------------------------------- fold.json


def fold_record_path(fold_dir: Path) -> Path:
    return Path(fold_dir) / FOLD_FILE


def load_fold_record(fold_dir: Path) -> dict | None:
    """A fold folder's fold.json (None when the fold has none yet), its fields checked."""
    path = fold_record_path(fold_dir)
    if not path.exists():
        return None
    record = read_json_object(path, "the fold.json that `hnas train --folds` writes")
    checks = {"model": lambda v: isinstance(v, str), "fold": _is_int, "settings": lambda v: isinstance(v, dict),
              "validation_cases": lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v),
              "validation": lambda v: isinstance(v, dict) and all(isinstance(e, dict) for e in v.values())}
    for field, valid in checks.items():
        if not valid(record.get(field)):
            raise TrainingError(f"{str(path)!r} has {field} {record.get(field)!r}; expected the fold.json that "
                                "`hnas train --folds` writes (remove the fold folder to train it again)")
    return record


def replace_fold_record(fold_dir: Path, record: dict) -> None:
    """Write fold.json atomically; the caller holds the fold's training lock."""
    replace_json(fold_record_path(fold_dir), record)


# ---------------------------------------------------------------- best_configuration.json, postprocessing.json


def write_best_configuration(run_dir: Path, result: dict) -> Path:
    path = RunFolder(run_dir).best_configuration
    if path.is_dir():
        raise TrainingError(f"{str(path)!r} is a folder; expected room for the best_configuration.json find-best writes")
    replace_json(path, result)
    return path


def read_best_configuration(path: Path) -> tuple[list[str], dict | None]:
    """``(best.members, postprocessing)`` of a best_configuration.json, read once and checked.

    Members are plain model folder names beside the file (RUN/cv); the decision is None when absent.
    """
    data = read_json_object(path, "the best_configuration.json that `hnas find-best` writes")
    best = data.get("best")
    members = best.get("members") if isinstance(best, dict) else None
    if not isinstance(members, list) or not members or len(set(map(str, members))) != len(members):
        raise TrainingError(f"{str(path)!r} has best.members {members!r}; expected a list of distinct model folder "
                            "names (a file written by `hnas find-best`)")
    for member in members:
        check_plain_name(member, path, "a best.members entry")
    decision = data.get("postprocessing")
    if decision is not None and not isinstance(decision, dict):
        raise TrainingError(f"{str(path)!r} has postprocessing {decision!r}; expected a JSON object with regions "
                            "(or no postprocessing field)")
    return members, decision or None


def write_postprocessing(model_dir: Path, decision: dict) -> Path:
    path = Path(model_dir) / POSTPROCESSING_FILE
    if path.is_dir():
        raise TrainingError(f"{str(path)!r} is a folder; expected room for the postprocessing.json find-best writes")
    replace_json(path, decision)
    return path


def read_postprocessing(model_dir: Path) -> tuple[dict, Path] | None:
    """A model folder's post-processing decision and its path, or None when it has none."""
    path = Path(model_dir) / POSTPROCESSING_FILE
    if not path.exists():
        return None
    return read_json_object(path, "the postprocessing.json that `hnas find-best` writes"), path


# ---------------------------------------------------------------- JSON


def read_json_object(path: Path, expected: str = "a JSON object") -> dict:
    """A JSON file holding an object; a folder, an unreadable file or other JSON is named with ``expected``."""
    path = Path(path)
    if path.is_dir():
        raise TrainingError(f"{str(path)!r} is a folder; expected {expected}")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TrainingError(f"{str(path)!r} cannot be read as JSON ({exc}); expected {expected}") from exc
    if not isinstance(data, dict):
        raise TrainingError(f"{str(path)!r} holds {type(data).__name__}; expected {expected}")
    return data


def replace_json(path: Path, data: Any) -> None:
    """Write JSON atomically: a reader (or a kill) never leaves half of the file."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write_json(temporary, data, allow_nan=False)
    os.replace(temporary, path)


def write_json(path: Path, data: Any, *, allow_nan: bool = True) -> None:
    """Indented JSON with a final newline; numpy scalars are written as numbers."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=_json_default, allow_nan=allow_nan) + "\n")


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
