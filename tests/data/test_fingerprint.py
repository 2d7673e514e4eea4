"""The fingerprint: nnU-Net's dataset_fingerprint.json round trip, and computing it from a dataset."""

import json
import math

import numpy as np
import pytest

from hnas.data import (ChannelIntensity, Fingerprint, analyze_dataset, compute_fingerprint, crop_to_nonzero,
                       load_dataset, load_fingerprint, nonzero_bbox, read_nnunet_fingerprint, save_fingerprint)
from hnas.data.fingerprint import sample_foreground
from hnas.errors import DatasetError

from .builders import msd_dataset, write_dataset_json, write_zyx

NNUNET_STYLE = {
    "foreground_intensity_properties_per_channel": {
        "0": {"max": 486420.2, "mean": 21108.4, "median": 363.8, "min": 0.0, "percentile_00_5": 29.0,
              "percentile_99_5": 269448.4, "std": 58352.7},
    },
    "median_relative_size_after_cropping": 1.0,
    "shapes_after_crop": [[36, 50, 35], [34, 52, 37]],
    "spacings": [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]],
}


def _nnunet_files(tmp_path):
    folder = tmp_path / "nnUNet_preprocessed" / "Dataset004_Hippocampus"
    write_dataset_json(folder, {"channel_names": {"0": "MRI"}, "file_ending": ".nii.gz", "numTraining": 2,
                                "labels": {"background": 0, "Anterior": 1, "Posterior": 2}})
    (folder / "dataset_fingerprint.json").write_text(json.dumps(NNUNET_STYLE))
    return folder / "dataset_fingerprint.json", folder / "dataset.json"


EXPECTED = Fingerprint(
    name="Dataset004_Hippocampus",
    spacings=((1.0, 1.0, 1.0), (1.0, 1.0, 1.0)),
    shapes_after_crop=((36, 50, 35), (34, 52, 37)),
    channel_names=("MRI",),
    labels=(("background", 0), ("Anterior", 1), ("Posterior", 2)),
    intensity=(ChannelIntensity(mean=21108.4, std=58352.7, median=363.8, min=0.0, max=486420.2,
                                percentile_00_5=29.0, percentile_99_5=269448.4),),
)


def test_read_nnunet_fingerprint(tmp_path):
    fingerprint_json, dataset_json = _nnunet_files(tmp_path)
    fp = read_nnunet_fingerprint(fingerprint_json, dataset_json)
    assert fp == EXPECTED
    assert isinstance(fp.shapes_after_crop[0][0], int) and isinstance(fp.spacings[0][0], float)


def test_plain_nnunet_file_loads_with_the_dataset_json_beside_it(tmp_path):
    fingerprint_json, _ = _nnunet_files(tmp_path)
    assert load_fingerprint(fingerprint_json) == EXPECTED


def test_compute_save_load_round_trip(tmp_path):
    analysis = analyze_dataset(msd_dataset(tmp_path / "Task05_Test", spacing=(0.7, 0.3, 0.3)))
    path = save_fingerprint(analysis.fingerprint, tmp_path / "out" / "fp.json",
                            median_relative_size_after_cropping=analysis.median_relative_size_after_cropping)

    assert load_fingerprint(path) == analysis.fingerprint
    written = json.loads(path.read_text())
    for key in NNUNET_STYLE:  # nnU-Net's planner can read it
        assert key in written
    assert set(written["foreground_intensity_properties_per_channel"]) == {"0", "1"}


def test_fingerprint_without_intensities_round_trips(tmp_path):
    fp = Fingerprint(name="x", spacings=((1.0, 0.5),), shapes_after_crop=((3, 4),), channel_names=("a",),
                     labels=(("background", 0), ("b", 1)))
    assert load_fingerprint(save_fingerprint(fp, tmp_path / "fp.json")) == fp


def test_awkward_floats_round_trip_bit_for_bit(tmp_path):
    """The fingerprint cache serves the file instead of recomputing: every float must come back exactly."""
    awkward = (0.1 + 0.2, math.pi, 5e-324, 1.7976931348623157e308, -0.0, 1 / 3, 2.0 ** 0.5)
    fp = Fingerprint(name="x", spacings=((0.1 + 0.2, 1 / 3, 0.7000000000000001),), shapes_after_crop=((3, 4, 5),),
                     channel_names=("a",), labels=(("background", 0), ("b", 1)),
                     intensity=(ChannelIntensity(*awkward),))
    loaded = load_fingerprint(save_fingerprint(fp, tmp_path / "fp.json"))
    assert loaded == fp
    assert [math.copysign(1.0, v) for v in vars(loaded.intensity[0]).values()] == [math.copysign(1.0, v)
                                                                                    for v in awkward]


def test_plain_nnunet_file_without_dataset_json_is_explained(tmp_path):
    path = tmp_path / "dataset_fingerprint.json"
    path.write_text(json.dumps(NNUNET_STYLE))
    with pytest.raises(DatasetError, match="lacks the key 'hnas'.*read_nnunet_fingerprint"):
        load_fingerprint(path)


@pytest.mark.parametrize("change, message", [
    ({"spacings": None}, "lacks the key 'spacings'"),
    ({"shapes_after_crop": [[36, 50, 35]]}, "'spacings' has 2 cases and 'shapes_after_crop' 1"),
    ({"spacings": [[1.0, 1.0], [1.0, 1.0, 1.0]]}, "lengths \\[2, 3\\]"),
    ({"foreground_intensity_properties_per_channel": {"0": {"mean": 1.0}}}, "lacks \\['std'"),
    ({"foreground_intensity_properties_per_channel": {"1": NNUNET_STYLE[
        "foreground_intensity_properties_per_channel"]["0"]}}, "has channels \\[1\\]; expected 0..0"),
])
def test_malformed_nnunet_fingerprint_names_the_key(tmp_path, change, message):
    fingerprint_json, dataset_json = _nnunet_files(tmp_path)
    data = dict(NNUNET_STYLE)
    for key, value in change.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    fingerprint_json.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=message):
        read_nnunet_fingerprint(fingerprint_json, dataset_json)


def test_missing_fingerprint_file(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_fingerprint(tmp_path / "none.json")


SPACING = (3.0, 2.0, 1.0)


@pytest.fixture
def tiny(tmp_path):
    """Two hand-made cases whose fingerprint is worked out below by hand."""
    root = tmp_path / "Dataset010_Tiny"
    write_dataset_json(root, {"channel_names": {"0": "CT"}, "labels": {"background": 0, "a": 1, "b": 2},
                              "numTraining": 2, "file_ending": ".nii.gz"})
    shape = (4, 5, 6)
    # case A: non-zero block z 1..2, y 1..3, x 2..4 -> crop (2, 3, 3); foreground values 1..6
    image, label = np.zeros(shape, np.int16), np.zeros(shape, np.uint8)
    image[1:3, 1:4, 2:5] = 50
    image[1, 1, 2:5], label[1, 1, 2:5] = [1, 2, 3], 1
    image[2, 3, 2:5], label[2, 3, 2:5] = [4, 5, 6], 2
    label[3, 4, 5] = 1  # labelled air outside the non-zero box: cropped away, as in nnU-Net
    write_zyx(root / "imagesTr" / "a_0000.nii.gz", image, SPACING)
    write_zyx(root / "labelsTr" / "a.nii.gz", label, SPACING)
    # case B: two non-zero corners -> no crop; foreground values 7, 8 and a labelled 0 inside the box
    image, label = np.zeros(shape, np.int16), np.zeros(shape, np.uint8)
    image[0, 0, 0], image[3, 4, 5] = 7, 8
    label[0, 0, 0] = label[3, 4, 5] = 1
    label[1, 1, 1] = 2
    write_zyx(root / "imagesTr" / "b_0000.nii.gz", image, SPACING)
    write_zyx(root / "labelsTr" / "b.nii.gz", label, SPACING)
    return root


def test_hand_computed_fingerprint(tiny):
    analysis = analyze_dataset(tiny)
    fp = analysis.fingerprint

    assert fp.name == "Dataset010_Tiny"
    assert fp.spacings == (SPACING, SPACING)
    assert fp.shapes_after_crop == ((2, 3, 3), (4, 5, 6))
    assert fp.channel_names == ("CT",)
    assert fp.labels == (("background", 0), ("a", 1), ("b", 2))
    # pooled foreground values 0..8: mean 4, population std sqrt(60/9), linear percentiles
    expected = ChannelIntensity(mean=4.0, std=math.sqrt(60 / 9), median=4.0, min=0.0, max=8.0,
                                percentile_00_5=0.04, percentile_99_5=7.96)
    (got,) = fp.intensity
    for name in expected.__dataclass_fields__:
        assert getattr(got, name) == pytest.approx(getattr(expected, name), abs=1e-12), name
    assert analysis.shapes_before_crop == ((4, 5, 6), (4, 5, 6))
    assert analysis.median_relative_size_after_cropping == pytest.approx((18 / 120 + 1.0) / 2)


def test_all_voxels_are_used_below_the_sample_size(tiny):
    assert compute_fingerprint(tiny) == compute_fingerprint(tiny, samples_per_case=None)


def test_workers_give_the_same_fingerprint(tiny):
    assert compute_fingerprint(tiny, workers=2) == compute_fingerprint(tiny, workers=1)


def test_crop_uses_the_union_of_channels(tmp_path):
    fp = compute_fingerprint(msd_dataset(tmp_path / "Task02", channel_names=("T1", "T2"), shape=(6, 7, 8)))
    # channel 0 is non-zero in [1:5, 1:6, 1:7], channel 1 in [1:5, 1:6, 2:7]; the union decides
    assert fp.shapes_after_crop == ((4, 5, 6), (4, 5, 6))
    assert fp.n_channels == 2 and len(fp.intensity) == 2


def test_nonzero_bbox_and_crop():
    image = np.zeros((2, 5, 6, 7), np.float32)
    image[0, 1, 2, 3] = 1.0
    image[1, 3, 4, 5] = -2.0
    label = np.arange(5 * 6 * 7).reshape(5, 6, 7)

    bbox = nonzero_bbox(image)
    cropped, cropped_label, _ = crop_to_nonzero(image, label)

    assert bbox == (slice(1, 4), slice(2, 5), slice(3, 6))
    assert cropped.shape == (2, 3, 3, 3)
    np.testing.assert_array_equal(cropped_label, label[1:4, 2:5, 3:6])
    assert nonzero_bbox(np.zeros((1, 2, 3, 4))) == (slice(0, 2), slice(0, 3), slice(0, 4))


def test_foreground_sampling_is_seeded_and_bounded():
    image = np.arange(100, dtype=np.float32).reshape(1, 4, 5, 5)
    label = (image[0] % 3 == 0).astype(np.uint8)  # 34 foreground voxels

    first = sample_foreground(image, label, samples=10, seed=1)

    assert first.shape == (1, 10)
    assert set(first[0].tolist()) <= set(range(0, 100, 3))
    np.testing.assert_array_equal(first, sample_foreground(image, label, samples=10, seed=1))
    assert not np.array_equal(first, sample_foreground(image, label, samples=10, seed=2))
    assert sample_foreground(image, label, samples=1000, seed=1).shape == (1, 34)


def test_dataset_without_foreground_is_refused(tmp_path):
    root = tmp_path / "Dataset011_Empty"
    write_dataset_json(root, {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "a": 1},
                              "numTraining": 1, "file_ending": ".nii.gz"})
    write_zyx(root / "imagesTr" / "x_0000.nii.gz", np.arange(27, dtype=np.int16).reshape(3, 3, 3))  # not constant
    write_zyx(root / "labelsTr" / "x.nii.gz", np.zeros((3, 3, 3), np.uint8))
    with pytest.raises(DatasetError, match="no foreground voxels"):
        compute_fingerprint(load_dataset(root))


def test_workers_must_be_positive(tiny):
    with pytest.raises(DatasetError, match="workers is 0"):
        compute_fingerprint(tiny, workers=0)
