"""Losses with nnU-Net's settings and deep-supervision weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hnas.errors import SearchSpaceError
from hnas.train.losses import SegmentationLoss, TopKCrossEntropy, base_loss, deep_supervision_weights


def test_deep_supervision_weights_follow_nnunet():
    assert deep_supervision_weights(3) == pytest.approx((2 / 3, 1 / 3, 0.0))
    weights = deep_supervision_weights(5)
    assert weights[-1] == 0.0 and sum(weights) == pytest.approx(1.0)
    assert weights[0] / weights[1] == pytest.approx(2.0)
    assert deep_supervision_weights(1) == (1.0,)


def _target(shape=(2, 1, 8, 8, 8), seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 3, shape, generator=generator).float()


@pytest.mark.parametrize("name", ["Dice", "DiceCE", "CE", "TopK"])
def test_each_loss_is_small_for_the_right_answer_and_has_gradients(name):
    target = _target()
    perfect = 20.0 * F.one_hot(target[:, 0].long(), 3).permute(0, 4, 1, 2, 3).float()
    logits = torch.zeros_like(perfect, requires_grad=True)
    loss = base_loss(name)
    assert float(loss(perfect, target)) < 1e-3
    value = loss(logits, target)
    value.backward()
    assert float(value.detach()) > 0.3 and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_topk_keeps_the_hardest_ten_percent():
    target = _target((1, 1, 10, 10, 1))
    logits = torch.randn(1, 3, 10, 10, 1, generator=torch.Generator().manual_seed(1))
    per_voxel = F.cross_entropy(logits, target[:, 0].long(), reduction="none").flatten()
    assert float(TopKCrossEntropy()(logits, target)) == pytest.approx(float(per_voxel.sort().values[-10:].mean()))


def test_unknown_loss_names_the_value():
    with pytest.raises(SearchSpaceError, match="'Focal'"):
        base_loss("Focal")


def test_deep_supervision_combines_downsampled_targets_and_skips_the_lowest():
    target = _target()
    outputs = [torch.randn(2, 3, 8, 8, 8), torch.randn(2, 3, 4, 4, 4), torch.full((2, 3, 2, 2, 2), float("nan"))]
    combined = SegmentationLoss("CE", n_outputs=3)(outputs, target)
    assert torch.isfinite(combined)  # the weight-0 output is not even computed
    low_target = F.interpolate(target, size=(4, 4, 4), mode="nearest-exact")
    expected = (2 / 3) * base_loss("CE")(outputs[0], target) + (1 / 3) * base_loss("CE")(outputs[1], low_target)
    assert float(combined) == pytest.approx(float(expected), rel=1e-5)
    single = SegmentationLoss("CE", n_outputs=1)(outputs[0], target)
    assert float(single) == pytest.approx(float(base_loss("CE")(outputs[0], target)))
