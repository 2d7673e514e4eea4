"""The training step and loop: every loss/optimizer/schedule trains; divergence is an error."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import multiprocessing
import time
import warnings

import pytest
import torch

from hnas.cfgunet import build, compile_architecture
from hnas.errors import TrainingError
from hnas.grammar import default_architecture, make_grammar
from hnas.train.config import TrainConfig
from hnas.train import trainer as trainer_module
from hnas.train.trainer import (DaemonicProcessWarning, Trainer, autocast, confusion_counts, cuda_grad_scaler,
                                training_diverged, warn_if_workers_are_dropped)
from hnas.train.training_log import pseudo_dice

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


# ---------------------------------------------------------------- per-epoch validation and the epoch records

def _watched_network():
    """The tiny network with batch norm and dropout: state that a validation pass in the wrong mode would change."""
    plan = tiny_plan()
    architecture = default_architecture(plan).replace("instance_norm", "batch_norm").replace("no_dropout", "dropout")
    spec = compile_architecture(make_grammar(plan), architecture, plan, dropout_rate=0.3)
    torch.manual_seed(0)
    return build(spec), spec


class ValidationBatches(FixedBatches):
    """Other fixed batches, standing in for the validation sampler."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(1)
        self.image = torch.randn(2, 1, 16, 16, 16, generator=generator)


def test_confusion_counts_match_a_hand_count():
    # 1 x 6 voxels, 3 classes: predicted 0 1 1 2 2 1 against reference 0 1 2 2 0 0
    predicted = torch.tensor([0, 1, 1, 2, 2, 1])
    logits = torch.nn.functional.one_hot(predicted, 3).T.float().reshape(1, 3, 1, 1, 6)
    reference = torch.tensor([0, 1, 2, 2, 0, 0]).reshape(1, 1, 1, 1, 6).float()
    counts = confusion_counts(logits, reference)
    # class 1: TP at 1; FP at 2, 5; FN none. class 2: TP at 3; FP at 4; FN at 2
    assert counts.tolist() == [[1, 1], [2, 1], [0, 1]]
    assert pseudo_dice(*counts.tolist()) == pytest.approx([2 / 4, 2 / 4])


def test_training_is_the_same_with_and_without_the_epoch_validation():
    runs = []
    for iterations in (None, 0):
        network, spec = _watched_network()
        trainer = Trainer(network, TrainConfig(), n_outputs=spec.n_stages - 1, device="cpu", max_epochs=4, seed=5)
        batches, validation = FixedBatches(), ValidationBatches()
        trainer.fit(batches, until_epoch=2, iterations_per_epoch=2, validation=validation,
                    validation_iterations=iterations)
        runs.append((trainer, batches.calls, validation.calls))
    (watched, watched_calls, validation_calls), (plain, plain_calls, no_calls) = runs
    assert watched.train_losses == plain.train_losses  # bit-identical
    for name, tensor in plain.network.state_dict().items():  # weights and batch-norm statistics
        assert torch.equal(watched.network.state_dict()[name], tensor), name
    assert watched_calls == plain_calls == list(range(4))
    assert validation_calls == [0, 1] and no_calls == []  # max(1, 2 // 5) = 1 batch per epoch, index = epoch
    assert watched.network.training and all(math.isnan(r.val_loss) and not r.pseudo_dice for r in plain.history)


def test_each_epoch_leaves_a_record():
    network, spec = _network()
    trainer = Trainer(network, TrainConfig(initial_lr=0.01), n_outputs=spec.n_stages - 1, device="cpu", max_epochs=10)
    seen = []
    trainer.fit(FixedBatches(), until_epoch=2, iterations_per_epoch=1, validation=ValidationBatches(),
                class_names=["organ", "substructure"], on_epoch=seen.append)
    assert seen == trainer.history and [r.epoch for r in seen] == [1, 2] and {r.max_epochs for r in seen} == {10}
    first, second = seen
    assert [first.train_loss, second.train_loss] == trainer.train_losses
    assert first.learning_rate == 0.01 and second.learning_rate == pytest.approx(0.01 * (1 - 1 / 10) ** 0.9)
    assert set(first.pseudo_dice) == {"organ", "substructure"} and math.isfinite(first.val_loss)
    assert first.mean_pseudo_dice == pytest.approx(sum(first.pseudo_dice.values()) / 2)
    assert first.ema_pseudo_dice == first.mean_pseudo_dice
    assert second.ema_pseudo_dice == pytest.approx(0.9 * first.mean_pseudo_dice + 0.1 * second.mean_pseudo_dice)
    assert all(r.epoch_seconds > 0 for r in seen)


def test_validation_and_the_epoch_hook_are_not_training_time():
    network, spec = _network()
    trainer = Trainer(network, TrainConfig(), n_outputs=spec.n_stages - 1, device="cpu", max_epochs=2)
    started = time.perf_counter()
    trainer.fit(FixedBatches(), until_epoch=2, iterations_per_epoch=1, validation=ValidationBatches(),
                on_epoch=lambda record: time.sleep(0.5))
    wall = time.perf_counter() - started
    validation = sum(r.epoch_seconds for r in trainer.history) - trainer.runtime  # the validation passes
    assert 0 < trainer.runtime < wall - 1.0 and validation > 0


def test_epoch_validation_settings_are_checked():
    network, spec = _network()
    trainer = Trainer(network, TrainConfig(), n_outputs=spec.n_stages - 1, device="cpu", max_epochs=2)
    with pytest.raises(TrainingError, match="validation_iterations is -1"):
        trainer.fit(FixedBatches(), 1, 1, validation=ValidationBatches(), validation_iterations=-1)
    with pytest.raises(TrainingError, match="no validation sampler"):
        trainer.fit(FixedBatches(), 1, 1, validation_iterations=2)
    with pytest.raises(TrainingError, match=r"class_names \['organ'\] name 1 classes.*2 foreground"):
        trainer.fit(FixedBatches(), 1, 1, validation=ValidationBatches(), class_names=["organ"])


def test_the_history_travels_in_a_weights_only_state_dict(tmp_path):
    network, spec = _network()
    trainer = Trainer(network, TrainConfig(), n_outputs=spec.n_stages - 1, device="cpu", max_epochs=3)
    trainer.fit(FixedBatches(), until_epoch=2, iterations_per_epoch=1, validation=ValidationBatches())
    torch.save(trainer.state_dict(), tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    json.dumps(state["history"], allow_nan=False)
    restored = Trainer(_network()[0], TrainConfig(), n_outputs=spec.n_stages - 1, device="cpu", max_epochs=3)
    restored.load_state_dict(state)
    assert restored.history == trainer.history and len(restored.history) == 2
    restored.fit(FixedBatches(), until_epoch=3, iterations_per_epoch=1, validation=ValidationBatches())
    assert [r.epoch for r in restored.history] == [1, 2, 3]
    assert restored.history[2].ema_pseudo_dice == pytest.approx(
        0.9 * trainer.history[1].ema_pseudo_dice + 0.1 * restored.history[2].mean_pseudo_dice)


def test_a_state_dict_from_before_the_history_loads_with_an_empty_one():
    network, spec = _network()
    trainer = Trainer(network, TrainConfig(), n_outputs=spec.n_stages - 1, device="cpu", max_epochs=3)
    trainer.fit(FixedBatches(), until_epoch=1, iterations_per_epoch=1)
    state = trainer.state_dict()
    del state["history"]
    restored = Trainer(_network()[0], TrainConfig(), n_outputs=spec.n_stages - 1, device="cpu", max_epochs=3)
    restored.load_state_dict(state)
    assert restored.epoch == 1 and restored.history == []


# ---------------------------------------------------------------- CUDA paths, exercised on the CPU

class _FakeScaler:
    def __init__(self, *args):
        self.args = args


def test_the_cuda_grad_scaler_comes_from_torch_amp_when_it_has_one(monkeypatch):
    monkeypatch.setattr(torch.amp, "GradScaler", _FakeScaler, raising=False)
    assert cuda_grad_scaler().args == ("cuda",)


def test_torch_before_2_3_gets_the_cuda_amp_grad_scaler(monkeypatch):
    """torch 2.1/2.2 (allowed by pyproject) have no torch.amp.GradScaler: nnU-Net's fallback."""
    monkeypatch.delattr(torch.amp, "GradScaler", raising=False)
    monkeypatch.setattr(torch.cuda.amp, "GradScaler", _FakeScaler)
    assert isinstance(cuda_grad_scaler(), _FakeScaler) and cuda_grad_scaler().args == ()


@pytest.mark.parametrize("device_type, enabled", [("mps", False), ("meta", False), ("cuda", False), ("cpu", False),
                                                  ("meta", True), ("mps", True)])
def test_no_autocast_is_built_where_mixed_precision_is_off(monkeypatch, device_type, enabled):
    def refuse(*args, **kwargs):
        raise AssertionError(f"torch.autocast{args} built")
    monkeypatch.setattr(torch, "autocast", refuse)
    with autocast(torch.device(device_type), enabled):
        pass


def test_autocast_runs_on_cuda_and_on_the_cpu_when_enabled(monkeypatch):
    built = []
    monkeypatch.setattr(torch, "autocast", lambda device_type: built.append(device_type) or contextlib.nullcontext())
    autocast(torch.device("cuda", 0), True)
    autocast(torch.device("cpu"), True)
    assert built == ["cuda", "cpu"]


def test_a_cpu_fit_never_builds_an_autocast(monkeypatch):
    monkeypatch.setattr(torch, "autocast", lambda *a, **k: pytest.fail("torch.autocast built on the CPU"))
    network, spec = _network()
    trainer = Trainer(network, TrainConfig(), n_outputs=spec.n_stages - 1, device="cpu", max_epochs=1)
    trainer.fit(FixedBatches(), until_epoch=1, iterations_per_epoch=1, validation=ValidationBatches())


class InfiniteOnSteps:
    """The trainer's loss, made infinite on the given steps (0-based), as an fp16 overflow would."""

    def __init__(self, loss, steps):
        self.loss, self.steps, self.calls = loss, set(steps), 0

    def __call__(self, outputs, target):
        value = self.loss(outputs, target)
        step, self.calls = self.calls, self.calls + 1
        return value * float("inf") if step in self.steps else value


def _scaled_trainer(max_epochs=2):
    """A trainer stepping through a GradScaler (the AMP path; a CPU scaler skips inf steps as a CUDA one does)."""
    network, spec = _network()
    trainer = Trainer(network, TrainConfig(), n_outputs=spec.n_stages - 1, device="cpu", max_epochs=max_epochs)
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
    return trainer


def test_one_overflowing_amp_step_is_skipped_not_a_failed_trial():
    trainer = _scaled_trainer()
    trainer.loss = InfiniteOnSteps(trainer.loss, steps={1})
    finite_losses = []
    original_step = trainer.step
    trainer.step = lambda image, target: finite_losses.append(original_step(image, target)) or finite_losses[-1]
    trainer.fit(FixedBatches(), until_epoch=1, iterations_per_epoch=3)
    losses = [float(loss) for loss in finite_losses]
    assert math.isinf(losses[1]) and trainer.non_finite_steps == [1]
    assert trainer.train_losses == [pytest.approx((losses[0] + losses[2]) / 2)]
    assert trainer.scaler.get_scale() == 2.0 ** 15  # the scaler skipped the step and lowered its scale
    assert all(torch.isfinite(p).all() for p in trainer.network.parameters())
    assert trainer.state_dict()["non_finite_steps"] == [1]


def test_an_amp_epoch_without_a_finite_step_diverged():
    trainer = _scaled_trainer()
    trainer.loss = InfiniteOnSteps(trainer.loss, steps={0})
    with pytest.raises(TrainingError, match=r"inf in epoch 1 \(1 of 1 steps non-finite.*diverged"):
        trainer.fit(FixedBatches(), until_epoch=1, iterations_per_epoch=1)


def test_without_a_scaler_one_non_finite_step_diverged():
    """Nothing skips an fp32 step: the optimizer already wrote the non-finite gradients into the weights."""
    network, spec = _network()
    trainer = Trainer(network, TrainConfig(), n_outputs=spec.n_stages - 1, device="cpu", max_epochs=2)
    trainer.loss = InfiniteOnSteps(trainer.loss, steps={1})
    # step 2's loss is non-finite too: step 1 wrote NaN into the weights, as the rule assumes
    with pytest.raises(TrainingError, match=r"nan in epoch 1 \(2 of 3 steps non-finite.*diverged"):
        trainer.fit(FixedBatches(), until_epoch=1, iterations_per_epoch=3)
    assert trainer.train_losses == [] and trainer.epoch == 0
    assert not all(torch.isfinite(p).all() for p in trainer.network.parameters())


@pytest.mark.parametrize("non_finite, steps, scaled, diverged", [
    (0, 5, True, False), (4, 5, True, False), (5, 5, True, True),
    (0, 5, False, False), (1, 5, False, True)])
def test_the_divergence_rule(non_finite, steps, scaled, diverged):
    assert training_diverged(non_finite, steps, scaled=scaled) is diverged


def _failing_synchronize(device):
    raise RuntimeError("CUDA error: an illegal memory access was encountered")


def test_a_failing_device_synchronize_does_not_mask_the_error_that_stopped_the_fit(monkeypatch):
    monkeypatch.setattr(trainer_module, "synchronize", _failing_synchronize)
    network, spec = _network()
    trainer = Trainer(network, TrainConfig(), n_outputs=spec.n_stages - 1, device="cpu", max_epochs=4)
    with pytest.raises(TrainingError, match="nan in epoch 1"):
        trainer.fit(FixedBatches(poison=True), until_epoch=1, iterations_per_epoch=1)
    assert trainer.runtime > 0  # the cleanup still ran


def test_a_failing_device_synchronize_after_an_epoch_is_the_fits_error(monkeypatch):
    monkeypatch.setattr(trainer_module, "synchronize", _failing_synchronize)
    network, spec = _network()
    trainer = Trainer(network, TrainConfig(), n_outputs=spec.n_stages - 1, device="cpu", max_epochs=4)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        trainer.fit(FixedBatches(), until_epoch=1, iterations_per_epoch=1)


def test_a_daemonic_process_warns_once_that_it_drops_the_augmentation_workers(monkeypatch):
    monkeypatch.setattr(trainer_module, "_warned_about_daemonic_process", False)
    monkeypatch.setattr(multiprocessing.current_process(), "daemon", True, raising=False)
    with pytest.warns(DaemonicProcessWarning, match="cannot start the 8 augmentation worker.*"
                                                    "DASK_DISTRIBUTED__WORKER__DAEMON=False"):
        warn_if_workers_are_dropped(8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_workers_are_dropped(8)  # once per process


def test_no_warning_without_workers_or_in_a_normal_process(monkeypatch):
    monkeypatch.setattr(trainer_module, "_warned_about_daemonic_process", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_workers_are_dropped(8)  # pytest's process is not daemonic
        monkeypatch.setattr(multiprocessing.current_process(), "daemon", True, raising=False)
        warn_if_workers_are_dropped(0)
