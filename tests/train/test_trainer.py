"""The training step and loop: every loss/optimizer/schedule trains; divergence is an error."""

from __future__ import annotations

import copy

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


def _clipped_gradients(network, loss_fn, batch, max_norm=12.0):
    """The gradients nnU-Net steps with, by hand: plain backward in fp32, then scaled to norm <= 12
    (torch's clip_grad_norm_ rule: multiply by min(1, max_norm / (norm + 1e-6)))."""
    network.zero_grad(set_to_none=True)
    loss_fn(network(batch.image), batch.label).backward()
    # the weight-0 deep-supervision output is never computed: its head gets no gradient (None), as in training
    grads = [None if p.grad is None else p.grad.detach().clone() for p in network.parameters()]
    norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads if g is not None)))
    return [None if g is None else g * min(1.0, max_norm / (norm + 1e-6)) for g in grads], norm


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "grad-scaler"])
def test_gradients_are_clipped_at_12_in_unscaled_units(amp):
    """nnU-Net's AMP step: scaler.scale(loss).backward(); scaler.unscale_(optimizer); clip_grad_norm_(..., 12);
    scaler.step(optimizer). A GradScaler runs on the CPU too (scale 2**16): clipping the still-scaled
    gradients would leave them 2**16 times too small after the step's own unscale."""
    network, spec = _network()
    reference = copy.deepcopy(network)
    trainer = Trainer(network, TrainConfig(), n_outputs=spec.n_stages - 1, device="cpu", max_epochs=4)
    if amp:
        trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
        assert trainer.scaler.is_enabled()
    loss = trainer.loss
    trainer.loss = lambda outputs, target: 1000.0 * loss(outputs, target)  # gradients far above the clip
    batch = FixedBatches()
    expected, norm = _clipped_gradients(reference, trainer.loss, batch)
    assert norm > 100  # clipping is active
    before = [p.detach().clone() for p in network.parameters()]
    trainer.step(batch.image, batch.label)
    grads = [p.grad for p in network.parameters()]
    assert [g is None for g in grads] == [g is None for g in expected]
    grads, expected = [g for g in grads if g is not None], [g for g in expected if g is not None]
    assert float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads))) == pytest.approx(12.0, rel=1e-4)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
    # and the optimizer stepped with them: SGD, Nesterov, first step (buffer = d): p -= lr * (1 + momentum) * d,
    # d = clipped gradient + weight_decay * p
    group = trainer.optimizer.param_groups[0]
    assert group["nesterov"] and (group["lr"], group["momentum"], group["weight_decay"]) == (1e-2, 0.99, 3e-5)
    trained = [(old, new) for old, new in zip(before, network.parameters()) if new.grad is not None]
    for (old, new), g in zip(trained, expected):
        torch.testing.assert_close(new.detach(), old - 1e-2 * (1 + 0.99) * (g + 3e-5 * old), rtol=1e-4, atol=1e-7)
