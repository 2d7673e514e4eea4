"""Largest-connected-component post-processing and nnU-Net's rule for when it helps.

A segmentation network sometimes predicts small islands far from the organ. Keeping only the
largest connected component of a class removes them, but it also removes real second parts
(two lungs, a split structure). nnU-Net therefore decides on the cross-validation predictions,
per dataset, and keeps a step only where it raises the mean Dice:

1. all foreground classes as one region: keep its largest component (voxels outside become
   background) if the mean foreground Dice over the classes improves;
2. then, on that result, each class on its own: keep it if that class's mean Dice improves.

Connected components come from ``scipy.ndimage.label`` with full connectivity (26 neighbours
in 3D), nnU-Net's choice. MONAI's KeepLargestConnectedComponent would do the same on tensors,
but on CPU it needs scikit-image (not a dependency here); scipy works on the label maps as they
are and is already used by the preprocessing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from hnas.errors import TrainingError
from hnas.train.evaluation import case_metrics, foreground_classes, mask_dice

Labels = Sequence[tuple[str, int]]


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of a boolean mask (full connectivity); empty stays empty."""
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    components, count = ndimage.label(mask, structure=structure)
    if count <= 1:
        return mask.astype(bool, copy=True)
    sizes = np.zeros(count + 1, dtype=np.int64)
    for plane in components.reshape(components.shape[0], -1):  # bincount casts to int64: a slice at a time
        sizes += np.bincount(plane, minlength=count + 1)
    sizes[0] = 0  # the background of the mask
    return components == int(np.argmax(sizes))


def keep_largest_region(label_map: np.ndarray, region: Sequence[int], background: int = 0) -> np.ndarray:
    """``label_map`` with the voxels of ``region`` (label values taken together) outside its largest component
    set to ``background``; other labels are untouched."""
    mask = np.isin(label_map, list(region))
    result = np.array(label_map, copy=True)
    result[mask & ~largest_component(mask)] = background
    return result


@dataclass(frozen=True)
class Postprocessing:
    """Which regions keep only their largest component, applied in order (nnU-Net's decision).

    ``regions`` holds label-value tuples: ``(1, 2)`` is "all foreground as one region", ``(2,)``
    class 2 alone. ``evidence`` records the mean Dice before and after each tried step.
    """

    regions: tuple[tuple[int, ...], ...] = ()
    evidence: tuple[dict, ...] = field(default=(), compare=False)

    def apply(self, label_map: np.ndarray) -> np.ndarray:
        for region in self.regions:
            label_map = keep_largest_region(label_map, region)
        return label_map

    def describe(self) -> str:
        if not self.regions:
            return "no post-processing (no largest-component step improved cross-validation Dice)"
        return "keep the largest connected component of " + ", then ".join(
            "labels " + "+".join(map(str, r)) if len(r) > 1 else f"label {r[0]}" for r in self.regions)

    def to_dict(self) -> dict:
        """Plain JSON (an undefined Dice is null, not NaN)."""
        evidence = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in step.items()}
                    for step in self.evidence]
        return {"regions": [list(r) for r in self.regions], "description": self.describe(), "evidence": evidence}

    @classmethod
    def from_dict(cls, data: Mapping, source: str = "post-processing") -> "Postprocessing":
        regions = data.get("regions") if isinstance(data, Mapping) else None
        if not isinstance(regions, list) or not all(
                isinstance(r, list) and r and all(isinstance(v, int) and not isinstance(v, bool) for v in r)
                for r in regions):
            raise TrainingError(f"{source} holds regions {regions!r}; expected a list of non-empty lists of "
                                "label values, e.g. [[1, 2], [2]]")
        return cls(tuple(tuple(r) for r in regions), tuple(data.get("evidence", ())))


def case_dice(prediction: np.ndarray, truth: np.ndarray, labels: Labels) -> dict[str, float]:
    """Dice per foreground class of one case (nan for a class absent from both; no HD95: selection needs Dice)."""
    metrics = case_metrics(prediction, truth, labels, (1.0,) * truth.ndim, hd95=False)
    return {name: values["dice"] for name, values in metrics.items()}


def mean_dice_per_class(cases: Iterable[Mapping[str, float]], labels: Labels) -> dict[str, float]:
    """Per foreground class the mean of the cases' Dice (:func:`case_dice`), nan cases left out (nan if all are).

    Only these scalars are kept per case, so scoring many cases holds no label map beyond the current one.
    """
    scores: dict[str, list[float]] = {name: [] for name, _ in foreground_classes(labels)}
    for dice in cases:
        for name, value in dice.items():
            if not math.isnan(value):
                scores[name].append(value)
    return {name: float(np.mean(v)) if v else math.nan for name, v in scores.items()}


def class_dice(pairs: Iterable[tuple[np.ndarray, np.ndarray]], labels: Labels) -> dict[str, float]:
    """Mean Dice per foreground class over ``(prediction, truth)`` pairs, one per case (an iterator is fine:
    cases are scored one at a time). nnU-Net's convention: a class absent from both is nan, left out."""
    return mean_dice_per_class((case_dice(prediction, truth, labels) for prediction, truth in pairs), labels)


def mean_over_classes(dice: Mapping[str, float]) -> float:
    """Mean of the per-class Dice, nan classes left out (nan if all are)."""
    values = [v for v in dice.values() if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


@dataclass(frozen=True)
class CaseEvidence:
    """One case's per-class Dice under every step :func:`decide_postprocessing` may try; the maps can then go.

    A largest-component step turns only its own labels' voxels to background, so a class's mask depends
    on the foreground step (taken or not) and on its own step, never on another class's step. Four
    Dice sets thus decide every step and give the Dice after the decision:

    - ``as_is``: the prediction; ``foreground``: after the all-foreground step (None with one class);
    - ``alone``: each class after its own step on the prediction; ``after_foreground``: after its own
      step on the foreground step's result (None with one class).
    """

    as_is: dict[str, float]
    foreground: dict[str, float] | None
    alone: dict[str, float]
    after_foreground: dict[str, float] | None


def case_evidence(prediction: np.ndarray, truth: np.ndarray, labels: Labels) -> CaseEvidence:
    """The :class:`CaseEvidence` of one case: every candidate step applied to its label map and scored."""
    if prediction.shape != truth.shape:
        raise TrainingError(f"a prediction of shape {prediction.shape} for a reference label map of shape "
                            f"{truth.shape}; expected the same shape")
    classes = foreground_classes(labels)
    as_is = case_dice(prediction, truth, labels)
    alone = _own_steps(prediction, truth, classes, as_is)
    if len(classes) < 2:  # the foreground step is the class step: not tried
        return CaseEvidence(as_is, None, alone, None)
    cleaned = keep_largest_region(prediction, tuple(value for _, value in classes))
    foreground = case_dice(cleaned, truth, labels)
    return CaseEvidence(as_is, foreground, alone, _own_steps(cleaned, truth, classes, foreground))


def _own_steps(label_map: np.ndarray, truth: np.ndarray, classes: Sequence[tuple[str, int]],
               dice: Mapping[str, float]) -> dict[str, float]:
    """Each class's Dice after keeping its largest component in ``label_map`` (whose Dice is ``dice``).

    A class in one piece is unchanged by its step: its Dice is reused, not recomputed.
    """
    result = {}
    for name, value in classes:
        mask = label_map == value
        kept = largest_component(mask)
        if np.count_nonzero(kept) == np.count_nonzero(mask):  # kept is a subset of mask: the same voxels
            result[name] = dice[name]
        else:
            result[name] = mask_dice(kept, truth == value)
    return result


def decide_postprocessing(predictions: Sequence[np.ndarray], truths: Sequence[np.ndarray],
                          labels: Labels) -> Postprocessing:
    """nnU-Net's rule on cross-validation label maps: keep a largest-component step only if it raises Dice.

    A step must strictly improve (equal Dice keeps the simpler model). The per-class steps are
    tried on the result of the accepted foreground step, as nnU-Net does. The maps are scored one
    case at a time (:func:`case_evidence`); :func:`decide_from_evidence` decides on the scalars.
    """
    if len(predictions) != len(truths):
        raise TrainingError(f"{len(predictions)} predictions for {len(truths)} reference label maps; expected "
                            "one per case")
    evidence = [case_evidence(prediction, truth, labels) for prediction, truth in zip(predictions, truths)]
    return decide_from_evidence(evidence, labels)[0]


def decide_from_evidence(cases: Sequence[CaseEvidence], labels: Labels) -> tuple[Postprocessing, dict[str, float]]:
    """The decision of :func:`decide_postprocessing` from each case's :class:`CaseEvidence`, and the mean Dice
    per class of the maps post-processed as decided.

    The same means in the same case order as scoring the post-processed maps themselves, so the
    numbers are those of applying each step to every map.
    """
    classes = foreground_classes(labels)
    baseline = mean_dice_per_class((case.as_is for case in cases), labels)
    own = [case.alone for case in cases]
    regions, evidence = [], []
    if len(classes) > 1:  # with one class the per-class step below is the same test
        region = tuple(value for _, value in classes)
        scores = mean_dice_per_class((case.foreground for case in cases), labels)
        before, after = mean_over_classes(baseline), mean_over_classes(scores)
        kept = after > before
        evidence.append({"region": list(region), "compared": "mean foreground Dice", "before": before,
                         "after": after, "kept": kept})
        if kept:
            regions.append(region)
            baseline, own = scores, [case.after_foreground for case in cases]
    processed = dict(baseline)
    for name, value in classes:
        after = mean_dice_per_class(({name: dice[name]} for dice in own), [(name, value)])[name]
        kept = after > baseline[name]
        evidence.append({"region": [value], "compared": f"Dice of {name}", "before": baseline[name],
                         "after": after, "kept": kept})
        if kept:
            regions.append((value,))
            processed[name] = after
    return Postprocessing(tuple(regions), tuple(evidence)), processed
