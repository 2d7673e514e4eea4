"""The training step and loop: every loss/optimizer/schedule trains; divergence is an error."""

from __future__ import annotations

import pytest
import torch

from hnas.cfgunet import build, compile_architecture
from hnas.errors import TrainingError
from hnas.grammar import default_architecture, make_grammar
from hnas.train.config import TrainConfig
from hnas.train.trainer import Trainer

from .conftest import tiny_plan


def _network(seed=0):
    plan = tiny_plan()
    spec = compile_architecture(make_grammar(plan), default_architecture(plan), plan, dropout_rate=0.0)
    torch.manual_seed(seed)
    return build(spec), spec


class FixedBatches:
    """A sampler stand-in: the same batch every time (optionally poisoned with NaN)."""

    def __init__(self, poison: bool = False):
        generator = torch.Generator().manual_seed(0)
        self.image = torch.randn(2, 1, 16, 16, 16, generator=generator)
        if poison:
            self.image[0, 0, 0, 0, 0] = float("nan")
        self.label = torch.randint(0, 3, (2, 1, 16, 16, 16), generator=generator).float()
        self.calls = []

    def batch(self, index):
        self.calls.append(index)
        return {"image": self.image.clone(), "label": self.label.clone()}


@pytest.mark.parametrize("settings", [
    {"loss": "Dice"}, {"loss": "DiceCE"}, {"loss": "CE"}, {"loss": "TopK"},
    {"optimizer": "Adam", "initial_lr": 1e-3}, {"optimizer": "AdamW", "initial_lr": 1e-3, "lr_scheduler": "None"},
    {"lr_scheduler": "CosineAnnealing", "momentum": 0.9},
])
def test_each_setting_trains_and_lowers_the_loss(settings):
    network, spec = _network()
    trainer = Trainer(network, TrainConfig(**settings), n_outputs=spec.n_stages - 1, device="cpu", max_epochs=8)
    batches = FixedBatches()
    before = [p.detach().clone() for p in network.parameters()]
    trainer.fit(batches, until_epoch=4, iterations_per_epoch=2)
    assert trainer.epoch == 4 and len(trainer.train_losses) == 4 and trainer.runtime > 0
    assert batches.calls == list(range(8))
    assert trainer.train_losses[-1] < trainer.train_losses[0]
    assert any(not torch.equal(a, b) for a, b in zip(before, network.parameters()))


def test_learning_rate_follows_the_schedule_per_epoch():
    network, spec = _network()
    trainer = Trainer(network, TrainConfig(initial_lr=0.01), n_outputs=spec.n_stages - 1, device="cpu", max_epochs=10)
    trainer.fit(FixedBatches(), until_epoch=3, iterations_per_epoch=1)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * (1 - 2 / 10) ** 0.9)


def test_nan_loss_fails_the_trial():
    network, spec = _network()
    trainer = Trainer(network, TrainConfig(), n_outputs=spec.n_stages - 1, device="cpu", max_epochs=4)
    with pytest.raises(TrainingError, match="nan in epoch 1"):
        trainer.fit(FixedBatches(poison=True), until_epoch=1, iterations_per_epoch=1)


def test_training_beyond_the_schedule_is_refused():
    network, spec = _network()
    trainer = Trainer(network, TrainConfig(), n_outputs=spec.n_stages - 1, device="cpu", max_epochs=2)
    with pytest.raises(TrainingError, match="max_epochs=2"):
        trainer.fit(FixedBatches(), until_epoch=3, iterations_per_epoch=1)


def test_on_iteration_reports_every_step_of_each_fit():
    """A progress bar follows the steps of a trial, and a continued fit counts only its own steps."""
    network, spec = _network()
    trainer = Trainer(network, TrainConfig(), n_outputs=spec.n_stages - 1, device="cpu", max_epochs=3)
    calls = []
    trainer.fit(FixedBatches(), until_epoch=2, iterations_per_epoch=2, on_iteration=lambda *c: calls.append(c))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    calls.clear()
    trainer.fit(FixedBatches(), until_epoch=3, iterations_per_epoch=2, on_iteration=lambda *c: calls.append(c))
    assert calls == [(1, 2), (2, 2)]
