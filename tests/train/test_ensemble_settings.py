"""An ensemble hands its settings to every member and applies its own decisions (found by `make mutation`).

Members are untrained networks with seeded weights: predicting only needs weights, plan and labels.
"""

from __future__ import annotations

import numpy as np
import pytest

from hnas.errors import TrainingError
from hnas.train.ensemble import Ensemble
from hnas.train.prediction import PredictionWarning, resolve_device

from conftest import untrained_checkpoint

from .conftest import tiny_plan

@pytest.fixture(scope="module")
def members(tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble_settings")
    return [untrained_checkpoint(root / f"member{seed}.pt", tiny_plan(), seed) for seed in (0, 1)]


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).normal(size=(1, 18, 17, 16)).astype(np.float32), (1.0, 1.0, 1.0)


def test_default_device_is_auto(members):
    ensemble = Ensemble(members[:1])
    assert all(m.device == resolve_device("auto") for m in ensemble.members)


def test_the_device_reaches_every_member(members):
    with pytest.raises(TrainingError, match="cuda:99"):  # no machine has it: the member must refuse it
        Ensemble(members, device="cuda:99")


def test_mirroring_and_overlap_reach_every_member(members):
    ensemble = Ensemble(members, device="cpu", mirror=True, overlap=0.25)
    assert [m.mirror_axes for m in ensemble.members] == [(0, 1, 2)] * 2
    assert [m.overlap for m in ensemble.members] == [0.25] * 2
    assert all(m.mirror_axes == () for m in Ensemble(members, device="cpu").members)


@pytest.mark.parametrize("weights", [[1.0], [1.0, 2.0, 3.0], [1.0, -1.0], [1.0, 0.0], [-1.0]])
def test_weights_must_be_one_positive_value_per_member(members, weights):
    with pytest.raises(TrainingError, match="do not fit"):
        Ensemble(members, weights=weights, device="cpu")


def test_labels_are_the_argmax_mapped_to_label_values(members, image):
    volume, spacing = image
    for checkpoints in (members[:1], members):
        ensemble = Ensemble(checkpoints, device="cpu")
        probabilities = ensemble.probabilities(volume, spacing)
        labels = ensemble.to_labels(probabilities)
        assert labels.shape == volume.shape[1:]
        assert np.array_equal(labels, np.argmax(probabilities, axis=0))  # label values 0, 1, 2 in order
        shifted = np.roll(probabilities, 1, axis=0)  # class k's probability now decides for label k + 1
        assert np.array_equal(ensemble.to_labels(shifted), (np.argmax(probabilities, axis=0) + 1) % 3)


class MarkingPostprocessing:
    """Stands in for a Postprocessing decision: adds 10 to every label, so its use is visible."""

    def apply(self, label_map):
        return label_map + 10


def test_segment_applies_the_given_postprocessing(members, image):
    volume, spacing = image
    plain = Ensemble(members, device="cpu").segment(volume, spacing)
    marked = Ensemble(members, device="cpu", postprocessing=MarkingPostprocessing()).segment(volume, spacing)
    assert plain.shape == volume.shape[1:] and np.array_equal(marked, plain + 10)


def test_an_empty_ensemble_is_refused():
    with pytest.raises(TrainingError) as refused:
        Ensemble([])
    assert str(refused.value) == "an ensemble needs at least one checkpoint; none was given"


def test_a_weight_refusal_names_the_weights_and_the_member_count(members):
    with pytest.raises(TrainingError) as refused:
        Ensemble(members, weights=[1, 0], device="cpu")
    assert str(refused.value) == ("weights [1.0, 0.0] do not fit 2 checkpoints; expected one positive weight "
                                  "per checkpoint")


def test_members_reading_other_channels_are_refused_naming_both(members, tmp_path):
    two = untrained_checkpoint(tmp_path / "two.pt", tiny_plan(n_input_channels=2, normalization=("zscore", "zscore")),
                               0)
    with pytest.raises(TrainingError) as refused:
        Ensemble([members[0], two], device="cpu")
    assert str(refused.value) == (f"checkpoint {str(two)!r} reads 2 channels but {str(members[0])!r} reads 1; "
                                  "ensemble members need the same input channels")


def prediction_warnings(record):
    return [w for w in record if issubclass(w.category, PredictionWarning)]


def test_an_input_warning_names_its_source_is_given_once_and_points_at_the_caller(members, image):
    volume, _ = image
    fine = (0.1, 0.1, 0.1)  # 10x finer than the members' 1 mm: both members warn, the ensemble once
    ensemble = Ensemble(members, device="cpu")
    with pytest.warns(PredictionWarning) as record:
        ensemble.probabilities(volume, fine)
    given = prediction_warnings(record)
    assert len(given) == 1 and str(given[0].message).startswith("image has voxel size (0.1, 0.1, 0.1) mm")
    # stacklevel: the warning points out of the ensemble (at the caller; under `make mutation`
    # mutmut's trampolines add frames, so only "not inside ensemble.py" can be checked there)
    assert not given[0].filename.endswith("ensemble.py")
    for call in (lambda: ensemble.probabilities(volume, fine, source="scan.nii.gz"),
                 lambda: ensemble.segment(volume, fine, source="scan.nii.gz"),
                 lambda: ensemble.check_input(volume.shape[1:], fine, "scan.nii.gz")):
        with pytest.warns(PredictionWarning) as record:
            call()
        assert [str(w.message).split(" has ")[0] for w in prediction_warnings(record)] == ["scan.nii.gz"]
    for call in (lambda: ensemble.check_input(volume.shape[1:], fine), lambda: ensemble.segment(volume, fine)):
        with pytest.warns(PredictionWarning) as record:  # unnamed input: "image"
            call()
        assert [str(w.message).split(" has ")[0] for w in prediction_warnings(record)] == ["image"]
