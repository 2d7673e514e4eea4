"""A search run on disk: start or resume `hnas search`, inspect it, retrain its trials.

Layout of a run folder::

    run.json        the settings the run was started with (dataset, preset, space, optimizer, ...)
    plan.json       the plan networks are built on (the scale preset already applied)
    preset.json     the scale preset's resolved values (iterations, epochs, validation overlap, ...)
    grammar.lark    the grammar architectures come from
    plan_2d.json, grammar_2d.lark   nnU-Net's 2d plan and its grammar (pipeline spaces only)
    plan_resenc_m.json   nnU-Net's ResEnc M plan: residual encoders train with its patch and batch
    search.sqlite   the search engine's history (one row per trial, WAL)
    trials/NNNNN/   one folder per trial: its checkpoint
    summary.md      incumbent and Pareto front, rewritten when a search call ends

This module is glue between hnas.search (which knows nothing of U-Nets) and hnas.train.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from hnas.errors import DatasetError, SearchError
from hnas.grammar import grammar_hash, make_grammar
from hnas.grammar.plan import Plan

RUN_FILE = "run.json"
SPACES = ("hpo", "hpo+nas", "hpo+hnas", "hnas", "pipeline", "hpo+pipeline")
PIPELINE_SPACES = ("pipeline", "hpo+pipeline")  # their network_dims may pick nnU-Net's 2d plan
OPTIMIZERS = ("random", "hyperband", "priorband", "regularized-priorband", "bohb", "priorband-bo")
BUILTIN_VALIDATION_CASES = 2
DEFAULT_BUDGET = {"cpu": 3.0, "nnunet": 22.0}  # in max-fidelity evaluations (nnunet: one paper round)
#: Settings a resumed run must share with its run.json; the others (limits, workers, scheduler) may change.
RESUME_CONTRACT = ("max_stages", "space", "optimizer", "confidence", "preset", "min_epochs", "max_epochs", "eta",
                   "iterations_per_epoch", "fold", "seed")


@dataclass(frozen=True)
class SearchSettings:
    """What `hnas search` was asked to do; stored as run.json so a run can be rebuilt."""

    dataset: str | None = None  # None: the built-in synthetic data
    max_stages: int | None = None
    space: str = "hpo+hnas"
    optimizer: str = "regularized-priorband"
    confidence: str = "medium"
    preset: str = "auto"
    budget: float | None = None
    time_limit: float | None = None
    max_trials: int | None = None
    min_epochs: int | None = None
    max_epochs: int | None = None
    eta: int | None = None
    iterations_per_epoch: int | None = None
    fold: int = 0
    workers: int = 1
    scheduler: str | None = None
    seed: int = 0

    def __post_init__(self):
        if self.space not in SPACES:
            raise SearchError(f"unknown search space {self.space!r}; expected one of {list(SPACES)}")

    def dataset_path(self) -> Path:
        """The dataset the run searches: the given folder, or the built-in synthetic data."""
        from hnas.workflow import builtin_dataset

        return Path(self.dataset) if self.dataset else builtin_dataset()

    def save(self, run_dir: Path) -> None:
        (run_dir / RUN_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, run_dir: Path) -> "SearchSettings":
        path = Path(run_dir) / RUN_FILE
        if not path.is_file():
            raise SearchError(f"{str(run_dir)!r} is not an hnas run folder (no {RUN_FILE}); "
                              "expected the --run-dir of an `hnas search`")
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as error:  # not JSON, not an object, or unknown keys
            raise SearchError(f"{str(path)!r} is not the {RUN_FILE} of an hnas search ({error}); expected the "
                              "settings file `hnas search` writes") from None


@dataclass(frozen=True)
class RunSetup:
    """Everything a run needs, derived from its settings."""

    settings: SearchSettings
    dataset: Path
    preset: Any  # hnas.train.ScalePreset
    plan: Plan  # preset applied
    grammar: str
    min_epochs: int
    max_epochs: int
    eta: int
    budget: float | None
    plan_2d: Plan | None = None  # pipeline spaces: nnU-Net's 2d plan, preset applied
    grammar_2d: str | None = None
    residual_plan: Plan | None = None  # nnU-Net's ResEnc M plan, preset applied

    def train_setup(self, run_dir: Path):
        from hnas.train import TrainSetup
        from hnas.workflow import cache_dir

        preset = stored_preset(run_dir, self.preset)
        return TrainSetup(dataset=self.dataset, plan=self.plan, grammar=self.grammar,
                          cache_dir=cache_dir() / "preprocessed", fold=self.settings.fold,
                          iterations_per_epoch=preset.iterations_per_epoch, num_workers=preset.num_workers,
                          max_epochs=self.max_epochs, seed=self.settings.seed, overlap=preset.overlap,
                          validation_cases=preset.validation_cases, plan_2d=self.plan_2d,
                          grammar_2d=self.grammar_2d,
                          residual_plan=stored_residual_plan(run_dir, self.residual_plan))

    def space(self):
        from hnas.sampling import GrammarArchitecture
        from hnas.search import make_space

        architecture = None
        if self.settings.space in ("hpo+hnas", "hnas"):
            architecture = GrammarArchitecture(self.grammar, self.settings.confidence)
        return make_space(self.settings.space, architecture, confidence=self.settings.confidence)


def resolve(settings: SearchSettings) -> RunSetup:
    """Plan the dataset, pick the scale preset and build the grammar for ``settings``."""
    from hnas.grammar.planner import make_plan
    from hnas.train import preset as scale_preset
    from hnas.workflow import fingerprint_of

    dataset = settings.dataset_path()
    name = settings.preset
    if name == "auto" and settings.dataset is None:
        name = "cpu"  # the built-in data is a CPU-sized demo
    preset = scale_preset(name)
    if settings.dataset is None and preset.validation_cases is None:
        # The built-in cases are 44x144x144 voxels (several CPU patches): two of them keep validation within a
        # low rung's cost.
        preset = replace(preset, validation_cases=BUILTIN_VALIDATION_CASES)
    # Command-line fidelity settings override the preset, so the printed preset is what runs.
    preset = replace(preset, iterations_per_epoch=settings.iterations_per_epoch or preset.iterations_per_epoch,
                     min_epochs=settings.min_epochs or preset.min_epochs,
                     max_epochs=settings.max_epochs or preset.max_epochs, eta=settings.eta or preset.eta)
    fingerprint = fingerprint_of(dataset)  # read the images once, also when a 2D plan is needed
    _check_enough_cases(dataset, fingerprint.n_cases)
    plan = preset.apply(make_plan(fingerprint, settings.max_stages))
    residual_plan = preset.apply(make_plan(fingerprint, settings.max_stages, planner="resenc_m"))
    plan_2d = grammar_2d = None
    if settings.space in PIPELINE_SPACES:
        plan_2d = preset.apply(make_plan(fingerprint, dims=2))
        grammar_2d = make_grammar(plan_2d)
    min_epochs, max_epochs = preset.min_epochs, preset.max_epochs
    budget = settings.budget
    if budget is None and settings.time_limit is None and settings.max_trials is None:
        budget = DEFAULT_BUDGET.get(preset.name, DEFAULT_BUDGET["nnunet"])
    return RunSetup(settings=settings, dataset=dataset, preset=preset, plan=plan, grammar=make_grammar(plan),
                    min_epochs=min_epochs, max_epochs=max_epochs, eta=preset.eta, budget=budget,
                    plan_2d=plan_2d, grammar_2d=grammar_2d, residual_plan=residual_plan)


def _check_enough_cases(dataset: Path, n_cases: int) -> None:
    """Refuse before any trial: every trial would fail to split the cases into folds."""
    from hnas.train.preprocessing import N_FOLDS

    if n_cases < N_FOLDS:
        raise DatasetError(f"dataset {str(dataset)!r} has {n_cases} cases, too few for the {N_FOLDS} folds of "
                           f"nnU-Net's cross-validation that trials validate on; expected at least {N_FOLDS} cases")


def default_run_dir(settings: SearchSettings) -> Path:
    dataset = Path(settings.dataset).name if settings.dataset else "synthetic"
    return Path("runs") / f"{dataset}_{settings.space.replace('+', '-')}_{settings.optimizer}_seed{settings.seed}"


def check_run_dir(run_dir: Path, settings: SearchSettings, resume: bool) -> None:
    """Refuse a run folder this search must not write, reading only (a refusal changes nothing).

    A new search needs a folder without an earlier search's database or checkpoints; a resume
    needs a stored run with a sound database and the same settings; neither may start while
    another process searches there.
    """
    from hnas.search.storage import check_database, check_not_in_use, database_path

    _check_folder_writable(run_dir)
    check_not_in_use(run_dir)
    database = database_path(run_dir)
    if not resume:
        if database.exists():
            raise SearchError(f"{str(run_dir)!r} already holds a search ({database.name}); pass --resume to continue "
                              "it or choose another --run-dir")
        if (run_dir / "trials").is_dir() and any(p.is_file() for p in (run_dir / "trials").rglob("*")):
            raise SearchError(f"{str(run_dir)!r} holds the trials/ of an earlier search but no {database.name}; a new "
                              "search would overwrite their checkpoints: choose another --run-dir")
        return
    if not (run_dir / RUN_FILE).is_file() or not database.is_file():
        raise SearchError(f"{str(run_dir)!r} holds no search to resume (no {RUN_FILE} or {database.name}); expected "
                          "the --run-dir of an earlier `hnas search`, or start one without --resume")
    check_database(database)
    _check_same_settings(run_dir, SearchSettings.load(run_dir), settings)


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
    differences = [f"{name}: stored {getattr(stored, name)!r}, given {getattr(given, name)!r}"
                   for name in RESUME_CONTRACT if getattr(stored, name) != getattr(given, name)]
    if differences:
        raise SearchError(f"cannot resume {str(run_dir)!r}: its settings differ from the stored ones ("
                          + "; ".join(differences) + "); pass the stored values, or start a new search in another "
                          "--run-dir")


RESIDUAL_PLAN_FILE = "plan_resenc_m.json"
PRESET_FILE = "preset.json"


def stored_preset(run_dir: Path, resolved):
    """The scale preset values a run's trials train and validate with: the run folder's own copy.

    A preset's defaults may change between hnas versions (the CPU preset's validation overlap did);
    a resumed run keeps the values it started with, so its trials stay comparable. Runs written
    before hnas stored them have none and take ``resolved``, today's values for the preset's name.
    """
    from hnas.train import ScalePreset

    path = Path(run_dir) / PRESET_FILE
    return ScalePreset.load(path) if path.is_file() else resolved


def stored_residual_plan(run_dir: Path, planned: Plan | None) -> Plan | None:
    """The ResEnc M plan a run's residual encoders train with: the run folder's own copy.

    Runs written before hnas planned residual encoders separately have none, and keep training
    them with the default plan's patch and batch, as their earlier trials did.
    """
    path = Path(run_dir) / RESIDUAL_PLAN_FILE
    return Plan.load(path) if path.is_file() else None


def check_stored_plans(run_dir: Path, setup: RunSetup) -> None:
    """Refuse to resume when the data now plans other networks than the run's trials were built on."""
    plans = [("plan.json", "grammar.lark", setup.plan, setup.grammar)]
    if setup.plan_2d is not None:
        plans.append(("plan_2d.json", "grammar_2d.lark", setup.plan_2d, setup.grammar_2d))
    if setup.residual_plan is not None and (run_dir / RESIDUAL_PLAN_FILE).is_file():
        plans.append((RESIDUAL_PLAN_FILE, "grammar.lark", setup.residual_plan, setup.grammar))
    for plan_name, grammar_name, plan, grammar in plans:
        stored_plan = Plan.load(run_dir / plan_name).to_dict() if (run_dir / plan_name).is_file() else {}
        stored_grammar = (run_dir / grammar_name).read_text() if (run_dir / grammar_name).is_file() else ""
        changed = sorted(key for key in set(stored_plan) | set(plan.to_dict())
                         if stored_plan.get(key) != plan.to_dict().get(key))
        if changed or grammar_hash(stored_grammar) != grammar_hash(grammar):
            raise SearchError(f"cannot resume {str(run_dir)!r}: the stored {plan_name} and {grammar_name} differ "
                              f"from the ones planned now (changed: {changed or ['grammar']}); the dataset, "
                              "--max-stages or the preset changed since the run started")


def prepare_run_dir(run_dir: Path, setup: RunSetup, resume: bool) -> None:
    """Write run.json, plan.json and grammar.lark of a new run.

    A resumed run keeps the ones it started with: they are its contract (checked, never rewritten).
    """
    if resume:
        check_stored_plans(run_dir, setup)
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    setup.settings.save(run_dir)
    setup.plan.save(run_dir / "plan.json")
    (run_dir / "grammar.lark").write_text(setup.grammar)
    if setup.plan_2d is not None:
        setup.plan_2d.save(run_dir / "plan_2d.json")
        (run_dir / "grammar_2d.lark").write_text(setup.grammar_2d)
    if setup.residual_plan is not None:
        setup.residual_plan.save(run_dir / RESIDUAL_PLAN_FILE)
    setup.preset.save(run_dir / PRESET_FILE)


def search(settings: SearchSettings, run_dir: Path, *, resume: bool = False, progress: bool = True,
           executor: str | None = None):
    """Run (or resume) a search; returns the engine's RunSummary.

    Everything that can refuse (scheduler address, run folder, stored run and settings, dataset)
    is checked before the folder is written, so a refused call leaves it as it was. The run's
    lock is held from the first write to the end.
    """
    from hnas.search.executors import validate_scheduler_address
    from hnas.search.storage import RunLock

    run_dir = Path(run_dir)
    if settings.scheduler is not None:
        validate_scheduler_address(settings.scheduler)
    check_run_dir(run_dir, settings, resume)
    setup = resolve(settings)
    if resume:
        check_stored_plans(run_dir, setup)
    with RunLock(run_dir):
        check_run_dir(run_dir, settings, resume)  # again with the lock: another search may have begun meanwhile
        prepare_run_dir(run_dir, setup, resume)
        return _search(setup, run_dir, resume=resume, progress=progress, executor=executor)


def _search(setup: RunSetup, run_dir: Path, *, resume: bool, progress: bool, executor: str | None):
    """The search itself, in a checked and locked run folder."""
    from hnas.search import run as run_search
    from hnas.train import TrainObjective, prepare

    settings = setup.settings
    train_setup = setup.train_setup(run_dir)
    preset = stored_preset(run_dir, setup.preset)
    print(preset.describe(setup.plan))
    changed = preset.differences(setup.preset)
    if changed:
        print(f"  (this run keeps the values it started with; today's {preset.name!r} preset differs: "
              + ", ".join(changed) + ")")
    print(f"search: space {settings.space}, optimizer {settings.optimizer}, epochs {setup.min_epochs}..{setup.max_epochs}"
          f" (eta {setup.eta}), budget {_limits(setup)}, fold {settings.fold}, seed {settings.seed}, run {run_dir}")
    prepare(train_setup)
    if executor is None:
        executor = "dask" if (settings.scheduler or settings.workers > 1) else "serial"
    worker_env = None if executor == "serial" or settings.scheduler else worker_environments(settings.workers)
    if worker_env:
        print(f"workers: {settings.workers} local processes, {_describe(worker_env)}")
    bar = _ProgressBar(setup.budget, settings.max_trials) if progress else None
    on_iteration = bar.iteration if bar and executor == "serial" else None  # other processes cannot call back
    try:
        summary = run_search(
            TrainObjective(train_setup, on_iteration), setup.space(), optimizer=settings.optimizer, budget=setup.budget,
            max_trials=settings.max_trials, time_limit=settings.time_limit, min_fidelity=setup.min_epochs,
            max_fidelity=setup.max_epochs, eta=setup.eta, run_dir=run_dir, seed=settings.seed, executor=executor,
            workers=settings.workers, scheduler=settings.scheduler, worker_env=worker_env, resume=resume,
            progress=bar.update if bar else None)
    finally:
        if bar:
            bar.close()
    write_summary(summary, run_dir)
    return summary


def worker_environments(workers: int) -> list[dict[str, str]] | None:
    """Each local worker process's share of the machine, so parallel trials do not crowd one device.

    With CUDA, worker ``i`` sees one GPU (round-robin over the visible ones; without this every
    worker trains on GPU 0). On a CPU, each gets ``cores // workers`` torch threads (Dask starts
    workers with one). ``None`` for a single worker: it has the machine to itself.
    """
    if workers < 2:
        return None
    import torch

    if torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = ([d.strip() for d in visible.split(",") if d.strip()] if visible
               else [str(i) for i in range(torch.cuda.device_count())])
        return [{"CUDA_VISIBLE_DEVICES": ids[i % len(ids)]} for i in range(workers)]
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    return [{"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads} for _ in range(workers)]


def _describe(worker_env: list[dict[str, str]]) -> str:
    if "CUDA_VISIBLE_DEVICES" in worker_env[0]:
        return "on GPUs " + ", ".join(env["CUDA_VISIBLE_DEVICES"] for env in worker_env)
    return f"{worker_env[0]['OMP_NUM_THREADS']} torch thread(s) each"


def _limits(setup: RunSetup) -> str:
    parts = []
    if setup.budget is not None:
        parts.append(f"{setup.budget:g} x {setup.max_epochs} epochs")
    if setup.settings.time_limit is not None:
        parts.append(f"{setup.settings.time_limit:g} s")
    if setup.settings.max_trials is not None:
        parts.append(f"{setup.settings.max_trials} trials")
    return " / ".join(parts)


class _ProgressBar:
    """tqdm bar over the budget (or trials), showing trials, failures and the best Dice so far.

    It also moves with the running trial's training steps (``iteration``), so a trial of
    minutes does not look like a hang.
    """

    REDRAW_SECONDS = 0.5  # GPU steps come faster than a terminal needs redrawing

    def __init__(self, budget: float | None, max_trials: int | None):
        import time

        from tqdm.auto import tqdm

        total = budget if budget is not None else max_trials
        self.by_budget = budget is not None
        self.finished = 0.0  # budget (or trials) of the finished trials
        self.status = "trials 0 ok/0 failed, best Dice -"
        self.clock = time.monotonic
        self.drawn = self.clock()
        self.bar = tqdm(total=total, unit="budget" if self.by_budget else "trial",
                        bar_format="{l_bar}{bar}| {n:.2f}/{total_fmt} [{elapsed}<{remaining}{postfix}]")

    def update(self, progress) -> None:
        """A trial finished (the search engine's Progress)."""
        self.finished = progress.budget_used if self.by_budget else progress.finished + progress.failed
        best = "-" if progress.incumbent is None else f"{1 - progress.incumbent.loss:.3f}"
        self.status = f"trials {progress.finished} ok/{progress.failed} failed, best Dice {best}"
        self._draw(self.finished, self.status)

    def iteration(self, step) -> None:
        """A training step of the running trial (hnas.train.IterationProgress)."""
        share = step.budget if self.by_budget else 1.0
        if self.bar.total and self.finished + share > self.bar.total:
            # The search issues a last trial while budget is left, so it may end past the budget
            # (3.33 of 3.0): the bar grows to show that trial's steps instead of sitting at 100%.
            self.bar.total = round(self.finished + share, 2)  # tqdm prints the total as it is: 3.33, not 3.3333...
        if step.iteration < step.iterations and self.clock() - self.drawn < self.REDRAW_SECONDS:
            return
        self._draw(self.finished + share * step.iteration / step.iterations,
                   f"{self.status}; trial {step.trial_id} ({step.epochs} epochs): "
                   f"iteration {step.iteration}/{step.iterations}")

    def _draw(self, done: float, postfix: str) -> None:
        self.bar.n = min(done, self.bar.total) if self.bar.total else done
        self.bar.set_postfix_str(postfix, refresh=False)
        self.bar.refresh()
        self.drawn = self.clock()

    def close(self) -> None:
        self.bar.close()


def trial_row(trial) -> dict[str, Any]:
    extra = dict(trial.extra or {})
    return {"trial": trial.trial_id, "state": trial.state, "epochs": trial.fidelity, "rung": trial.rung,
            "dice": None if trial.loss is None else 1 - trial.loss, "runtime_s": trial.cost,
            "parameters": extra.get("parameters"), "sampler": trial.job.sampler, "parent": trial.parent_id,
            "error": trial.error}


def describe_trial(trial) -> str:
    config = {k: v for k, v in trial.config.items() if k != "architecture"}
    architecture = trial.config.get("architecture") or (trial.extra or {}).get("architecture", "(nnU-Net default)")
    dice = "-" if trial.loss is None else f"{1 - trial.loss:.4f}"
    cost = "-" if trial.cost is None else f"{trial.cost:.1f} s"
    return (f"trial {trial.trial_id} ({trial.state}, {trial.fidelity:g} epochs): Dice {dice}, training {cost}\n"
            f"  architecture: {architecture}\n  hyperparameters: {json.dumps(config, sort_keys=True, default=str)}")


def summary_text(summary) -> str:
    lines = [f"# hnas run {summary.run_dir}", "",
             f"{len(summary.successes)} trials finished, {len(summary.failures)} failed, "
             f"budget used {summary.budget_used:.2f} max-fidelity evaluations ({summary.stop_reason}).", ""]
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
    path = Path(run_dir) / "summary.md"
    path.write_text(summary_text(summary))
    return path


def status_text(run_dir: Path) -> str:
    """What `hnas status` prints: running, finished and failed trials and the best so far."""
    from hnas.search import load_run

    summary = load_run(run_dir)
    running = [t for t in summary.history if t.state == "pending"]
    lines = [f"run {run_dir}: {len(summary.successes)} finished, {len(summary.failures)} failed, "
             f"{len(running)} running or interrupted, budget used {summary.budget_used:.2f}"]
    for trial in running:
        lines.append(f"  running: trial {trial.trial_id} at {trial.fidelity:g} epochs (rung {trial.rung})")
    if summary.incumbent is not None:
        lines.append("best so far: " + describe_trial(summary.incumbent))
    for trial in summary.failures:
        lines.append(f"  failed: trial {trial.trial_id}: {trial.error}")
    return "\n".join(lines)


def pick_trial(run_dir: Path, trial_id: int | None = None):
    """A run's incumbent, or its trial ``trial_id``."""
    from hnas.search import load_run

    summary = load_run(run_dir)
    if trial_id is None:
        if summary.incumbent is None:
            raise SearchError(f"run {str(run_dir)!r} has no finished trial yet")
        return summary.incumbent
    by_id = {t.trial_id: t for t in summary.history}
    if trial_id not in by_id:
        raise SearchError(f"run {str(run_dir)!r} has no trial {trial_id!r}; expected one of 0..{len(by_id) - 1}")
    return by_id[trial_id]


def trial_network(run_dir: Path, trial_id: int | None = None):
    """``(trial, spec, plan)``: the network a run's trial trained, by the objective's own rule."""
    from hnas.cfgunet import compile_architecture
    from hnas.train.config import network_choice

    run_dir = Path(run_dir)
    missing = [name for name in ("plan.json", "grammar.lark", "search.sqlite") if not (run_dir / name).is_file()]
    if missing:
        raise SearchError(f"{str(run_dir)!r} is not an hnas run folder (missing {missing}); expected the "
                          "--run-dir of an `hnas search`")
    trial = pick_trial(run_dir, trial_id)
    plan, grammar = Plan.load(run_dir / "plan.json"), (run_dir / "grammar.lark").read_text()
    plan_2d = Plan.load(run_dir / "plan_2d.json") if (run_dir / "plan_2d.json").is_file() else None
    grammar_2d = (run_dir / "grammar_2d.lark").read_text() if (run_dir / "grammar_2d.lark").is_file() else None
    choice = network_choice(trial.config, plan, grammar, plan_2d=plan_2d, grammar_2d=grammar_2d,
                            residual_plan=stored_residual_plan(run_dir, None))
    spec = compile_architecture(choice.grammar, choice.architecture, choice.plan, dropout_rate=choice.dropout_rate,
                                deep_supervision=True)
    return trial, spec, choice.plan


def export_run(run_dir: Path, plans_json: Path, out_json: Path, *, trial_id: int | None = None,
               configuration_name: str = "3d_fullres_hnas", base_configuration: str = "3d_fullres") -> Path:
    """`hnas export-nnunet`: a run's incumbent (or trial) as a configuration of nnU-Net's plans."""
    run_dir = Path(run_dir)
    trial, spec, plan = trial_network(run_dir, trial_id)  # a broken run is refused before torch loads
    from hnas.cfgunet.nnunet_export import export_nnunet

    record = {
        "source": str(run_dir), "trial_id": trial.trial_id, "epochs": trial.fidelity,
        "dice": None if trial.loss is None else 1.0 - trial.loss, "runtime_s": trial.cost,
        "architecture": trial.config.get("architecture") or (trial.extra or {}).get("architecture"),
        "hyperparameters": {k: v for k, v in trial.config.items() if k != "architecture"},
        "grammar_sha256": grammar_hash((run_dir / "grammar.lark").read_text()),
        "note": "nnU-Net's default nnUNetTrainer trains with its own optimizer, schedule, loss and augmentation; "
                "'hyperparameters' are the searched values for a trainer that reads them",
    }
    return export_nnunet(spec, plans_json, out_json, configuration_name=configuration_name,
                         base_configuration=base_configuration, plan=plan, record=record)


def check_rebuildable(run_dir: Path, grammar: str, what: str = "its networks") -> None:
    """Refuse to train a run's configurations when the data now plans another grammar than the search's."""
    if grammar_hash((Path(run_dir) / "grammar.lark").read_text()) != grammar_hash(grammar):
        raise SearchError(f"the dataset or preset of {str(run_dir)!r} changed since the search; cannot rebuild "
                          f"{what}")


def retrain(run_dir: Path, epochs: int, trial_id: int | None = None):
    """Train the incumbent (or ``trial_id``) of a run from scratch for ``epochs`` (its full budget)."""
    settings = SearchSettings.load(run_dir)
    trial = pick_trial(run_dir, trial_id)  # a broken run is refused before torch loads
    from hnas.train import train_fold

    setup = resolve(settings)
    check_rebuildable(run_dir, setup.grammar, f"trial {trial.trial_id}'s network")
    out = run_dir / "retrain" / f"trial_{trial.trial_id:05d}_{epochs}ep"
    return trial, train_fold(dict(trial.config), epochs, out, setup=setup.train_setup(run_dir))
