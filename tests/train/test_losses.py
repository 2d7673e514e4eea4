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
    low_target = target[:, :, 1::2, 1::2, 1::2]  # nearest-exact at half size: voxel floor((i + 0.5) * 2) = 2i + 1
    assert torch.equal(low_target, F.interpolate(target, size=(4, 4, 4), mode="nearest-exact"))
    ce = lambda logits, labels: F.cross_entropy(logits, labels[:, 0].long())  # noqa: E731
    expected = (2 / 3) * ce(outputs[0], target) + (1 / 3) * ce(outputs[1], low_target)
    assert float(combined) == pytest.approx(float(expected), rel=1e-5)
    single = SegmentationLoss("CE", n_outputs=1)(outputs[0], target)
    assert float(single) == pytest.approx(float(ce(outputs[0], target)), rel=1e-6)


# ---------------------------------------------------------------- against nnU-Net's own losses (nnunetv2 2.8.1)


def _logits_and_target():
    """Batch 2 with class 2 absent from the second case, so batch Dice and per-case Dice differ."""
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 6, 7, 5, generator=generator, dtype=torch.float64)
    target = torch.randint(0, 3, (2, 1, 6, 7, 5), generator=generator).double()
    target[1][target[1] == 2] = 1
    return logits, target


def nnunet_loss(name):
    """The loss nnU-Net's trainers build: nnUNetTrainer (DiceCE), nnUNetTrainerDiceLoss, nnUNetTrainerCELoss,
    nnUNetTrainerTopk10Loss; smooth 1e-5, background excluded, batch Dice as hnas always uses it (nnU-Net's
    planner sets batch_dice for 3d_fullres only when it also plans a 3d_lowres)."""
    compound = pytest.importorskip("nnunetv2.training.loss.compound_losses")
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
    from nnunetv2.training.loss.robust_ce_loss import RobustCrossEntropyLoss, TopKLoss
    from nnunetv2.utilities.helpers import softmax_helper_dim1

    dice = {"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False}
    return {"DiceCE": lambda: compound.DC_and_CE_loss(dice, {}, weight_ce=1, weight_dice=1, ignore_label=None,
                                                      dice_class=MemoryEfficientSoftDiceLoss),
            "Dice": lambda: MemoryEfficientSoftDiceLoss(apply_nonlin=softmax_helper_dim1, **dice),
            "CE": lambda: RobustCrossEntropyLoss(),
            "TopK": lambda: TopKLoss(k=10)}[name]()


# nnU-Net's soft Dice loss is -Dice, MONAI's 1 - Dice: the same gradients, values 1 apart. nnU-Net's
# MemoryEfficientSoftDiceLoss sums in float32, hence the tolerance (the float64 formula is pinned below).
@pytest.mark.filterwarnings("ignore:size_average and reduce args will be deprecated")  # nnU-Net's TopKLoss
@pytest.mark.parametrize("name,offset", [("DiceCE", 1.0), ("Dice", 1.0), ("CE", 0.0), ("TopK", 0.0)])
def test_each_loss_equals_nnunets(name, offset):
    logits, target = _logits_and_target()
    ours_logits = logits.clone().requires_grad_(True)
    theirs_logits = logits.clone().requires_grad_(True)
    ours = base_loss(name)(ours_logits, target)
    theirs = nnunet_loss(name)(theirs_logits, target)
    assert float(ours.detach()) == pytest.approx(float(theirs.detach()) + offset, rel=1e-6)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(ours_logits.grad, theirs_logits.grad, rtol=1e-5, atol=1e-9)


def test_dice_loss_is_the_batch_soft_dice_formula():
    """1 - mean over foreground classes c of (2 sum p_c y_c + 1e-5) / (sum y_c + sum p_c + 1e-5), the sums
    over the whole batch (batch Dice), p the softmax, y the one-hot target."""
    logits, target = _logits_and_target()
    p = torch.softmax(logits, dim=1)
    y = F.one_hot(target[:, 0].long(), 3).permute(0, 4, 1, 2, 3).double()
    dice = [(2 * (p[:, c] * y[:, c]).sum() + 1e-5) / (y[:, c].sum() + p[:, c].sum() + 1e-5) for c in (1, 2)]
    expected = 1 - (dice[0] + dice[1]) / 2
    assert float(base_loss("Dice")(logits, target)) == pytest.approx(float(expected), rel=1e-12)
    ce = F.cross_entropy(logits, target[:, 0].long())
    assert float(base_loss("DiceCE")(logits, target)) == pytest.approx(float(expected + ce), rel=1e-12)


def test_dice_loss_by_hand():
    """Two voxels of one case, two classes, logits far apart (softmax = one-hot to 1e-9): class 1 predicted
    on one of its two voxels and nowhere else -> Dice (2 * 1 + 1e-5) / (2 + 1 + 1e-5); background excluded."""
    logits = torch.tensor([[[[[40.0, 0.0]]], [[[0.0, 40.0]]]]], dtype=torch.float64)  # [1, 2, 1, 1, 2]
    target = torch.tensor([[[[[1.0, 1.0]]]]], dtype=torch.float64)
    expected = 1 - (2 * 1 + 1e-5) / (2 + 1 + 1e-5)
    assert float(base_loss("Dice")(logits, target)) == pytest.approx(expected, abs=1e-9)
