"""The metric conventions of hnas.train.evaluation at their edges (cases found by `make mutation`).

Expected values are counted by hand: Dice = 2 |A and B| / (|A| + |B|); the exact two-sided Wilcoxon
p of n pairs that all differ in the same direction is 2 / 2**n.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from hnas.train.evaluation import case_metrics, foreground_classes, mean_dice, paired_test

LABELS = (("background", 0), ("liver", 1), ("tumour", 2))


def test_hd95_false_leaves_hd95_undefined_even_when_both_masks_are_present():
    truth = np.zeros((8, 8, 8), dtype=np.int16)
    truth[2:5, 2:5, 2:5] = 1
    prediction = truth.copy()
    prediction[2:5, 2:5, 5] = 1  # 27 + 9 voxels
    with_hd = case_metrics(prediction, truth, LABELS[:2], (1.0, 1.0, 1.0))["liver"]
    without = case_metrics(prediction, truth, LABELS[:2], (1.0, 1.0, 1.0), hd95=False)["liver"]
    assert with_hd["dice"] == without["dice"] == pytest.approx(2 * 27 / (36 + 27))
    assert with_hd["hd95"] == pytest.approx(1.0) and math.isnan(without["hd95"])


def test_a_class_in_only_one_mask_has_dice_zero_and_no_hd95_without_warnings():
    truth = np.zeros((6, 6, 6), dtype=np.int16)
    truth[1:3, 1:3, 1:3] = 1  # liver only in the truth: missed
    prediction = np.zeros_like(truth)
    prediction[4:6, 4:6, 4:6] = 2  # tumour only in the prediction: a false positive
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # MONAI warns when asked for a distance to an empty mask
        metrics = case_metrics(prediction, truth, LABELS, (1.0, 1.0, 1.0))
    assert metrics["liver"]["dice"] == 0.0 and metrics["tumour"]["dice"] == 0.0
    assert math.isnan(metrics["liver"]["hd95"]) and math.isnan(metrics["tumour"]["hd95"])


def test_foreground_classes_are_in_label_value_order_not_name_order():
    assert foreground_classes({"zeta": 1, "background": 0, "alpha": 2}) == [("zeta", 1), ("alpha", 2)]
    assert foreground_classes([("b", 3), ("a", 1)]) == [("a", 1), ("b", 3)]


def test_mean_dice_of_only_absent_classes_is_nan_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(mean_dice({"liver": {"dice": math.nan}, "tumour": {"dice": math.nan}}))


def test_six_pairs_are_enough_for_the_wilcoxon_test():
    first = {f"case{i}": 0.9 + i / 100 for i in range(6)}
    second = {case: value - 0.1 - int(case[-1]) / 1000 for case, value in first.items()}  # all differ, no ties
    result = paired_test(first, second)
    assert set(result) == {"n", "statistic", "p", "reason"}
    assert result["n"] == 6 and result["reason"] is None
    assert result["statistic"] == 0.0 and result["p"] == pytest.approx(2 / 2 ** 6)


def test_five_pairs_say_why_there_is_no_test():
    first = {f"case{i}": 0.9 for i in range(5)}
    second = {case: 0.5 for case in first}
    assert paired_test(first, second) == {"n": 5, "statistic": None, "p": None,
                                          "reason": "only 5 paired cases; the Wilcoxon test needs at least 6"}
