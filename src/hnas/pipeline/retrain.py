"""`hnas train --run RUN` without --folds: train a run's incumbent (or any trial) from scratch for a full budget."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from hnas.pipeline.layout import RunFolder
from hnas.pipeline.progress import TrainingProgress
from hnas.pipeline.run import check_rebuildable, pick_trial, resolve, stored_settings
from hnas.search import Trial
from hnas.train import Result, train_fold


def retrain(run_dir: Path, epochs: int, trial_id: int | None = None, *,
            compile: bool | None = None, preprocessing_workers: int | None = None) -> tuple[Trial, Result]:
    """Train the incumbent (or ``trial_id``) of a run from scratch for ``epochs`` into RUN/retrain/.

    ``compile``: torch.compile the network (None: as the search did, run.json's ``compile``).
    ``preprocessing_workers``: processes preprocessing the cases if needed (None: run.json's, else the default)."""
    settings = stored_settings(run_dir)
    trial = pick_trial(run_dir, trial_id)  # a broken run is refused before the dataset is planned
    setup = resolve(settings)
    check_rebuildable(run_dir, setup.grammar, f"trial {trial.trial_id}'s network")
    out = RunFolder(run_dir).retrain(trial.trial_id, epochs)
    progress = TrainingProgress(f"retrain trial {trial.trial_id}")
    try:
        train_setup = setup.train_setup(run_dir)
        if compile is not None:
            train_setup = replace(train_setup, compile=compile)
        if preprocessing_workers is not None:
            train_setup = replace(train_setup, preprocessing_workers=preprocessing_workers)
        return trial, train_fold(dict(trial.config), epochs, out, setup=train_setup, **progress.hooks())
    finally:
        progress.close()
