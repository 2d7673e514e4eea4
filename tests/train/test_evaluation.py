"""Per-case metrics (MONAI Dice / HD95 with spacing) against hand-computed values; the paired test against scipy."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.stats import wilcoxon

from hnas.train.evaluation import case_metrics, foreground_classes, mean_dice, paired_test

LABELS = [("background", 0), ("a", 1), ("b", 2)]


def test_dice_of_overlapping_masks_is_hand_computed():
    truth = np.zeros((3, 4, 4), dtype=np.int16)
    truth[1, 1:3, 1:3] = 1  # 4 voxels
    prediction = np.zeros_like(truth)
    prediction[1, 1:3, 1] = 1  # 2 of them, nothing else
    metrics = case_metrics(prediction, truth, LABELS, (1.0, 1.0, 1.0))
    assert metrics["a"]["dice"] == pytest.approx(2 * 2 / (2 + 4))


def test_hd95_uses_the_spacing_and_the_95th_percentile():
    truth = np.zeros((3, 3, 9), dtype=np.int16)
    truth[1, 1, 2] = 1
    prediction = np.zeros_like(truth)
    prediction[1, 1, 2] = prediction[1, 1, 5] = 1  # one voxel right, one 3 voxels away along x
    # prediction -> truth distances are [0, 3 * 2.0 mm]; numpy's 95th percentile: 0.95 * 6 = 5.7;
    # truth -> prediction is [0]; the symmetric HD95 is the larger one.
    metrics = case_metrics(prediction, truth, LABELS, (5.0, 5.0, 2.0))
    assert metrics["a"]["hd95"] == pytest.approx(5.7)
    assert metrics["a"]["dice"] == pytest.approx(2 * 1 / (1 + 2))


def test_absent_and_missed_classes_follow_the_documented_conventions():
    truth = np.zeros((3, 4, 4), dtype=np.int16)
    truth[0, 0, 0] = 1  # class a only in the truth; class b nowhere
    metrics = case_metrics(np.zeros_like(truth), truth, dict(LABELS), (1.0, 1.0, 1.0))
    assert metrics["a"]["dice"] == 0.0 and math.isnan(metrics["a"]["hd95"])
    assert math.isnan(metrics["b"]["dice"]) and math.isnan(metrics["b"]["hd95"])
    assert mean_dice(metrics) == 0.0  # b (absent from both) is left out of the mean
    assert foreground_classes({"b": 2, "background": 0, "a": 1}) == [("a", 1), ("b", 2)]


def test_mismatched_shapes_and_spacing_are_refused():
    with pytest.raises(ValueError, match="shape"):
        case_metrics(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)), LABELS, (1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        case_metrics(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), LABELS, (1, 1))


def test_paired_test_matches_scipy_on_known_numbers():
    first = {f"c{i}": v for i, v in enumerate([0.81, 0.79, 0.85, 0.90, 0.77, 0.88, 0.83, 0.86])}
    second = {f"c{i}": v for i, v in enumerate([0.80, 0.75, 0.86, 0.84, 0.70, 0.85, 0.80, 0.79])}
    second["only_here"] = 0.1  # unpaired: dropped
    expected = wilcoxon([first[c] - second[c] for c in sorted(first)])
    result = paired_test(first, second)
    assert result["n"] == 8 and result["reason"] is None
    assert result["statistic"] == pytest.approx(expected.statistic)
    assert result["p"] == pytest.approx(expected.pvalue)
    assert result["p"] == pytest.approx(0.0234375)  # exact two-sided p with one negative difference of rank 1


def test_paired_test_pairs_by_case_id_not_by_position():
    """Insertion orders differ, each side has a case the other lacks (sorting in the middle), and sorting
    either side's values would pair different numbers: only pairing by id gives the hand-paired differences."""
    first = {"m": 0.70, "b": 0.50, "z": 0.95, "k": 0.66, "d": 0.91, "q": 0.40, "a": 0.80, "x": 0.33}
    second = {"a": 0.79, "c": 0.10, "k": 0.70, "b": 0.47, "d": 0.60, "m": 0.55, "q": 0.34, "z": 0.88}
    # by hand, case by case (x and c are unpaired):
    #   a: 0.80 - 0.79 = +0.01   b: 0.50 - 0.47 = +0.03   d: 0.91 - 0.60 = +0.31   k: 0.66 - 0.70 = -0.04
    #   m: 0.70 - 0.55 = +0.15   q: 0.40 - 0.34 = +0.06   z: 0.95 - 0.88 = +0.07
    # |d| ranks 1..7: a 1, b 2, k 3, q 4, z 5, m 6, d 7; negative ranks sum to 3 = the two-sided statistic;
    # exact p: 2 * #{rank subsets with sum <= 3} / 2**7 = 2 * 5 / 128 ({}, {1}, {2}, {3}, {1, 2})
    hand = [0.01, 0.03, 0.31, -0.04, 0.15, 0.06, 0.07]
    expected = wilcoxon(hand)
    result = paired_test(first, second)
    assert result["n"] == 7 and result["reason"] is None
    assert result["statistic"] == pytest.approx(3.0) == pytest.approx(expected.statistic)
    assert result["p"] == pytest.approx(10 / 128) == pytest.approx(expected.pvalue)
    assert paired_test(dict(reversed(first.items())), second) == result  # order of the dicts is irrelevant
    flipped = paired_test(second, first)
    assert flipped["statistic"] == pytest.approx(3.0) and flipped["p"] == pytest.approx(10 / 128)


def test_paired_test_reports_no_p_for_few_cases_or_only_ties():
    few = paired_test({"a": 0.5, "b": 0.6}, {"a": 0.4, "b": 0.6, "c": 0.1})
    assert few["p"] is None and few["n"] == 2 and "at least 6" in few["reason"]
    same = {f"c{i}": 0.1 * i for i in range(7)}
    ties = paired_test(same, dict(same))
    assert ties["p"] is None and ties["n"] == 7 and "zero" in ties["reason"]
    with_nan = paired_test({**same, "x": math.nan}, {**same, "x": 0.3})
    assert with_nan["n"] == 7  # a nan case carries no pair


def test_hd95_does_not_pass_monais_own_deprecation_warning_to_users():
    truth = np.zeros((8, 8, 8), dtype=np.uint8)
    truth[2:5, 2:5, 2:5] = 1
    prediction = np.roll(truth, 1, axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = case_metrics(prediction, truth, {"background": 0, "a": 1}, spacing=(1.0, 1.0, 1.0))
    assert metrics["a"]["hd95"] == pytest.approx(1.0)


def test_mask_dice_is_the_dice_case_metrics_reports():
    from hnas.train.evaluation import mask_dice

    truth = np.zeros((6, 7, 8), dtype=np.int16)
    truth[1:4, 1:4, 1:4] = 2  # 27 voxels
    prediction = np.zeros_like(truth)
    prediction[2:5, 1:4, 1:4] = 2  # 27 voxels, 18 shared
    expected = case_metrics(prediction, truth, {"background": 0, "a": 2}, (1.0, 1.0, 1.0), hd95=False)["a"]["dice"]
    assert mask_dice(prediction == 2, truth == 2) == expected == pytest.approx(2 * 18 / 54)
    assert math.isnan(mask_dice(np.zeros((3, 3), bool), np.zeros((3, 3), bool)))
    assert mask_dice(np.ones((2, 2), bool), np.zeros((2, 2), bool)) == 0.0
