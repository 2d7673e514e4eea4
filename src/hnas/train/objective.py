"""The search objective: train a configuration for a number of epochs, validate, report.

``evaluate`` continues a promoted trial from its parent's checkpoint (model, optimizer, gradient
scaler, epoch counter, accumulated runtime), trains up to ``epochs`` in total, writes its own
checkpoint and validates on the fold's held-out cases with sliding-window inference.
``loss = 1 - mean foreground Dice``; ``runtime`` counts training seconds over all rungs
(validation excluded). :class:`TrainObjective` adapts it to the search engine's TrialContext.

Training can be watched: every epoch also scores unaugmented validation patches (pseudo Dice)
and rewrites ``training_log.txt`` and ``progress.png`` beside the checkpoint
(:mod:`hnas.train.training_log`); ``on_epoch`` hooks receive each epoch's record and
``on_validation`` announces the final sliding-window validation. Without hooks nothing is printed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from hnas.cfgunet import build, compile_architecture, cost
from hnas.data import Fingerprint
from hnas.errors import TrainingError
from hnas.planning.plan import Plan
from hnas.train.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from hnas.train.config import ARCHITECTURE_KEY, NetworkChoice, TrainConfig, network_choice, train_config
from hnas.train.inference import OVERLAP, validate
from hnas.train.loader import PatchSampler
from hnas.data.splits import N_FOLDS, split_of
from hnas.train.preprocessing import PreprocessedDataset, check_workers, default_workers, preprocess_dataset
from hnas.train.presets import ScalePreset
from hnas.train.trainer import EpochCallback, IterationCallback, Trainer, validation_seed
from hnas.train.training_log import EpochRecord, TrainingLog, default_validation_iterations

#: ``on_validation(n_cases)``: the final sliding-window validation of ``n_cases`` cases starts now.
ValidationCallback = Callable[[int], None]


@dataclass(frozen=True)
class TrainSetup:
    """Everything about a trial that the search does not choose (picklable for worker processes).

    ``plan`` is the plan networks are built on (a preset already applied); ``grammar`` the
    grammar its architectures come from. ``max_epochs`` is the maximum fidelity: schedules run
    over it. ``cache_dir`` holds the preprocessed data (shared by all trials).
    """

    dataset: str | Path
    plan: Plan
    grammar: str
    cache_dir: str | Path
    fold: int = 0
    iterations_per_epoch: int = 250
    batch_size: int | None = None  # None: the plan's
    num_workers: int = 2
    device: str = "auto"
    max_epochs: int = 1000
    seed: int = 0
    fingerprint: Fingerprint | None = None  # needed for CT channels (computed when absent)
    validation_cases: int | None = None  # None: every validation case of the fold
    # per-epoch pseudo-Dice batches of validation patches (training_log.txt): None: nnU-Net's
    # max(1, iterations_per_epoch // 5); 0: none. Not counted in the runtime; training is unchanged.
    validation_iterations: int | None = None
    overlap: float = OVERLAP
    amp: bool = True  # mixed precision, CUDA only
    # torch.compile the network for training and validation (hnas.train.compilation); its compile time is
    # part of the measured runtime, as in nnU-Net (which compiles on CUDA by default)
    compile: bool = False
    # processes preprocessing the cases (None: nnU-Net's 8, fewer on fewer cores); the cache's files
    # do not depend on it, so it is in no cache key
    preprocessing_workers: int | None = None
    # nnU-Net's 2d plan of the same data (preset applied) and its grammar: only the pipeline
    # spaces, whose network_dims may choose a 2D network, need them.
    plan_2d: Plan | None = None
    grammar_2d: str | None = None
    # nnU-Net's ResEnc M plan (preset applied): residual encoders train with its patch and batch.
    residual_plan: Plan | None = None
    # a user's split (splits_final.json) as ((training ids, validation ids), ...) per fold; None: nnU-Net's
    splits: tuple | None = None

    def __post_init__(self):
        if isinstance(self.fold, bool) or not isinstance(self.fold, int) or not 0 <= self.fold < N_FOLDS:
            raise TrainingError(f"fold {self.fold!r} does not exist; expected an integer in 0..{N_FOLDS - 1}")
        for name, low in (("iterations_per_epoch", 1), ("num_workers", 0), ("max_epochs", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise TrainingError(f"{name} is {value!r}; expected an integer >= {low}")
        if self.batch_size is not None and (not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise TrainingError(f"batch_size is {self.batch_size!r}; expected a positive integer or None")
        if self.validation_cases is not None and self.validation_cases < 1:
            raise TrainingError(f"validation_cases is {self.validation_cases!r}; expected a positive integer or None")
        if self.validation_iterations is not None and (isinstance(self.validation_iterations, bool) or not isinstance(
                self.validation_iterations, int) or self.validation_iterations < 0):
            raise TrainingError(f"validation_iterations is {self.validation_iterations!r}; expected an integer >= 0 "
                                "or None")
        if self.preprocessing_workers is not None:
            check_workers(self.preprocessing_workers)
        if not 0 <= self.overlap < 1:
            raise TrainingError(f"overlap is {self.overlap!r}; expected a number in [0, 1)")
        if not isinstance(self.compile, bool):
            raise TrainingError(f"compile is {self.compile!r}; expected True or False")
        self.torch_device()

    @classmethod
    def from_preset(cls, preset: ScalePreset, *, dataset: str | Path, plan: Plan, grammar: str,
                    cache_dir: str | Path, **overrides: Any) -> "TrainSetup":
        """A setup with ``preset`` applied to ``plan`` and its trainer fields (``overrides`` win)."""
        fields = {"iterations_per_epoch": preset.iterations_per_epoch, "num_workers": preset.num_workers,
                  "max_epochs": preset.max_epochs, "overlap": preset.overlap,
                  "validation_cases": preset.validation_cases}
        fields.update(overrides)
        return cls(dataset=dataset, plan=preset.apply(plan), grammar=grammar, cache_dir=cache_dir, **fields)

    def torch_device(self) -> torch.device:
        """The device trials train on; a CUDA device must exist on this machine (index included)."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError):
            raise TrainingError(f"device {self.device!r} is not a torch device; expected 'auto', 'cpu' or 'cuda'") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise TrainingError(f"device {self.device!r} was asked for but CUDA is not available; use 'cpu' or 'auto'")
        if device.type == "cuda" and device.index is not None:
            _check_cuda_index(self.device, device.index)
        return device

    @property
    def effective_batch_size(self) -> int:
        return self.batch_size or self.plan.batch_size

    @property
    def effective_validation_iterations(self) -> int:
        """Validation patch batches per epoch (nnU-Net's ratio unless set)."""
        if self.validation_iterations is None:
            return default_validation_iterations(self.iterations_per_epoch)
        return self.validation_iterations


def _check_cuda_index(name: str, index: int) -> None:
    """``cuda:N`` must name a visible GPU: torch would fail only at the first tensor moved there."""
    count = torch.cuda.device_count()
    if index >= count:
        raise TrainingError(f"device {name!r} asks for GPU {index} but {count} CUDA device(s) are visible "
                            f"(CUDA_VISIBLE_DEVICES counts); expected 'cuda' or 'cuda:0'..'cuda:{count - 1}'")


def release_cached_gpu_memory(device: torch.device) -> None:
    """Hand the CUDA caching allocator's unused blocks back to the driver after a trial.

    Workers that share a GPU each keep the peak memory of their last trial cached otherwise,
    and the next trial of another worker may run out of memory. Cheap, and a no-op off CUDA.
    """
    if device.type == "cuda":
        torch.cuda.empty_cache()


@dataclass(frozen=True)
class Result:
    """What one evaluation measured."""

    loss: float  # 1 - mean foreground Dice
    mean_dice: float
    dice_per_class: dict[str, float]
    runtime: float  # training seconds over all rungs
    epochs: int
    parameters: int
    flops: int  # forward FLOPs on one patch
    train_loss: float | None  # mean training loss of the last epoch
    architecture: str
    checkpoint: Path
    validation_cases: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_objective(self) -> dict[str, Any]:
        """The dict the search stores: loss, cost (= runtime) and JSON-able extras."""
        return {
            "loss": self.loss, "cost": self.runtime, "dice": self.mean_dice,
            "dice_per_class": {k: (None if math.isnan(v) else v) for k, v in self.dice_per_class.items()},
            "runtime": self.runtime, "epochs": self.epochs, "parameters": self.parameters, "flops": self.flops,
            "train_loss": self.train_loss, "architecture": self.architecture, "checkpoint": str(self.checkpoint),
            "validation_cases": self.validation_cases, **self.extra,
        }


def prepare(setup: TrainSetup) -> PreprocessedDataset:
    """The setup's dataset preprocessed for its plan (once; later calls read the cache)."""
    return preprocess_dataset(setup.dataset, setup.plan, setup.cache_dir, fingerprint=setup.fingerprint,
                              workers=setup.preprocessing_workers or default_workers())


def evaluate(config: Mapping[str, Any], architecture: str | None, epochs: int, previous_checkpoint: str | Path | None,
             trial_dir: str | Path, *, setup: TrainSetup, on_iteration: IterationCallback | None = None,
             on_epoch: EpochCallback | None = None, on_validation: ValidationCallback | None = None) -> Result:
    """Train ``config`` up to ``epochs`` epochs in total (continuing ``previous_checkpoint``), then validate.

    ``architecture`` None takes it from the config (``architecture`` key or NAS keys) or uses
    nnU-Net's default network. Invalid values raise SearchSpaceError naming the key; a diverging
    run raises TrainingError. ``on_iteration(done, total)`` follows the training steps (Trainer.fit);
    ``on_epoch(record)`` gets each epoch's :class:`EpochRecord` after ``trial_dir``'s training_log.txt
    has it; ``on_validation(n_cases)`` is called just before the final sliding-window validation.
    """
    settings = train_config(config)
    choice = network_choice(config, setup.plan, setup.grammar, architecture, plan_2d=setup.plan_2d,
                            grammar_2d=setup.grammar_2d, residual_plan=setup.residual_plan)
    spec = compile_architecture(choice.grammar, choice.architecture, choice.plan, dropout_rate=choice.dropout_rate,
                                deep_supervision=True)
    epochs = _whole_epochs(epochs)
    device = setup.torch_device()
    data = prepare(replace(setup, plan=choice.plan))  # pipeline choices may change spacing and normalisation
    train_ids, validation_ids = split_of(data.case_ids, setup.fold, setup.splits)
    previous = load_checkpoint(previous_checkpoint) if previous_checkpoint is not None else None
    seed = int(previous["trainer"]["seed"]) if previous is not None else setup.seed
    torch.manual_seed(seed)
    trainer = Trainer(build(spec, device), settings, n_outputs=spec.n_stages - 1, device=device,
                      max_epochs=setup.max_epochs, seed=seed, amp=setup.amp, compile=setup.compile)
    if previous is not None:
        _check_continuation(previous, settings, choice, spec.to_json(), setup, epochs, previous_checkpoint)
        trainer.load_state_dict(previous["trainer"])
    sampler = PatchSampler(data, train_ids, choice.plan.patch_size, setup.effective_batch_size,
                           settings.foreground_oversampling, settings.aug_factor, seed)
    patches = _validation_patches(data, validation_ids, choice, settings, setup, seed)
    log = TrainingLog(trial_dir, _log_header(settings, choice, data, setup, seed,
                                             setup.effective_validation_iterations if patches else 0))

    def after_epoch(record: EpochRecord) -> None:
        log.update(trainer.history)
        if on_epoch is not None:
            on_epoch(record)

    trainer.fit(sampler, epochs, setup.iterations_per_epoch, setup.num_workers, on_iteration, validation=patches,
                validation_iterations=setup.effective_validation_iterations if patches else 0,
                class_names=[name for name, value in data.labels if value != 0], on_epoch=after_epoch)
    log.finish(trainer.history)
    saved = save_checkpoint(checkpoint_path(trial_dir), _payload(trainer, settings, choice, spec.to_json(), data, setup))
    validation_ids = validation_ids[: setup.validation_cases] if setup.validation_cases else validation_ids
    if on_validation is not None:
        on_validation(len(validation_ids))
    validation = validate(trainer.network, data, validation_ids, choice.plan.patch_size, device, overlap=setup.overlap,
                          batch_size=setup.effective_batch_size, amp=setup.amp, forward=trainer.forward)
    measured = cost(spec, tuple(choice.plan.patch_size))
    return Result(loss=1.0 - validation.mean_dice, mean_dice=validation.mean_dice,
                  dice_per_class=validation.dice_per_class, runtime=trainer.runtime, epochs=trainer.epoch,
                  parameters=int(measured.parameters), flops=int(measured.flops),
                  train_loss=trainer.train_losses[-1] if trainer.train_losses else None,
                  architecture=choice.architecture, checkpoint=saved, validation_cases=validation.n_cases)


def train_fold(config: Mapping[str, Any], epochs: int, out_dir: str | Path, *, setup: TrainSetup,
               architecture: str | None = None, on_iteration: IterationCallback | None = None,
               on_epoch: EpochCallback | None = None, on_validation: ValidationCallback | None = None) -> Result:
    """Train a configuration from scratch for ``epochs`` on ``setup.fold`` (e.g. a benchmark's baseline).

    The schedule runs over exactly ``epochs``, as a stand-alone nnU-Net training would. The hooks
    are :func:`evaluate`'s.
    """
    return evaluate(config, architecture, epochs, None, out_dir, setup=replace(setup, max_epochs=_whole_epochs(epochs)),
                    on_iteration=on_iteration, on_epoch=on_epoch, on_validation=on_validation)


def _validation_patches(data: PreprocessedDataset, validation_ids, choice: NetworkChoice, settings: TrainConfig,
                        setup: TrainSetup, seed: int) -> PatchSampler | None:
    """The per-epoch validation sampler: the fold's validation cases, training's patch rules, no
    augmentation (aug_factor 0), its own seed; None when there is nothing to validate."""
    if not validation_ids or setup.effective_validation_iterations == 0:
        return None
    return PatchSampler(data, validation_ids, choice.plan.patch_size, setup.effective_batch_size,
                        settings.foreground_oversampling, 0.0, validation_seed(seed))


def _log_header(settings: TrainConfig, choice: NetworkChoice, data: PreprocessedDataset, setup: TrainSetup, seed: int,
                n_validation: int) -> list[str]:
    """training_log.txt's first lines: what is trained, on what, with which schedule."""
    plan = choice.plan
    return [
        f"hnas training log: {data.dataset_name}, fold {setup.fold}",
        f"architecture: {choice.architecture}",
        f"configuration: {json.dumps(settings.to_dict(), sort_keys=True)}",
        f"plan: {plan.dims}D, patch {'x'.join(map(str, plan.patch_size))}, spacing {list(plan.spacing)}, "
        f"batch {setup.effective_batch_size}",
        f"schedule: {setup.max_epochs} epochs x {setup.iterations_per_epoch} training + {n_validation} validation "
        f"iterations (validation: patches, no augmentation), seed {seed}, device {setup.torch_device()}"
        + (", torch.compile" if setup.compile else ""),
    ]


@dataclass(frozen=True)
class IterationProgress:
    """Where a running trial's training is: handed to TrainObjective's ``on_iteration`` after every step."""

    trial_id: int
    epochs: int  # the fidelity the trial trains to
    iteration: int  # steps done in this trial (a promotion counts only its own)
    iterations: int  # steps this trial takes in all
    budget: float  # max-fidelity evaluations the trial adds to the search's budget


class TrainObjective:
    """The search engine's objective: ``objective(context) -> dict`` (picklable for worker processes).

    Continues from ``context.previous_trial_dir``'s checkpoint for promotions; the schedule runs
    over ``context.max_fidelity`` epochs. A new trial's seed is ``(setup.seed, trial_id)``-derived;
    a promotion keeps its parent's. ``on_iteration`` (an in-process progress display; None for
    worker processes, which cannot call back) gets an :class:`IterationProgress` after every step;
    likewise ``on_epoch(trial_id, record)`` after every epoch and ``on_validation(trial_id, n_cases)``
    before the final sliding-window validation. Each trial folder gets training_log.txt and
    progress.png whether or not hooks are given. After every trial, failed ones too, the CUDA
    cache is emptied (:func:`release_cached_gpu_memory`), for workers that share a GPU.
    """

    def __init__(self, setup: TrainSetup, on_iteration: Callable[[IterationProgress], None] | None = None,
                 on_epoch: Callable[[int, EpochRecord], None] | None = None,
                 on_validation: Callable[[int, int], None] | None = None):
        self.setup = setup
        self.on_iteration = on_iteration
        self.on_epoch = on_epoch
        self.on_validation = on_validation

    def __call__(self, context) -> dict[str, Any]:
        config = dict(context.config)
        architecture = config.pop(ARCHITECTURE_KEY, None)
        previous = None
        if getattr(context, "previous_trial_dir", None) is not None:
            previous = checkpoint_path(context.previous_trial_dir)
        setup = replace(self.setup, max_epochs=_whole_epochs(context.max_fidelity),
                        seed=self.setup.seed * 100_003 + int(context.trial_id))
        try:
            result = evaluate(config, architecture, _whole_epochs(context.fidelity), previous, context.trial_dir,
                              setup=setup, on_iteration=self._reporter(context),
                              on_epoch=_for_trial(self.on_epoch, context),
                              on_validation=_for_trial(self.on_validation, context))
        finally:  # a failed trial's cached blocks too (what its traceback still holds stays)
            release_cached_gpu_memory(setup.torch_device())
        return result.to_objective()

    def _reporter(self, context) -> IterationCallback | None:
        if self.on_iteration is None:
            return None
        added = context.fidelity - (getattr(context, "previous_fidelity", None) or 0.0)
        budget = added / context.max_fidelity

        def report(done: int, total: int) -> None:
            self.on_iteration(IterationProgress(int(context.trial_id), _whole_epochs(context.fidelity), done, total,
                                                budget))
        return report


def _for_trial(hook: Callable | None, context) -> Callable | None:
    """A per-trial hook: ``hook(trial_id, value)`` called as ``hook(value)``."""
    if hook is None:
        return None
    trial_id = int(context.trial_id)
    return lambda value: hook(trial_id, value)


def _whole_epochs(epochs) -> int:
    if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or not math.isfinite(epochs) \
            or epochs < 1 or abs(epochs - round(epochs)) > 1e-6:
        raise TrainingError(f"epochs is {epochs!r}; expected a whole number >= 1 (fidelity = epochs)")
    return int(round(epochs))


def _payload(trainer: Trainer, settings: TrainConfig, choice: NetworkChoice, spec_json: str,
             data: PreprocessedDataset, setup: TrainSetup) -> dict:
    return {
        "trainer": trainer.state_dict(),
        "config": settings.to_dict(),
        "architecture": choice.architecture,
        "spec": spec_json,
        "plan": choice.plan.to_json(),
        "normalization": [n.to_dict() for n in data.normalization],
        "labels": [[name, value] for name, value in data.labels],
        "dataset": data.dataset_name,
        "fold": setup.fold,
        "iterations_per_epoch": setup.iterations_per_epoch,
    }


def _check_continuation(previous: dict, settings: TrainConfig, choice: NetworkChoice, spec_json: str,
                        setup: TrainSetup, epochs: int, source) -> None:
    """A checkpoint continues only the same network and configuration, within the same schedule."""
    where = f"checkpoint {str(source)!r}"
    if previous["architecture"] != choice.architecture or previous["spec"] != spec_json:
        raise TrainingError(f"{where} holds architecture {previous['architecture']!r}; cannot continue it as "
                            f"{choice.architecture!r}")
    if previous["plan"] != choice.plan.to_json():
        raise TrainingError(f"{where} was trained on another plan (dimensionality, spacing or normalisation); "
                            f"cannot continue it on {choice.plan.dims}D spacing {choice.plan.spacing}")
    if previous["config"] != settings.to_dict():
        raise TrainingError(f"{where} was trained with {json.dumps(previous['config'])}; cannot continue it with "
                            f"{json.dumps(settings.to_dict())}")
    if int(previous["trainer"]["max_epochs"]) != setup.max_epochs:
        raise TrainingError(f"{where} follows a schedule over {previous['trainer']['max_epochs']} epochs; this run's "
                            f"max_epochs is {setup.max_epochs}")
    if int(previous["trainer"]["epoch"]) > epochs:
        raise TrainingError(f"{where} has already trained {previous['trainer']['epoch']} epochs; cannot continue "
                            f"it to only {epochs}")
    if previous["iterations_per_epoch"] != setup.iterations_per_epoch:
        raise TrainingError(f"{where} used {previous['iterations_per_epoch']} iterations per epoch; this run uses "
                            f"{setup.iterations_per_epoch}")
