"""Ensembles: the mean softmax of checkpoints with their own plans and label sets.

Model folders, best configurations and `hnas predict` are in tests/pipeline/test_predict.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from hnas.data import load_dataset, read_images
from hnas.errors import TrainingError
from hnas.train import Predictor
from hnas.train.ensemble import Ensemble
from hnas.train.prediction import InputLimits

from conftest import untrained_checkpoint

from .conftest import tiny_plan

@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two members on different plans (1 mm and 1.5 mm spacing) and a third with another label set."""
    root = tmp_path_factory.mktemp("ensemble")
    fine, coarse = tiny_plan(), tiny_plan(spacing=(1.5, 1.5, 1.5))
    return {"fine": untrained_checkpoint(root / "fine.pt", fine, 0),
            "coarse": untrained_checkpoint(root / "coarse.pt", coarse, 1),
            "other_labels": untrained_checkpoint(root / "other.pt", fine, 2, [["background", 0], ["tumour", 1],
                                                                           ["edema", 2]])}


@pytest.fixture(scope="module")
def image(tiny_dataset):
    case = load_dataset(tiny_dataset).cases[0]
    return case.image_files[0], read_images(case.image_files)


def test_members_with_different_plans_average_their_restored_softmax(checkpoints, image):
    _, volume = image
    fine = Predictor(checkpoints["fine"], device="cpu").probabilities(volume.array, volume.spacing)
    coarse = Predictor(checkpoints["coarse"], device="cpu").probabilities(volume.array, volume.spacing)
    assert fine.shape == coarse.shape == (3,) + volume.array.shape[1:]
    ensemble = Ensemble([checkpoints["fine"], checkpoints["coarse"]], weights=[3, 1], device="cpu")
    mean = ensemble.probabilities(volume.array, volume.spacing)
    np.testing.assert_allclose(mean, 0.75 * fine + 0.25 * coarse, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(mean.sum(axis=0), 1.0, atol=1e-5)
    assert not np.allclose(fine, coarse, atol=1e-3)  # the average is not trivially one member's
    assert np.array_equal(ensemble.segment(volume.array, volume.spacing), ensemble.to_labels(mean))


def test_members_with_other_labels_are_refused_naming_both(checkpoints):
    with pytest.raises(TrainingError, match=r"other\.pt.*tumour.*fine\.pt.*left.*same label set"):
        Ensemble([checkpoints["fine"], checkpoints["other_labels"]], device="cpu")


def test_every_member_checks_the_input_before_any_member_predicts(checkpoints, image, monkeypatch):
    """Issue 18: a refusal (or a work warning) comes before minutes of sliding window, whichever member gives it."""
    from hnas.errors import DatasetError
    from hnas.train import prediction

    _, volume = image  # 24^3 at 1 mm: 13,824 voxels for the fine member, 16^3 = 4,096 for the coarse one

    def reached(*args, **kwargs):
        raise AssertionError("a member predicted before the last member checked the input")

    monkeypatch.setattr(prediction, "sliding_window_logits", reached)
    ensemble = Ensemble([checkpoints["coarse"], checkpoints["fine"]], device="cpu", limits=InputLimits(max_voxels=10_000))
    with pytest.raises(DatasetError, match=r"= 13,824 voxels .* expected at most 10,000"):
        ensemble.segment(volume.array, volume.spacing)
