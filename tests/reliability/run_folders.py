"""Run folders made without training: a real `hnas search` with the objective swapped for a tiny one.

Refusals of `hnas search` happen before the first trial, so these folders (run.json, plan.json,
grammar.lark, search.sqlite, trials/*/checkpoint.pt) are all the reliability tests need.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from hnas.pipeline import search as search_module
from hnas.pipeline.run import RunSetup, SearchSettings

CHECKPOINT = "checkpoint.pt"


def tiny_dataset(root: Path, n_cases: int = 5) -> Path:
    from hnas.data import make_synthetic_dataset

    return make_synthetic_dataset(root, n_cases=n_cases, shape=(24, 28, 26), seed=1)


def settings_for(dataset: Path, **changes) -> SearchSettings:
    base = SearchSettings(dataset=str(dataset), max_stages=2, space="hpo+hnas", optimizer="random",
                               confidence="medium", preset="cpu", max_trials=3, min_epochs=1, max_epochs=3, eta=3,
                               iterations_per_epoch=1, fold=0, seed=0)
    return replace(base, **changes)


class FakeObjective:
    """Stands in for TrainObjective: writes a checkpoint per trial and returns a deterministic loss."""

    def __init__(self, setup=None, *callbacks, **hooks):
        self.setup = setup

    def __call__(self, context):
        checkpoint = Path(context.trial_dir) / CHECKPOINT
        checkpoint.write_bytes(f"trial {context.trial_id} at {context.fidelity:g} epochs".encode())
        return {"loss": 1.0 / (1.0 + context.fidelity) + 0.01 * context.trial_id, "cost": float(context.fidelity),
                "omp_threads": os.environ.get("OMP_NUM_THREADS")}  # what a worker process was started with


def fake_training(patch: pytest.MonkeyPatch) -> None:
    """No training, no preprocessing: `hnas.pipeline.search.search` trains FakeObjective."""
    patch.setattr(search_module, "TrainObjective", FakeObjective)
    patch.setattr(search_module, "prepare", lambda setup: None)
    patch.setattr(RunSetup, "train_setup", lambda self, run_dir: None)


def make_stored_run(root: Path) -> tuple[Path, Path]:
    """(dataset, run folder) of a finished three-trial search."""
    dataset = tiny_dataset(root / "data")
    run_dir = root / "run"
    with pytest.MonkeyPatch.context() as patch:
        fake_training(patch)
        search_module.search(settings_for(dataset), run_dir, progress=False)
    return dataset, run_dir


def copy_run(run_dir: Path, target: Path) -> Path:
    shutil.copytree(run_dir, target)
    return target


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``folder``: its content hash and modification time."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of `hnas ARGV`; argparse's exit 2 counts like a returned code."""
    from hnas.cli import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err
