"""Sliding-window inference over whole cases and the validation Dice (MONAI).

Windows are the training patch, overlapping by half and blended with a Gaussian (nnU-Net's
settings). A 2D network (2-entry patch) predicts a ``[C, S, Y, X]`` case slice by slice along
plan axis 0, the slices going through the network together as one batch; its Dice is still the
3D volume's. Dice follows nnU-Net's convention: per case and foreground label, NaN where neither
the reference nor the prediction contains the label; averaged over cases (ignoring NaN), then
over labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.metrics import DiceMetric
from torch import nn

from hnas.errors import TrainingError
from hnas.train.preprocessing import PreprocessedDataset

OVERLAP = 0.5


@torch.no_grad()
def sliding_window_logits(network: nn.Module, image: np.ndarray, patch_size: Sequence[int], device: torch.device, *,
                          overlap: float = OVERLAP, batch_size: int = 2, amp: bool = True,
                          mirror_axes: Sequence[int] = ()) -> torch.Tensor:
    """Class scores ``[K, ...]`` (float32, on ``device``) for a ``[C, ...]`` image.

    A 2-entry ``patch_size`` on a ``[C, S, Y, X]`` image runs a 2D network on every slice.
    ``mirror_axes`` adds nnU-Net's test-time mirroring: the softmax is averaged over every
    combination of flips along those axes of the patch (in 2D: the in-plane axes).
    """
    planar = _is_planar(image, patch_size)
    was_training = network.training
    supervision = network.decoder.deep_supervision
    network.eval()
    network.decoder.deep_supervision = False
    try:
        volume = torch.from_numpy(np.array(image, dtype=np.float32)).to(device)  # a copy: the cache is read-only
        inputs = volume.transpose(0, 1).contiguous() if planar else volume[None]  # slices are the batch in 2D
        total, count = None, 0
        for flips in _flip_sets(mirror_axes):
            dims = [2 + a for a in flips]
            flipped = torch.flip(inputs, dims) if dims else inputs
            with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
                logits = sliding_window_inference(flipped, tuple(patch_size), batch_size, network,
                                                  overlap=overlap, mode="gaussian")
            probabilities = torch.softmax(torch.as_tensor(logits).float(), dim=1)
            probabilities = torch.flip(probabilities, dims) if dims else probabilities
            total = probabilities if total is None else total + probabilities
            count += 1
        mean = total / count
        return mean.transpose(0, 1).contiguous() if planar else mean[0]
    finally:
        network.decoder.deep_supervision = supervision
        network.train(was_training)


def _is_planar(image: np.ndarray, patch_size: Sequence[int]) -> bool:
    """Whether the patch is a 2D network's on a volume (one axis fewer than the image's spatial axes)."""
    spatial = image.ndim - 1
    if len(patch_size) == spatial:
        return False
    if len(patch_size) == spatial - 1 == 2:
        return True
    raise TrainingError(f"patch size {tuple(patch_size)} does not fit an image of shape {tuple(image.shape)}; "
                        f"expected {spatial} entries (or 2 for a 2D network on a [C, S, Y, X] volume)")


def _flip_sets(axes: Sequence[int]) -> list[tuple[int, ...]]:
    sets: list[tuple[int, ...]] = [()]
    for axis in axes:
        sets += [s + (axis,) for s in sets]
    return sets


def case_dice(prediction: torch.Tensor, reference: torch.Tensor, n_classes: int) -> np.ndarray:
    """Dice per foreground label of one case (label maps of the same shape); NaN where both are empty."""
    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=False, num_classes=n_classes)
    scores = metric(prediction[None, None], reference[None, None])[0].double().cpu().numpy()
    for label in range(1, n_classes):
        if not bool((prediction == label).any()) and not bool((reference == label).any()):
            scores[label - 1] = np.nan
    return scores


@dataclass(frozen=True)
class ValidationResult:
    """Dice per foreground label name (averaged over cases) and their mean."""

    dice_per_class: dict[str, float]
    mean_dice: float
    n_cases: int


def validate(network: nn.Module, data: PreprocessedDataset, case_ids: Sequence[str], patch_size: Sequence[int],
             device: torch.device, *, overlap: float = OVERLAP, batch_size: int = 2, amp: bool = True) -> ValidationResult:
    """Sliding-window predictions of whole preprocessed cases against their label maps."""
    n_classes = len(data.labels)
    scores = []
    for case_id in case_ids:
        case = data.load(case_id, mmap=True)
        probabilities = sliding_window_logits(network, case.image, patch_size, device, overlap=overlap,
                                              batch_size=batch_size, amp=amp)
        prediction = probabilities.argmax(0)
        reference = torch.from_numpy(np.asarray(case.label, dtype=np.int64)).to(prediction.device)
        scores.append(case_dice(prediction, reference, n_classes))
    per_class = _nanmean(np.array(scores).reshape(len(scores), n_classes - 1), axis=0)
    names = [name for name, value in data.labels if value != 0]
    finite = per_class[np.isfinite(per_class)]
    mean = float(finite.mean()) if finite.size else 0.0
    return ValidationResult({name: float(v) for name, v in zip(names, per_class)}, mean, len(case_ids))


def _nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    """Mean ignoring NaN; NaN (no warning) where a column holds only NaN."""
    present = np.isfinite(values)
    counts = present.sum(axis=axis)
    sums = np.where(present, values, 0.0).sum(axis=axis)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
