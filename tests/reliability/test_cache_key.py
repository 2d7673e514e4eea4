"""Caches derived from a dataset must notice a case file edited in place (issue 10): same size,
mtime put back, different bytes. Keys on names, sizes or mtimes alone silently reuse stale data."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import isotropic_plan
from hnas.data import load_dataset
from hnas.data.cache import fingerprint_key, fingerprint_of
from hnas.train.preprocessing import ChannelNormalization, _file_identity, preprocessing_key
from data.builders import case_arrays, counting_hashes, write_dataset_json, write_zyx

SHAPE = (6, 7, 8)
LABEL_OFFSET = 352  # voxels of an uncompressed single-file NIfTI-1 start here


def nii_dataset(root: Path, n_cases: int = 3) -> Path:
    """An nnU-Net dataset with uncompressed .nii files, so one voxel can be edited in place."""
    write_dataset_json(root, {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "left": 1, "right": 2},
                              "numTraining": n_cases, "file_ending": ".nii"})
    for index in range(n_cases):
        channels, label = case_arrays(index, SHAPE)
        write_zyx(root / "imagesTr" / f"case_{index}_0000.nii", channels[0])
        write_zyx(root / "labelsTr" / f"case_{index}.nii", label)
    return root


def edit_label_in_place(path: Path, zyx=(1, 1, 1), value: int = 2) -> None:
    """Change one label voxel; the size stays and the mtime is put back (as `touch -d` or rsync -t would)."""
    before = path.stat()
    z, y, x = zyx
    offset = LABEL_OFFSET + x + SHAPE[2] * (y + SHAPE[1] * z)  # NIfTI order (x fastest), uint8 voxels
    with path.open("r+b") as handle:
        handle.seek(offset)
        assert handle.read(1) != bytes([value])
        handle.seek(offset)
        handle.write(bytes([value]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_preprocessing_key_changes_when_a_label_is_edited_in_place(tmp_path):
    root = nii_dataset(tmp_path / "Dataset001_Edit")
    plan = isotropic_plan(3, patch=16, base=4, top=16)
    normalization = (ChannelNormalization("zscore"),)
    before = preprocessing_key(load_dataset(root), plan, normalization)
    assert preprocessing_key(load_dataset(root), plan, normalization) == before
    edit_label_in_place(root / "labelsTr" / "case_1.nii")
    assert preprocessing_key(load_dataset(root), plan, normalization) != before


def test_the_fingerprint_cache_key_changes_when_a_label_is_edited_in_place(tmp_path):
    root = nii_dataset(tmp_path / "Dataset001_Edit")
    before = fingerprint_key(load_dataset(root))
    edit_label_in_place(root / "labelsTr" / "case_0.nii")
    assert fingerprint_key(load_dataset(root)) != before


def test_the_builtin_datas_fingerprint_is_recomputed_after_an_edit(tmp_path, monkeypatch):
    monkeypatch.setenv("HNAS_CACHE", str(tmp_path / "cache"))
    root = nii_dataset(tmp_path / "cache" / "synthetic")
    first = fingerprint_of(root)
    assert fingerprint_of(root) == first  # served from the cache file
    assert len(list(root.glob("hnas_fingerprint_*.json"))) == 1
    edit_label_in_place(root / "labelsTr" / "case_2.nii")  # a background voxel inside the image becomes label 2
    second = fingerprint_of(root)
    assert second.intensity != first.intensity
    assert len(list(root.glob("hnas_fingerprint_*.json"))) == 2


def test_each_file_is_hashed_once_per_process(tmp_path, monkeypatch):
    root = nii_dataset(tmp_path / "Dataset001_Edit")
    dataset = load_dataset(root)
    calls = counting_hashes(monkeypatch)
    _file_identity(dataset)
    _file_identity(dataset)
    assert len(calls) == 6  # 3 images + 3 labels, each once
    edit_label_in_place(root / "labelsTr" / "case_0.nii")
    _file_identity(dataset)
    assert len(calls) == 7  # only the edited file again (its ctime changed)


def test_a_missing_file_keys_as_missing(tmp_path):
    root = nii_dataset(tmp_path / "Dataset001_Edit", 1)
    dataset = load_dataset(root)
    (root / "labelsTr" / "case_0.nii").unlink()
    image, label = _file_identity(dataset)
    assert label[2:] == [-1, None] and len(image[3]) == 64
