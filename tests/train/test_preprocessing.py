"""Preprocessing per Plan (crop, normalise, resample), its cache, and the 5-fold split."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from hnas.data import load_dataset, read_case
from hnas.errors import TrainingError
from hnas.train import preprocessing
from hnas.train.config import with_features
from hnas.train.preprocessing import (ChannelNormalization, fold_split, preprocess_dataset, preprocess_image,
                                      restore_label, separate_axis, target_shape)

from .conftest import tiny_plan

ZSCORE = (ChannelNormalization("zscore"),)


def _case(shape=(12, 20, 18), seed=0):
    """An image with a zero border (to crop) and a two-label map."""
    rng = np.random.default_rng(seed)
    image = np.zeros((1, *shape), dtype=np.float32)
    image[:, 2:-2, 3:-1, 1:-3] = rng.normal(100.0, 20.0, size=(1, shape[0] - 4, shape[1] - 4, shape[2] - 4))
    label = np.zeros(shape, dtype=np.int16)
    label[4:8, 6:12, 5:10] = 1
    label[5:7, 8:10, 6:10] = 2
    return image, label


def test_crop_and_zscore_without_resampling():
    image, label = _case()
    out, out_label, record = preprocess_image(image, (1.0, 1.0, 1.0), tiny_plan(), ZSCORE, label, (0, 1, 2))
    assert out.shape == (1, 8, 16, 14) == (1, *record.cropped_shape)
    assert record.bbox == ((2, 10), (3, 19), (1, 15))
    assert abs(float(out.mean())) < 1e-5 and abs(float(out.std()) - 1.0) < 1e-4
    assert np.array_equal(out_label, label[2:10, 3:19, 1:15])


def test_resampling_reaches_the_plan_spacing_and_keeps_labels():
    image, label = _case()
    spacing = (2.0, 1.0, 0.5)
    out, out_label, record = preprocess_image(image, spacing, tiny_plan(), ZSCORE, label, (0, 1, 2))
    assert out.shape[1:] == target_shape(record.cropped_shape, spacing, (1.0, 1.0, 1.0)) == (16, 16, 7)
    assert out.dtype == np.float32 and out_label.dtype == np.int16
    assert set(np.unique(out_label)) == {0, 1, 2}
    # twice the voxels along z, half along x: the labelled volume in mm^3 is about the same
    assert abs(int((out_label > 0).sum()) - int((label > 0).sum())) <= 0.35 * int((label > 0).sum())


def test_anisotropic_data_resamples_the_thick_axis_separately():
    assert separate_axis((5.0, 1.0, 1.0), (1.0, 1.0, 1.0)) == 0
    assert separate_axis((1.0, 1.0, 1.0), (1.0, 0.8, 4.0)) == 2
    assert separate_axis((1.5, 1.0, 1.0), (1.0, 1.0, 1.0)) is None
    image, label = _case()
    out, out_label, _ = preprocess_image(image, (5.0, 1.0, 1.0), tiny_plan(), ZSCORE, label, (0, 1, 2))
    assert out.shape[1:] == (40, 16, 14) and out_label.shape == (40, 16, 14)


def test_restore_label_inverts_crop_resampling_and_transpose():
    image, label = _case()
    plan = tiny_plan(transpose_forward=(2, 0, 1), spacing=(1.0, 1.0, 1.0))
    _, prepared, record = preprocess_image(image, (1.0, 1.0, 1.0), plan, ZSCORE, label, (0, 1, 2))
    assert prepared.shape == (14, 8, 16)  # x first after the transpose
    assert np.array_equal(restore_label(prepared, record), label)
    _, resampled, record = preprocess_image(image, (1.0, 0.7, 1.3), tiny_plan(), ZSCORE, label, (0, 1, 2))
    restored = restore_label(resampled, record)
    assert restored.shape == label.shape
    dice = 2 * ((restored > 0) & (label > 0)).sum() / ((restored > 0).sum() + (label > 0).sum())
    assert dice > 0.85


def test_ct_normalisation_clips_and_uses_dataset_statistics():
    ct = ChannelNormalization("ct", mean=50.0, std=10.0, lower=0.0, upper=100.0)
    values = np.array([-1000.0, 0.0, 50.0, 70.0, 3000.0], dtype=np.float32)
    assert np.allclose(ct.apply(values), [-5.0, -5.0, 0.0, 2.0, 5.0])
    assert ChannelNormalization.from_dict(ct.to_dict()) == ct
    assert ChannelNormalization.from_dict(ChannelNormalization("zscore").to_dict()) == ChannelNormalization("zscore")


def test_ct_plan_needs_intensity_statistics():
    with pytest.raises(TrainingError, match="CT normalisation"):
        preprocessing.normalization_for(tiny_plan(normalization=("ct",)), None)


def test_dataset_cache_is_reused_and_invalidated_by_spacing(tiny_dataset, tmp_path, monkeypatch):
    plan = tiny_plan()
    first = preprocess_dataset(tiny_dataset, plan, tmp_path)
    dataset = load_dataset(tiny_dataset)
    assert first.case_ids == dataset.case_ids and first.labels == dataset.labels
    case = first.load(first.case_ids[0])
    raw = read_case(dataset, first.case_ids[0])
    assert case.image.dtype == np.float32 and case.image.shape[1:] == case.label.shape
    assert abs(float(case.image.mean())) < 1e-4  # z-scored
    assert set(case.foreground) == {1, 2}
    assert all((case.label[tuple(p.T)] == value).all() for value, p in case.foreground.items())
    assert int((case.label > 0).sum()) == int((raw.label > 0).sum())

    def refuse(*args):
        raise AssertionError("the cache should have been reused")

    monkeypatch.setattr(preprocessing, "_preprocess_case", refuse)
    again = preprocess_dataset(tiny_dataset, with_features(plan, 8, 32), tmp_path)  # features do not matter
    assert again.root == first.root
    monkeypatch.undo()
    coarser = preprocess_dataset(tiny_dataset, tiny_plan(spacing=(1.5, 1.5, 1.5)), tmp_path)
    assert coarser.root != first.root
    for case_id, shape in first.shapes.items():  # at 1 mm the cached shape is the cropped shape
        assert coarser.shapes[case_id] == target_shape(shape, (1.0, 1.0, 1.0), (1.5, 1.5, 1.5))


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


def test_ct_dataset_is_clipped_with_a_cached_fingerprint(tiny_dataset, tmp_path, monkeypatch):
    ct_dataset = tmp_path / "Dataset901_CT"
    shutil.copytree(tiny_dataset, ct_dataset)
    meta = json.loads((ct_dataset / "dataset.json").read_text())
    (ct_dataset / "dataset.json").write_text(json.dumps({**meta, "channel_names": {"0": "CT"}}))
    plan = tiny_plan(normalization=("ct",))
    data = preprocess_dataset(ct_dataset, plan, tmp_path / "cache")
    ct = data.normalization[0]
    assert ct.scheme == "ct" and ct.lower < ct.mean < ct.upper
    assert len(list((tmp_path / "cache" / "Dataset901_CT").glob("fingerprint_*.json"))) == 1
    image = data.load(data.case_ids[0]).image
    assert image.min() >= (ct.lower - ct.mean) / ct.std - 1e-4 and image.max() <= (ct.upper - ct.mean) / ct.std + 1e-4

    def refuse(*args, **kwargs):
        raise AssertionError("the fingerprint should come from the cache")

    monkeypatch.setattr(preprocessing, "compute_fingerprint", refuse)
    assert preprocess_dataset(ct_dataset, plan, tmp_path / "cache").root == data.root
