"""Segmentation losses with nnU-Net's settings and deep-supervision weights (MONAI losses).

Dice terms use smooth 1e-5 and exclude the background, computed over the whole batch (nnU-Net's
batch Dice for 3d_fullres). Deep supervision weights output ``i`` (0 = full resolution) by
``1/2**i``, gives the lowest resolution 0 and normalises; targets are downsampled by nearest
neighbour to each output (MONAI's DeepSupervisionLoss).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.losses import DeepSupervisionLoss, DiceCELoss, DiceLoss
from torch import nn

from hnas.errors import SearchSpaceError

SMOOTH = 1e-5
TOPK_PERCENT = 10.0


class CrossEntropy(nn.Module):
    """Cross-entropy on logits ``[B, K, ...]`` against a ``[B, 1, ...]`` label map."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target[:, 0].long())


class TopKCrossEntropy(nn.Module):
    """Mean cross-entropy of the ``percent`` % hardest voxels (nnU-Net's TopKLoss, k = 10)."""

    def __init__(self, percent: float = TOPK_PERCENT):
        super().__init__()
        self.percent = percent

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        per_voxel = F.cross_entropy(logits, target[:, 0].long(), reduction="none").flatten()
        k = max(1, int(per_voxel.numel() * self.percent / 100))
        return per_voxel.topk(k, sorted=False).values.mean()


def base_loss(name: str) -> nn.Module:
    """One of the searched losses (docs/references.md, "Search spaces"): Dice, DiceCE, CE, TopK."""
    dice = {"include_background": False, "to_onehot_y": True, "softmax": True, "smooth_nr": SMOOTH,
            "smooth_dr": SMOOTH, "batch": True}
    if name == "Dice":
        return DiceLoss(**dice)
    if name == "DiceCE":
        return DiceCELoss(**dice, lambda_dice=1.0, lambda_ce=1.0)
    if name == "CE":
        return CrossEntropy()
    if name == "TopK":
        return TopKCrossEntropy()
    raise SearchSpaceError(f"config key 'loss' is {name!r}; expected one of ['Dice', 'DiceCE', 'CE', 'TopK']")


def deep_supervision_weights(n_outputs: int) -> tuple[float, ...]:
    """nnU-Net's weights: 1/2**i, the lowest resolution 0, normalised (4 stages: 2/3, 1/3, 0)."""
    if n_outputs < 1:
        raise ValueError(f"n_outputs={n_outputs}; expected at least 1")
    if n_outputs == 1:
        return (1.0,)
    raw = [0.5 ** i for i in range(n_outputs - 1)] + [0.0]
    total = sum(raw)
    return tuple(w / total for w in raw)


class SegmentationLoss(nn.Module):
    """The configured loss over a network's outputs (a list under deep supervision, else a tensor).

    Outputs whose weight is 0 are skipped rather than computed and multiplied by 0.
    """

    def __init__(self, name: str, n_outputs: int):
        super().__init__()
        self.weights = deep_supervision_weights(n_outputs)
        kept = [w for w in self.weights if w > 0]
        self.loss = DeepSupervisionLoss(base_loss(name), weights=kept)
        self.n_kept = len(kept)

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, (list, tuple)):
            outputs = list(outputs[: self.n_kept])
        return self.loss(outputs, target.float())
