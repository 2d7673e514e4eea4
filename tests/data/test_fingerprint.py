import json

import pytest

from hnas.data import (ChannelIntensity, Fingerprint, analyze_dataset, load_fingerprint, read_nnunet_fingerprint,
                       save_fingerprint)
from hnas.errors import DatasetError

from .builders import msd_dataset, write_dataset_json

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
