"""The cache folder and the fingerprint cache: computed once per state of the dataset, never served stale."""

from __future__ import annotations

import json
import os
import warnings

import nibabel
import pytest

from hnas.data import compute_fingerprint, load_dataset, load_fingerprint
from hnas.data import cache
from hnas.data import dataset as dataset_module

from .builders import nnunet_dataset, write_zyx, case_arrays


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test gets its own $HNAS_CACHE, and fingerprints are computed in-process (no worker start-up)."""
    monkeypatch.setenv("HNAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "FINGERPRINT_WORKERS", 1)
    return tmp_path / "cache"


@pytest.fixture
def computations(monkeypatch):
    """How often fingerprints are computed (not served from the cache)."""
    calls = []
    real = cache.compute_fingerprint

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(cache, "compute_fingerprint", counting)
    return calls


def stored_fingerprints(dataset_root):
    return sorted(cache.fingerprint_folder(load_dataset(dataset_root)).glob("hnas_fingerprint_*.json"))


def test_cache_dir_honours_hnas_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HNAS_CACHE", str(tmp_path / "elsewhere"))
    assert cache.cache_dir() == tmp_path / "elsewhere"


def test_cached_fingerprint_is_computed_once_per_content(tmp_path, monkeypatch):
    root = nnunet_dataset(tmp_path / "Dataset001_Cache", case_ids=("a", "b"))
    dataset = load_dataset(root)
    first = cache.cached_fingerprint(dataset, tmp_path / "fp")
    (stored,) = (tmp_path / "fp").glob("hnas_fingerprint_*.json")
    assert stored.name == f"hnas_fingerprint_{cache.fingerprint_key(dataset)}.json"
    monkeypatch.setattr(cache, "compute_fingerprint", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    assert cache.cached_fingerprint(dataset, tmp_path / "fp") == first  # read back, not recomputed


def test_fingerprint_key_follows_the_content(tmp_path):
    root = nnunet_dataset(tmp_path / "Dataset002_Key", case_ids=("a", "b"))
    before = cache.fingerprint_key(load_dataset(root))
    (root / "dataset.json").write_text((root / "dataset.json").read_text().replace("MRI", "T2"))
    assert cache.fingerprint_key(load_dataset(root)) != before


def test_fingerprints_of_data_outside_the_cache_are_kept_in_the_cache(tmp_path, private_cache):
    root = nnunet_dataset(tmp_path / "Dataset003_Outside", case_ids=("a", "b"))
    cache.fingerprint_of(root)
    assert not list(root.rglob("hnas_fingerprint_*.json"))
    assert len(list((private_cache / "fingerprints" / "Dataset003_Outside").glob("hnas_fingerprint_*.json"))) == 1


# ---------------------------------------------------------------- fingerprint_of: once per dataset state


def test_a_second_call_opens_no_image_and_hashes_no_file(tmp_path, monkeypatch):
    root = nnunet_dataset(tmp_path / "Dataset004_Twice")
    first = cache.fingerprint_of(root)

    def refuse(*args, **kwargs):
        raise AssertionError("a cached fingerprint must not open or hash any case file")

    monkeypatch.setattr(nibabel, "load", refuse)  # every image, label and header read goes through it
    monkeypatch.setattr(dataset_module, "file_digest", refuse)
    monkeypatch.setattr(cache, "compute_fingerprint", refuse)
    assert cache.fingerprint_of(root) == first


def test_the_cached_fingerprint_equals_the_computed_one_exactly(tmp_path):
    root = nnunet_dataset(tmp_path / "Dataset005_Exact", spacing=(2.5, 0.7, 0.7))
    computed = compute_fingerprint(root)
    assert cache.fingerprint_of(root) == computed
    assert cache.fingerprint_of(root) == computed  # from the file: dataclass equality compares floats exactly
    (stored,) = stored_fingerprints(root)
    assert load_fingerprint(stored) == computed
    assert computed.intensity[0].std != round(computed.intensity[0].std, 6)  # the floats are not trivially short


def test_a_touched_label_recomputes(tmp_path, computations):
    root = nnunet_dataset(tmp_path / "Dataset006_Touch")
    cache.fingerprint_of(root)
    label = root / "labelsTr" / "case_b.nii.gz"
    before = label.stat()
    os.utime(label, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    cache.fingerprint_of(root)
    assert len(computations) == 2


def test_an_edited_dataset_json_recomputes(tmp_path, computations):
    root = nnunet_dataset(tmp_path / "Dataset007_Json")
    assert cache.fingerprint_of(root).channel_names == ("MRI",)
    (root / "dataset.json").write_text((root / "dataset.json").read_text().replace("MRI", "T2"))
    assert cache.fingerprint_of(root).channel_names == ("T2",)
    assert len(computations) == 2


def test_an_added_case_recomputes(tmp_path, computations):
    root = nnunet_dataset(tmp_path / "Dataset008_Added", case_ids=("case_a", "case_b"))
    assert cache.fingerprint_of(root).n_cases == 2
    channels, label = case_arrays(7)
    write_zyx(root / "imagesTr" / "case_c_0000.nii.gz", channels[0], (2.0, 1.0, 1.0))
    write_zyx(root / "labelsTr" / "case_c.nii.gz", label, (2.0, 1.0, 1.0))
    meta = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**meta, "numTraining": 3}))
    assert cache.fingerprint_of(root).n_cases == 3
    assert len(computations) == 2


def test_the_stat_key_follows_the_file_list_and_each_files_state(tmp_path):
    root = nnunet_dataset(tmp_path / "Dataset009_Key", case_ids=("case_a", "case_b"))
    before = cache.stat_key(load_dataset(root))
    assert cache.stat_key(load_dataset(root)) == before
    (root / "labelsTr" / "stray.nii.gz").write_bytes(b"")  # validation refuses it: a cached pass must not hide it
    stray = cache.stat_key(load_dataset(root))
    assert stray != before
    (root / "labelsTr" / "stray.nii.gz").unlink()
    (root / "labelsTr" / "case_a.nii.gz").unlink()
    assert cache.stat_key(load_dataset(root)) not in (before, stray)


@pytest.mark.parametrize("damage", [b"", b"{not json", b"[1, 2]", b'{"hnas": 3}', "wrong case count"])
def test_a_damaged_cache_file_is_recomputed_without_an_error(tmp_path, computations, damage):
    root = nnunet_dataset(tmp_path / "Dataset010_Damaged")
    first = cache.fingerprint_of(root)
    (stored,) = stored_fingerprints(root)
    if damage == "wrong case count":
        data = json.loads(stored.read_text())
        data["spacings"], data["shapes_after_crop"] = data["spacings"][:1], data["shapes_after_crop"][:1]
        damage = json.dumps(data).encode()
    stored.write_bytes(damage)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.fingerprint_of(root) == first
    assert len(computations) == 2
    assert load_fingerprint(stored) == first  # replaced by a sound file


def test_an_unwritable_cache_folder_still_gives_the_fingerprint(tmp_path, monkeypatch):
    root = nnunet_dataset(tmp_path / "Dataset011_ReadOnly")
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("HNAS_CACHE", str(tmp_path / "a_file" / "cache"))  # cannot be created, even by root
    with pytest.warns(cache.CacheWarning, match="cannot cache the fingerprint of dataset 'Dataset011_ReadOnly'"):
        fingerprint = cache.fingerprint_of(root)
    assert fingerprint == compute_fingerprint(root)


def test_writes_are_atomic_and_old_fingerprints_are_pruned(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "KEPT_PER_FOLDER", 2)
    root = nnunet_dataset(tmp_path / "Dataset012_Prune")
    label = root / "labelsTr" / "case_a.nii.gz"
    for step in range(4):
        os.utime(label, ns=(0, (step + 1) * 1_000_000_000))
        cache.fingerprint_of(root)
    folder = cache.fingerprint_folder(load_dataset(root))
    assert len(stored_fingerprints(root)) == 2
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_the_built_in_datas_fingerprints_stay_beside_it(private_cache):
    root = nnunet_dataset(private_cache / "synthetic")
    cache.fingerprint_of(root)
    assert len(list(root.glob("hnas_fingerprint_*.json"))) == 1


def test_a_cached_fingerprint_gives_the_datasets_warnings_again(tmp_path, monkeypatch):
    """The DatasetWarnings of validation come with every command, not only with the one that computed it."""
    import warnings

    from data.builders import set_stored_pixdim
    from hnas.data import make_synthetic_dataset
    from hnas.data.cache import fingerprint_of
    from hnas.data.validation import DatasetWarning

    monkeypatch.setenv("HNAS_CACHE", str(tmp_path / "cache"))
    dataset = make_synthetic_dataset(tmp_path / "data", n_cases=5, shape=(16, 20, 18), seed=1)
    image = sorted((dataset / "imagesTr").iterdir())[0]
    set_stored_pixdim(image, 0, 0.0)
    label = dataset / "labelsTr" / image.name.replace("_0000", "")
    set_stored_pixdim(label, 0, 0.0)

    def dataset_warnings():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fingerprint_of(dataset)
        return [str(w.message) for w in caught if issubclass(w.category, DatasetWarning)]

    first = dataset_warnings()
    assert first and "pixdim 0" in first[0]
    assert dataset_warnings() == first  # served from the cache, with the same lines
