"""The training loop: nnU-Net's step (deep-supervised loss, gradient clipping at 12, AMP on CUDA).

A :class:`Trainer` owns the network, loss, optimizer and gradient scaler plus the epoch counter
and the training seconds spent so far; :meth:`Trainer.state_dict` holds only tensors and plain
values, so a checkpoint loads with ``torch.load(weights_only=True)``. Each epoch reseeds torch
from (seed, epoch) and takes its learning rate from (epoch, max_epochs), so continuing from a
checkpoint is the same computation as training in one go.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Callable

import torch
from torch import nn

from hnas.errors import TrainingError
from hnas.train.config import TrainConfig
from hnas.train.loader import PatchSampler, batch_loader
from hnas.train.losses import SegmentationLoss
from hnas.train.optim import learning_rate, make_optimizer, set_learning_rate

GRADIENT_CLIP = 12.0

#: ``on_iteration(done, total)``: called after every step of a ``fit`` with the iterations that
#: call has done and will do in all (a progress display's hook; it must not touch the training).
IterationCallback = Callable[[int, int], None]


def epoch_seed(seed: int, epoch: int) -> int:
    """Torch seed of an epoch (dropout etc.): a function of the run seed and the epoch only."""
    return (int(seed) * 1_000_003 + int(epoch)) % (2 ** 63 - 1)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Trainer:
    """Trains one network with one configuration; ``fit`` can be called again to continue."""

    def __init__(self, network: nn.Module, config: TrainConfig, *, n_outputs: int, device: torch.device | str,
                 max_epochs: int, seed: int = 0, amp: bool = True):
        self.device = torch.device(device)
        self.network = network.to(self.device)
        self.config = config
        self.max_epochs = int(max_epochs)
        self.seed = int(seed)
        self.loss = SegmentationLoss(config.loss, n_outputs)
        self.optimizer = make_optimizer(config, self.network.parameters())
        self.amp = bool(amp) and self.device.type == "cuda"
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed patch size: let cuDNN pick the fastest kernels
        self.scaler = torch.amp.GradScaler("cuda") if self.amp else None
        self.epoch = 0
        self.runtime = 0.0  # seconds of training, all fits (and earlier rungs) together
        self.train_losses: list[float] = []

    # ---------------------------------------------------------------- one step

    def step(self, image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """One optimizer step on a batch; returns the (detached) loss."""
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, enabled=self.amp):
            loss = self.loss(self.network(image), target)
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
            on_iteration: IterationCallback | None = None) -> None:
        """Train epochs ``self.epoch .. until_epoch - 1``; batch indices continue across calls.

        ``on_iteration`` lets a progress bar move during a trial, not only when it ends.
        """
        if until_epoch > self.max_epochs:
            raise TrainingError(f"cannot train to epoch {until_epoch}: the schedule ends at max_epochs="
                                f"{self.max_epochs}; expected epochs <= max_epochs")
        if until_epoch <= self.epoch:
            return
        self.network.train()
        self.network.decoder.deep_supervision = True
        started = time.perf_counter()
        loader = batch_loader(sampler, self.epoch * iterations_per_epoch, num_workers,
                              pin_memory=self.device.type == "cuda")
        batches = iter(loader)
        on_step = None
        if on_iteration is not None:
            done, total = itertools.count(1), (until_epoch - self.epoch) * iterations_per_epoch
            on_step = lambda: on_iteration(next(done), total)  # noqa: E731
        try:
            for epoch in range(self.epoch, until_epoch):
                self._train_epoch(batches, epoch, iterations_per_epoch, on_step)
        finally:
            synchronize(self.device)
            self.runtime += time.perf_counter() - started
            _stop_workers(batches)

    def _train_epoch(self, batches, epoch: int, iterations: int, on_step: Callable[[], None] | None) -> None:
        torch.manual_seed(epoch_seed(self.seed, epoch))
        set_learning_rate(self.optimizer, learning_rate(self.config, epoch, self.max_epochs))
        total = torch.zeros((), device=self.device)
        for _ in range(iterations):
            batch = next(batches)
            image = batch["image"].to(self.device, non_blocking=True)
            target = batch["label"].to(self.device, non_blocking=True)
            total += self.step(image, target)
            if on_step is not None:
                on_step()
        mean = float(total) / iterations
        if not math.isfinite(mean):
            raise TrainingError(f"the training loss became {mean} in epoch {epoch + 1} (config {self.config}); "
                                "the trial diverged")
        self.train_losses.append(mean)
        self.epoch = epoch + 1

    # ---------------------------------------------------------------- checkpoint state

    def state_dict(self) -> dict:
        return {
            "model": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "grad_scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": self.epoch,
            "runtime": self.runtime,
            "train_losses": list(self.train_losses),
            "seed": self.seed,
            "max_epochs": self.max_epochs,
        }

    def load_state_dict(self, state: dict) -> None:
        self.network.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])
        self.epoch = int(state["epoch"])
        self.runtime = float(state["runtime"])
        self.train_losses = [float(v) for v in state["train_losses"]]
        self.seed = int(state["seed"])


def _stop_workers(batches) -> None:
    """Stop a DataLoader iterator's worker processes now (not when a traceback releases it)."""
    shutdown = getattr(batches, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()
