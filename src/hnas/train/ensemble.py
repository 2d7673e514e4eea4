"""Ensembles of checkpoints: the mean softmax of their members, as nnU-Net ensembles folds and configurations.

Each member preprocesses the image with its own plan (spacing, patch, 2D or 3D), predicts and
restores its probabilities to the input's grid; only then are they averaged, so members trained
on different plans combine voxel by voxel. Members must predict the same label set. Which
checkpoints make up an ensemble (a run's model folders, find-best's choice) is decided by
:mod:`hnas.pipeline.predict`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hnas.errors import TrainingError
from hnas.train.inference import OVERLAP
from hnas.train.postprocessing import Postprocessing
from hnas.train.prediction import InputLimits, PredictionWarning, Predictor


class Ensemble:
    """Several checkpoints predicting as one: weighted mean of their restored softmax, then argmax."""

    def __init__(self, checkpoints: Sequence[str | Path], *, weights: Sequence[float] | None = None,
                 postprocessing: Postprocessing | None = None, device: str = "auto", mirror: bool = False,
                 overlap: float = OVERLAP, limits: InputLimits = InputLimits()):
        if not checkpoints:
            raise TrainingError("an ensemble needs at least one checkpoint; none was given")
        weights = [1.0] * len(checkpoints) if weights is None else [float(w) for w in weights]
        if len(weights) != len(checkpoints) or not all(w > 0 for w in weights):
            raise TrainingError(f"weights {weights} do not fit {len(checkpoints)} checkpoints; expected one positive "
                                "weight per checkpoint")
        self.checkpoints = tuple(Path(c) for c in checkpoints)
        self.members = tuple(Predictor(c, device=device, mirror=mirror, overlap=overlap, limits=limits)
                             for c in self.checkpoints)
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

    def check_input(self, shape: Sequence[int], spacing: Sequence[float], source: str = "image") -> None:
        """Every member's :meth:`Predictor.check_input` before any member predicts: a refusal or a
        work estimate comes first, whichever member (plan) gives it; each warning is given once."""
        found = [message for member in self.members for message in member.input_warnings(shape, spacing, source)]
        for message in dict.fromkeys(found):
            warnings.warn(message, PredictionWarning, stacklevel=3)

    def probabilities(self, image: np.ndarray, spacing: Sequence[float], *, source: str = "image") -> np.ndarray:
        """Weighted mean softmax ``[K, z, y, x]`` of the members on the input's grid."""
        self.check_input(image.shape[1:], spacing, source)
        total = None
        for weight, member in zip(self.weights, self.members):
            share = weight * member.checked_probabilities(image, spacing)
            if total is None:
                total = share
            else:  # in place: one running sum, not a new [K, z, y, x] array per member
                total += share
        return total

    def to_labels(self, probabilities: np.ndarray) -> np.ndarray:
        return self.members[0].to_labels(probabilities)

    def segment(self, image: np.ndarray, spacing: Sequence[float], *, source: str = "image") -> np.ndarray:
        """Label map of the mean softmax, post-processed when a decision was given."""
        label = self.to_labels(self.probabilities(image, spacing, source=source))
        return self.postprocessing.apply(label) if self.postprocessing else label

    # the same reading, channel check and writing as one checkpoint (uses segment and n_channels)
    predict_file = Predictor.predict_file
