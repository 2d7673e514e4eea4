"""The training loop: nnU-Net's step (deep-supervised loss, gradient clipping at 12, AMP on CUDA).

A :class:`Trainer` owns the network, loss, optimizer and gradient scaler plus the epoch counter
and the training seconds spent so far; :meth:`Trainer.state_dict` holds only tensors and plain
values, so a checkpoint loads with ``torch.load(weights_only=True)``. Each epoch reseeds torch
from (seed, epoch) and takes its learning rate from (epoch, max_epochs), so continuing from a
checkpoint is the same computation as training in one go.

After each epoch's training, ``fit`` can score the network on unaugmented validation patches
(nnU-Net's per-epoch pseudo Dice, docs/references.md "Per-epoch training log") and keeps one
:class:`~hnas.train.training_log.EpochRecord` per epoch in :attr:`Trainer.history`. That
validation reads its own batches (its own sampler and seed), runs without gradients in eval
mode, and is not counted in :attr:`Trainer.runtime`: training is the same with or without it.

An epoch's training loss is the mean of its finite step losses; with AMP a step whose fp16 loss
overflows is skipped by the GradScaler and only counted (:attr:`Trainer.non_finite_steps`), and
the trial fails as diverged only by :func:`training_diverged`'s rule.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import multiprocessing
import time
import warnings
from collections.abc import Sequence
from typing import Callable

import torch
from torch import nn

from hnas.errors import TrainingError
from hnas.train.compilation import CompiledNetwork, forget_compiled_networks, uncompiled, without_compiled_prefix
from hnas.train.config import TrainConfig
from hnas.train.loader import PatchSampler, batch_loader
from hnas.train.losses import SegmentationLoss
from hnas.train.optim import learning_rate, make_optimizer, set_learning_rate
from hnas.train.training_log import (EpochRecord, default_validation_iterations, mean_ignoring_nan, next_ema,
                                     pseudo_dice)

GRADIENT_CLIP = 12.0

#: ``on_iteration(done, total)``: called after every step of a ``fit`` with the iterations that
#: call has done and will do in all (a progress display's hook; it must not touch the training).
IterationCallback = Callable[[int, int], None]
#: ``on_epoch(record)``: called after every epoch of a ``fit``, its validation done, with the epoch's
#: :class:`EpochRecord` (a log line's hook; its time is not counted as training).
EpochCallback = Callable[[EpochRecord], None]

#: Validation patches draw from the stream ``seed + VALIDATION_SEED_SALT``, never the training batches'.
VALIDATION_SEED_SALT = 0x5EED_7A11


def epoch_seed(seed: int, epoch: int) -> int:
    """Torch seed of an epoch (dropout etc.): a function of the run seed and the epoch only."""
    return (int(seed) * 1_000_003 + int(epoch)) % (2 ** 63 - 1)


def validation_seed(seed: int) -> int:
    """Seed of a run's validation patch sampler: deterministic, and not the training batches' seed."""
    return (int(seed) + VALIDATION_SEED_SALT) % (2 ** 63 - 1)


def confusion_counts(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``[3, K-1]`` int64: TP, FP, FN per foreground class of ``argmax(logits)`` against a
    ``[B, 1, ...]`` label map, summed over the batch and every voxel (nnU-Net's pseudo-Dice counts)."""
    predicted = logits.argmax(1)
    reference = target[:, 0].long()
    counts = torch.zeros((3, logits.shape[1] - 1), dtype=torch.int64, device=logits.device)
    for label in range(1, logits.shape[1]):
        hit, truth = predicted == label, reference == label
        counts[:, label - 1] = torch.stack([(hit & truth).sum(), (hit & ~truth).sum(), (~hit & truth).sum()])
    return counts


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cuda_grad_scaler():
    """A gradient scaler for CUDA AMP on every torch hnas allows (>= 2.1).

    ``torch.amp.GradScaler("cuda")`` exists from torch 2.3 on; before, only
    ``torch.cuda.amp.GradScaler()`` does (deprecated since 2.4, so it is only the fallback).
    """
    device_agnostic = getattr(torch.amp, "GradScaler", None)
    if device_agnostic is not None:
        return device_agnostic("cuda")
    return torch.cuda.amp.GradScaler()


#: Device types whose ``torch.autocast`` hnas uses (CPU only when a caller enables it explicitly).
AUTOCAST_DEVICE_TYPES = ("cuda", "cpu")


def autocast(device: torch.device, enabled: bool):
    """``torch.autocast`` when mixed precision is on, else a no-op context.

    Building ``torch.autocast`` for a device type without autocast support raises or warns even
    with ``enabled=False`` (``meta``: "unsupported scalarType"; ``mps`` on the torch versions
    nnU-Net's trainer notes), so a disabled (or unsupported) autocast is never constructed.
    """
    if enabled and device.type in AUTOCAST_DEVICE_TYPES:
        return torch.autocast(device.type)
    return contextlib.nullcontext()


def training_diverged(non_finite_steps: int, steps: int, *, scaled: bool) -> bool:
    """Whether an epoch with ``non_finite_steps`` of ``steps`` non-finite losses diverged.

    With a GradScaler (AMP) a non-finite loss gives non-finite gradients, and the scaler skips
    that optimizer step and halves its scale: the weights stay as they were, so an fp16
    overflow on one batch is routine, not divergence (nnU-Net never checks the loss at all). Only
    an epoch in which *every* step was non-finite means the network no longer trains (its
    weights or activations are no longer finite at any scale). Without a scaler nothing skips
    the step: a non-finite loss has already put non-finite values into the weights through
    the optimizer, so one such step is divergence.
    """
    if scaled:
        return non_finite_steps >= steps
    return non_finite_steps > 0


class DaemonicProcessWarning(UserWarning):
    """Augmentation workers were dropped because training runs in a daemonic process."""


_warned_about_daemonic_process = False


def warn_if_workers_are_dropped(num_workers: int) -> None:
    """Warn (once per process) that a daemonic process makes batches without its ``num_workers``.

    A daemonic process may not start children, so :func:`~hnas.train.loader.batch_loader` makes
    the batches in the training process instead, which silently slows training down.
    """
    global _warned_about_daemonic_process
    if num_workers <= 0 or not multiprocessing.current_process().daemon or _warned_about_daemonic_process:
        return
    _warned_about_daemonic_process = True
    warnings.warn(
        f"training runs in a daemonic process (e.g. a Dask worker started by a nanny with distributed.worker.daemon "
        f"True, Dask's default), which cannot start the {num_workers} augmentation worker processes asked for: "
        "batches are made in the training process instead, which is slower. Start such Dask workers with "
        "DASK_DISTRIBUTED__WORKER__DAEMON=False in their environment (or `dask worker --no-nanny`); "
        "`hnas search --workers N` configures its local cluster this way itself.",
        DaemonicProcessWarning, stacklevel=3)


class Trainer:
    """Trains one network with one configuration; ``fit`` can be called again to continue.

    ``compile`` runs the steps and the validation through ``torch.compile`` (:mod:`hnas.train.compilation`);
    :attr:`network` stays the eager module, so the state dict is the same either way.
    """

    def __init__(self, network: nn.Module, config: TrainConfig, *, n_outputs: int, device: torch.device | str,
                 max_epochs: int, seed: int = 0, amp: bool = True, compile: bool = False):
        self.device = torch.device(device)
        self.network = uncompiled(network).to(self.device)
        if compile:
            forget_compiled_networks()
        self.forward = CompiledNetwork(self.network, compile)
        self.config = config
        self.max_epochs = int(max_epochs)
        self.seed = int(seed)
        self.loss = SegmentationLoss(config.loss, n_outputs)
        self.optimizer = make_optimizer(config, self.network.parameters())
        self.amp = bool(amp) and self.device.type == "cuda"
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed patch size: let cuDNN pick the fastest kernels
        self.scaler = cuda_grad_scaler() if self.amp else None
        self.epoch = 0
        self.runtime = 0.0  # seconds of training, all fits (and earlier rungs) together
        self.train_losses: list[float] = []  # per epoch: the mean of its finite step losses
        self.non_finite_steps: list[int] = []  # per epoch: steps whose loss was inf/NaN (skipped by the scaler)
        self.history: list[EpochRecord] = []  # one record per epoch, all fits (and earlier rungs) together

    # ---------------------------------------------------------------- one step

    def step(self, image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """One optimizer step on a batch; returns the (detached) loss."""
        return self.forward.run(lambda forward: self._step(forward, image, target))

    def _step(self, forward: Callable, image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, self.amp):
            loss = self.loss(forward(image), target)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.network.parameters(), GRADIENT_CLIP)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            nn.utils.clip_grad_norm_(self.network.parameters(), GRADIENT_CLIP)
            self.optimizer.step()
        return loss.detach()

    # ---------------------------------------------------------------- epochs

    def fit(self, sampler: PatchSampler, until_epoch: int, iterations_per_epoch: int, num_workers: int = 0,
            on_iteration: IterationCallback | None = None, *, validation: PatchSampler | None = None,
            validation_iterations: int | None = None, class_names: Sequence[str] | None = None,
            on_epoch: EpochCallback | None = None) -> None:
        """Train epochs ``self.epoch .. until_epoch - 1``; batch indices continue across calls.

        ``on_iteration`` lets a progress bar move during a trial, not only when it ends.
        ``validation`` (a sampler over the fold's validation cases, augmentation off) scores each
        epoch on ``validation_iterations`` patch batches (None: nnU-Net's 1 per 5 training
        iterations, at least 1; 0: none); ``class_names`` name the foreground classes of the pseudo
        Dice (default "1", "2", ...). ``on_epoch`` gets each epoch's record.
        """
        if until_epoch > self.max_epochs:
            raise TrainingError(f"cannot train to epoch {until_epoch}: the schedule ends at max_epochs="
                                f"{self.max_epochs}; expected epochs <= max_epochs")
        n_validation = _validation_batches(validation, validation_iterations, iterations_per_epoch)
        if until_epoch <= self.epoch:
            return
        self.network.train()
        self.network.decoder.deep_supervision = True
        started = time.perf_counter()
        warn_if_workers_are_dropped(num_workers)
        loader = batch_loader(sampler, self.epoch * iterations_per_epoch, num_workers,
                              pin_memory=self.device.type == "cuda")
        batches = iter(loader)
        on_step = None
        if on_iteration is not None:
            done, total = itertools.count(1), (until_epoch - self.epoch) * iterations_per_epoch
            on_step = lambda: on_iteration(next(done), total)  # noqa: E731
        not_training = 0.0  # validation and callbacks: seconds left out of the runtime
        epoch_started = started
        try:
            for epoch in range(self.epoch, until_epoch):
                self._train_epoch(batches, epoch, iterations_per_epoch, on_step)
                synchronize(self.device)
                trained = time.perf_counter()
                scores = self._validate_epoch(validation, epoch, n_validation, class_names) if n_validation \
                    else (math.nan, {})
                synchronize(self.device)
                validated = time.perf_counter()
                not_training += validated - trained
                record = self._record_epoch(epoch, *scores, seconds=validated - epoch_started)
                if on_epoch is not None:
                    on_epoch(record)
                epoch_started = time.perf_counter()
                not_training += epoch_started - validated
        finally:
            # No device synchronize here: each epoch already ended with one, and a CUDA error raised
            # while another exception propagates would replace the error that stopped the fit.
            self.runtime += time.perf_counter() - started - not_training
            _stop_workers(batches)

    def _train_epoch(self, batches, epoch: int, iterations: int, on_step: Callable[[], None] | None) -> None:
        """One epoch of steps; its loss is the mean over the finite step losses.

        The sums stay on the device (no synchronize per step); :func:`training_diverged` decides at
        the end of the epoch whether its non-finite steps fail the trial.
        """
        torch.manual_seed(epoch_seed(self.seed, epoch))
        set_learning_rate(self.optimizer, learning_rate(self.config, epoch, self.max_epochs))
        total = torch.zeros((), device=self.device)  # every step: non-finite once any step is
        finite_total = torch.zeros((), device=self.device)
        finite_steps = torch.zeros((), dtype=torch.int64, device=self.device)
        for _ in range(iterations):
            batch = next(batches)
            image = batch["image"].to(self.device, non_blocking=True)
            target = batch["label"].to(self.device, non_blocking=True)
            loss = self.step(image, target).float()
            finite = torch.isfinite(loss)
            total += loss
            finite_total += torch.where(finite, loss, torch.zeros_like(loss))
            finite_steps += finite
            if on_step is not None:
                on_step()
        non_finite = iterations - int(finite_steps)
        if training_diverged(non_finite, iterations, scaled=self.scaler is not None):
            raise TrainingError(f"the training loss became {float(total) / iterations} in epoch {epoch + 1} "
                                f"({non_finite} of {iterations} steps non-finite; config {self.config}); "
                                "the trial diverged")
        self.train_losses.append(float(finite_total) / (iterations - non_finite))
        self.non_finite_steps.append(non_finite)
        self.epoch = epoch + 1

    @torch.no_grad()
    def _validate_epoch(self, validation: PatchSampler, epoch: int, iterations: int,
                        class_names: Sequence[str] | None) -> tuple[float, dict[str, float]]:
        """Mean loss and pseudo Dice per class on the epoch's validation patches (eval mode, no gradients).

        Deep supervision stays on, as in nnU-Net: the loss is the training loss's definition and the
        Dice counts come from the highest-resolution output. Batch indices ``epoch * iterations + i``
        make each epoch's patches a function of (seed, epoch).
        """
        was_training = self.network.training
        self.network.eval()
        total = torch.zeros((), device=self.device)
        counts = None
        try:
            for index in range(epoch * iterations, (epoch + 1) * iterations):
                batch = validation.batch(index)
                image = batch["image"].to(self.device, non_blocking=True)
                target = batch["label"].to(self.device, non_blocking=True)
                with autocast(self.device, self.amp):
                    outputs = self.forward(image)
                    total += self.loss(outputs, target).float()
                highest = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
                batch_counts = confusion_counts(highest, target)
                counts = batch_counts if counts is None else counts + batch_counts
        finally:
            self.network.train(was_training)
        true_positives, false_positives, false_negatives = counts.cpu().tolist()
        names = _class_names(class_names, len(true_positives))
        return float(total) / iterations, dict(zip(names, pseudo_dice(true_positives, false_positives,
                                                                        false_negatives)))

    def _record_epoch(self, epoch: int, val_loss: float, dice: dict[str, float], *, seconds: float) -> EpochRecord:
        """The epoch's record, appended to :attr:`history` (EMA continued from the previous record)."""
        mean = mean_ignoring_nan(list(dice.values()))
        previous = self.history[-1].ema_pseudo_dice if self.history else math.nan
        record = EpochRecord(epoch=epoch + 1, max_epochs=self.max_epochs, train_loss=self.train_losses[-1],
                             val_loss=val_loss, pseudo_dice=dice, mean_pseudo_dice=mean,
                             ema_pseudo_dice=next_ema(previous, mean),
                             learning_rate=float(self.optimizer.param_groups[0]["lr"]), epoch_seconds=seconds)
        self.history.append(record)
        return record

    # ---------------------------------------------------------------- checkpoint state

    def state_dict(self) -> dict:
        return {
            "model": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "grad_scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": self.epoch,
            "runtime": self.runtime,
            "train_losses": list(self.train_losses),
            "non_finite_steps": list(self.non_finite_steps),
            "history": [record.to_state() for record in self.history],
            "seed": self.seed,
            "max_epochs": self.max_epochs,
        }

    def load_state_dict(self, state: dict) -> None:
        self.network.load_state_dict(without_compiled_prefix(state["model"]))
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])
        self.epoch = int(state["epoch"])
        self.runtime = float(state["runtime"])
        self.train_losses = [float(v) for v in state["train_losses"]]
        # older checkpoints did not count them: none recorded
        self.non_finite_steps = [int(v) for v in state.get("non_finite_steps") or [0] * len(self.train_losses)]
        self.history = [EpochRecord.from_state(entry) for entry in state.get("history") or []]  # older: none
        self.seed = int(state["seed"])


def _validation_batches(validation: PatchSampler | None, iterations: int | None, iterations_per_epoch: int) -> int:
    """How many validation batches each epoch runs (0 without a validation sampler)."""
    if iterations is not None and (isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0):
        raise TrainingError(f"validation_iterations is {iterations!r}; expected an integer >= 0 or None")
    if validation is None:
        if iterations:
            raise TrainingError(f"validation_iterations is {iterations} but no validation sampler was given; "
                                "pass validation=PatchSampler(...) over the validation cases, or 0")
        return 0
    return default_validation_iterations(iterations_per_epoch) if iterations is None else iterations


def _class_names(names: Sequence[str] | None, n_foreground: int) -> list[str]:
    if names is None:
        return [str(label) for label in range(1, n_foreground + 1)]
    if len(names) != n_foreground:
        raise TrainingError(f"class_names {list(names)} name {len(names)} classes; the network predicts "
                            f"{n_foreground} foreground classes")
    return [str(name) for name in names]


def _stop_workers(batches) -> None:
    """Stop a DataLoader iterator's worker processes now (not when a traceback releases it)."""
    shutdown = getattr(batches, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()
