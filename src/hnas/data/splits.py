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
