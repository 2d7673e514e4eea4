"""Optimizers and schedules over the maximum fidelity."""

from __future__ import annotations

import pytest
import torch

from hnas.errors import TrainingError
from hnas.train.config import TrainConfig
from hnas.train.optim import learning_rate, make_optimizer


def _parameters():
    return [torch.nn.Parameter(torch.zeros(3))]


def test_optimizers_use_nesterov_and_amsgrad():
    sgd = make_optimizer(TrainConfig(optimizer="SGD", momentum=0.9, weight_decay=1e-4), _parameters())
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.9 and sgd.defaults["weight_decay"] == 1e-4
    adam = make_optimizer(TrainConfig(optimizer="Adam", initial_lr=1e-3), _parameters())
    assert type(adam) is torch.optim.Adam and adam.defaults["lr"] == 1e-3
    adamw = make_optimizer(TrainConfig(optimizer="AdamW"), _parameters())
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["amsgrad"]


def test_poly_schedule_matches_nnunet():
    config = TrainConfig(initial_lr=0.01, lr_scheduler="PolyLR")
    assert learning_rate(config, 0, 1000) == 0.01
    assert learning_rate(config, 500, 1000) == pytest.approx(0.01 * 0.5 ** 0.9)
    assert learning_rate(config, 1000, 1000) == 0.0


def test_cosine_and_constant_schedules():
    cosine = TrainConfig(initial_lr=0.1, lr_scheduler="CosineAnnealing")
    assert learning_rate(cosine, 0, 10) == pytest.approx(0.1)
    assert learning_rate(cosine, 5, 10) == pytest.approx(0.05)
    assert learning_rate(cosine, 10, 10) == pytest.approx(0.0)
    constant = TrainConfig(initial_lr=0.1, lr_scheduler="None")
    assert {learning_rate(constant, e, 10) for e in range(11)} == {0.1}


def test_schedule_refuses_epochs_beyond_the_maximum():
    with pytest.raises(TrainingError, match="epoch 11"):
        learning_rate(TrainConfig(), 11, 10)
