"""Preprocessing per Plan (crop, normalise, resample), its cache, and the 5-fold split."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from hnas.data import load_dataset, read_case
from hnas.errors import HnasError, TrainingError
from hnas.train import preprocessing
from hnas.train.config import with_features
from hnas.train.preprocessing import (NORMALIZATION_SCHEMES, ChannelNormalization, check_plan,
                                      preprocess_dataset, preprocess_image, restore_label, separate_axis,
                                      target_shape)

from .conftest import tiny_plan, tiny_plan_2d

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


def test_ct_dataset_is_clipped_with_a_cached_fingerprint(tiny_dataset, tmp_path, monkeypatch):
    ct_dataset = tmp_path / "Dataset901_CT"
    shutil.copytree(tiny_dataset, ct_dataset)
    meta = json.loads((ct_dataset / "dataset.json").read_text())
    (ct_dataset / "dataset.json").write_text(json.dumps({**meta, "channel_names": {"0": "CT"}}))
    plan = tiny_plan(normalization=("ct",))
    data = preprocess_dataset(ct_dataset, plan, tmp_path / "cache")
    ct = data.normalization[0]
    assert ct.scheme == "ct" and ct.lower < ct.mean < ct.upper
    assert len(list((tmp_path / "cache" / "Dataset901_CT").glob("hnas_fingerprint_*.json"))) == 1
    image = data.load(data.case_ids[0]).image
    assert image.min() >= (ct.lower - ct.mean) / ct.std - 1e-4 and image.max() <= (ct.upper - ct.mean) / ct.std + 1e-4

    def refuse(*args, **kwargs):
        raise AssertionError("the fingerprint should come from the cache")

    monkeypatch.setattr("hnas.data.cache.compute_fingerprint", refuse)  # where cached_fingerprint looks it up
    assert preprocess_dataset(ct_dataset, plan, tmp_path / "cache").root == data.root


# ---------------------------------------------------------------- 2D plans (nnU-Net's 2d)


def test_a_2d_plan_keeps_the_slice_axis_and_restores_exactly():
    image, label = _case()
    out, out_label, record = preprocess_image(image, (3.0, 1.0, 1.0), tiny_plan_2d(), ZSCORE, label, (0, 1, 2))
    assert out.shape == (1, 8, 16, 14) and out_label.shape == (8, 16, 14)  # a volume of slices, not resampled
    assert record.dims == 2 and record.spacing == (3.0, 1.0, 1.0)  # the slice axis keeps its 3 mm
    assert np.array_equal(restore_label(out_label, record), label)
    transposed = tiny_plan_2d(transpose_forward=(2, 0, 1))  # slices along x
    _, prepared, record = preprocess_image(image, (1.0, 1.0, 1.0), transposed, ZSCORE, label, (0, 1, 2))
    assert prepared.shape == (14, 8, 16)
    assert np.array_equal(restore_label(prepared, record), label)
    assert preprocessing.CropRecord.from_dict(record.to_dict()) == record


def test_a_2d_plan_resamples_only_in_plane():
    image, label = _case()
    out, out_label, record = preprocess_image(image, (3.0, 0.7, 1.3), tiny_plan_2d(), ZSCORE, label, (0, 1, 2))
    assert out.shape == (1, 8, 11, 18) and record.spacing == (3.0, 1.0, 1.0)
    cropped = label[2:10, 3:19, 1:15]
    for index in range(8):  # every output slice comes from its own input slice, none is blended
        assert set(np.unique(out_label[index])) <= set(np.unique(cropped[index]))
        assert (out_label[index] > 0).any() == (cropped[index] > 0).any()
    restored = restore_label(out_label, record)
    assert restored.shape == label.shape
    dice = 2 * ((restored > 0) & (label > 0)).sum() / ((restored > 0).sum() + (label > 0).sum())
    assert dice > 0.85


@pytest.mark.parametrize("dims", [1, 4, True])
def test_plans_neither_2d_nor_3d_are_refused(dims):
    with pytest.raises(TrainingError, match=f"dims={dims!r}; expected 2 .* or 3") as raised:
        check_plan(tiny_plan(dims=dims))
    assert isinstance(raised.value, HnasError)


def test_a_2d_plan_needs_2d_patch_and_spacing():
    with pytest.raises(TrainingError, match=r"patch_size is \(16, 16, 16\); expected 2 entries"):
        check_plan(tiny_plan_2d(patch_size=(16, 16, 16)))
    with pytest.raises(TrainingError, match=r"transpose_forward \(0, 1\); expected a permutation"):
        check_plan(tiny_plan_2d(transpose_forward=(0, 1)))


def test_2d_and_3d_plans_get_their_own_cache(tiny_dataset, tmp_path):
    volume = preprocess_dataset(tiny_dataset, tiny_plan(), tmp_path)
    slices = preprocess_dataset(tiny_dataset, tiny_plan_2d(), tmp_path)
    assert slices.root != volume.root and slices.key != volume.key
    assert slices.shapes == volume.shapes  # 1 mm data: the same voxels, kept apart all the same
    case = slices.load(slices.case_ids[0])
    assert case.image.ndim == 4 and case.foreground[1].shape[1] == 3


# ---------------------------------------------------------------- normalisation schemes


def test_normalisation_schemes_are_listed():
    assert NORMALIZATION_SCHEMES == ("zscore", "ct", "percentile_zscore", "minmax", "none", "rgb_to_0_1")


def test_zscore_uses_the_image_mean_and_std():
    out = ChannelNormalization("zscore").apply(np.array([1.0, 2.0, 3.0, 4.0]))
    assert np.allclose(out, np.array([-1.5, -0.5, 0.5, 1.5]) / np.sqrt(1.25))  # mean 2.5, variance 1.25


def test_percentile_zscore_clips_to_the_image_percentiles():
    values = np.arange(201, dtype=np.float32)  # percentiles 0.5 / 99.5 of 0..200 are exactly 1 and 199
    out = ChannelNormalization("percentile_zscore").apply(values[::-1].reshape(3, 67))
    clipped = [1.0, 1.0, *range(2, 199), 199.0, 199.0]  # 0 -> 1 and 200 -> 199; the mean stays 100
    variance = (2 * 100 * 101 * 201 / 6 - 2 * (100 ** 2 - 99 ** 2)) / 201  # sum of k^2, two terms clipped
    expected = (np.array(clipped) - 100.0) / np.sqrt(variance)
    assert out.shape == (3, 67) and out.dtype == np.float32
    assert np.allclose(out.ravel()[::-1], expected, atol=1e-5)
    assert out.ravel()[0] == pytest.approx(-out.ravel()[-1]) == pytest.approx(99 / np.sqrt(variance))


def test_minmax_rescales_each_image_to_the_unit_range():
    minmax = ChannelNormalization("minmax")
    assert np.allclose(minmax.apply(np.array([[2.0, 4.0], [6.0, 10.0]])), [[0.0, 0.25], [0.5, 1.0]])
    assert np.allclose(minmax.apply(np.array([-3.0, 0.0, 1.0])), [0.0, 0.75, 1.0])
    constant = minmax.apply(np.full((2, 3), 7.0))
    assert constant.dtype == np.float32 and not constant.any()  # no range: all 0, not NaN


def test_unknown_schemes_are_named_with_the_known_ones():
    with pytest.raises(TrainingError, match=r"normalization\[0\] is 'robust'; expected one of .*'minmax'"):
        preprocessing.normalization_for(tiny_plan(normalization=("robust",)), None)
    with pytest.raises(TrainingError, match="'histogram' is unknown; expected one of .*'percentile_zscore'"):
        ChannelNormalization("histogram")
    for scheme in ("percentile_zscore", "minmax"):
        assert ChannelNormalization.from_dict(ChannelNormalization(scheme).to_dict()) == ChannelNormalization(scheme)


def test_each_scheme_gets_its_own_cache(tiny_dataset, tmp_path):
    roots = {}
    for scheme in ("zscore", "percentile_zscore", "minmax"):
        data = preprocess_dataset(tiny_dataset, tiny_plan(normalization=(scheme,)), tmp_path)
        assert data.normalization == (ChannelNormalization(scheme),)
        roots[scheme] = data.root
    assert len(set(roots.values())) == 3
    image = preprocessing.load_preprocessed(roots["minmax"]).load(data.case_ids[0]).image
    assert image.min() == 0.0 and image.max() == pytest.approx(1.0, abs=1e-3)  # cubic splines may overshoot


class _RunsCodeWhenUnpickled:
    """Unpickling calls ``os.mkdir(marker)``: code execution on load, made harmless."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return os.mkdir, (self.marker,)


def _hostile(marker) -> np.ndarray:
    array = np.empty(1, dtype=object)
    array[0] = _RunsCodeWhenUnpickled(marker)
    return array


@pytest.mark.parametrize("part", ["foreground", "image", "label"])
@pytest.mark.parametrize("lazy", [True, False])
def test_a_cache_file_holding_a_pickled_object_is_never_unpickled(tiny_dataset, tmp_path, part, lazy):
    """The foreground is read with np.load's allow_pickle=False and the arrays by blosc2: a planted object
    array is refused, its code not run."""
    data = preprocess_dataset(tiny_dataset, tiny_plan(), tmp_path / "cache")
    case_id, marker = data.case_ids[0], tmp_path / "code_ran"
    if part == "foreground":
        np.savez(data.root / f"{case_id}_foreground.npz", label_1=_hostile(marker))
    else:
        with open(getattr(data, f"{part}_path")(case_id), "wb") as handle:
            np.save(handle, _hostile(marker), allow_pickle=True)
    with pytest.raises(HnasError, match=case_id):
        data.load(case_id, lazy=lazy)
    assert not marker.exists()


def test_a_tampered_cache_file_is_refused_with_an_hnas_error(tiny_dataset, tmp_path):
    data = preprocess_dataset(tiny_dataset, tiny_plan(), tmp_path / "cache")
    case_id = data.case_ids[0]
    np.savez(data.root / f"{case_id}_foreground.npz", label_1=_hostile(tmp_path / "code_ran"))
    with pytest.raises(HnasError, match=f"{case_id}_foreground.npz"):
        data.load(case_id)
