"""`hnas find-best`: cross-validation Dice of every model in RUN/cv and of every pair's ensemble,
the best one picked and its post-processing decided (nnU-Net's find_best_configuration)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hnas.train.evaluation import case_metrics

LABELS = (("background", 0), ("anterior", 1), ("posterior", 2))


def test_case_metrics_can_skip_hd95_and_keep_dice():
    truth = np.zeros((8, 9, 10), dtype=np.int16)
    truth[2:6, 2:6, 2:6] = 1
    prediction = truth.copy()
    prediction[2, 2:6, 2:6] = 0
    full = case_metrics(prediction, truth, LABELS, (1.0, 1.0, 1.0))
    fast = case_metrics(prediction, truth, LABELS, (1.0, 1.0, 1.0), hd95=False)
    assert fast["anterior"]["dice"] == full["anterior"]["dice"] == pytest.approx(2 * 48 / (48 + 64))
    assert math.isnan(fast["anterior"]["hd95"]) and not math.isnan(full["anterior"]["hd95"])
    assert math.isnan(fast["posterior"]["dice"])  # absent from both: nnU-Net's nan
