"""`hnas search`: start or resume a search in a run folder, checked before anything is written.

This is glue between :mod:`hnas.search` (which knows nothing of U-Nets) and :mod:`hnas.train`.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path

from hnas.data import load_dataset
from hnas.data.dataset import content_digest, locate_dataset
from hnas.data.splits import default_splits, load_splits, split_of
from hnas.errors import SearchError
from hnas.grammar import grammar_hash
from hnas.pipeline.layout import RunFolder, stored_splits, write_splits
from hnas.pipeline.memory import MemoryEstimator, check_memory_budget, describe_budget, memory_filter
from hnas.pipeline.progress import SearchProgressBar
from hnas.pipeline.run import RESUME_CONTRACT, RunSetup, SearchSettings, resolve, stored_preset, stored_settings
from hnas.pipeline.status import describe_trial
from hnas.pipeline.transfer import check_same_source, describe_record, prior_record
from hnas.pipeline.warm_start import check_warm_start
from hnas.pipeline.workers import describe_workers, worker_environments
from hnas.planning import Plan
from hnas.search import RunSummary
from hnas.search import run as run_search
from hnas.search.executors import validate_scheduler_address
from hnas.search.fidelity import FidelitySchedule
from hnas.search.optimizers import make_optimizer
from hnas.search.storage import RunLock, check_database, check_not_in_use
from hnas.train import TrainObjective, prepare

def default_run_dir(settings: SearchSettings) -> Path:
    dataset = Path(settings.dataset).name if settings.dataset else "synthetic"
    return Path("runs") / f"{dataset}_{settings.space.replace('+', '-')}_{settings.optimizer}_seed{settings.seed}"


def check_run_dir(run_dir: Path, settings: SearchSettings, resume: bool) -> None:
    """Refuse a run folder this search must not write, reading only (a refusal changes nothing).

    A new search needs a folder without an earlier search's database or checkpoints; a resume
    needs a stored run with a sound database and the same settings; neither may start while
    another process searches there.
    """
    folder = RunFolder(run_dir)
    _check_folder_writable(run_dir)
    check_not_in_use(run_dir)
    database = folder.database
    if not resume:
        if database.exists():
            raise SearchError(f"{str(run_dir)!r} already holds a search ({database.name}); pass --resume to continue "
                              "it or choose another --run-dir")
        if folder.trials.is_dir() and any(p.is_file() for p in folder.trials.rglob("*")):
            raise SearchError(f"{str(run_dir)!r} holds the {folder.trials.name}/ of an earlier search but no "
                              f"{database.name}; a new "
                              "search would overwrite their checkpoints: choose another --run-dir")
        return
    if not folder.settings.is_file() or not database.is_file():
        raise SearchError(f"{str(run_dir)!r} holds no search to resume (no {folder.settings.name} or "
                          f"{database.name}); expected "
                          "the --run-dir of an earlier `hnas search`, or start one without --resume")
    check_database(database)
    _check_same_settings(run_dir, SearchSettings.load(run_dir), settings)


#: Settings a resume may change: how long this call searches and where its trials run.
RESUME_MAY_CHANGE = ("budget", "time_limit", "max_trials", "workers", "scheduler", "preprocessing_workers")


def resumed_settings(run_dir: Path, given: dict) -> SearchSettings:
    """The settings to resume ``run_dir`` with: the stored ones, with the ``given`` flags checked against them.

    Only limits and workers (:data:`RESUME_MAY_CHANGE`) may differ; any other flag given again must
    match run.json, or the resume is refused naming each flag with its stored and given value. A
    dataset given again must be the stored folder (or, if that folder is gone, a copy with the same
    content). Nothing is written.
    """
    folder = RunFolder(run_dir)
    if not folder.settings.is_file() or not folder.database.is_file():
        raise SearchError(f"{str(run_dir)!r} holds no search to resume (no {folder.settings.name} or "
                          f"{folder.database.name}); expected the run folder of an earlier `hnas search`")
    stored = stored_settings(run_dir)
    unknown = sorted(set(given) - set(SearchSettings.__dataclass_fields__))
    if unknown:
        raise SearchError(f"unknown search settings {unknown}; expected names of run.json's fields")
    differences = [f"{_flag(name)} {given[name]!r} given, the run has {getattr(stored, name)!r}"
                   for name in RESUME_CONTRACT if name in given and given[name] != getattr(stored, name)
                   and not (name == "preset" and given[name] == "auto")]
    dataset = _resumed_dataset(stored, given.get("dataset"))
    if dataset is not None:
        differences.insert(0, dataset)
    if "splits" in given and _split_differs(run_dir, stored, given["splits"]):
        theirs = folder.splits.name if folder.splits.is_file() else "nnU-Net's default split"
        differences.append(f"--splits {given['splits']!r} given, its folds differ from the run's ({theirs})")
    if differences:
        raise SearchError(f"cannot resume {str(run_dir)!r}: " + "; ".join(differences) + " (run.json); leave "
                          "these flags out to take the stored values, or start a new search in another --run-dir")
    changes = {name: given[name] for name in RESUME_MAY_CHANGE if name in given}
    if "dataset" in given and not Path(stored.dataset or "").is_dir():
        changes["dataset"] = str(Path(given["dataset"]).resolve())  # the moved copy, checked by content
    return replace(stored, **changes, splits=None)  # the run folder's copy of the split is used


def _split_differs(run_dir: Path, stored: SearchSettings, given: str) -> bool:
    """Whether ``given``'s folds are not those the run trains on (its copy, or nnU-Net's default split)."""
    dataset = load_dataset(stored.dataset_path())
    current = stored_splits(run_dir, dataset) or default_splits(dataset.case_ids)
    return load_splits(given, dataset.case_ids) != current


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _resumed_dataset(stored: SearchSettings, given: str | None) -> str | None:
    """Why a dataset given with --resume is not the run's (None when it is, or none was given)."""
    if given is None:
        return None
    if stored.dataset is None:
        return f"--dataset {given!r} given, the run searched the built-in synthetic data"
    path = Path(given) if Path(given).exists() else locate_dataset(Path(given))
    if path.resolve() == Path(stored.dataset).resolve():
        return None
    if Path(stored.dataset).is_dir() or stored.dataset_digest is None:
        return f"--dataset {str(path.resolve())!r} given, the run searched {stored.dataset!r}"
    if content_digest(load_dataset(path)) != stored.dataset_digest:
        return (f"--dataset {str(path.resolve())!r} given, the run searched {stored.dataset!r} (gone) and the "
                "given folder holds other cases or labels")
    return None


def _check_folder_writable(run_dir: Path) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise SearchError(f"the run folder {str(run_dir)!r} is a file; expected a folder (or a path to create one)")
    existing = next(p for p in (run_dir, *run_dir.parents) if p.exists())
    if not existing.is_dir():
        raise SearchError(f"the run folder {str(run_dir)!r} cannot be created: {str(existing)!r} is a file, "
                          "not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SearchError(f"cannot write to the run folder {str(run_dir)!r}: {str(existing)!r} is read-only for "
                          "this user; choose a --run-dir you can write to")


def _check_same_settings(run_dir: Path, stored: SearchSettings, given: SearchSettings) -> None:
    resolved = stored_settings(run_dir)  # also refuses a run.json edited since the search; 'auto' as it resolved
    differences = [f"{name}: stored {getattr(stored, name)!r}, given {getattr(given, name)!r}"
                   for name in RESUME_CONTRACT
                   if getattr(given, name) not in (getattr(stored, name), getattr(resolved, name))]
    if differences:
        raise SearchError(f"cannot resume {str(run_dir)!r}: its settings differ from the stored ones ("
                          + "; ".join(differences) + "); pass the stored values, or start a new search in another "
                          "--run-dir")


def check_stored_plans(run_dir: Path, setup: RunSetup) -> None:
    """Refuse to resume when the data now plans other networks than the run's trials were built on."""
    folder = RunFolder(run_dir)
    plans = [(folder.plan, folder.grammar, setup.plan, setup.grammar)]
    if setup.plan_2d is not None:
        plans.append((folder.plan_2d, folder.grammar_2d, setup.plan_2d, setup.grammar_2d))
    if setup.residual_plan is not None and folder.residual_plan.is_file():
        plans.append((folder.residual_plan, folder.grammar, setup.residual_plan, setup.grammar))
    for plan_file, grammar_file, plan, grammar in plans:
        stored_plan = Plan.load(plan_file).to_dict() if plan_file.is_file() else {}
        stored_grammar = grammar_file.read_text() if grammar_file.is_file() else ""
        changed = sorted(key for key in set(stored_plan) | set(plan.to_dict())
                         if stored_plan.get(key) != plan.to_dict().get(key))
        if changed or grammar_hash(stored_grammar) != grammar_hash(grammar):
            raise SearchError(f"cannot resume {str(run_dir)!r}: the stored {plan_file.name} and {grammar_file.name} "
                              f"differ from the ones planned now (changed: {changed or ['grammar']}); the dataset, "
                              "--max-stages or the preset changed since the run started")


def prepare_run_dir(run_dir: Path, setup: RunSetup, resume: bool) -> None:
    """Write run.json, plan.json and grammar.lark of a new run.

    A resumed run keeps the ones it started with: they are its contract (checked, never rewritten).
    """
    if resume:
        check_stored_plans(run_dir, setup)
        return
    folder = RunFolder(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    setup.settings.identified(setup.dataset).save(run_dir)
    setup.plan.save(folder.plan)
    folder.grammar.write_text(setup.grammar)
    if setup.plan_2d is not None:
        setup.plan_2d.save(folder.plan_2d)
        folder.grammar_2d.write_text(setup.grammar_2d)
    if setup.residual_plan is not None:
        setup.residual_plan.save(folder.residual_plan)
    if setup.splits is not None:
        write_splits(folder.splits, setup.splits)
    setup.preset.save(folder.preset)


def check_schedule(setup: RunSetup) -> None:
    """Refuse, in the flags' words and before any file is written, epochs an optimizer cannot schedule.

    Multi-fidelity optimizers need at least two rungs: --max-epochs / --min-epochs must reach --eta.
    The optimizer is then built once as the search would build it, so no other refusal of the
    engine comes after run.json, plan.json and grammar.lark were written.
    """
    schedule = FidelitySchedule(setup.min_epochs, setup.max_epochs, setup.eta)
    optimizer = setup.settings.optimizer
    if optimizer != "random" and schedule.max_rung < 1:
        raise SearchError(f"--optimizer {optimizer} needs at least two rungs of epochs, but --max-epochs "
                          f"{setup.max_epochs:g} / --min-epochs {setup.min_epochs:g} = "
                          f"{setup.max_epochs / setup.min_epochs:g} is below --eta {setup.eta}; pass --min-epochs "
                          f"{math.floor(setup.max_epochs / setup.eta):g} or less, a larger --max-epochs, a smaller "
                          "--eta, or --optimizer random")
    make_optimizer(optimizer, setup.space(), min_fidelity=setup.min_epochs, max_fidelity=setup.max_epochs,
                   eta=setup.eta, seed=setup.settings.seed)


def search(settings: SearchSettings, run_dir: Path, *, resume: bool = False, progress: bool = True,
           executor: str | None = None, prior_from: Path | None = None) -> RunSummary:
    """Run (or resume) a search; returns the engine's RunSummary.

    Everything that can refuse (scheduler address, run folder, stored run and settings, dataset)
    is checked before the folder is written, so a refused call leaves it as it was. The run's
    lock is held from the first write to the end.
    """
    run_dir = Path(run_dir)
    if settings.scheduler is not None:
        validate_scheduler_address(settings.scheduler)
    check_run_dir(run_dir, settings, resume)
    setup = resolve(settings)
    if prior_from is not None:  # --prior-from RUN: centres from RUN's incumbent, kept in run.json (docs/transfer.md)
        setup = _with_prior_from(setup, Path(prior_from), run_dir, resume)
    check_schedule(setup)
    check_memory_budget(settings.gpu_memory, MemoryEstimator.of(setup), setup.space())  # --gpu-memory GB
    if resume:
        check_stored_plans(run_dir, setup)
    else:
        check_warm_start(setup)  # --warm-start runs of the same problem, read before anything is written
    with RunLock(run_dir):
        check_run_dir(run_dir, settings, resume)  # again with the lock: another search may have begun meanwhile
        prepare_run_dir(run_dir, setup, resume)
        return _search(setup, run_dir, resume=resume, progress=progress, executor=executor)


def _with_prior_from(setup: RunSetup, source: Path, run_dir: Path, resume: bool) -> RunSetup:
    """A new run's setup with its prior centred on ``source``'s incumbent; a resume keeps its stored centres."""
    if resume:
        check_same_source(setup.settings.prior_from, source, run_dir)
        return setup
    record = prior_record(source, setup.settings.space, setup.grammar, setup.settings.confidence)
    return replace(setup, settings=replace(setup.settings, prior_from=record))


def _search(setup: RunSetup, run_dir: Path, *, resume: bool, progress: bool, executor: str | None) -> RunSummary:
    """The search itself, in a checked and locked run folder."""
    settings = setup.settings
    train_setup = setup.train_setup(run_dir)
    preset = stored_preset(run_dir, setup.preset)
    print(preset.describe(setup.plan))
    changed = preset.differences(setup.preset)
    if changed:
        print(f"  (this run keeps the values it started with; today's {preset.name!r} preset differs: "
              + ", ".join(changed) + ")")
    print(validation_cost(setup, preset, stored_splits(run_dir, setup.dataset) or setup.splits))
    print(f"search: space {settings.space}, optimizer {settings.optimizer}, epochs {setup.min_epochs}..{setup.max_epochs}"
          f" (eta {setup.eta}), budget {_limits(setup)}, fold {settings.fold}, seed {settings.seed}, run {run_dir}")
    if settings.prior_from is not None:
        print(describe_record(settings.prior_from))
    if settings.compile:
        print("torch.compile: on (each trial's compile time is part of its measured runtime)")
    if settings.warm_start:
        print(f"warm start: {'imported' if resume else 'importing'} the finished trials of "
              f"{', '.join(map(str, settings.warm_start))} (not counted in the budget)")
    config_filter = None
    if settings.gpu_memory is not None:  # estimated on the plans the trials train on
        estimator = MemoryEstimator.for_run(setup, run_dir)
        config_filter = memory_filter(estimator, settings.gpu_memory)
        print(describe_budget(settings.gpu_memory, estimator, setup.space()))
    prepare(train_setup)
    if executor is None:
        executor = "dask" if (settings.scheduler or settings.workers > 1) else "serial"
    worker_env = None if executor == "serial" or settings.scheduler else worker_environments(settings.workers)
    if worker_env:
        print(f"workers: {settings.workers} local processes, {describe_workers(worker_env)}")
    bar = SearchProgressBar(setup.budget, settings.max_trials) if progress else None
    in_process = bar is not None and executor == "serial"  # other processes cannot call back
    objective = TrainObjective(train_setup, bar.iteration if in_process else None,
                               on_validation=bar.validating if in_process else None)
    try:
        summary = run_search(
            objective, setup.space(), optimizer=settings.optimizer, budget=setup.budget,
            max_trials=settings.max_trials, time_limit=settings.time_limit, min_fidelity=setup.min_epochs,
            max_fidelity=setup.max_epochs, eta=setup.eta, run_dir=run_dir, seed=settings.seed, executor=executor,
            workers=settings.workers, scheduler=settings.scheduler, worker_env=worker_env, resume=resume,
            progress=bar.update if bar else None, warm_start=settings.warm_start, config_filter=config_filter)
    finally:
        if bar:
            bar.close()
    write_summary(summary, run_dir)
    return summary


def validation_cost(setup: RunSetup, preset, splits: tuple | None) -> str:
    """What validating one trial costs, said before the first trial spends it (a full sliding window per case).

    Estimated from the plan's median case: large volumes (CT, BraTS) make validation a real share of
    a trial, and the number is known before any training.
    """
    from hnas.train.prediction import window_count

    cases = len(split_of(load_dataset(setup.dataset).case_ids, setup.settings.fold, splits)[1])
    if preset.validation_cases:
        cases = min(cases, preset.validation_cases)
    plan = setup.plan
    windows = window_count(tuple(plan.median_shape), tuple(plan.patch_size), preset.overlap)
    patch = "x".join(map(str, plan.patch_size))
    return (f"validation per trial: {cases} case(s) x ~{windows:,} sliding windows of {patch} (the median case, "
            f"overlap {preset.overlap:g}) = ~{cases * windows:,} network passes after each rung's training")


def _limits(setup: RunSetup) -> str:
    parts = []
    if setup.budget is not None:
        parts.append(f"{setup.budget:g} x {setup.max_epochs} epochs")
    if setup.settings.time_limit is not None:
        parts.append(f"{setup.settings.time_limit:g} s")
    if setup.settings.max_trials is not None:
        parts.append(f"{setup.settings.max_trials} trials")
    return " / ".join(parts)


def summary_text(summary) -> str:
    lines = [f"# hnas run {summary.run_dir}", "",
             f"{len(summary.successes)} trials finished, {len(summary.failures)} failed, "
             f"budget used {summary.budget_used:.2f} max-fidelity evaluations ({summary.stop_reason}).", ""]
    imported = sum(t.imported is not None for t in summary.history)
    if imported:
        lines[2:2] = [f"Warm start: {imported} of these trials were imported from earlier runs (budget not counted).",
                      ""]
    if summary.incumbent is not None:
        lines += ["## Incumbent (best Dice at the highest fidelity reached)", "", "```",
                  describe_trial(summary.incumbent), "```", ""]
    if summary.pareto_front:
        lines += ["## Pareto front (1 - Dice vs training runtime)", "", "| trial | epochs | Dice | runtime s |",
                  "|---:|---:|---:|---:|"]
        lines += [f"| {t.trial_id} | {t.fidelity:g} | {1 - t.loss:.4f} | {t.cost:.1f} |" for t in summary.pareto_front]
    failures = summary.failures
    if failures:
        lines += ["", "## Failed trials", ""] + [f"- trial {t.trial_id}: {t.error}" for t in failures]
    return "\n".join(lines) + "\n"


def write_summary(summary, run_dir: Path) -> Path:
    path = RunFolder(run_dir).summary
    path.write_text(summary_text(summary))
    return path
