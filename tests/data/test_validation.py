import json

import numpy as np
import pytest

from hnas.data import load_dataset, validate_dataset
from hnas.errors import DatasetError

from .builders import case_arrays, msd_dataset, nnunet_dataset, write_dataset_json, write_zyx


@pytest.fixture
def root(tmp_path):
    return nnunet_dataset(tmp_path / "Dataset001_Test")


def _edit_json(root, **changes):
    meta = json.loads((root / "dataset.json").read_text())
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    (root / "dataset.json").write_text(json.dumps(meta))


def test_valid_datasets_pass(root, tmp_path):
    assert validate_dataset(root).case_ids == ("case_a", "case_b", "case_c")
    assert validate_dataset(load_dataset(msd_dataset(tmp_path / "Task01"))).format == "msd"


def test_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match="nowhere.*does not exist"):
        validate_dataset(tmp_path / "nowhere")


def test_missing_dataset_json(root):
    (root / "dataset.json").unlink()
    with pytest.raises(DatasetError, match="no dataset.json"):
        validate_dataset(root)


def test_empty_images_folder(tmp_path):
    root = tmp_path / "Dataset002_Empty"
    write_dataset_json(root, {"channel_names": {"0": "CT"}, "labels": {"background": 0, "a": 1},
                              "numTraining": 0, "file_ending": ".nii.gz"})
    (root / "imagesTr").mkdir()
    with pytest.raises(DatasetError, match="no training cases: imagesTr is empty"):
        validate_dataset(root)


def test_missing_images_folder(tmp_path):
    root = tmp_path / "Dataset003"
    write_dataset_json(root, {"channel_names": {"0": "CT"}, "labels": {"background": 0, "a": 1},
                              "numTraining": 0, "file_ending": ".nii.gz"})
    with pytest.raises(DatasetError, match="no imagesTr folder"):
        validate_dataset(root)


def test_missing_label_file(root):
    (root / "labelsTr" / "case_b.nii.gz").unlink()
    with pytest.raises(DatasetError, match=r"case 'case_b': label file labelsTr/case_b.nii.gz is missing"):
        validate_dataset(root)


def test_missing_channel_file(tmp_path):
    root = nnunet_dataset(tmp_path / "D", channel_names=("T1", "T2"))
    (root / "imagesTr" / "case_c_0001.nii.gz").unlink()
    with pytest.raises(DatasetError, match=r"case 'case_c': channel 1 \(T2\) image file "
                                           r"imagesTr/case_c_0001.nii.gz is missing"):
        validate_dataset(root)


def test_image_label_shape_mismatch(root):
    write_zyx(root / "labelsTr" / "case_a.nii.gz", np.zeros((6, 7, 9), np.uint8), (2.0, 1.0, 1.0))
    with pytest.raises(DatasetError, match=r"case 'case_a': image/label shape mismatch: image \(6, 7, 8\), "
                                           r"label \(6, 7, 9\)"):
        validate_dataset(root)


def test_image_label_spacing_mismatch(root):
    write_zyx(root / "labelsTr" / "case_a.nii.gz", case_arrays(0)[1], (2.0, 1.01, 1.0))
    with pytest.raises(DatasetError, match=r"case 'case_a': image/label spacing mismatch"):
        validate_dataset(root)


def test_spacing_within_tolerance_passes(root):
    write_zyx(root / "labelsTr" / "case_a.nii.gz", case_arrays(0)[1], (2.0, 1.0001, 1.0))
    validate_dataset(root)


def test_channels_on_different_grids(tmp_path):
    root = nnunet_dataset(tmp_path / "D", channel_names=("T1", "T2"))
    write_zyx(root / "imagesTr" / "case_a_0001.nii.gz", np.ones((6, 7, 7)), (2.0, 1.0, 1.0))
    with pytest.raises(DatasetError, match=r"case 'case_a': channel 1 file imagesTr/case_a_0001.nii.gz has shape"):
        validate_dataset(root)


def test_label_values_not_in_dataset_json(root):
    label = case_arrays(1)[1]
    label[0, 0, 0], label[0, 0, 1] = 5, 7
    write_zyx(root / "labelsTr" / "case_b.nii.gz", label, (2.0, 1.0, 1.0))
    with pytest.raises(DatasetError, match=r"case 'case_b': .* holds values \[5, 7\] that dataset.json does not list"):
        validate_dataset(root)
    validate_dataset(root, check_label_values=False)


def test_fractional_label_values(root):
    label = case_arrays(1)[1].astype(np.float32)
    label[0, 0, 0] = 1.5
    write_zyx(root / "labelsTr" / "case_b.nii.gz", label, (2.0, 1.0, 1.0))
    with pytest.raises(DatasetError, match=r"case 'case_b': .*non-integer values \[1.5\]"):
        validate_dataset(root)


def test_every_problem_is_reported_at_once(root):
    (root / "labelsTr" / "case_a.nii.gz").unlink()
    (root / "labelsTr" / "case_c.nii.gz").unlink()
    with pytest.raises(DatasetError, match="2 problem") as info:
        validate_dataset(root)
    assert "case 'case_a'" in str(info.value) and "case 'case_c'" in str(info.value)


def test_num_training_mismatch(root):
    _edit_json(root, numTraining=5)
    with pytest.raises(DatasetError, match="'numTraining' is 5 but 3 training cases"):
        validate_dataset(root)


def test_label_without_image(root):
    for path in (root / "imagesTr").glob("case_c_*"):
        path.unlink()
    _edit_json(root, numTraining=2)
    with pytest.raises(DatasetError, match=r"case 'case_c': label file labelsTr/case_c.nii.gz has no image"):
        validate_dataset(root)


def test_badly_named_and_extra_channel_files(root):
    write_zyx(root / "imagesTr" / "case_a.nii.gz", np.zeros((6, 7, 8)))
    write_zyx(root / "imagesTr" / "case_a_0001.nii.gz", np.zeros((6, 7, 8)))
    with pytest.raises(DatasetError) as info:
        validate_dataset(root)
    message = str(info.value)
    assert "imagesTr file 'case_a.nii.gz' does not follow {case}_{XXXX}.nii.gz" in message
    assert "case 'case_a': imagesTr file 'case_a_0001.nii.gz' has channel index 1" in message


def test_msd_4d_file_with_wrong_channel_count(tmp_path):
    root = msd_dataset(tmp_path / "Task01", channel_names=("T1", "T2"))
    write_zyx(root / "imagesTr" / "hippo_2.nii.gz", [np.ones((6, 7, 8))] * 3, (1.0, 1.0, 1.5))
    with pytest.raises(DatasetError, match=r"case 'hippo_2': image file imagesTr/hippo_2.nii.gz holds 3 channel"):
        validate_dataset(root)


def test_unreadable_file(root):
    (root / "imagesTr" / "case_b_0000.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(DatasetError, match=r"case 'case_b': .*case_b_0000.nii.gz.*cannot be read"):
        validate_dataset(root)


@pytest.mark.parametrize("change, message", [
    ({"labels": None}, "lacks the key 'labels'"),
    ({"file_ending": None}, "lacks the key 'file_ending'"),
    ({"numTraining": None}, "lacks the key 'numTraining'"),
    ({"channel_names": None}, "neither 'channel_names' \\(nnU-Net v2\\) nor 'modality'"),
    ({"channel_names": {"0": "T1", "2": "T2"}}, "key 'channel_names' has indices \\[0, 2\\]"),
    ({"labels": {"background": 0, "a": 2}}, "key 'labels' has values \\[0, 2\\]; expected consecutive"),
    ({"labels": {"background": 0, "tumour": [1, 2]}}, "label 'tumour' is a region"),
    ({"labels": {"background": 0, "a": "one"}}, "key 'labels' is .*expected integer values"),
    ({"labels": {"0": "background", "x": "a"}}, "'labels' has key 'x'; expected integer indices"),
    ({"labels": ["background"]}, "key 'labels' is a list; expected a dict"),
    ({"file_ending": ".png"}, "key 'file_ending' is '.png'; only NIfTI"),
])
def test_malformed_dataset_json_names_the_key(root, change, message):
    _edit_json(root, **change)
    with pytest.raises(DatasetError, match=message):
        validate_dataset(root)


def test_invalid_json(root):
    (root / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match="dataset.json' is not valid JSON"):
        load_dataset(root)


def test_msd_training_entry_without_label(tmp_path):
    root = msd_dataset(tmp_path / "Task01")
    meta = json.loads((root / "dataset.json").read_text())
    del meta["training"][1]["label"]
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=r"'training'\[1\] lacks the key 'label'"):
        load_dataset(root)


def test_duplicate_cases_are_refused(tmp_path):
    root = msd_dataset(tmp_path / "Task01")
    meta = json.loads((root / "dataset.json").read_text())
    meta["training"].append(meta["training"][0])
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=r"lists cases \['hippo_1'\] more than once"):
        load_dataset(root)
