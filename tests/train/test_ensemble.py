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


def test_label_maps_are_taken_slab_by_slab_in_the_label_dtype(monkeypatch):
    """Predictor.to_labels (an ensemble's too) and find-best's pairs: values[argmax] in int16, computed a few
    slices at a time so argmax's int64 indices never cover the volume; ties go to the first class as argmax's."""
    from hnas.train import prediction

    rng = np.random.default_rng(3)
    scores = rng.random((3, 7, 5, 4)).astype(np.float32)
    scores[:, 0, 0, 0] = 0.5  # a three-way tie: class index 0
    scores[1:, 6, 4, 3] = 0.9  # a tie of classes 1 and 2 in the last slab: class index 1
    values = np.array([0, 2, 5], dtype=np.int16)
    expected = values[np.argmax(scores, axis=0)]
    monkeypatch.setattr(prediction, "ARGMAX_SLAB_VOXELS", 2 * 5 * 4)  # two slices a slab, the last one alone
    labels = prediction.label_map_of(scores, values)
    assert labels.dtype == np.int16 and np.array_equal(labels, expected)
    assert labels[0, 0, 0] == 0 and labels[6, 4, 3] == 2
    monkeypatch.setattr(prediction, "ARGMAX_SLAB_VOXELS", 1)  # smaller than a slice: one slice at a time
    assert np.array_equal(prediction.label_map_of(scores, values), expected)
    assert np.array_equal(prediction.label_map_of(scores[:, 0], values), expected[0])  # 2D scores
    assert prediction.label_map_of(np.array([0.1, 0.7, 0.2]), values) == 2  # one voxel's scores
