"""Per-case, per-class segmentation metrics (Dice, HD95) and the paired test between two models.

Built on MONAI's metric functions so the numbers match what MONAI/Auto3DSeg users report. Conventions
(nnU-Net's for Dice, MONAI's for HD95), stated once here because the means depend on them:

- Dice of a class absent from both prediction and truth is ``nan`` (nnU-Net: no information about that
  class in that case) and is left out of every mean; a class present in only one of them has Dice 0.
- HD95 (95th percentile of the symmetric surface distances, in the units of ``spacing``, i.e. mm) is
  ``nan`` whenever either mask is empty: the distance is undefined there, and Dice already penalises the
  miss.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance

Labels = Sequence[tuple[str, int]] | Mapping[str, int]


def foreground_classes(labels: Labels) -> list[tuple[str, int]]:
    """``(name, value)`` of every class except background (value 0), in label-value order."""
    pairs = labels.items() if isinstance(labels, Mapping) else labels
    return sorted(((str(name), int(value)) for name, value in pairs if int(value) != 0), key=lambda p: p[1])


def case_metrics(prediction: np.ndarray, truth: np.ndarray, labels: Labels,
                 spacing: Sequence[float], *, hd95: bool = True) -> dict[str, dict[str, float]]:
    """``{class_name: {"dice": d, "hd95": h}}`` for every foreground class of one case.

    ``prediction`` and ``truth`` are label maps of the same shape; ``spacing`` is the voxel size per
    axis of those arrays (HD95 in its units). ``hd95=False`` leaves HD95 ``nan``: selecting among
    many candidates (ensembles, post-processing) needs only Dice, and HD95 costs ~10x more.
    """
    prediction, truth = np.asarray(prediction), np.asarray(truth)
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from truth shape {truth.shape}")
    if len(spacing) != truth.ndim:
        raise ValueError(f"spacing {tuple(spacing)} has {len(spacing)} values; expected {truth.ndim}")
    return {name: _class_metrics(prediction == value, truth == value, spacing, hd95)
            for name, value in foreground_classes(labels)}


def mask_dice(predicted: np.ndarray, expected: np.ndarray) -> float:
    """Dice of one boolean mask pair, as :func:`case_metrics` computes it for a class (nan if both are empty)."""
    return _class_metrics(predicted, expected, (1.0,) * expected.ndim, with_hd95=False)["dice"]


def _class_metrics(predicted: np.ndarray, expected: np.ndarray, spacing: Sequence[float],
                   with_hd95: bool = True) -> dict[str, float]:
    """Dice and HD95 of one binary mask pair (conventions in the module docstring)."""
    has_prediction, has_truth = bool(predicted.any()), bool(expected.any())
    if not has_prediction and not has_truth:
        return {"dice": math.nan, "hd95": math.nan}
    batch_pred = torch.from_numpy(predicted[None, None].astype(np.float32))
    batch_truth = torch.from_numpy(expected[None, None].astype(np.float32))
    dice = float(compute_dice(batch_pred, batch_truth, include_background=True, ignore_empty=False)[0, 0])
    if not (has_prediction and has_truth and with_hd95):
        return {"dice": dice, "hd95": math.nan}
    with warnings.catch_warnings():  # MONAI 1.5-1.6 warns about an argument its own code passes
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy", category=FutureWarning)
        hd95 = compute_hausdorff_distance(batch_pred, batch_truth, include_background=True, percentile=95,
                                          spacing=[float(s) for s in spacing])
    return {"dice": dice, "hd95": float(hd95[0, 0])}


def mean_dice(metrics: Mapping[str, Mapping[str, float]]) -> float:
    """Mean foreground Dice of one case, ``nan`` classes left out (``nan`` if every class is)."""
    values = [m["dice"] for m in metrics.values() if not math.isnan(m["dice"])]
    return float(np.mean(values)) if values else math.nan


def paired_test(first: Mapping[str, float], second: Mapping[str, float]) -> dict:
    """Wilcoxon signed-rank test of two models' scores paired by case id.

    Returns ``{"n", "statistic", "p", "reason"}``; ``p``/``statistic`` are ``None`` with a reason when
    the test says nothing: fewer than 6 pairs (the two-sided exact p can never reach 0.05) or no
    non-zero difference. Cases missing from one side or ``nan`` on either are dropped.
    """
    from scipy.stats import wilcoxon

    cases = sorted(c for c in set(first) & set(second)
                   if not (math.isnan(first[c]) or math.isnan(second[c])))
    n = len(cases)
    result = {"n": n, "statistic": None, "p": None, "reason": None}
    differences = np.array([first[c] - second[c] for c in cases], dtype=float)
    if n < 6:
        result["reason"] = f"only {n} paired cases; the Wilcoxon test needs at least 6"
    elif not np.any(differences != 0):
        result["reason"] = f"all {n} paired differences are zero"
    else:
        test = wilcoxon(differences)
        result["statistic"], result["p"] = float(test.statistic), float(test.pvalue)
    return result
