"""`hnas evaluate`: per-case Dice and HD95 of a run's cross-validated models, default vs each other (Wilcoxon).

On the models' own validation folds (their saved label maps), or on a labelled test set that
each model's fold ensemble predicts, as `hnas predict --model RUN/cv/<name>` would.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from hnas.data import load_dataset, read_label_map
from hnas.data.dataset import parse_labels, read_dataset_json
from hnas.data.geometry import check_label_file, check_label_values, check_same_grid, check_same_labels
from hnas.errors import DatasetError, SearchError
from hnas.pipeline.layout import (EVALUATION_SUMMARY_FILE, METRICS_FILE, RunFolder, load_model_record, model_dirs,
                                  prediction_file, require_folder, stray_folds, validation_folder, write_json)
from hnas.pipeline.predict import folder_decision, load_models
from hnas.pipeline.provenance import checked_validation
from hnas.pipeline.run import stored_settings
from hnas.train.evaluation import case_metrics, mean_dice, paired_test
from hnas.train.prediction import InputLimits, group_cases, refuse_existing

ENSEMBLE_FOLD = "ensemble"
ENDINGS = (".nii.gz", ".nii")


def validation_rows(model_dir: Path, dataset: str | Path) -> list[dict]:
    """metrics.csv rows of a model's validation predictions against the dataset's labels.

    Only predictions fold.json records, with today's inputs and the files as written, are scored
    (:func:`hnas.pipeline.provenance.checked_validation`); a fold still missing cases is refused.
    """
    data = load_dataset(dataset)
    record = load_model_record(model_dir)
    name = Path(model_dir).name
    stray = stray_folds(model_dir, record["folds"])
    if stray:
        warnings.warn(f"{str(model_dir)!r}: {stray} not evaluated: model.json lists folds {record['folds']}",
                      EvaluationWarning, stacklevel=2)
    rows = []
    for fold in record["folds"]:
        predicted, missing = checked_validation(model_dir, fold, data)
        if missing:
            raise SearchError(f"fold {fold} of model {name!r} has {len(predicted)} of {len(predicted) + len(missing)} "
                              f"validation cases predicted (missing {missing[:5]}); expected `hnas train --run RUN "
                              f"--folds {fold} ...` to finish it, or --models without {name!r}")
        _warn_unrecorded_files(model_dir, fold, predicted)
        for case_id in predicted:
            prediction_path = prediction_file(model_dir, fold, case_id, ".nii.gz")
            rows += _case_rows(name, str(fold), case_id, prediction_path, data.case(case_id).label_file, data.labels)
    if not rows:
        raise SearchError(f"model {str(model_dir)!r} has no validation predictions; expected "
                          "`hnas train --run RUN --folds ...` to have written them")
    return rows


def _warn_unrecorded_files(model_dir: Path, fold: int, predicted: Sequence[str]) -> None:
    """Label maps in a validation folder that fold.json does not record (copied in by hand) are named, not scored."""
    folder = validation_folder(model_dir, fold)
    recorded = {prediction_file(model_dir, fold, case, ".nii.gz").name for case in predicted}
    stray = sorted(p.name for p in folder.glob("*.nii.gz") if not p.name.startswith(".") and p.name not in recorded)
    if stray:
        warnings.warn(f"{str(folder)!r}: {stray[:5]}{' ...' if len(stray) > 5 else ''} not evaluated: fold.json does "
                      "not record them as this fold's validation predictions", EvaluationWarning, stacklevel=3)


def _case_rows(model: str, fold: str, case_id: str, prediction_path: Path, label_path: Path, labels, *,
               strict: bool = False) -> list[dict]:
    """Dice and HD95 rows of one prediction against its label.

    Both must lie on one grid (shape and spacing, :func:`hnas.data.geometry.check_same_grid`) and
    hold only ``labels``' values. A differing affine is refused when ``strict`` (a test set) and
    only warned about otherwise: a validation fold's label was accepted by plan with that warning.
    """
    prediction, predicted = read_label_map(prediction_path)
    truth, geometry = read_label_map(label_path)
    check_same_grid(("prediction", prediction_path, predicted), ("label", label_path, geometry),
                    affine="error" if strict else "warn")
    values = [value for _, value in labels]
    check_label_values(label_path, truth, values, "the evaluated labels do not list")
    check_label_values(prediction_path, prediction, values, "the evaluated labels do not list")
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
                  n_channels: int = 1, *, model: str | Path | None = None) -> tuple[list[LabelledCase], tuple]:
    """``([LabelledCase], labels)`` of a labelled test folder.

    Accepted: nnU-Net's imagesTs/labelsTs (label names and channels from a dataset.json beside them,
    else ``labels`` and ``n_channels``: the model's) or a dataset folder in nnU-Net or MSD layout
    (imagesTr/labelsTr with dataset.json; MSD's 4D multi-channel files included). When ``model``
    names the model that predicts ``labels``, a dataset.json listing other labels is refused.
    """
    root = Path(test_dir)
    if (root / "imagesTs").is_dir() and (root / "labelsTs").is_dir():
        source = root / "dataset.json"
        if source.is_file():
            data = read_dataset_json(source)
            found = parse_labels(data, source)
            check_same_labels(found, source, labels, model)
            labels = found
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
        check_same_labels(data.labels, root / "dataset.json", labels, model)
        return [LabelledCase(c.case_id, list(c.image_files), c.label_file, c.channel_in_file) for c in data.cases], \
            data.labels
    raise DatasetError(f"test folder {str(root)!r} has neither imagesTs/labelsTs nor a dataset.json; expected a "
                       "labelled nnU-Net test set or dataset folder")


def ensemble_test_rows(model_dir: Path, test_dir: str | Path, out_dir: Path, *, limits: InputLimits = InputLimits(),
                       postprocessing: bool = True, log=print) -> list[dict]:
    """Predict a labelled test folder as `hnas predict --model RUN/cv/<name>` does; rows with fold ``ensemble``.

    That is the mean softmax of the model's folds, post-processed when ``postprocessing.json`` says so
    (and ``postprocessing``: False compares the networks alone).
    """
    name = Path(model_dir).name
    load_model_record(model_dir)
    ensemble = load_models([model_dir], limits=limits)
    if not postprocessing:
        ensemble.postprocessing = None
    cases, labels = read_test_set(test_dir, ensemble.labels, ensemble.n_channels, model=model_dir)
    values = [value for _, value in labels]
    for case in cases:  # every label against its image before minutes of prediction
        check_label_file(case.image_files, case.label_file, values)
    predictions = Path(out_dir) / name
    predictions.mkdir(parents=True, exist_ok=True)
    rows = []
    for case in cases:
        # always predicted: the model may have gained folds since the last call
        path = ensemble.predict_file(case.image_files, predictions / f"{case.case_id}.nii.gz", case.channel_in_file)
        rows += _case_rows(name, ENSEMBLE_FOLD, case.case_id, path, case.label_file, labels, strict=True)
    kind = "post-processed " if ensemble.postprocessing else ""
    log(f"{name}: {kind}{len(ensemble.members)}-fold ensemble predicted {len(cases)} test cases into "
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


def summarize(rows: Sequence[dict], facts: dict[str, dict] | None = None) -> dict:
    """Per model mean +- std (per class and overall, over cases and over folds); default vs each other model.

    ``facts`` (:func:`model_facts`) adds each model's post-processing and configuration; a model
    with the baseline's configuration gets no test (one network trained twice: any difference is noise).
    """
    facts = facts or {}
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
            "postprocessing": facts.get(model, {}).get("postprocessing"),
        }
    baseline = next((m for m in models if m.startswith("default_")), None)
    if baseline is not None:
        for other in models:
            if other != baseline:
                test = paired_test(case_means(rows, other), case_means(rows, baseline))
                if _same_configuration(facts, other, baseline):
                    test = {**test, "statistic": None, "p": None, "reason": f"{other} has the configuration of "
                            f"{baseline}: the same network trained twice, so no test"}
                summary["pairs"].append({"baseline": baseline, "model": other, "test": "wilcoxon signed-rank, "
                                         "two-sided, per-case mean Dice (model - baseline)", **test})
    return summary


def _same_configuration(facts: dict[str, dict], one: str, other: str) -> bool:
    configs = [facts.get(name, {}).get("config") for name in (one, other)]
    return configs[0] is not None and configs[0] == configs[1]


def model_facts(folders: Sequence[Path], test_dir: str | Path | None, postprocessing: bool = True) -> dict[str, dict]:
    """Per model folder: its configuration (model.json) and the post-processing its scores include."""
    facts = {}
    for folder in folders:
        decision = folder_decision(folder) if test_dir is not None and postprocessing else None
        applied = "none" if decision is None else decision.describe()
        facts[folder.name] = {"config": load_model_record(folder)["config"], "postprocessing": applied}
    return facts


def write_outputs(rows: Sequence[dict], out_dir: Path, facts: dict[str, dict] | None = None) -> dict:
    """metrics.csv and summary.json in ``out_dir``; returns the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / METRICS_FILE, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["model", "fold", "case", "class", "dice", "hd95"])
        writer.writeheader()
        writer.writerows(rows)
    summary = summarize(rows, facts)
    write_json(out_dir / EVALUATION_SUMMARY_FILE, summary)
    return summary


def summary_table(summary: dict) -> str:
    """The default first, then the other models: Dice mean +- std, HD95, cases; then the paired tests."""
    names = sorted(summary["models"], key=lambda n: (not n.startswith("default_"), n))
    classes = list(dict.fromkeys(c for n in names for c in summary["models"][n]["per_class"]))
    header = ["model", "cases", "Dice (mean +- std)"] + [f"Dice {c}" for c in classes] + ["HD95 mm",
                                                                                          "post-processing"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in names:
        model = summary["models"][name]
        cells = [name, str(model["cases"]), _pm(model["dice"])]
        cells += [_pm(model["per_class"].get(c, {}).get("dice", {"mean": None})) for c in classes]
        cells += [_pm(model["hd95"], digits=2), _short_postprocessing(model.get("postprocessing"))]
        lines.append("| " + " | ".join(cells) + " |")
    for pair in summary["pairs"]:
        if pair["p"] is None:
            lines.append(f"{pair['model']} vs {pair['baseline']}: no test ({pair['reason']})")
        else:
            lines.append(f"{pair['model']} vs {pair['baseline']}: Wilcoxon W = {pair['statistic']:g}, "
                         f"p = {pair['p']:.4g}, n = {pair['n']} cases")
    return "\n".join(lines)


def _short_postprocessing(description: str | None) -> str:
    if description is None or description == "none" or description.startswith("no post-processing"):
        return "none"
    return description.replace("keep the largest connected component of ", "largest component: ")


def _pm(stats: dict, digits: int = 4) -> str:
    if stats.get("mean") is None:
        return "-"
    return f"{stats['mean']:.{digits}f} +- {stats['std']:.{digits}f}"


class EvaluationWarning(UserWarning):
    """Models compared on different cases: their means are not comparable (the paired tests use common cases)."""


def evaluate_run(run_dir: str | Path, names: Sequence[str] | None = None, *, test_dir: str | Path | None = None,
                 out_dir: str | Path | None = None, overwrite: bool = False, limits: InputLimits = InputLimits(),
                 postprocessing: bool = True, log=print) -> tuple[dict, Path]:
    """`hnas evaluate`: metrics of the run's models on their validation folds or on ``test_dir``.

    Like `hnas predict`, an earlier evaluation in ``out_dir`` is refused before any work unless
    ``overwrite``; the output may not be the test folder or inside the run's model folders.
    """
    run_dir = Path(run_dir)
    folders = model_dirs(run_dir, names)
    if out_dir is None:
        out_dir = RunFolder(run_dir).evaluation(test_dir)
    out_dir = require_folder(Path(out_dir), "a folder for metrics.csv and summary.json")
    _check_output_place(out_dir, run_dir, test_dir)
    outputs = [out_dir / METRICS_FILE, out_dir / EVALUATION_SUMMARY_FILE]
    if test_dir is not None:
        outputs += [p for f in folders for p in (out_dir / "predictions" / f.name).glob("*.nii.gz")]
    refuse_existing(outputs, overwrite)
    if test_dir is None:
        dataset = stored_settings(run_dir).dataset_path()
        rows = [row for folder in folders for row in validation_rows(folder, dataset)]
    else:
        predictions = out_dir / "predictions"
        rows = [row for folder in folders
                for row in ensemble_test_rows(folder, test_dir, predictions, limits=limits,
                                              postprocessing=postprocessing, log=log)]
    _warn_different_cases(rows)
    facts = model_facts(folders, test_dir, postprocessing)
    _warn_different_postprocessing(facts)
    return write_outputs(rows, out_dir, facts), out_dir


def _check_output_place(out_dir: Path, run_dir: Path, test_dir: str | Path | None) -> None:
    """No evaluation inside what it reads: the test folder or the run's cross-validation folder."""
    target = out_dir.resolve()
    readonly = [RunFolder(run_dir).cv] + ([Path(test_dir)] if test_dir is not None else [])
    for folder in readonly:
        if target == folder.resolve() or target.is_relative_to(folder.resolve()):
            raise SearchError(f"-o {str(out_dir)!r} is inside {str(folder)!r}, which evaluate reads; expected an "
                              "output folder elsewhere (default: RUN/evaluation/...)")


def _warn_different_postprocessing(facts: dict[str, dict]) -> None:
    """Scores with and without post-processing compare two pipelines, not two networks: say so."""
    if len({fact["postprocessing"] for fact in facts.values()}) > 1:
        applied = "; ".join(f"{name}: {_short_postprocessing(fact['postprocessing'])}" for name, fact in facts.items())
        warnings.warn(f"the models are scored under different post-processing ({applied}); their differences mix "
                      "network and post-processing: pass --no-postprocessing to compare the networks alone",
                      EvaluationWarning, stacklevel=3)


def _warn_different_cases(rows: Sequence[dict]) -> None:
    cases: dict[str, set[str]] = {}
    for row in rows:
        cases.setdefault(row["model"], set()).add(row["case"])
    if len({frozenset(c) for c in cases.values()}) > 1:
        common = set.intersection(*cases.values())
        counts = ", ".join(f"{m}: {len(c)}" for m, c in cases.items())
        warnings.warn(f"the models were scored on different cases ({counts}); their means are not comparable, the "
                      f"paired tests use the {len(common)} cases all of them have", EvaluationWarning, stacklevel=3)
