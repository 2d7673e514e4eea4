"""`hnas predict`: segment images with a checkpoint, a cross-validated model or find-best's choice.

What ``hnas predict --model PATH [PATH ...]`` accepts, each PATH one member of equal weight:

- a checkpoint file (or a trial folder holding ``checkpoint.pt``);
- a cross-validated model folder ``RUN/cv/<name>``: all its ``fold_*/checkpoint.pt`` (a fold
  ensemble, folds weighted equally), post-processed as its ``postprocessing.json`` says;
- a best-configuration JSON written by ``hnas find-best``: its members' fold ensembles, averaged,
  post-processed as decided there.

A post-processing decision was made for one model on its own, so it applies only when a single
PATH is given; with several, an ``EnsembleWarning`` names the decisions left out.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hnas.data.io import is_nifti
from hnas.errors import DatasetError, TrainingError
from hnas.pipeline.layout import (MODEL_FILE, fold_dirs, fold_folder, inside_folder, load_model_record,
                                  read_best_configuration, read_postprocessing, require_folder, stray_folds)
from hnas.pipeline.provenance import check_fold_record, checkpoint_matches
from hnas.train.checkpoint import CHECKPOINT_NAME
from hnas.train.ensemble import Ensemble
from hnas.train.evaluation import foreground_classes
from hnas.train.postprocessing import Postprocessing
from hnas.train.prediction import InputLimits, group_cases, refuse_existing


class EnsembleWarning(UserWarning):
    """Something a user asked of an ensemble that it will not do (said once, the prediction goes on)."""



@dataclass(frozen=True)
class ModelSource:
    """What one ``--model PATH`` stands for: checkpoints with their share of its weight, maybe a decision."""

    path: Path
    checkpoints: tuple[Path, ...]
    weights: tuple[float, ...]
    postprocessing: Postprocessing | None = None


def fold_checkpoints(model_dir: Path) -> tuple[Path, ...]:
    """A model folder's fold checkpoints (fold order).

    In a cross-validated model folder (with model.json) these are the folds model.json lists, each
    checked against its fold.json: a fold of another model, or a checkpoint replaced since the
    fold was trained, is refused; other ``fold_*`` entries are left out with a warning. A folder
    without model.json (put together by hand) offers every ``fold_<k>/checkpoint.pt``.
    """
    model_dir = Path(model_dir)
    if not (model_dir / MODEL_FILE).exists():
        return tuple(fold / CHECKPOINT_NAME for fold in fold_dirs(model_dir) if (fold / CHECKPOINT_NAME).is_file())
    record = load_model_record(model_dir)
    checkpoints = []
    for fold in record["folds"]:
        fold_dir = require_folder(fold_folder(model_dir, fold), f"fold {fold} of model {model_dir.name!r}")
        if not (fold_dir / CHECKPOINT_NAME).is_file():
            raise TrainingError(f"{str(model_dir / MODEL_FILE)!r} lists fold {fold}, but {str(fold_dir)!r} holds no "
                                f"{CHECKPOINT_NAME}; expected the fold `hnas train --folds` trained there")
        fold_record = check_fold_record(fold_dir, record, fold)
        if not checkpoint_matches(fold_dir, fold_record):
            raise TrainingError(f"{str(fold_dir / CHECKPOINT_NAME)!r} is not the checkpoint fold {fold} of "
                                f"{model_dir.name!r} was trained into (fold.json records another); expected the "
                                "fold's own checkpoint")
        checkpoints.append(fold_dir / CHECKPOINT_NAME)
    stray = stray_folds(model_dir, record["folds"])
    if stray:
        warnings.warn(f"{str(model_dir)!r}: {stray} not used: model.json lists folds {record['folds']}",
                      EnsembleWarning, stacklevel=3)
    return tuple(checkpoints)


def model_source(path: str | Path) -> ModelSource:
    """Resolve a checkpoint, a trial folder, a cross-validated model folder or a best-configuration JSON."""
    path = Path(path)
    if path.is_file() and path.suffix == ".json":
        return _best_configuration_source(path)
    if path.is_dir():
        folds = fold_checkpoints(path)
        if folds:
            return ModelSource(path, folds, _equal(len(folds)), folder_decision(path))
        if (path / CHECKPOINT_NAME).is_file():
            return ModelSource(path, (path / CHECKPOINT_NAME,), (1.0,))
        raise TrainingError(f"model folder {str(path)!r} holds neither fold_*/{CHECKPOINT_NAME} nor {CHECKPOINT_NAME}; "
                            "expected RUN/cv/<name> (after `hnas train --folds`) or a trial folder")
    if path.is_file():
        return ModelSource(path, (path,), (1.0,))
    raise TrainingError(f"model {str(path)!r} does not exist; expected a checkpoint, a model folder RUN/cv/<name> or a "
                        "best_configuration.json")


def _equal(n: int) -> tuple[float, ...]:
    return (1.0 / n,) * n


def folder_decision(model_dir: Path) -> Postprocessing | None:
    """A model folder's find-best post-processing decision (postprocessing.json), or None."""
    stored = read_postprocessing(model_dir)
    return None if stored is None else Postprocessing.from_dict(stored[0], str(stored[1]))


def _best_configuration_source(path: Path) -> ModelSource:
    """``best.members`` are model folders beside the JSON (RUN/cv), each a fold ensemble of equal weight.

    Members are plain names of cross-validated model folders there (model.json checked); a name
    with a path, a link leading out of RUN/cv or a folder without model.json is refused.
    """
    members, decision = read_best_configuration(path)
    checkpoints, weights = [], []
    for member in members:
        folder = inside_folder(path.parent, member, path)
        if not (folder / MODEL_FILE).is_file():
            raise TrainingError(f"{str(path)!r} names member {member!r}, but {str(folder)!r} is not a cross-validated "
                                f"model folder (no {MODEL_FILE}); expected a model folder beside it")
        folds = fold_checkpoints(folder)
        if not folds:
            raise TrainingError(f"{str(path)!r} names member {member!r}, but {str(folder)!r} holds no "
                                f"fold_*/{CHECKPOINT_NAME}")
        checkpoints += folds
        weights += [1.0 / (len(members) * len(folds))] * len(folds)
    postprocessing = Postprocessing.from_dict(decision, f"{path} postprocessing") if decision else None
    return ModelSource(path, tuple(checkpoints), tuple(weights), postprocessing)


def load_models(paths: Sequence[str | Path], *, device: str = "auto", mirror: bool = False,
                limits: InputLimits = InputLimits(), compile: bool = False) -> Ensemble:
    """One ensemble of every PATH (equal weight each); a single PATH's post-processing decision applies.

    ``limits``: which unusual inputs the ensemble refuses (:class:`hnas.train.prediction.InputLimits`);
    ``compile``: every member predicts through ``torch.compile`` (:mod:`hnas.train.compilation`)."""
    if not paths:
        raise TrainingError("no model given; expected at least one checkpoint, model folder or best_configuration.json")
    sources = [model_source(p) for p in paths]
    checkpoints = [c for s in sources for c in s.checkpoints]
    weights = [w / len(sources) for s in sources for w in s.weights]
    decision = sources[0].postprocessing if len(sources) == 1 else None
    ignored = [str(s.path) for s in sources if s.postprocessing is not None] if len(sources) > 1 else []
    if ignored:
        warnings.warn(f"post-processing of {ignored} not applied: each decision was made for that model alone, "
                      "not for this ensemble of several --model paths (`hnas find-best` decides one for an "
                      "ensemble)", EnsembleWarning, stacklevel=2)
    ensemble = Ensemble(checkpoints, weights=weights, postprocessing=decision, device=device, mirror=mirror,
                        limits=limits)
    for member in ensemble.members:
        member.set_compile(compile)
    if decision is not None:
        check_decision_labels(decision, ensemble.labels, sources[0].path)
    return ensemble


def check_decision_labels(decision: Postprocessing, labels, source: Path) -> None:
    """A post-processing decision may only name the model's foreground label values (an edited file may not)."""
    foreground = {value for _, value in foreground_classes(labels)}
    unknown = sorted({v for region in decision.regions for v in region} - foreground)
    if unknown:
        raise TrainingError(f"the post-processing of {str(source)!r} names label value(s) {unknown}; expected "
                            f"foreground values of the model's labels {sorted(foreground)}")


def predict_with(models: Sequence[str | Path], images: Sequence[str | Path], out_dir: str | Path, *,
                 device: str = "auto", mirror: bool = False, overwrite: bool = False,
                 limits: InputLimits = InputLimits(), compile: bool = False) -> tuple[Ensemble, list[Path]]:
    """Segment ``images`` into ``out_dir`` with the ensemble of ``models``; returns it and the written files.

    ``images``: NIfTI files and folders of them (each folder's files, as nnUNetv2_predict -i reads it,
    :func:`hnas.train.prediction.group_cases`). Label maps already in ``out_dir`` are refused before
    any work unless ``overwrite``."""
    ensemble = load_models(models, device=device, mirror=mirror, limits=limits, compile=compile)
    out_dir = require_folder(Path(out_dir), "a folder for the label maps")
    cases = group_cases([Path(p) for p in images], ensemble.n_channels)
    outputs = [out_dir / f"{case}.nii.gz" for case in cases]
    refuse_inputs_as_outputs(outputs, [p for files in cases.values() for p in files]
                             + list(ensemble.checkpoints))
    _refuse_output_in_image_folder(out_dir, [Path(p) for p in images])
    _refuse_output_inside_models(out_dir, [Path(m) for m in models])
    refuse_existing(outputs, overwrite)
    return ensemble, [ensemble.predict_file(files, out_dir / f"{case}.nii.gz") for case, files in cases.items()]


def refuse_inputs_as_outputs(outputs: Sequence[Path], inputs: Sequence[Path]) -> None:
    """No command writes over what it reads, --overwrite or not (an image replaced by its label map is lost)."""
    read = {Path(p).resolve() for p in inputs}
    clash = [str(p) for p in outputs if Path(p).resolve() in read]
    if clash:
        raise TrainingError(f"output {clash[0]!r} is also an input of this command; expected an output folder "
                            "(-o) apart from the images and models it reads")


def _refuse_output_inside_models(out_dir: Path, models: Sequence[Path]) -> None:
    """Label maps go elsewhere than a model's own folder (its validation predictions live there)."""
    target = out_dir.resolve()
    for model in models:
        folder = (model.parent if model.is_file() else model).resolve()
        if target == folder or target.is_relative_to(folder):
            raise TrainingError(f"-o {str(out_dir)!r} is inside {str(folder)!r}, a folder of --model {str(model)!r}; "
                                "expected an output folder apart from the models it reads")


# ---------------------------------------------------------------- folders of images (nnUNetv2_predict -i)


def image_folders(paths: Sequence[str | Path]) -> list[Path]:
    """``-i`` paths, each required to be a folder (its NIfTI files are the images; files go as IMAGES)."""
    for path in map(Path, paths):
        if not path.is_dir():
            what = "does not exist" if not path.exists() else "is not a folder"
            raise DatasetError(f"-i {str(path)!r} {what}; expected a folder of NIfTI images (image files are "
                               "given as IMAGES)")
    return [Path(p) for p in paths]


def is_image_folder(path: str | Path) -> bool:
    """Whether a ``--model`` path is a folder of images rather than a model (``--model`` takes several paths,
    so a folder written right after it lands there): NIfTI files in it, and nothing a model folder holds."""
    path = Path(path)
    if not path.is_dir() or (path / CHECKPOINT_NAME).exists() or (path / MODEL_FILE).exists() or fold_dirs(path):
        return False
    return any(is_nifti(p) and p.is_file() for p in path.iterdir())


def _refuse_output_in_image_folder(out_dir: Path, images: Sequence[Path]) -> None:
    """Label maps go apart from a folder of images: the next prediction would read them as images."""
    target = out_dir.resolve()
    for folder in (p for p in images if p.is_dir()):
        if folder.resolve() == target:
            raise TrainingError(f"-o {str(out_dir)!r} is the image folder {str(folder)!r}; expected an output folder "
                                "apart from it (its label maps would be read as images by the next prediction)")
