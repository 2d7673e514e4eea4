"""Optimizers and learning-rate schedules of the search space.

docs/references.md, "Search spaces" and "nnU-Net defaults".

The schedule is a pure function of (epoch, max_epochs): it runs over the *maximum* fidelity, so
training continued from a checkpoint at epoch e uses exactly the rates an uninterrupted run
would (nnU-Net sets the rate the same way, per epoch, rather than stepping a stateful scheduler).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from hnas.errors import TrainingError
from hnas.train.config import TrainConfig

POLY_EXPONENT = 0.9


def make_optimizer(config: TrainConfig, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum, Adam, or AdamW with amsgrad."""
    if config.optimizer == "SGD":
        return torch.optim.SGD(parameters, lr=config.initial_lr, momentum=config.momentum, nesterov=True,
                               weight_decay=config.weight_decay)
    if config.optimizer == "Adam":
        return torch.optim.Adam(parameters, lr=config.initial_lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(parameters, lr=config.initial_lr, weight_decay=config.weight_decay, amsgrad=True)


def learning_rate(config: TrainConfig, epoch: int, max_epochs: int) -> float:
    """The rate for ``epoch`` (0-based): PolyLR lr*(1-e/E)^0.9, cosine to 0 at E, or constant."""
    if max_epochs < 1 or not 0 <= epoch <= max_epochs:
        raise TrainingError(f"epoch {epoch} is outside the schedule of {max_epochs} epochs; expected "
                            f"0 <= epoch <= max_epochs")
    progress = epoch / max_epochs
    if config.lr_scheduler == "PolyLR":
        return config.initial_lr * (1.0 - progress) ** POLY_EXPONENT
    if config.lr_scheduler == "CosineAnnealing":
        return config.initial_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    return config.initial_lr


def set_learning_rate(optimizer: torch.optim.Optimizer, rate: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = rate
