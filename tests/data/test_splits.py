"""nnU-Net's fold split: pinned to sklearn's KFold (and nnU-Net's own generate_crossval_split), a partition,
refusing what cannot be split.

The oracle is nnU-Net's ``nnUNetTrainer.do_split``: the sorted case ids go through
``sklearn.model_selection.KFold(n_splits=5, shuffle=True, random_state=12345)``
(``nnunetv2.utilities.crossval_split.generate_crossval_split``); fold k validates the k-th test set.
"""

import random

import numpy as np
import pytest
from sklearn.model_selection import KFold

from hnas.data.splits import fold_split
from hnas.errors import TrainingError


def case_ids(n: int, seed: int, prefix: str = "case") -> list[str]:
    """``n`` ids in a shuffled order (the split must not depend on it), with gaps in the numbering."""
    ids = [f"{prefix}_{i:03d}" for i in random.Random(seed).sample(range(3 * n), n)]
    random.Random(seed + 1).shuffle(ids)
    return ids


def sklearn_split(ids: list[str], n_folds: int = 5, seed: int = 12345) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """The oracle: sklearn's KFold over the sorted ids, as nnU-Net's do_split calls it."""
    ordered = np.array(sorted(ids))
    return [(tuple(map(str, ordered[train])), tuple(map(str, ordered[val])))
            for train, val in KFold(n_splits=n_folds, shuffle=True, random_state=seed).split(ordered)]


# sizes: the minimum, every remainder mod 5, hippocampus-like counts (MSD's 260 is slow-free too), 60
SIZES = [5, 6, 7, 8, 9, 12, 23, 31, 44, 60]


@pytest.mark.parametrize("n", SIZES)
def test_split_equals_sklearn_kfold_with_nnunets_seed(n):
    ids = case_ids(n, seed=n)
    expected = sklearn_split(ids)
    assert [fold_split(ids, fold) for fold in range(5)] == expected


@pytest.mark.parametrize("n", [5, 17, 60])
def test_split_equals_nnunets_generate_crossval_split(n):
    crossval = pytest.importorskip("nnunetv2.utilities.crossval_split")
    ids = case_ids(n, seed=100 + n, prefix="hippocampus")
    # nnUNetTrainer.do_split: all_keys_sorted = list(np.sort(list(dataset.identifiers)))
    splits = crossval.generate_crossval_split(list(np.sort(ids)), seed=12345, n_splits=5)
    for fold, split in enumerate(splits):
        train, val = fold_split(ids, fold)
        assert list(train) == [str(c) for c in split["train"]] and list(val) == [str(c) for c in split["val"]]


def test_split_of_twelve_cases_is_pinned():
    """Twelve cases c00..c11: the validation sets of KFold(5, shuffle=True, random_state=12345), written out
    (nnU-Net's splits_final.json for such a dataset); the two extra cases go to folds 0 and 1."""
    ids = [f"c{i:02d}" for i in range(12)]
    random.Random(0).shuffle(ids)
    assert [fold_split(ids, fold)[1] for fold in range(5)] == [
        ("c00", "c03", "c08"), ("c07", "c10", "c11"), ("c06", "c09"), ("c01", "c04"), ("c02", "c05")]
    assert fold_split(ids, 2)[0] == ("c00", "c01", "c02", "c03", "c04", "c05", "c07", "c08", "c10", "c11")


def test_the_seed_is_nnunets_12345():
    ids = case_ids(40, seed=3)
    assert fold_split(ids, 0) == sklearn_split(ids, seed=12345)[0]
    assert fold_split(ids, 0) != sklearn_split(ids, seed=12346)[0]
    assert fold_split(ids, 0) != sklearn_split(ids, seed=0)[0]
    assert fold_split(ids, 1, seed=0) == sklearn_split(ids, seed=0)[1]  # the seed argument is KFold's


def test_extra_cases_go_to_the_first_folds():
    """KFold gives the n % 5 extra cases to the first folds: 23 cases -> 5, 5, 5, 4, 4."""
    ids = case_ids(23, seed=5)
    assert [len(fold_split(ids, fold)[1]) for fold in range(5)] == [5, 5, 5, 4, 4]
    assert [len(fold_split(case_ids(9, seed=1), fold)[1]) for fold in range(5)] == [2, 2, 2, 2, 1]


@pytest.mark.parametrize("n", SIZES)
def test_every_case_is_validated_exactly_once(n):
    ids = case_ids(n, seed=2 * n)
    folds = [fold_split(ids, f) for f in range(5)]
    validated = [c for _, val in folds for c in val]
    assert sorted(validated) == sorted(ids)  # each case once, none twice, none left out
    for train, val in folds:
        assert not set(train) & set(val) and sorted(train + val) == sorted(ids)
        assert list(train) == sorted(train) and list(val) == sorted(val)  # nnU-Net's order: sorted ids


def test_split_depends_only_on_the_set_of_ids():
    ids = case_ids(23, seed=7)
    for fold in range(5):
        assert fold_split(ids, fold) == fold_split(sorted(ids), fold) == fold_split(list(reversed(ids)), fold)
    assert fold_split(ids, 0)[1] != tuple(sorted(ids)[:5])  # shuffled, not the first five


@pytest.mark.parametrize("fold", [-1, 5, 1.5, "0"])
def test_split_names_a_bad_fold(fold):
    with pytest.raises(TrainingError, match=f"fold {fold!r}"):
        fold_split(["a", "b", "c", "d", "e"], fold)


def test_split_needs_five_cases():
    with pytest.raises(TrainingError, match="4 cases"):
        fold_split(["a", "b", "c", "d"], 0)


# ---------------------------------------------------------------- a user's splits_final.json (issue 17)

CASES = [f"case_{i:02d}" for i in range(10)]


def _write_splits(path, folds):
    import json

    path.write_text(json.dumps(folds))
    return path


def _round_robin(cases=CASES):
    """Five folds validating cases i, i+5 (not nnU-Net's shuffled split)."""
    return [{"train": [c for j, c in enumerate(cases) if j % 5 != k], "val": [c for j, c in enumerate(cases)
                                                                              if j % 5 == k]} for k in range(5)]


def test_a_split_file_gives_each_folds_cases(tmp_path):
    from hnas.data.splits import load_splits, split_of

    splits = load_splits(_write_splits(tmp_path / "splits_final.json", _round_robin()), CASES)
    assert split_of(CASES, 1, splits) == (tuple(c for j, c in enumerate(CASES) if j % 5 != 1), ("case_01", "case_06"))
    assert split_of(CASES, 1) == fold_split(CASES, 1)  # without a file: nnU-Net's default
    with pytest.raises(TrainingError, match=r"fold 5 does not exist in the split file's 5 folds"):
        split_of(CASES, 5, splits)


def test_nnunets_own_splits_final_json_is_read_as_its_folds(tmp_path):
    """The file nnU-Net writes (its default split) gives the folds hnas computes itself."""
    from hnas.data.splits import load_splits

    folds = [{"train": list(fold_split(CASES, k)[0]), "val": list(fold_split(CASES, k)[1])} for k in range(5)]
    assert load_splits(_write_splits(tmp_path / "s.json", folds), CASES) == tuple(fold_split(CASES, k)
                                                                                  for k in range(5))


@pytest.mark.parametrize("folds, message", [
    ("{not json", "cannot be read as JSON"),
    ({"train": []}, "is not a list of"),
    ([{"train": ["case_00"], "val": "case_01"}] * 5, "is not a list of"),
    (_round_robin()[:4], "has 4 folds; expected 5"),
    ([{"train": ["case_00", "nobody"], "val": ["case_01"]}] * 5, r"fold 0 names cases the dataset lacks: \['nobody'\]"),
    ([{"train": ["case_00", "case_01"], "val": ["case_01"]}] * 5, r"trains and validates on the same cases \['case_01'\]"),
    ([{"train": ["case_00"], "val": []}] * 5, "has no val cases"),
    ([{"train": ["case_00", "case_00"], "val": ["case_01"]}] * 5, "has repeated train cases"),
])
def test_a_broken_split_file_is_refused_naming_the_problem(tmp_path, folds, message):
    import json

    from hnas.data.splits import load_splits

    path = tmp_path / "splits_final.json"
    path.write_text(folds if isinstance(folds, str) else json.dumps(folds))
    with pytest.raises(TrainingError, match=message) as error:
        load_splits(path, CASES)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def _refusal(tmp_path, folds) -> str:
    import json

    from hnas.data.splits import load_splits

    path = tmp_path / "splits_final.json"
    path.write_text(folds if isinstance(folds, str) else json.dumps(folds))
    with pytest.raises(TrainingError) as error:
        load_splits(path, CASES)
    return str(error.value).split(f"{str(path)!r} ", 1)[1]


def test_split_file_refusals_say_what_was_expected_in_full(tmp_path):
    """The messages are the user's only guide to fixing the file: pinned word for word."""
    many = [f"ghost_{i}" for i in range(7)]
    assert _refusal(tmp_path, [{"train": ["case_00", *many], "val": ["case_01"]}] * 5) == (
        "fold 0 names cases the dataset lacks: ['ghost_0', 'ghost_1', 'ghost_2', 'ghost_3', 'ghost_4'] "
        "(and 2 more); expected the dataset's case ids")
    assert _refusal(tmp_path, [{"train": ["case_00", *many[:5]], "val": ["case_01"]}] * 5) == (
        "fold 0 names cases the dataset lacks: ['ghost_0', 'ghost_1', 'ghost_2', 'ghost_3', 'ghost_4']; "
        "expected the dataset's case ids")  # exactly five: nothing left to count
    assert _refusal(tmp_path, [{"train": ["case_00", *many[:6]], "val": ["case_01"]}] * 5).endswith(
        "'ghost_4'] (and 1 more); expected the dataset's case ids")
    six = CASES[:6]
    assert _refusal(tmp_path, [{"train": six, "val": six}] * 5) == (
        "fold 0 trains and validates on the same cases ['case_00', 'case_01', 'case_02', 'case_03', 'case_04']; "
        "expected separate training and validation cases")
    assert _refusal(tmp_path, [{"train": ["case_00"], "val": []}] * 5) == (
        "fold 0 has no val cases; expected distinct case ids in both lists")
    assert _refusal(tmp_path, {"train": []}) == (
        'is not a list of {"train": [case ids], "val": [case ids]} objects; expected nnU-Net\'s splits_final.json')
    assert _refusal(tmp_path, "{oops").endswith(
        'expected nnU-Net\'s splits_final.json: [{"train": [...], "val": [...]}, ...]')


def test_split_of_takes_every_fold_of_a_file_and_refuses_others_by_range(tmp_path):
    from hnas.data.splits import load_splits, split_of

    splits = load_splits(_write_splits(tmp_path / "splits_final.json", _round_robin()), CASES)
    assert [split_of(CASES, k, splits)[1] for k in range(5)] == [(f"case_0{k}", f"case_0{k + 5}") for k in range(5)]
    for bad in (True, -1, 5, 1.0):
        with pytest.raises(TrainingError, match=r"does not exist in the split file's 5 folds; expected an integer "
                                                r"in 0\.\.4$"):
            split_of(CASES, bad, splits)
