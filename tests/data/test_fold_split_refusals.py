"""What the fold split says when asked for a fold that does not exist (case found by `make mutation`)."""

from __future__ import annotations

import pytest

from hnas.data.splits import fold_split
from hnas.errors import TrainingError

CASES = [f"case_{i:03d}" for i in range(12)]


@pytest.mark.parametrize("fold, n_folds, last", [(5, 5, 4), (-1, 5, 4), (3, 3, 2), (10, 10, 9)])
def test_a_missing_fold_names_the_valid_range(fold, n_folds, last):
    with pytest.raises(TrainingError) as refused:
        fold_split(CASES, fold, n_folds=n_folds)
    assert str(refused.value) == f"fold {fold!r} does not exist; expected an integer in 0..{last}"


def test_too_few_cases_are_counted():
    with pytest.raises(TrainingError) as refused:
        fold_split(CASES[:4], 0)
    assert str(refused.value) == "4 cases cannot be split into 5 folds; expected at least 5"
