import json

import numpy as np
import pytest

from hnas.data import load_dataset, read_case
from hnas.errors import DatasetError

from .builders import case_arrays, msd_dataset, nnunet_dataset


def test_nnunet_format_loads(tmp_path):
    root = nnunet_dataset(tmp_path / "Dataset001_Test", channel_names=("T1", "FLAIR"))

    dataset = load_dataset(root)

    assert dataset.name == "Dataset001_Test"
    assert dataset.format == "nnunet"
    assert dataset.channel_names == ("T1", "FLAIR")
    assert dataset.labels == (("background", 0), ("left", 1), ("right", 2))
    assert dataset.case_ids == ("case_a", "case_b", "case_c")
    case = dataset.case("case_b")
    assert [p.name for p in case.image_files] == ["case_b_0000.nii.gz", "case_b_0001.nii.gz"]
    assert case.label_file == root / "labelsTr" / "case_b.nii.gz"
    assert case.channel_in_file == (None, None)


def test_nnunet_case_reads_in_nnunet_axis_order(tmp_path):
    root = nnunet_dataset(tmp_path / "D", shape=(6, 7, 8), spacing=(2.0, 1.0, 0.5), channel_names=("T1", "T2"))

    data = read_case(load_dataset(root), "case_a")

    channels, label = case_arrays(0, (6, 7, 8), 2)
    assert data.image.shape == (2, 6, 7, 8) and data.image.dtype == np.float32
    np.testing.assert_array_equal(data.image, np.stack(channels))
    np.testing.assert_array_equal(data.label, label)
    assert np.issubdtype(data.label.dtype, np.integer)
    assert data.spacing == (2.0, 1.0, 0.5)


def test_msd_format_loads_and_splits_4d_channels(tmp_path):
    root = msd_dataset(tmp_path / "Task09_Test", channel_names=("T1", "T2"), spacing=(1.5, 1.0, 1.0))

    dataset = load_dataset(root)

    assert dataset.format == "msd"
    assert dataset.channel_names == ("T1", "T2")
    assert dataset.labels == (("background", 0), ("left", 1), ("right", 2))
    case = dataset.case("hippo_2")
    assert case.image_files == (root / "imagesTr" / "hippo_2.nii.gz",) * 2
    assert case.channel_in_file == (0, 1)
    data = read_case(dataset, case)
    channels, label = case_arrays(1, (6, 7, 8), 2)
    np.testing.assert_array_equal(data.image, np.stack(channels))
    np.testing.assert_array_equal(data.label, label)
    assert data.spacing == (1.5, 1.0, 1.0)


def test_single_channel_msd_case_is_a_3d_file(tmp_path):
    dataset = load_dataset(msd_dataset(tmp_path / "Task04", channel_names=("MRI",)))
    assert dataset.cases[0].channel_in_file == (None,)
    assert read_case(dataset, "hippo_1").image.shape == (1, 6, 7, 8)


def test_explicit_file_list_of_nnunet_is_honoured(tmp_path):
    root = nnunet_dataset(tmp_path / "D")
    meta = json.loads((root / "dataset.json").read_text())
    meta["dataset"] = {"only": {"images": ["imagesTr/case_c_0000.nii.gz"], "label": "labelsTr/case_c.nii.gz"}}
    meta["numTraining"] = 1
    (root / "dataset.json").write_text(json.dumps(meta))

    dataset = load_dataset(root)

    assert dataset.case_ids == ("only",)
    np.testing.assert_array_equal(read_case(dataset, "only").label, case_arrays(2)[1])


def test_unknown_case_is_named(tmp_path):
    dataset = load_dataset(nnunet_dataset(tmp_path / "D"))
    with pytest.raises(DatasetError, match="no case 'case_z'"):
        read_case(dataset, "case_z")


def test_read_case_names_the_case_when_a_file_is_missing(tmp_path):
    root = nnunet_dataset(tmp_path / "D")
    (root / "labelsTr" / "case_b.nii.gz").unlink()
    with pytest.raises(DatasetError, match="case 'case_b'.*case_b.nii.gz.*does not exist"):
        read_case(load_dataset(root), "case_b")


def test_hidden_files_are_ignored(tmp_path):
    root = nnunet_dataset(tmp_path / "D")
    (root / "imagesTr" / "._case_a_0000.nii.gz").write_bytes(b"macOS resource fork")
    assert load_dataset(root).case_ids == ("case_a", "case_b", "case_c")


# ---------------------------------------------------------------- nnU-Net's dataset lookup ($nnUNet_raw)


@pytest.fixture
def nnunet_raw(tmp_path, monkeypatch):
    from hnas.data import make_synthetic_dataset

    raw = tmp_path / "nnUNet_raw"
    dataset = make_synthetic_dataset(raw, n_cases=2, shape=(16, 16, 16), seed=0, name="Dataset004_Hippocampus")
    (raw / "Dataset104_Other").mkdir()
    monkeypatch.setenv("nnUNet_raw", str(raw))
    monkeypatch.chdir(tmp_path)
    return dataset


@pytest.mark.parametrize("name", ["Dataset004_Hippocampus", "4", "004"])
def test_a_dataset_name_or_id_is_found_under_nnunet_raw_from_any_folder(nnunet_raw, name):
    from hnas.data.dataset import load_dataset, locate_dataset

    assert locate_dataset(name) == nnunet_raw.resolve()
    assert load_dataset(name).root == nnunet_raw.resolve() and load_dataset(name).name == "Dataset004_Hippocampus"


def test_a_local_folder_of_that_name_wins_over_nnunet_raw(nnunet_raw, tmp_path):
    import shutil

    from hnas.data.dataset import locate_dataset

    shutil.copytree(nnunet_raw, tmp_path / "Dataset004_Hippocampus")
    assert locate_dataset("Dataset004_Hippocampus") == (tmp_path / "Dataset004_Hippocampus").resolve()


@pytest.mark.parametrize("name, message", [("7", "neither a folder nor a dataset in \\$nnUNet_raw"),
                                           ("Dataset009_Spleen", "neither a folder nor a dataset")])
def test_an_unknown_name_or_id_names_where_it_looked(nnunet_raw, name, message):
    from hnas.data.dataset import locate_dataset
    from hnas.errors import DatasetError

    with pytest.raises(DatasetError, match=message):
        locate_dataset(name)


def test_an_id_shared_by_two_folders_is_refused(nnunet_raw):
    from hnas.data.dataset import locate_dataset
    from hnas.errors import DatasetError

    (nnunet_raw.parent / "Dataset004_Copy").mkdir()
    with pytest.raises(DatasetError, match=r"matches \['Dataset004_Copy', 'Dataset004_Hippocampus'\]"):
        locate_dataset("4")


def test_without_nnunet_raw_a_name_is_a_missing_folder_with_a_hint(tmp_path, monkeypatch):
    from hnas.data.dataset import load_dataset
    from hnas.errors import DatasetError

    monkeypatch.delenv("nnUNet_raw", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError, match=r"does not exist.*\$nnUNet_raw, not set"):
        load_dataset("Dataset004_Hippocampus")
