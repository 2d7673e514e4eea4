"""Ensembles of checkpoints: the mean softmax of their members, as nnU-Net ensembles folds and configurations.

Each member preprocesses the image with its own plan (spacing, patch, 2D or 3D), predicts and
restores its probabilities to the input's grid; only then are they averaged, so members trained
on different plans combine voxel by voxel. Members must predict the same label set.

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

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hnas.errors import TrainingError
from hnas.train.checkpoint import CHECKPOINT_NAME
from hnas.train.inference import OVERLAP
from hnas.train.postprocessing import Postprocessing
from hnas.train.prediction import Predictor, group_cases, refuse_existing

POSTPROCESSING_FILE = "postprocessing.json"


class EnsembleWarning(UserWarning):
    """Something a user asked of an ensemble that it will not do (said once, the prediction goes on)."""


class Ensemble:
    """Several checkpoints predicting as one: weighted mean of their restored softmax, then argmax."""

    def __init__(self, checkpoints: Sequence[str | Path], *, weights: Sequence[float] | None = None,
                 postprocessing: Postprocessing | None = None, device: str = "auto", mirror: bool = False,
                 overlap: float = OVERLAP):
        if not checkpoints:
            raise TrainingError("an ensemble needs at least one checkpoint; none was given")
        weights = [1.0] * len(checkpoints) if weights is None else [float(w) for w in weights]
        if len(weights) != len(checkpoints) or not all(w > 0 for w in weights):
            raise TrainingError(f"weights {weights} do not fit {len(checkpoints)} checkpoints; expected one positive "
                                "weight per checkpoint")
        self.checkpoints = tuple(Path(c) for c in checkpoints)
        self.members = tuple(Predictor(c, device=device, mirror=mirror, overlap=overlap) for c in self.checkpoints)
        self.weights = tuple(w / sum(weights) for w in weights)
        self.postprocessing = postprocessing
        self._check_members()

    def _check_members(self) -> None:
        """Averaging probabilities needs the same classes in the same order and the same input channels."""
        first, path = self.members[0], self.checkpoints[0]
        for member, other in zip(self.members[1:], self.checkpoints[1:]):
            if member.labels != first.labels:
                raise TrainingError(f"checkpoint {str(other)!r} predicts labels {dict(member.labels)} but "
                                    f"{str(path)!r} predicts {dict(first.labels)}; ensemble members need the same "
                                    "label set")
            if member.n_channels != first.n_channels:
                raise TrainingError(f"checkpoint {str(other)!r} reads {member.n_channels} channels but {str(path)!r} "
                                    f"reads {first.n_channels}; ensemble members need the same input channels")

    @property
    def labels(self) -> tuple[tuple[str, int], ...]:
        return self.members[0].labels

    @property
    def n_channels(self) -> int:
        return self.members[0].n_channels

    def probabilities(self, image: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        """Weighted mean softmax ``[K, z, y, x]`` of the members on the input's grid."""
        total = None
        for weight, member in zip(self.weights, self.members):
            share = weight * member.probabilities(image, spacing)
            total = share if total is None else total + share
        return total

    def to_labels(self, probabilities: np.ndarray) -> np.ndarray:
        return self.members[0].to_labels(probabilities)

    def segment(self, image: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        """Label map of the mean softmax, post-processed when a decision was given."""
        label = self.to_labels(self.probabilities(image, spacing))
        return self.postprocessing.apply(label) if self.postprocessing else label

    # the same reading, channel check and writing as one checkpoint (uses segment and n_channels)
    predict_file = Predictor.predict_file


@dataclass(frozen=True)
class ModelSource:
    """What one ``--model PATH`` stands for: checkpoints with their share of its weight, maybe a decision."""

    path: Path
    checkpoints: tuple[Path, ...]
    weights: tuple[float, ...]
    postprocessing: Postprocessing | None = None


def fold_checkpoints(model_dir: Path) -> tuple[Path, ...]:
    """A cross-validated model folder's fold checkpoints (fold order)."""
    found = [p for p in Path(model_dir).glob(f"fold_*/{CHECKPOINT_NAME}") if p.parent.name[5:].isdigit()]
    return tuple(sorted(found, key=lambda p: int(p.parent.name[5:])))


def model_source(path: str | Path) -> ModelSource:
    """Resolve a checkpoint, a trial folder, a cross-validated model folder or a best-configuration JSON."""
    path = Path(path)
    if path.is_file() and path.suffix == ".json":
        return _best_configuration_source(path)
    if path.is_dir():
        folds = fold_checkpoints(path)
        if folds:
            return ModelSource(path, folds, _equal(len(folds)), _folder_decision(path))
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


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TrainingError(f"{str(path)!r} cannot be read as JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise TrainingError(f"{str(path)!r} holds {type(data).__name__}; expected a JSON object")
    return data


def _folder_decision(model_dir: Path) -> Postprocessing | None:
    path = model_dir / POSTPROCESSING_FILE
    return Postprocessing.from_dict(_read_json(path), str(path)) if path.is_file() else None


def _best_configuration_source(path: Path) -> ModelSource:
    """``best.members`` are model folders beside the JSON (RUN/cv), each a fold ensemble of equal weight."""
    data = _read_json(path)
    members = (data.get("best") or {}).get("members") if isinstance(data.get("best"), dict) else None
    if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
        raise TrainingError(f"{str(path)!r} has best.members {members!r}; expected a list of model folder names "
                            "(a file written by `hnas find-best`)")
    checkpoints, weights = [], []
    for member in members:
        folds = fold_checkpoints(path.parent / member)
        if not folds:
            raise TrainingError(f"{str(path)!r} names member {member!r}, but {str(path.parent / member)!r} holds no "
                                f"fold_*/{CHECKPOINT_NAME}")
        checkpoints += folds
        weights += [1.0 / (len(members) * len(folds))] * len(folds)
    decision = data.get("postprocessing")
    postprocessing = Postprocessing.from_dict(decision, f"{path} postprocessing") if decision else None
    return ModelSource(path, tuple(checkpoints), tuple(weights), postprocessing)


def load_models(paths: Sequence[str | Path], *, device: str = "auto", mirror: bool = False) -> Ensemble:
    """One ensemble of every PATH (equal weight each); a single PATH's post-processing decision applies."""
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
    return Ensemble(checkpoints, weights=weights, postprocessing=decision, device=device, mirror=mirror)


def predict_with(models: Sequence[str | Path], images: Sequence[str | Path], out_dir: str | Path, *,
                 device: str = "auto", mirror: bool = False, overwrite: bool = False) -> tuple[Ensemble, list[Path]]:
    """Segment ``images`` into ``out_dir`` with the ensemble of ``models``; returns it and the written files.

    Label maps already in ``out_dir`` are refused before any work unless ``overwrite``."""
    ensemble = load_models(models, device=device, mirror=mirror)
    out_dir = Path(out_dir)
    cases = group_cases([Path(p) for p in images], ensemble.n_channels)
    refuse_existing([out_dir / f"{case}.nii.gz" for case in cases], overwrite)
    return ensemble, [ensemble.predict_file(files, out_dir / f"{case}.nii.gz") for case, files in cases.items()]
