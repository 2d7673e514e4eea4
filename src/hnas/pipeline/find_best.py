"""`hnas find-best`: pick the best cross-validated model or pairwise ensemble, as nnU-Net's find_best_configuration.

Candidates are the run's cross-validated models (``RUN/cv/<name>``, see :mod:`hnas.pipeline.cross_validate`)
and every pair of them. A model is scored on its saved validation label maps, a pair on the
argmax of the mean of its two members' saved softmax (``<case>.npz``), all against the dataset's
labels, on the same folds: those that the most models have complete (every validation case of
the fold predicted). The score is nnU-Net's: per foreground class the mean Dice over the cases
(a class absent from prediction and truth left out), then the mean over the classes.

The best candidate's post-processing is decided on its cross-validation predictions
(:func:`hnas.train.postprocessing.decide_from_evidence`). Every pass reads the cases one at a
time and keeps only per-case scalars (Dice values), so memory stays that of one case however
many cases the folds hold. Everything goes to
``RUN/cv/best_configuration.json``, which `hnas predict --model` accepts; a single best model
also gets the decision as ``RUN/cv/<name>/postprocessing.json``.
"""

from __future__ import annotations

import itertools
import math
import zipfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hnas.data import Dataset, load_dataset, read_label_map
from hnas.data.splits import split_of
from hnas.errors import SearchError, TrainingError
from hnas.pipeline.layout import (RunFolder, load_model_record, model_dirs, prediction_file, stored_splits,
                                  write_best_configuration, write_postprocessing)
from hnas.pipeline.provenance import checked_validation
from hnas.pipeline.run import stored_settings
from hnas.train.postprocessing import (CaseEvidence, case_dice, case_evidence, decide_from_evidence,
                                      mean_dice_per_class, mean_over_classes)
from hnas.train.prediction import label_map_of

CRITERION = ("mean foreground Dice: per class the mean over the cross-validation cases (a class absent from "
             "prediction and truth left out, nnU-Net's convention), then the mean over classes")


@dataclass(frozen=True)
class Score:
    """A candidate (one model or an ensemble of several) and its cross-validation Dice."""

    members: tuple[str, ...]
    dice_per_class: dict[str, float]

    @property
    def name(self) -> str:
        return "+".join(self.members)

    @property
    def dice(self) -> float:
        return mean_over_classes(self.dice_per_class)

    def sort_key(self):
        """Best first; on a tie the smaller ensemble, then the name (deterministic)."""
        return (-self.dice if not math.isnan(self.dice) else math.inf, len(self.members), self.name)

    def to_dict(self) -> dict:
        return {"name": self.name, "members": list(self.members), "dice": _plain(self.dice),
                "dice_per_class": {k: _plain(v) for k, v in self.dice_per_class.items()}}


class CrossValidation:
    """The validation cases of the chosen folds, read case by case: one case's maps in memory at a time."""

    def __init__(self, dataset: Dataset, folds: Sequence[int], run: RunFolder):
        self.dataset, self.folds, self.run = dataset, tuple(folds), run
        splits = stored_splits(run.root, dataset, cross_validation=True)
        self.cases = [(fold, case) for fold in self.folds for case in split_of(dataset.case_ids, fold, splits)[1]]
        self.values = np.array([value for _, value in dataset.labels], dtype=np.int16)

    def truth(self, case: str) -> np.ndarray:
        return read_label_map(self.dataset.case(case).label_file)[0]

    def prediction(self, members: Sequence[str], fold: int, case: str, truth: np.ndarray) -> np.ndarray:
        """A model's saved label map, or an ensemble's argmax of its members' mean saved softmax."""
        if len(members) == 1:
            path = self._file(members[0], fold, case, ".nii.gz")
            label = read_label_map(path)[0]
        else:
            total = self._probabilities(members[0], fold, case).astype(np.float32, copy=False)  # a fresh array
            for member in members[1:]:
                total += self._probabilities(member, fold, case)  # float16 widens exactly inside the add: no copy
            label = label_map_of(total, self.values)
        if label.shape != truth.shape:
            raise TrainingError(f"the prediction of {'+'.join(members)} for case {case!r} (fold {fold}) has shape "
                                f"{label.shape}; its label map has {truth.shape}")
        return label

    def _file(self, model: str, fold: int, case: str, ending: str) -> Path:
        return prediction_file(self.run.model(model), fold, case, ending)

    def _probabilities(self, model: str, fold: int, case: str) -> np.ndarray:
        """A member's saved softmax in float16 (as `hnas train --folds` writes it) or float32."""
        path = self._file(model, fold, case, ".npz")
        try:
            with np.load(path) as stored:
                if "probabilities" not in stored.files:
                    raise TrainingError(f"{str(path)!r} holds {stored.files}; expected the key 'probabilities'")
                probabilities = stored["probabilities"]
                if probabilities.dtype not in (np.float16, np.float32):
                    probabilities = probabilities.astype(np.float32)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, AttributeError) as exc:
            # a truncated or foreign file: np.load raises any of these (AttributeError: a plain .npy has no .files)
            raise TrainingError(f"{str(path)!r} cannot be read as the softmax of a validation case: {exc}") from exc
        if probabilities.shape[0] != len(self.values):
            raise TrainingError(f"{str(path)!r} holds {probabilities.shape[0]} classes; dataset "
                                f"{self.dataset.name!r} has {len(self.values)} labels")
        return probabilities

    def scores(self, candidates: Sequence[Sequence[str]]) -> list[Score]:
        """Every candidate's :class:`Score` in one pass over the cases: per case its truth, then each candidate's
        prediction, scored and dropped; only the per-case Dice values are kept."""
        if not candidates:  # e.g. no pairs with --top 1: no pass over the cases
            return []
        per_case: list[list[dict[str, float]]] = [[] for _ in candidates]
        for fold, case in self.cases:
            truth = self.truth(case)
            for dice, members in zip(per_case, candidates):
                dice.append(case_dice(self.prediction(members, fold, case, truth), truth, self.dataset.labels))
        return [Score(tuple(members), mean_dice_per_class(dice, self.dataset.labels))
                for members, dice in zip(candidates, per_case)]

    def evidence(self, members: Sequence[str]) -> list[CaseEvidence]:
        """The post-processing evidence of one candidate's predictions, case by case."""
        evidence = []
        for fold, case in self.cases:
            truth = self.truth(case)
            evidence.append(case_evidence(self.prediction(members, fold, case, truth), truth, self.dataset.labels))
        return evidence


def complete_folds(model_dir: Path, dataset: Dataset) -> set[int]:
    """The folds of a model whose every validation case has both files saved, as fold.json records them.

    A prediction whose inputs changed since, or whose file is not the one written, is refused
    (:func:`hnas.pipeline.provenance.checked_validation`), not scored.
    """
    return {fold for fold in load_model_record(model_dir)["folds"] if not checked_validation(model_dir, fold, dataset)[1]}


def common_folds(available: dict[str, set[int]]) -> tuple[int, ...]:
    """The fold set most models were validated on (then the larger set): candidates must share their cases.

    A model with more folds takes part on these; one with fewer (e.g. interrupted) is left out
    rather than shrinking everybody's validation set.
    """
    counts = Counter(frozenset(f) for f in available.values() if f)
    if not counts:
        return ()
    best = max(counts, key=lambda o: (counts[o], len(o), tuple(-f for f in sorted(o))))
    return tuple(sorted(best))


def find_best(run_dir: str | Path, *, top: int | None = None, log: Callable[[str], None] = print) -> dict:
    """Score every cross-validated model of ``run_dir`` and every pair of the ``top`` best; write and return
    ``RUN/cv/best_configuration.json``'s content."""
    if top is not None and top < 1:
        raise SearchError(f"--top is {top!r}; expected a positive number of models (1: no ensembles)")
    run_dir = Path(run_dir)
    dataset = load_dataset(stored_settings(run_dir).dataset_path())
    folders = {folder.name: folder for folder in model_dirs(run_dir)}
    available = {name: complete_folds(folder, dataset) for name, folder in folders.items()}
    folds = common_folds(available)
    if not folds:
        raise SearchError(f"no model in {str(RunFolder(run_dir).cv)!r} has a fold with all validation predictions; "
                          "expected `hnas train --run RUN --folds ...` to finish at least one fold")
    usable = [name for name in folders if set(folds) <= available[name]]
    skipped = [{"name": name, "reason": f"validation predictions complete for folds {sorted(available[name])}; "
                                        f"the others share folds {list(folds)}"}
               for name in folders if name not in usable]
    cv = CrossValidation(dataset, folds, RunFolder(run_dir))
    log(f"find-best: {len(usable)} models on folds {list(folds)} ({len(cv.cases)} validation cases)"
        + "".join(f"\n  skipped {s['name']}: {s['reason']}" for s in skipped))
    # three passes over the cases (singles, pairs of the top singles, the best's post-processing), each holding
    # one case's maps at a time: memory does not grow with the number of cases
    singles = sorted(cv.scores([(name,) for name in usable]), key=Score.sort_key)
    pool = [s.members[0] for s in singles[:top]]
    ensembles = cv.scores(list(itertools.combinations(sorted(pool), 2)))
    candidates = sorted(singles + ensembles, key=Score.sort_key)
    best = candidates[0]
    decision, processed = decide_from_evidence(cv.evidence(best.members), dataset.labels)
    result = {"dataset": str(dataset.root), "folds": list(folds), "cases": len(cv.cases), "criterion": CRITERION,
              "top": top, "candidates": [c.to_dict() for c in candidates], "skipped": skipped,
              "best": {**best.to_dict(), "dice_postprocessed": _plain(mean_over_classes(processed)),
                       "dice_per_class_postprocessed": {k: _plain(v) for k, v in processed.items()}},
              "postprocessing": decision.to_dict()}
    write_best_configuration(run_dir, result)
    if len(best.members) == 1:
        write_postprocessing(folders[best.members[0]], decision.to_dict())
    return result


def best_table(result: dict) -> str:
    """Candidates best first (the chosen one starred), then the post-processing decision."""
    classes = list(result["best"]["dice_per_class"])
    header = ["", "candidate", "models", "CV Dice"] + classes
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for candidate in result["candidates"]:
        star = "*" if candidate["name"] == result["best"]["name"] else ""
        cells = [star, candidate["name"], str(len(candidate["members"])), _fmt(candidate["dice"])]
        cells += [_fmt(candidate["dice_per_class"].get(c)) for c in classes]
        lines.append("| " + " | ".join(cells) + " |")
    best = result["best"]
    lines.append(f"best: {best['name']} (CV Dice {_fmt(best['dice'])} on {result['cases']} cases, folds "
                 f"{result['folds']}); {result['postprocessing']['description']}: CV Dice "
                 f"{_fmt(best['dice_postprocessed'])}")
    return "\n".join(lines)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _plain(value: float) -> float | None:
    """JSON has no NaN: an undefined Dice is null."""
    return None if value is None or math.isnan(value) else float(value)
