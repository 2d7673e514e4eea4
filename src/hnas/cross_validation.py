"""Cross-validate a search run's configurations and evaluate the models (nnU-Net's post-search steps).

Layout under a run folder (the contract shared with the ensembling code)::

    cv/<name>/model.json                      name, trial_id (None: default), config, epochs,
                                              iterations_per_epoch, folds
    cv/<name>/fold_<k>/checkpoint.pt          the trainer's checkpoint for fold k
    cv/<name>/fold_<k>/validation/<case>.nii.gz   label map in the original image geometry
    cv/<name>/fold_<k>/validation/<case>.npz      ``probabilities``: float16 softmax [K, *label shape]

``<name>`` is ``trial_<id:05d>_<E>ep`` (a trial's configuration, as `hnas train` names retrainings) or
``default_<E>ep`` (the search space's default configuration: nnU-Net's, with the plan's default
network). A fold whose checkpoint reached ``E`` epochs is not trained again, and a validation case
with both files is not predicted again, so an interrupted cross-validation resumes.
"""

from __future__ import annotations

import csv
import fcntl
import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from hnas.errors import DatasetError, SearchError
from hnas.train.evaluation import case_metrics, mean_dice, paired_test
from hnas.train.preprocessing import N_FOLDS

CV_DIR = "cv"
MODEL_FILE = "model.json"
TRAIN_LOCK = "train.lock"  # in a fold folder: held while one process trains and predicts that fold
MODEL_LOCK = "model.lock"  # in a model folder: held while one process updates model.json
ENSEMBLE_FOLD = "ensemble"
ENDINGS = (".nii.gz", ".nii")


@dataclass(frozen=True)
class ModelChoice:
    """One configuration to cross-validate: ``trial_id`` None is the search space's default."""

    trial_id: int | None
    config: dict[str, Any]

    def name(self, epochs: int) -> str:
        return f"default_{epochs}ep" if self.trial_id is None else f"trial_{self.trial_id:05d}_{epochs}ep"


# ---------------------------------------------------------------- choosing configurations


def _resolved(settings):
    """The run's setup, planned once per command (planning fingerprints the whole dataset)."""
    from hnas.workflow import cache_dir

    return _resolved_in(settings, str(cache_dir()))


@lru_cache(maxsize=4)
def _resolved_in(settings, cache: str):
    from hnas import runs

    return runs.resolve(settings)


def default_choice(run_dir: Path) -> ModelChoice:
    """The run's search space at its default: nnU-Net's hyperparameters and network."""
    from hnas import runs

    setup = _resolved(runs.SearchSettings.load(run_dir))
    return ModelChoice(None, dict(setup.space().default_config()))


def trial_choice(run_dir: Path, trial_id: int | None = None) -> ModelChoice:
    """A trial's configuration (the incumbent when ``trial_id`` is None)."""
    from hnas import runs

    trial = runs.pick_trial(run_dir, trial_id)
    if trial.state != "success":
        raise SearchError(f"trial {trial.trial_id} of {str(run_dir)!r} is {trial.state!r}; expected a finished trial")
    return ModelChoice(trial.trial_id, dict(trial.config))


def pareto_choices(run_dir: Path, k: int) -> list[ModelChoice]:
    """The first ``k`` trials of the Pareto front (1 - Dice vs runtime) at the highest fidelity reached, best first.

    Lower fidelities are left out: their Dice is not comparable with the full budget's (the
    incumbent rule), and cheap short trials would crowd the front.
    """
    from hnas.search import load_run, pareto_front

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


def check_folds(folds: Sequence[int]) -> list[int]:
    for fold in folds:
        if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < N_FOLDS:
            raise SearchError(f"fold {fold!r} does not exist; expected integers in 0..{N_FOLDS - 1}")
    if len(set(folds)) != len(folds):
        raise SearchError(f"folds {list(folds)} repeat a fold; expected distinct folds")
    return sorted(folds)


def cross_validate(run_dir: str | Path, choices: Sequence[ModelChoice], folds: Sequence[int], epochs: int, *,
                   iterations_per_epoch: int | None = None, workers: int = 1, log=print) -> list[Path]:
    """Train every choice on every fold for ``epochs`` and write its validation predictions; returns model folders.

    ``workers > 1`` trains that many (choice, fold) pairs at once in local processes, each with its
    share of the machine (one GPU each, or its share of the CPU cores; see runs.worker_environments).
    """
    from hnas import runs

    run_dir = Path(run_dir)
    folds = check_folds(list(folds))
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SearchError(f"workers is {workers!r}; expected a positive integer")
    setup = _resolved(runs.SearchSettings.load(run_dir))
    runs.check_rebuildable(run_dir, setup.grammar)
    base = setup.train_setup(run_dir)
    if iterations_per_epoch is not None:
        base = replace(base, iterations_per_epoch=iterations_per_epoch)
    if workers > 1:  # every refusal above (and a model folder of other settings) before any process starts
        for choice in choices:
            _model_record(run_dir / CV_DIR / choice.name(epochs), choice, epochs, base.iterations_per_epoch)
        return _cross_validate_in_processes(run_dir, choices, folds, epochs, iterations_per_epoch, workers)
    model_dirs = []
    for choice in choices:
        model_dir = run_dir / CV_DIR / choice.name(epochs)
        record = _model_record(model_dir, choice, epochs, base.iterations_per_epoch)
        for fold in folds:
            fold_dir = model_dir / f"fold_{fold}"
            with _training_lock(fold_dir):
                _train_if_needed(choice, epochs, fold_dir, replace(base, fold=fold), log)
                _add_fold(model_dir, record, fold)
                predict_validation(fold_dir, base.dataset, fold, log=log)
        model_dirs.append(model_dir)
    return model_dirs


def _cross_validate_in_processes(run_dir: Path, choices: Sequence[ModelChoice], folds: list[int], epochs: int,
                                 iterations_per_epoch: int | None, workers: int) -> list[Path]:
    """Each (choice, fold) in its own job, fold by fold, ``workers`` at a time; a failed job does not stop the others.

    Every worker slot is a one-process pool started with its environment, so a job that kills its
    process (out of memory) fails only itself; the fold locks and model.json's merge keep the
    folders consistent. Workers print their own progress lines.
    """
    from concurrent.futures import FIRST_COMPLETED, wait

    from hnas import runs
    from hnas.search.executors import single_process_pool

    jobs = [(choice, fold) for fold in folds for choice in choices]
    envs = runs.worker_environments(workers) or [{}] * workers
    pools = [single_process_pool(env) for env in envs]
    running, failures = {}, []
    try:
        while jobs or running:
            for slot in sorted(set(range(workers)) - {slot for slot, _ in running.values()}):
                if jobs:
                    choice, fold = jobs.pop(0)
                    future = pools[slot].submit(cross_validate, run_dir, [choice], [fold], epochs,
                                                iterations_per_epoch=iterations_per_epoch)
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
    return [run_dir / CV_DIR / choice.name(epochs) for choice in choices]


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
    """
    with open(model_dir / MODEL_LOCK, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # held for one read and one write: wait
        path = model_dir / MODEL_FILE
        stored = load_model_record(model_dir)["folds"] if path.is_file() else []
        record["folds"] = sorted(set(record["folds"]) | set(stored) | {fold})
        temporary = path.with_name(f".{MODEL_FILE}.{os.getpid()}")
        _write_json(temporary, record)
        os.replace(temporary, path)


def _model_record(model_dir: Path, choice: ModelChoice, epochs: int, iterations_per_epoch: int) -> dict:
    """model.json's content; an existing one must describe the same training (else the folds would mix)."""
    record = {"name": model_dir.name, "trial_id": choice.trial_id, "config": choice.config, "epochs": epochs,
              "iterations_per_epoch": iterations_per_epoch, "folds": []}
    path = model_dir / MODEL_FILE
    if path.is_file():
        stored = load_model_record(model_dir)
        same = {k: stored.get(k) for k in ("config", "epochs", "iterations_per_epoch", "trial_id")}
        wanted = json.loads(json.dumps({k: record[k] for k in same}))
        if same != wanted:
            raise SearchError(f"{str(path)!r} holds {same}; cannot add folds trained with {wanted} "
                              "(remove the folder or keep the settings)")
        record["folds"] = list(stored.get("folds", []))
    return record


def _train_if_needed(choice: ModelChoice, epochs: int, fold_dir: Path, setup, log) -> None:
    from hnas.train import checkpoint_path, load_checkpoint, train_fold

    path = checkpoint_path(fold_dir)
    if path.is_file() and int(load_checkpoint(path)["trainer"]["epoch"]) >= epochs:
        log(f"{fold_dir}: already trained {epochs} epochs, skipped")
        return
    result = train_fold(choice.config, epochs, fold_dir, setup=setup)
    log(f"{fold_dir}: trained {epochs} x {setup.iterations_per_epoch} iterations in {result.runtime:.1f} s, "
        f"Dice {result.mean_dice:.4f} on {result.validation_cases} validation cases")


def predict_validation(fold_dir: Path, dataset: str | Path, fold: int, *, log=print) -> Path:
    """Predict fold ``fold``'s validation cases from their raw files (label map + float16 softmax)."""
    from hnas.data import load_dataset, read_images, write_label_map
    from hnas.train import Predictor, fold_split

    data = load_dataset(dataset)
    out = Path(fold_dir) / "validation"
    out.mkdir(parents=True, exist_ok=True)
    predictor = None
    for case_id in fold_split(data.case_ids, fold)[1]:
        label_path, npz_path = out / f"{case_id}.nii.gz", out / f"{case_id}.npz"
        if label_path.is_file() and npz_path.is_file():
            continue
        predictor = predictor or Predictor(fold_dir)
        case = data.case(case_id)
        volume = read_images(case.image_files, case.channel_in_file)
        probabilities = predictor.probabilities(volume.array, volume.spacing)
        np.savez_compressed(npz_path, probabilities=probabilities.astype(np.float16))
        write_label_map(predictor.to_labels(probabilities), case.image_files[0], label_path)
    if predictor is not None:
        log(f"{fold_dir}: wrote validation predictions to {out}")
    return out


# ---------------------------------------------------------------- evaluation


def model_dirs(run_dir: str | Path, names: Sequence[str] | None = None) -> list[Path]:
    """The run's cross-validated model folders (all, or ``names`` in that order)."""
    root = Path(run_dir) / CV_DIR
    available = sorted(p.name for p in root.iterdir() if (p / MODEL_FILE).is_file()) if root.is_dir() else []
    if not names:
        if not available:
            raise SearchError(f"run {str(run_dir)!r} has no cross-validated models in {str(root)!r}; expected "
                              "`hnas train --run RUN --folds ...` first")
        return [root / n for n in available]
    missing = [n for n in names if n not in available]
    if missing:
        raise SearchError(f"run {str(run_dir)!r} has no cross-validated model {missing}; expected one of {available}")
    return [root / n for n in names]


def load_model_record(model_dir: Path) -> dict:
    """A model folder's model.json; a damaged one is named (not a traceback)."""
    path = Path(model_dir) / MODEL_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SearchError(f"{str(path)!r} cannot be read as JSON ({exc}); expected the model.json that "
                          "`hnas train --folds` writes") from exc
    folds = record.get("folds") if isinstance(record, dict) else None
    if not isinstance(folds, list) or not all(isinstance(f, int) and not isinstance(f, bool) for f in folds):
        raise SearchError(f"{str(path)!r} has folds {folds!r}; expected a JSON object whose folds are fold numbers")
    return record


def validation_rows(model_dir: Path, dataset: str | Path) -> list[dict]:
    """metrics.csv rows of a model's validation predictions against the dataset's labels."""
    from hnas.data import load_dataset

    data = load_dataset(dataset)
    record = load_model_record(model_dir)
    rows = []
    for fold in record["folds"]:
        for prediction_path in sorted((model_dir / f"fold_{fold}" / "validation").glob("*.nii.gz")):
            case_id = prediction_path.name[: -len(".nii.gz")]
            label_file = data.case(case_id).label_file
            rows += _case_rows(record["name"], str(fold), case_id, prediction_path, label_file, data.labels)
    if not rows:
        raise SearchError(f"model {str(model_dir)!r} has no validation predictions; expected "
                          "`hnas train --run RUN --folds ...` to have written them")
    return rows


def _case_rows(model: str, fold: str, case_id: str, prediction_path: Path, label_path: Path, labels) -> list[dict]:
    from hnas.data import read_label_map

    prediction, _ = read_label_map(prediction_path)
    truth, geometry = read_label_map(label_path)
    if prediction.shape != truth.shape:
        raise DatasetError(f"prediction {str(prediction_path)!r} has shape {prediction.shape}; its label "
                           f"{str(label_path)!r} has {truth.shape}; expected the same geometry")
    metrics = case_metrics(prediction, truth, labels, geometry.spacing)
    return [{"model": model, "fold": fold, "case": case_id, "class": name, "dice": m["dice"], "hd95": m["hd95"]}
            for name, m in metrics.items()]


class LabelledCase(NamedTuple):
    """One labelled case of a test folder; ``channel_in_file`` picks channels out of 4D (MSD) files."""

    case_id: str
    image_files: list[Path]
    label_file: Path
    channel_in_file: tuple[int | None, ...] | None = None


def read_test_set(test_dir: str | Path, labels: Sequence[tuple[str, int]] | None = None,
                  n_channels: int = 1) -> tuple[list[LabelledCase], tuple]:
    """``([LabelledCase], labels)`` of a labelled test folder.

    Accepted: nnU-Net's imagesTs/labelsTs (label names and channels from a dataset.json beside them,
    else ``labels`` and ``n_channels``: the model's) or a dataset folder in nnU-Net or MSD layout
    (imagesTr/labelsTr with dataset.json; MSD's 4D multi-channel files included).
    """
    from hnas.data import load_dataset
    from hnas.data.dataset import parse_labels, read_dataset_json
    from hnas.train.prediction import group_cases

    root = Path(test_dir)
    if (root / "imagesTs").is_dir() and (root / "labelsTs").is_dir():
        source = root / "dataset.json"
        if source.is_file():
            data = read_dataset_json(source)
            labels = parse_labels(data, source)
            n_channels = len(data.get("channel_names") or data.get("modality") or {"0": ""})
        elif labels is None:
            raise DatasetError(f"test folder {str(root)!r} has imagesTs/labelsTs but no dataset.json naming the labels")
        images = sorted(p for p in (root / "imagesTs").iterdir() if p.name.endswith(ENDINGS))
        cases = []
        for case_id, files in group_cases(images, n_channels).items():
            label = next((root / "labelsTs" / f"{case_id}{e}" for e in ENDINGS
                          if (root / "labelsTs" / f"{case_id}{e}").is_file()), None)
            if label is None:
                raise DatasetError(f"test case {case_id!r} has no label in {str(root / 'labelsTs')!r}")
            cases.append(LabelledCase(case_id, files, label))
        return cases, labels
    if (root / "dataset.json").is_file():
        data = load_dataset(root)
        return [LabelledCase(c.case_id, list(c.image_files), c.label_file, c.channel_in_file) for c in data.cases], \
            data.labels
    raise DatasetError(f"test folder {str(root)!r} has neither imagesTs/labelsTs nor a dataset.json; expected a "
                       "labelled nnU-Net test set or dataset folder")


def ensemble_test_rows(model_dir: Path, test_dir: str | Path, out_dir: Path, *, log=print) -> list[dict]:
    """Predict a labelled test folder as `hnas predict --model RUN/cv/<name>` does; rows with fold ``ensemble``.

    That is the mean softmax of the model's folds, post-processed when ``postprocessing.json`` says so.
    """
    from hnas.data import read_images, write_label_map
    from hnas.train.ensemble import load_models

    record = load_model_record(model_dir)
    ensemble = load_models([model_dir])
    cases, labels = read_test_set(test_dir, ensemble.labels, ensemble.n_channels)
    predictions = Path(out_dir) / record["name"]
    predictions.mkdir(parents=True, exist_ok=True)
    rows = []
    for case in cases:
        # always predicted: the model may have gained folds since the last call
        volume = read_images(case.image_files, case.channel_in_file)
        path = write_label_map(ensemble.segment(volume.array, volume.spacing), case.image_files[0],
                               predictions / f"{case.case_id}.nii.gz")
        rows += _case_rows(record["name"], ENSEMBLE_FOLD, case.case_id, path, case.label_file, labels)
    kind = "post-processed " if ensemble.postprocessing else ""
    log(f"{record['name']}: {kind}{len(ensemble.members)}-fold ensemble predicted {len(cases)} test cases into "
        f"{predictions}")
    return rows


# ---------------------------------------------------------------- summaries


def _mean_std(values: Iterable[float]) -> dict:
    kept = [v for v in values if not math.isnan(v)]
    if not kept:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(kept)), "std": float(np.std(kept)), "n": len(kept)}


def case_means(rows: Sequence[dict], model: str) -> dict[str, float]:
    """Mean foreground Dice per case id (nan classes excluded) of one model."""
    by_case: dict[str, dict[str, dict[str, float]]] = {}
    for row in rows:
        if row["model"] == model:
            by_case.setdefault(row["case"], {})[row["class"]] = {"dice": row["dice"]}
    return {case: mean_dice(metrics) for case, metrics in by_case.items()}


def summarize(rows: Sequence[dict]) -> dict:
    """Per model mean +- std (per class and overall, over cases and over folds); default vs each other model."""
    models = list(dict.fromkeys(row["model"] for row in rows))
    summary = {"models": {}, "pairs": [], "conventions": (
        "Dice of a class absent from prediction and truth is nan and excluded (nnU-Net); HD95 is nan when either "
        "mask is empty; overall Dice is the per-case mean over foreground classes, then mean +- std over cases; "
        "std is the population std (ddof 0)")}
    for model in models:
        mine = [r for r in rows if r["model"] == model]
        per_case = case_means(rows, model)
        folds = list(dict.fromkeys(r["fold"] for r in mine))
        fold_means = {f: _mean_std(case_means([r for r in mine if r["fold"] == f], model).values())["mean"]
                      for f in folds}
        classes = list(dict.fromkeys(r["class"] for r in mine))
        summary["models"][model] = {
            "cases": len(per_case), "folds": folds,
            "dice": _mean_std(per_case.values()),
            "hd95": _mean_std(r["hd95"] for r in mine),
            "dice_per_fold": fold_means,
            "dice_over_folds": _mean_std(v for v in fold_means.values() if v is not None),
            "per_class": {c: {"dice": _mean_std(r["dice"] for r in mine if r["class"] == c),
                              "hd95": _mean_std(r["hd95"] for r in mine if r["class"] == c)} for c in classes},
        }
    baseline = next((m for m in models if m.startswith("default_")), None)
    if baseline is not None:
        for other in models:
            if other != baseline:
                test = paired_test(case_means(rows, other), case_means(rows, baseline))
                summary["pairs"].append({"baseline": baseline, "model": other, "test": "wilcoxon signed-rank, "
                                         "two-sided, per-case mean Dice (model - baseline)", **test})
    return summary


def write_outputs(rows: Sequence[dict], out_dir: Path) -> dict:
    """metrics.csv and summary.json in ``out_dir``; returns the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["model", "fold", "case", "class", "dice", "hd95"])
        writer.writeheader()
        writer.writerows(rows)
    summary = summarize(rows)
    _write_json(out_dir / "summary.json", summary)
    return summary


def summary_table(summary: dict) -> str:
    """The default first, then the other models: Dice mean +- std, HD95, cases; then the paired tests."""
    names = sorted(summary["models"], key=lambda n: (not n.startswith("default_"), n))
    classes = list(dict.fromkeys(c for n in names for c in summary["models"][n]["per_class"]))
    header = ["model", "cases", "Dice (mean +- std)"] + [f"Dice {c}" for c in classes] + ["HD95 mm"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in names:
        model = summary["models"][name]
        cells = [name, str(model["cases"]), _pm(model["dice"])]
        cells += [_pm(model["per_class"].get(c, {}).get("dice", {"mean": None})) for c in classes]
        cells.append(_pm(model["hd95"], digits=2))
        lines.append("| " + " | ".join(cells) + " |")
    for pair in summary["pairs"]:
        if pair["p"] is None:
            lines.append(f"{pair['model']} vs {pair['baseline']}: no test ({pair['reason']})")
        else:
            lines.append(f"{pair['model']} vs {pair['baseline']}: Wilcoxon W = {pair['statistic']:g}, "
                         f"p = {pair['p']:.4g}, n = {pair['n']} cases")
    return "\n".join(lines)


def _pm(stats: dict, digits: int = 4) -> str:
    if stats.get("mean") is None:
        return "-"
    return f"{stats['mean']:.{digits}f} +- {stats['std']:.{digits}f}"


def evaluate_run(run_dir: str | Path, names: Sequence[str] | None = None, *, test_dir: str | Path | None = None,
                 out_dir: str | Path | None = None, log=print) -> tuple[dict, Path]:
    """`hnas evaluate`: metrics of the run's models on their validation folds or on ``test_dir``."""
    from hnas import runs

    run_dir = Path(run_dir)
    folders = model_dirs(run_dir, names)
    if out_dir is None:
        out_dir = run_dir / "evaluation" / ("validation" if test_dir is None else f"test_{Path(test_dir).name}")
    out_dir = Path(out_dir)
    if test_dir is None:
        dataset = runs.SearchSettings.load(run_dir).dataset_path()
        rows = [row for folder in folders for row in validation_rows(folder, dataset)]
    else:
        predictions = out_dir / "predictions"
        rows = [row for folder in folders for row in ensemble_test_rows(folder, test_dir, predictions, log=log)]
    return write_outputs(rows, out_dir), out_dir


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
