"""nnU-Net's fold split: deterministic, a partition, refusing what cannot be split."""

import pytest

from hnas.data.splits import fold_split
from hnas.errors import TrainingError


def test_split_is_deterministic_and_partitions_the_cases():
    ids = [f"case_{i:03d}" for i in range(23)]
    folds = [fold_split(ids, f) for f in range(5)]
    assert folds[2] == fold_split(list(reversed(ids)), 2)  # order of the input does not matter
    validation = [set(v) for _, v in folds]
    assert set().union(*validation) == set(ids)
    assert sum(len(v) for v in validation) == len(ids)
    assert sorted(len(v) for v in validation) == [4, 4, 5, 5, 5]
    for train, val in folds:
        assert not set(train) & set(val) and len(train) + len(val) == len(ids)
    assert folds[0][1] != tuple(sorted(ids)[:5])  # shuffled, not the first five


@pytest.mark.parametrize("fold", [-1, 5, 1.5, "0"])
def test_split_names_a_bad_fold(fold):
    with pytest.raises(TrainingError, match=f"fold {fold!r}"):
        fold_split(["a", "b", "c", "d", "e"], fold)


def test_split_needs_five_cases():
    with pytest.raises(TrainingError, match="4 cases"):
        fold_split(["a", "b", "c", "d"], 0)
