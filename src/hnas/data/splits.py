"""nnU-Net's 5-fold cross-validation split: which cases train and which validate in each fold.

The same cases per fold as nnU-Net's ``splits_final.json`` (sklearn's shuffled KFold, seed 12345),
so a fold of hnas and a fold of nnU-Net validate on the same cases.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hnas.errors import TrainingError

N_FOLDS = 5
SPLIT_SEED = 12345  # nnU-Net's KFold seed: same cases per fold as nnU-Net's splits_final.json


def fold_split(case_ids: Sequence[str], fold: int, n_folds: int = N_FOLDS,
               seed: int = SPLIT_SEED) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(training ids, validation ids) of ``fold``: nnU-Net's split (sklearn KFold, shuffled, seed 12345).

    Case ids are sorted first, so the split depends only on the set of ids.
    """
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or not 0 <= fold < n_folds:
        raise TrainingError(f"fold {fold!r} does not exist; expected an integer in 0..{n_folds - 1}")
    ids = sorted(case_ids)
    if len(ids) < n_folds:
        raise TrainingError(f"{len(ids)} cases cannot be split into {n_folds} folds; expected at least {n_folds}")
    order = np.arange(len(ids))
    np.random.RandomState(seed).shuffle(order)
    sizes = np.full(n_folds, len(ids) // n_folds)
    sizes[: len(ids) % n_folds] += 1
    start = int(sizes[:fold].sum())
    validation = set(order[start:start + sizes[fold]].tolist())
    return (tuple(c for i, c in enumerate(ids) if i not in validation),
            tuple(c for i, c in enumerate(ids) if i in validation))


#: One fold's (training ids, validation ids); a split file holds one per fold.
FoldCases = tuple[tuple[str, ...], tuple[str, ...]]
SPLITS_FILE = "splits_final.json"


def default_splits(case_ids: Sequence[str]) -> tuple[FoldCases, ...]:
    """Every fold of nnU-Net's default split, as a split file would list them (to compare with a given one)."""
    return tuple(fold_split(case_ids, fold) for fold in range(N_FOLDS))


def split_of(case_ids: Sequence[str], fold: int, splits: Sequence[FoldCases] | None = None) -> FoldCases:
    """``fold``'s cases: from ``splits`` (a user's splits_final.json) when given, else nnU-Net's default split."""
    if splits is None:
        return fold_split(case_ids, fold)
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or not 0 <= fold < len(splits):
        raise TrainingError(f"fold {fold!r} does not exist in the split file's {len(splits)} folds; expected an "
                            f"integer in 0..{len(splits) - 1}")
    return splits[fold]


def load_splits(path, case_ids: Sequence[str]) -> tuple[FoldCases, ...]:
    """nnU-Net's ``splits_final.json`` (a list of {"train": [...], "val": [...]}, one per fold), checked.

    Every id must be a case of the dataset, a fold's training and validation cases must not
    overlap and neither may be empty; there must be :data:`N_FOLDS` folds, as hnas cross-validates
    (nnU-Net's default). Cases in no fold are allowed, as nnU-Net allows them.
    """
    import json
    from pathlib import Path

    path = Path(path)
    where = f"split file {str(path)!r}"
    try:
        folds = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise TrainingError(f"{where} cannot be read as JSON ({error}); expected nnU-Net's splits_final.json: "
                            '[{"train": [...], "val": [...]}, ...]') from None
    if not isinstance(folds, list) or not all(_is_fold(f) for f in folds):
        raise TrainingError(f"{where} is not a list of {{\"train\": [case ids], \"val\": [case ids]}} objects; "
                            "expected nnU-Net's splits_final.json")
    if len(folds) != N_FOLDS:
        raise TrainingError(f"{where} has {len(folds)} folds; expected {N_FOLDS} (hnas cross-validates nnU-Net's "
                            f"{N_FOLDS} folds)")
    known = set(case_ids)
    for index, fold in enumerate(folds):
        _check_fold(where, index, fold, known)
    return tuple((tuple(fold["train"]), tuple(fold["val"])) for fold in folds)


def _is_fold(fold) -> bool:
    return isinstance(fold, dict) and all(isinstance(fold.get(k), list) and all(isinstance(c, str) for c in fold[k])
                                          for k in ("train", "val"))


def _check_fold(where: str, index: int, fold: dict, known: set[str]) -> None:
    unknown = sorted((set(fold["train"]) | set(fold["val"])) - known)
    if unknown:
        raise TrainingError(f"{where} fold {index} names cases the dataset lacks: {unknown[:5]}"
                            + (f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else "")
                            + "; expected the dataset's case ids")
    both = sorted(set(fold["train"]) & set(fold["val"]))
    if both:
        raise TrainingError(f"{where} fold {index} trains and validates on the same cases {both[:5]}; expected "
                            "separate training and validation cases")
    for key in ("train", "val"):
        if not fold[key] or len(set(fold[key])) != len(fold[key]):
            raise TrainingError(f"{where} fold {index} has {'no' if not fold[key] else 'repeated'} {key} cases; "
                                "expected distinct case ids in both lists")
