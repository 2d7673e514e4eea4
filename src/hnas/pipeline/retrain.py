"""`hnas train --run RUN` without --folds: train a run's incumbent (or any trial) from scratch for a full budget."""

from __future__ import annotations

from pathlib import Path

from hnas.pipeline.layout import RunFolder
from hnas.pipeline.progress import TrainingProgress
from hnas.pipeline.run import check_rebuildable, pick_trial, resolve, stored_settings
from hnas.search import Trial
from hnas.train import Result, train_fold


def retrain(run_dir: Path, epochs: int, trial_id: int | None = None) -> tuple[Trial, Result]:
    """Train the incumbent (or ``trial_id``) of a run from scratch for ``epochs`` into RUN/retrain/."""
    settings = stored_settings(run_dir)
    trial = pick_trial(run_dir, trial_id)  # a broken run is refused before the dataset is planned
    setup = resolve(settings)
    check_rebuildable(run_dir, setup.grammar, f"trial {trial.trial_id}'s network")
    out = RunFolder(run_dir).retrain(trial.trial_id, epochs)
    progress = TrainingProgress(f"retrain trial {trial.trial_id}")
    try:
        return trial, train_fold(dict(trial.config), epochs, out, setup=setup.train_setup(run_dir), **progress.hooks())
    finally:
        progress.close()
