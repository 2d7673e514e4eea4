"""Sliding-window inference and nnU-Net's Dice convention."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hnas.cfgunet import build, compile_architecture
from hnas.errors import TrainingError
from hnas.grammar import default_architecture, make_grammar
from hnas.train.inference import case_dice, sliding_window_logits

from .conftest import tiny_plan, tiny_plan_2d


def test_dice_per_label_with_nan_where_both_are_empty():
    reference = torch.zeros(4, 4, 4, dtype=torch.long)
    reference[:2] = 1
    prediction = torch.zeros_like(reference)
    prediction[:1] = 1
    scores = case_dice(prediction, reference, n_classes=4)
    assert scores[0] == pytest.approx(2 * 16 / (16 + 32))
    assert math.isnan(scores[1]) and math.isnan(scores[2])  # labels 2 and 3 appear nowhere
    prediction[3, 3, 3] = 2  # predicted where the reference has none: a real 0
    assert case_dice(prediction, reference, n_classes=4)[1] == 0.0


def test_sliding_window_covers_cases_of_any_size():
    plan = tiny_plan()
    spec = compile_architecture(make_grammar(plan), default_architecture(plan), plan, dropout_rate=0.0)
    torch.manual_seed(0)
    network = build(spec)
    network.train()
    for shape in [(1, 10, 12, 9), (1, 20, 33, 17)]:  # smaller and larger than the 16^3 patch
        image = np.random.default_rng(0).normal(size=shape).astype(np.float32)
        probabilities = sliding_window_logits(network, image, plan.patch_size, torch.device("cpu"))
        assert probabilities.shape == (3, *shape[1:])
        assert torch.allclose(probabilities.sum(0), torch.ones(shape[1:]), atol=1e-5)
        mirrored = sliding_window_logits(network, image, plan.patch_size, torch.device("cpu"), mirror_axes=(0, 2))
        assert mirrored.shape == probabilities.shape
    assert network.training and network.decoder.deep_supervision  # restored afterwards


def test_a_2d_network_predicts_a_volume_slice_by_slice():
    plan = tiny_plan_2d()
    spec = compile_architecture(make_grammar(plan), default_architecture(plan), plan, dropout_rate=0.0)
    torch.manual_seed(0)
    network = build(spec)
    image = np.random.default_rng(1).normal(size=(1, 5, 20, 13)).astype(np.float32)
    cpu = torch.device("cpu")
    probabilities = sliding_window_logits(network, image, plan.patch_size, cpu, batch_size=4)
    assert probabilities.shape == (3, 5, 20, 13)
    assert torch.allclose(probabilities.sum(0), torch.ones(5, 20, 13), atol=1e-5)
    alone = sliding_window_logits(network, image[:, 3:4], plan.patch_size, cpu)  # batching slices mixes nothing
    assert torch.allclose(alone[:, 0], probabilities[:, 3], atol=1e-5)
    mirrored = sliding_window_logits(network, image, plan.patch_size, cpu, mirror_axes=(0, 1))
    assert mirrored.shape == probabilities.shape and not torch.allclose(mirrored, probabilities)
    with pytest.raises(TrainingError, match=r"patch size \(16,\) does not fit an image of shape \(1, 5, 20, 13\)"):
        sliding_window_logits(network, image, (16,), cpu)
