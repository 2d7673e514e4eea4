"""`hnas train --run RUN --folds ...`: cross-validate a run's configurations, nnU-Net's first post-search step.

Each chosen configuration (a trial's, or the search space's default) is trained on each fold
into ``RUN/cv/<name>/fold_<k>`` and predicts its fold's validation cases (label map and
softmax), the files :mod:`hnas.pipeline.evaluate` and :mod:`hnas.pipeline.find_best` read
(names: :mod:`hnas.pipeline.layout`). A fold whose checkpoint reached ``E`` epochs is not
trained again, and a validation case with both files is not predicted again, so an interrupted
cross-validation resumes; folds may run in parallel processes (one lock per fold folder).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, wait
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from hnas.data import load_dataset, read_images, write_label_map
from hnas.data.cache import cache_dir
from hnas.data.io import file_digest
from hnas.data.splits import N_FOLDS, default_splits, load_splits, split_of
from hnas.errors import SearchError, TrainingError
from hnas.pipeline.layout import (MODEL_FILE, MODEL_LOCK, TRAIN_LOCK, RunFolder, fold_folder, load_model_record,
                                  model_name, prediction_file, replace_fold_record, replace_model_record,
                                  require_folder, stored_splits, validation_folder, write_splits)
from hnas.pipeline.provenance import (case_inputs, check_dataset_unchanged, check_fold_record, checkpoint_matches,
                                      model_provenance, new_fold_record, plain, prediction_is_current,
                                      settings_differences)
from hnas.pipeline.run import check_rebuildable, pick_trial, resolve, stored_preset, stored_settings
from hnas.pipeline.progress import TrainingProgress
from hnas.pipeline.workers import worker_environments
from hnas.search import load_run, pareto_front
from hnas.search.executors import single_process_pool
from hnas.train import Predictor, checkpoint_path, load_checkpoint, train_fold


@dataclass(frozen=True)
class ModelChoice:
    """One configuration to cross-validate: ``trial_id`` None is the search space's default."""

    trial_id: int | None
    config: dict[str, Any]

    def name(self, epochs: int) -> str:
        return model_name(self.trial_id, epochs)


# ---------------------------------------------------------------- choosing configurations


def _resolved(settings):
    """The run's setup, planned once per command (planning fingerprints the whole dataset)."""
    return _resolved_in(settings, str(cache_dir()))


@lru_cache(maxsize=4)
def _resolved_in(settings, cache: str):
    return resolve(settings)


def default_choice(run_dir: Path) -> ModelChoice:
    """The run's search space at its default: nnU-Net's hyperparameters and network."""
    # nnU-Net's default, not a --prior-from run's transferred centre (which is the space's default there)
    setup = _resolved(replace(stored_settings(run_dir), prior_from=None))
    return ModelChoice(None, dict(setup.space().default_config()))


def trial_choice(run_dir: Path, trial_id: int | None = None) -> ModelChoice:
    """A trial's configuration (the incumbent when ``trial_id`` is None)."""
    trial = pick_trial(run_dir, trial_id)
    if trial.state != "success":
        raise SearchError(f"trial {trial.trial_id} of {str(run_dir)!r} is {trial.state!r}; expected a finished trial")
    return ModelChoice(trial.trial_id, dict(trial.config))


def pareto_choices(run_dir: Path, k: int) -> list[ModelChoice]:
    """The first ``k`` trials of the Pareto front (1 - Dice vs runtime) at the highest fidelity reached, best first.

    Lower fidelities are left out: their Dice is not comparable with the full budget's (the
    incumbent rule), and cheap short trials would crowd the front.
    """
    if k < 1:
        raise SearchError(f"--pareto is {k!r}; expected a positive number of configurations")
    successes = load_run(run_dir).successes
    if not successes:
        raise SearchError(f"run {str(run_dir)!r} has no finished trial yet")
    top = max(t.fidelity for t in successes)
    candidates = [t for t in successes if t.fidelity == top]
    front = sorted((candidates[i] for i in pareto_front([t.objectives for t in candidates])),
                   key=lambda t: (t.loss, t.trial_id))
    return [ModelChoice(t.trial_id, dict(t.config)) for t in front[:k]]


# ---------------------------------------------------------------- training


def distinct_choices(choices: Sequence[ModelChoice], epochs: int, log=print) -> list[ModelChoice]:
    """``choices`` without repeats: a configuration asked for twice (the incumbent is the default) trains once.

    Two names for one configuration would train the same network twice and then be compared as if
    they were two models; the later name is dropped, saying which model it is.
    """
    kept: dict[str, ModelChoice] = {}
    for choice in choices:
        key = json.dumps(plain(choice.config), sort_keys=True)
        first = kept.setdefault(key, choice)
        if first is not choice and first.name(epochs) != choice.name(epochs):
            log(f"{_describe(choice)} has the configuration of {_describe(first)}: cross-validated once, as "
                f"{first.name(epochs)}")
    return list(kept.values())


def _describe(choice: ModelChoice) -> str:
    return "the default configuration" if choice.trial_id is None else f"trial {choice.trial_id}"


def check_folds(folds: Sequence[int]) -> list[int]:
    for fold in folds:
        if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < N_FOLDS:
            raise SearchError(f"fold {fold!r} does not exist; expected integers in 0..{N_FOLDS - 1}")
    if len(set(folds)) != len(folds):
        raise SearchError(f"folds {list(folds)} repeat a fold; expected distinct folds")
    return sorted(folds)


def cross_validate(run_dir: str | Path, choices: Sequence[ModelChoice], folds: Sequence[int], epochs: int, *,
                   iterations_per_epoch: int | None = None, workers: int = 1, splits: str | Path | None = None,
                   terminal: bool | None = None, log=print, compile: bool | None = None,
                   preprocessing_workers: int | None = None) -> list[Path]:
    """Train every choice on every fold for ``epochs`` and write its validation predictions; returns model folders.

    ``workers > 1`` trains that many (choice, fold) pairs at once in local processes, each with its
    share of the machine (one GPU each, or its share of the CPU cores; see hnas.pipeline.workers).
    ``splits``: a splits_final.json for the folds (kept as RUN/cv/splits_final.json); without it the
    run's split (``hnas search --splits``) or nnU-Net's default. ``compile``: torch.compile the networks
    for training and validation prediction (None: as the search did, run.json's ``compile``); not a setting
    of the model (a rerun may change it), since it changes the speed, not the computation.
    """
    run_dir, folder = Path(run_dir), RunFolder(run_dir)
    folds = check_folds(list(folds))
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SearchError(f"workers is {workers!r}; expected a positive integer")
    settings = stored_settings(run_dir)
    setup = _resolved(settings)
    check_rebuildable(run_dir, setup.grammar)
    check_dataset_unchanged(run_dir, setup.dataset, settings.dataset_digest)
    require_folder(folder.cv, "the run's cross-validation folder")
    dataset = load_dataset(setup.dataset)
    fold_cases = _cross_validation_splits(run_dir, dataset, splits)
    base = replace(setup.train_setup(run_dir), splits=fold_cases)
    if iterations_per_epoch is not None:
        base = replace(base, iterations_per_epoch=iterations_per_epoch)
    if compile is not None:
        base = replace(base, compile=compile)
    if preprocessing_workers is not None:  # processes preprocessing a plan's cases if needed (None: run.json's)
        base = replace(base, preprocessing_workers=preprocessing_workers)
    provenance = model_provenance(run_dir, stored_preset(run_dir, setup.preset), setup.grammar, setup.dataset,
                                  fold_cases)
    # every refusal (a model folder of other settings included) before any training or process starts
    records = [_claim_model(folder.model(choice.name(epochs)), choice, epochs, base.iterations_per_epoch, provenance)
               for choice in choices]
    if splits is not None and not folder.cv_splits.is_file():
        write_splits(folder.cv_splits, fold_cases)  # the worker processes (and later steps) read it
    if workers > 1:
        return _cross_validate_in_processes(run_dir, choices, folds, epochs, iterations_per_epoch, workers,
                                            base.compile, preprocessing_workers)
    model_dirs = []
    for choice, record in zip(choices, records):
        model_dir = folder.model(choice.name(epochs))
        for fold in folds:
            fold_dir = require_folder(fold_folder(model_dir, fold), f"the folder of fold {fold}")
            with _training_lock(fold_dir):
                fold_record = check_fold_record(fold_dir, record, fold)
                _train_if_needed(choice, epochs, fold_dir, replace(base, fold=fold), log, fold_record, terminal)
                if fold_record is None:
                    fold_record = new_fold_record(record, fold, dataset, fold_dir / "checkpoint.pt", fold_cases)
                    replace_fold_record(fold_dir, fold_record)
                _add_fold(model_dir, record, fold)
                predict_validation(fold_dir, dataset, fold, fold_record, splits=fold_cases, log=log,
                                   compile=base.compile)
        model_dirs.append(model_dir)
    return model_dirs


def _cross_validation_splits(run_dir: Path, dataset, path: str | Path | None) -> tuple | None:
    """The folds to cross-validate on: ``path`` (checked), else RUN/cv's or the run's split (None: nnU-Net's).

    A split may be given once: it is refused when it differs from the one RUN/cv's models already
    use (their folds would validate on other cases than the new ones').
    """
    current = stored_splits(run_dir, dataset, cross_validation=True)
    if path is None:
        return current
    given = load_splits(path, dataset.case_ids)
    effective = current or default_splits(dataset.case_ids)
    folder = RunFolder(run_dir)
    models = sorted(p.name for p in folder.cv.iterdir() if p.is_dir()) if folder.cv.is_dir() else []
    if given != effective and (models or folder.cv_splits.is_file()):
        source = str(folder.cv_splits) if folder.cv_splits.is_file() else "the run's split"
        raise SearchError(f"--splits {str(path)!r} gives other folds than {source}, which the models {models} were "
                          "cross-validated on; expected the same split, or cross-validate in a new run")
    return given


def _cross_validate_in_processes(run_dir: Path, choices: Sequence[ModelChoice], folds: list[int], epochs: int,
                                 iterations_per_epoch: int | None, workers: int, compile: bool,
                                 preprocessing_workers: int | None = None) -> list[Path]:
    """Each (choice, fold) in its own job, fold by fold, ``workers`` at a time; a failed job does not stop the others.

    Every worker slot is a one-process pool started with its environment, so a job that kills its
    process (out of memory) fails only itself; the fold locks and model.json's merge keep the
    folders consistent. Workers print their own progress lines.
    """
    jobs = [(choice, fold) for fold in folds for choice in choices]
    envs = worker_environments(workers) or [{}] * workers
    pools = [single_process_pool(env) for env in envs]
    running, failures = {}, []
    try:
        while jobs or running:
            for slot in sorted(set(range(workers)) - {slot for slot, _ in running.values()}):
                if jobs:
                    choice, fold = jobs.pop(0)
                    future = pools[slot].submit(cross_validate, run_dir, [choice], [fold], epochs,
                                                iterations_per_epoch=iterations_per_epoch, compile=compile,
                                                preprocessing_workers=preprocessing_workers,
                                                terminal=False)  # lines: several processes share the terminal
                    running[future] = (slot, f"{choice.name(epochs)} fold {fold}")
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                slot, job = running.pop(future)
                try:
                    future.result()
                except Exception as error:  # a refused or crashed job: report it, keep the others going
                    failures.append(f"{job}: {type(error).__name__}: {error}")
                    pools[slot].shutdown(wait=False, cancel_futures=True)
                    pools[slot] = single_process_pool(envs[slot])
    finally:
        for pool in pools:
            pool.shutdown(wait=not running, cancel_futures=True)
    if failures:
        raise SearchError(f"{len(failures)} cross-validation job(s) failed: " + "; ".join(failures)
                          + " (the others finished; rerun to retry the failed ones)")
    return [RunFolder(run_dir).model(choice.name(epochs)) for choice in choices]


@contextmanager
def _training_lock(fold_dir: Path) -> Iterator[None]:
    """One process per fold folder, so folds can be cross-validated in parallel processes.

    ``flock`` on a file in the folder: the kernel drops it when the process ends, a kill included.
    A second process asking for the same fold is refused with the holder's pid instead of training
    it twice into the same checkpoint.
    """
    fold_dir.mkdir(parents=True, exist_ok=True)
    with open(fold_dir / TRAIN_LOCK, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise SearchError(f"{str(fold_dir)!r} is being trained by another process (pid {holder}); expected "
                              "each fold in one process: cross-validate other folds meanwhile, or wait") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield


def _add_fold(model_dir: Path, record: dict, fold: int) -> None:
    """Add ``fold`` to model.json, merged with the folds other processes recorded meanwhile.

    Processes cross-validating other folds of the same model write the same file: the update reads
    and replaces it under a lock, and the replacement is atomic, so no process drops another's fold.
    The stored settings are compared again under the lock (a process with other settings may have
    claimed the folder since this one started).
    """
    with _model_lock(model_dir):
        stored = load_model_record(model_dir) if (model_dir / MODEL_FILE).is_file() else None
        if stored is not None:
            _refuse_other_settings(model_dir, stored, record)
        record["folds"] = sorted(set(record["folds"]) | set(stored["folds"] if stored else []) | {fold})
        replace_model_record(model_dir, record)


@contextmanager
def _model_lock(model_dir: Path) -> Iterator[None]:
    """One process at a time reads and replaces a model folder's model.json (held for one update: wait)."""
    require_folder(model_dir, "a model folder").mkdir(parents=True, exist_ok=True)
    with open(model_dir / MODEL_LOCK, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _claim_model(model_dir: Path, choice: ModelChoice, epochs: int, iterations_per_epoch: int,
                 provenance: dict) -> dict:
    """model.json's content, written now if the folder is new; an existing one must describe the same training.

    Checked and created under the model lock, so two processes started together with different
    settings cannot both take the folder: the second is refused, naming what differs.
    """
    record = plain({"name": model_dir.name, "trial_id": choice.trial_id, "config": choice.config, "epochs": epochs,
                    "iterations_per_epoch": iterations_per_epoch, "folds": [], "provenance": provenance})
    with _model_lock(model_dir):
        if (model_dir / MODEL_FILE).exists():  # a folder of that name is refused by the reader, before any write
            stored = load_model_record(model_dir)
            _refuse_other_settings(model_dir, stored, record)
            record["folds"] = list(stored["folds"])
            if stored.get("provenance") is None:
                record["provenance"] = None  # an older folder keeps its (unrecorded) provenance
        else:
            replace_model_record(model_dir, record)
    return record


def _refuse_other_settings(model_dir: Path, stored: dict, wanted: dict) -> None:
    differences = settings_differences(stored, wanted)
    if differences:
        raise SearchError(f"{str(model_dir / MODEL_FILE)!r} holds folds trained with other settings ("
                          + "; ".join(differences) + "); cannot add folds to it: keep the stored settings, or "
                          "remove the folder")


def _train_if_needed(choice: ModelChoice, epochs: int, fold_dir: Path, setup, log, fold_record: dict | None,
                     terminal: bool | None = None) -> None:
    """Train the fold unless its checkpoint already has ``epochs`` (a rerun resumes, it does not start over).

    Progress: a bar with ETA and the epoch lines (``terminal`` None: a bar on a terminal, lines in a log).
    """
    path = checkpoint_path(fold_dir)
    if path.is_file() and int(load_checkpoint(path)["trainer"]["epoch"]) >= epochs:
        if not checkpoint_matches(fold_dir, fold_record):
            raise TrainingError(f"{str(path)!r} is not the checkpoint fold.json recorded when the fold was trained "
                                "(replaced or edited); remove the fold folder to train it again")
        log(f"{fold_dir}: already trained {epochs} epochs, skipped")
        return
    if fold_record is not None:  # recorded as trained, but the checkpoint is gone or short: the record is stale
        raise TrainingError(f"{str(fold_dir)!r} records a trained fold, but {str(path)!r} is missing or has fewer "
                            f"than {epochs} epochs; remove the fold folder to train it again")
    progress = TrainingProgress(f"{fold_dir.parent.name} fold {setup.fold}", terminal=terminal)
    try:
        result = train_fold(choice.config, epochs, fold_dir, setup=setup, **progress.hooks())
    finally:
        progress.close()
    log(f"{fold_dir}: trained {epochs} x {setup.iterations_per_epoch} iterations in {result.runtime:.1f} s, "
        f"Dice {result.mean_dice:.4f} on {result.validation_cases} validation cases")


def predict_validation(fold_dir: Path, dataset, fold: int, fold_record: dict, *, splits: tuple | None = None,
                       log=print, compile: bool = False) -> Path:
    """Predict fold ``fold``'s validation cases from their raw files (label map + float16 softmax).

    A case counts as predicted when fold.json records both files with the digests they still have
    and the digests of today's inputs; anything else (a half-written, edited or stale file) is
    predicted again. Each file is written under a temporary name and renamed, then recorded.
    """
    model_dir = Path(fold_dir).parent
    out = require_folder(validation_folder(model_dir, fold), "the fold's validation folder")
    if out.is_symlink():
        raise TrainingError(f"{str(out)!r} is a link (to {str(out.resolve())!r}); expected the fold's own validation "
                            "folder: predictions are never written through a link into other data")
    out.mkdir(parents=True, exist_ok=True)
    predictor, written = None, 0
    for case_id in split_of(dataset.case_ids, fold, splits)[1]:
        case = dataset.case(case_id)
        inputs = case_inputs(case)
        if prediction_is_current(fold_record["validation"].get(case_id), inputs, model_dir, fold, case_id):
            continue
        predictor = predictor or Predictor(fold_dir, compile=compile)
        volume = read_images(case.image_files, case.channel_in_file)
        probabilities = predictor.probabilities(volume.array, volume.spacing)
        npz_path = prediction_file(model_dir, fold, case_id, ".npz")
        label_path = prediction_file(model_dir, fold, case_id, ".nii.gz")
        _write_atomically(npz_path, lambda p: np.savez_compressed(p, probabilities=probabilities.astype(np.float16)))
        _write_atomically(label_path, lambda p: write_label_map(predictor.to_labels(probabilities),
                                                                case.image_files[0], p))
        fold_record["validation"][case_id] = {**inputs, ".nii.gz": file_digest(label_path),
                                              ".npz": file_digest(npz_path)}
        replace_fold_record(fold_dir, fold_record)
        written += 1
    if written:
        log(f"{fold_dir}: wrote {written} validation prediction(s) to {out}")
    return out


def _write_atomically(path: Path, write) -> None:
    """``write(temporary)`` then rename onto ``path``: a kill never leaves a half file under the real name."""
    if path.is_dir():
        raise TrainingError(f"{str(path)!r} is a folder; expected room for a validation prediction file")
    ending = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    temporary = path.with_name(f".{path.name[: -len(ending)]}.{os.getpid()}.tmp{ending}")
    write(temporary)
    os.replace(temporary, path)
