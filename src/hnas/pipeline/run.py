"""A search run's settings (run.json) and everything they resolve to: dataset, scale preset, plans, grammar, space.

Every later step (search, resume, retrain, cross-validation, find-best, export) starts from
the settings a run folder stores, so it rebuilds the same networks the search trained.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from hnas.data import load_dataset
from hnas.data.cache import builtin_dataset, cache_dir, fingerprint_of
from hnas.data.dataset import content_digest, locate_dataset
from hnas.data.splits import N_FOLDS, load_splits
from hnas.errors import DatasetError, SearchError
from hnas.grammar import grammar_hash, make_grammar
from hnas.pipeline.layout import RunFolder, stored_splits
from hnas.pipeline.spaces import PIPELINE_SPACES, SPACES, run_space
from hnas.planning import Plan, make_plan
from hnas.search import SearchSpace, Trial, load_run
from hnas.train import ScalePreset, TrainSetup
from hnas.train import preset as scale_preset

BUILTIN_VALIDATION_CASES = 2
DEFAULT_BUDGET = {"cpu": 3.0, "nnunet": 22.0}  # in max-fidelity evaluations (nnunet: one paper round)
#: Settings a resumed run must share with its run.json; the others (limits, workers, scheduler) may change.
RESUME_CONTRACT = ("max_stages", "space", "optimizer", "confidence", "preset", "min_epochs", "max_epochs", "eta",
                   "iterations_per_epoch", "fold", "seed", "warm_start", "gpu_memory", "compile")


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
    dataset_digest: str | None = None  # the dataset's content when the run began (run.json; None before 2026-12)
    splits: str | None = None  # a splits_final.json given with --splits (copied into the run folder)
    # --prior-from RUN: the centres taken from RUN's incumbent (pipeline/transfer.py); not hashed (a dict), compared
    prior_from: dict | None = field(default=None, hash=False)
    warm_start: list | None = field(default=None, hash=False)  # --warm-start RUN...: the runs whose finished trials it imported (docs/warm-start.md)
    gpu_memory: float | None = None  # --gpu-memory GB (GiB): configurations estimated to need more are never trained
    compile: bool = False  # --compile: trials train torch.compile'd networks (hnas.train.compilation)
    # --preprocessing-workers N: processes preprocessing the cases (None: nnU-Net's 8, fewer on fewer cores);
    # in no cache key (the files are the same), so a resume may change it
    preprocessing_workers: int | None = None

    def __post_init__(self):
        if self.space not in SPACES:
            raise SearchError(f"unknown search space {self.space!r}; expected one of {list(SPACES)}")
        workers = self.preprocessing_workers
        if isinstance(workers, int) and not isinstance(workers, bool) and workers < 1:
            raise SearchError(f"preprocessing_workers is {workers!r}; expected a positive integer")

    def dataset_path(self) -> Path:
        """The dataset the run searches: the given folder, or the built-in synthetic data.

        A ``DatasetXXX_Name`` or id is looked up in $nnUNet_raw as nnU-Net does. run.json stores the
        absolute folder; runs written before that store it as typed, read from here.
        """
        if not self.dataset:
            return builtin_dataset()
        path = Path(self.dataset)
        return path if path.is_absolute() or path.exists() else locate_dataset(path)

    def identified(self, dataset: Path) -> "SearchSettings":
        """These settings with the dataset as an absolute path and its content digest, as run.json keeps them."""
        loaded = load_dataset(dataset)
        return replace(self, dataset=str(loaded.root) if self.dataset else None,
                       dataset_digest=content_digest(loaded),
                       splits=str(Path(self.splits).resolve()) if self.splits else None,
                       warm_start=[str(Path(run).resolve()) for run in self.warm_start] if self.warm_start else None)

    def save(self, run_dir: Path) -> None:
        RunFolder(run_dir).settings.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, run_dir: Path) -> "SearchSettings":
        path = RunFolder(run_dir).settings
        if path.is_dir():
            raise SearchError(f"{str(path)!r} is a folder; expected the settings file `hnas search` writes")
        if not path.is_file():
            raise SearchError(f"{str(run_dir)!r} is not an hnas run folder (no {path.name}); "
                              "expected the --run-dir of an `hnas search`")
        try:
            stored = json.loads(path.read_text())
            settings = cls(**stored)
        except (ValueError, TypeError, OSError) as error:  # not JSON, not an object, unknown keys, a folder
            raise SearchError(f"{str(path)!r} is not the {path.name} of an hnas search ({error}); expected the "
                              "settings file `hnas search` writes") from None
        _check_field_types(settings, path)
        if settings.prior_from is not None:
            from hnas.pipeline.transfer import check_record  # it reads runs with this module

            check_record(settings.prior_from, repr(str(path)))
        return settings


#: run.json's fields by the JSON types each may hold (None: may be null).
_FIELD_TYPES = {"dataset": (str, None), "max_stages": (int, None), "space": (str,), "optimizer": (str,),
                "confidence": (str,), "preset": (str,), "budget": (int, float, None), "time_limit": (int, float, None),
                "max_trials": (int, None), "min_epochs": (int, None), "max_epochs": (int, None), "eta": (int, None),
                "iterations_per_epoch": (int, None), "fold": (int,), "workers": (int,), "scheduler": (str, None),
                "seed": (int,), "dataset_digest": (str, None), "splits": (str, None),
                "prior_from": (dict, None), "warm_start": (list, None), "gpu_memory": (int, float, None),
                "compile": (bool,), "preprocessing_workers": (int, None)}


def _check_field_types(settings: SearchSettings, path: Path) -> None:
    """Refuse a hand-edited run.json whose values have the wrong JSON type (a traceback later, otherwise)."""
    for name, allowed in _FIELD_TYPES.items():
        value = getattr(settings, name)
        kinds = tuple(t for t in allowed if t is not None)
        if (value is None and None in allowed) or (isinstance(value, kinds) and (bool in kinds
                                                                                or not isinstance(value, bool))):
            continue
        words = {str: "a string", int: "an integer", float: "a number", dict: "an object", list: "a list of run folders",
                 bool: "true or false"}
        expected = " or ".join([words[t] for t in kinds]
                               + (["null"] if None in allowed else []))
        raise SearchError(f"{str(path)!r} has {name} {value!r}; expected {expected} (the value `hnas search` wrote)")
    if settings.warm_start is not None and not all(isinstance(run, str) for run in settings.warm_start):
        raise SearchError(f"{str(path)!r} has warm_start {settings.warm_start!r}; expected a list of run folders "
                          "(the value `hnas search` wrote)")


@dataclass(frozen=True)
class RunSetup:
    """Everything a run needs, derived from its settings."""

    settings: SearchSettings
    dataset: Path
    preset: ScalePreset
    plan: Plan  # preset applied
    grammar: str
    min_epochs: int
    max_epochs: int
    eta: int
    budget: float | None
    plan_2d: Plan | None = None  # pipeline spaces: nnU-Net's 2d plan, preset applied
    grammar_2d: str | None = None
    residual_plan: Plan | None = None  # nnU-Net's ResEnc M plan, preset applied
    splits: tuple | None = None  # the folds of --splits FILE (None: nnU-Net's default split)

    def train_setup(self, run_dir: Path) -> TrainSetup:
        """The trials' training setup: the run folder's own preset values and split (its copies, if any)."""
        preset = stored_preset(run_dir, self.preset)
        splits = stored_splits(run_dir, self.dataset) if RunFolder(run_dir).splits.is_file() else self.splits
        return TrainSetup(dataset=self.dataset, plan=self.plan, grammar=self.grammar,
                          cache_dir=cache_dir() / "preprocessed", fold=self.settings.fold,
                          iterations_per_epoch=preset.iterations_per_epoch, num_workers=preset.num_workers,
                          max_epochs=self.max_epochs, seed=self.settings.seed, overlap=preset.overlap,
                          validation_cases=preset.validation_cases, plan_2d=self.plan_2d,
                          grammar_2d=self.grammar_2d,
                          residual_plan=stored_residual_plan(run_dir, self.residual_plan), splits=splits,
                          compile=self.settings.compile, preprocessing_workers=self.settings.preprocessing_workers)

    def space(self) -> SearchSpace:
        return run_space(self.settings.space, self.grammar, self.settings.confidence, self.settings.prior_from)


def resolve(settings: SearchSettings) -> RunSetup:
    """Plan the dataset, pick the scale preset and build the grammar for ``settings``."""
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
    check_enough_cases(dataset, fingerprint.n_cases)
    plan = preset.apply(make_plan(fingerprint, settings.max_stages))
    residual_plan = preset.apply(make_plan(fingerprint, settings.max_stages, planner="resenc_m"))
    plan_2d = grammar_2d = None
    if settings.space in PIPELINE_SPACES:
        plan_2d = preset.apply(make_plan(fingerprint, dims=2))
        grammar_2d = make_grammar(plan_2d)
    min_epochs, max_epochs = preset.min_epochs, preset.max_epochs
    splits = load_splits(settings.splits, load_dataset(dataset).case_ids) if settings.splits else None
    budget = settings.budget
    if budget is None and settings.time_limit is None and settings.max_trials is None:
        budget = DEFAULT_BUDGET.get(preset.name, DEFAULT_BUDGET["nnunet"])
    return RunSetup(settings=settings, dataset=dataset, preset=preset, plan=plan, grammar=make_grammar(plan),
                    min_epochs=min_epochs, max_epochs=max_epochs, eta=preset.eta, budget=budget,
                    plan_2d=plan_2d, grammar_2d=grammar_2d, residual_plan=residual_plan, splits=splits)


def check_enough_cases(dataset: Path, n_cases: int) -> None:
    """Refuse before any trial: every trial would fail to split the cases into folds."""
    if n_cases < N_FOLDS:
        raise DatasetError(f"dataset {str(dataset)!r} has {n_cases} cases, too few for the {N_FOLDS} folds of "
                           f"nnU-Net's cross-validation that trials validate on; expected at least {N_FOLDS} cases")


def stored_preset(run_dir: Path, resolved: ScalePreset) -> ScalePreset:
    """The scale preset values a run's trials train and validate with: the run folder's own copy.

    A preset's defaults may change between hnas versions (the CPU preset's validation overlap did);
    a resumed run keeps the values it started with, so its trials stay comparable. Runs written
    before hnas stored them have none and take ``resolved``, today's values for the preset's name.
    """
    path = RunFolder(run_dir).preset
    return ScalePreset.load(path) if path.is_file() else resolved


#: run.json fields the search resolved into preset.json: an edit of either afterwards makes them disagree.
_PRESET_FIELDS = ("iterations_per_epoch", "min_epochs", "max_epochs", "eta")


def stored_settings(run_dir: Path) -> SearchSettings:
    """run.json as the later steps rebuild a run from, checked against the preset values the search trained with.

    ``auto`` becomes the preset the search resolved (preset.json's name), so a run searched on a GPU
    (nnunet) is rebuilt alike on a machine without one; a run.json edited after the search (another
    preset, other iterations or epochs) is refused naming both values instead of training other networks.
    """
    settings = SearchSettings.load(run_dir)
    path = RunFolder(run_dir).preset
    if not path.is_file():  # runs written before hnas stored preset.json
        return settings
    stored = ScalePreset.load(path)
    if settings.preset == "auto":
        settings = replace(settings, preset=stored.name)
    differences = [] if scale_preset(settings.preset).name == stored.name else [
        f"preset {settings.preset!r} vs {stored.name!r}"]
    differences += [f"{name} {getattr(settings, name)!r} vs {getattr(stored, name)!r}" for name in _PRESET_FIELDS
                    if getattr(settings, name) is not None and getattr(settings, name) != getattr(stored, name)]
    if differences:
        folder = RunFolder(run_dir)
        raise SearchError(f"{str(folder.settings)!r} disagrees with {str(path)!r}, the values the search trained "
                          f"with ({'; '.join(differences)}, run.json vs {path.name}); it was edited after the search: "
                          "restore the values the search wrote")
    return settings


def stored_residual_plan(run_dir: Path, planned: Plan | None) -> Plan | None:
    """The ResEnc M plan a run's residual encoders train with: the run folder's own copy.

    Runs written before hnas planned residual encoders separately have none, and keep training
    them with the default plan's patch and batch, as their earlier trials did.
    """
    path = RunFolder(run_dir).residual_plan
    return Plan.load(path) if path.is_file() else None


def stored_plans(run_dir: Path) -> tuple[Plan, str, Plan | None, str | None]:
    """``(plan, grammar, plan_2d, grammar_2d)`` a run's networks are built on (2D ones: pipeline spaces only)."""
    folder = RunFolder(run_dir)
    plan_2d = Plan.load(folder.plan_2d) if folder.plan_2d.is_file() else None
    grammar_2d = folder.grammar_2d.read_text() if folder.grammar_2d.is_file() else None
    return Plan.load(folder.plan), folder.grammar.read_text(), plan_2d, grammar_2d


def pick_trial(run_dir: Path, trial_id: int | None = None) -> Trial:
    """A run's incumbent, or its trial ``trial_id``."""
    summary = load_run(run_dir)
    if trial_id is None:
        if summary.incumbent is None:
            raise SearchError(f"run {str(run_dir)!r} has no finished trial yet")
        return summary.incumbent
    by_id = {t.trial_id: t for t in summary.history}
    if trial_id not in by_id:
        raise SearchError(f"run {str(run_dir)!r} has no trial {trial_id!r}; expected one of 0..{len(by_id) - 1}")
    return by_id[trial_id]


def check_rebuildable(run_dir: Path, grammar: str, what: str = "its networks") -> None:
    """Refuse to train a run's configurations when the data now plans another grammar than the search's."""
    if grammar_hash(RunFolder(run_dir).grammar.read_text()) != grammar_hash(grammar):
        raise SearchError(f"the dataset or preset of {str(run_dir)!r} changed since the search; cannot rebuild "
                          f"{what}")
