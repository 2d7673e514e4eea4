"""The cache folder and the one fingerprint cache key."""

from __future__ import annotations

from hnas.data import load_dataset
from hnas.data import cache

from .builders import nnunet_dataset


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


def test_fingerprints_of_data_outside_the_cache_are_not_stored(tmp_path, monkeypatch):
    monkeypatch.setenv("HNAS_CACHE", str(tmp_path / "cache"))
    root = nnunet_dataset(tmp_path / "Dataset003_Outside", case_ids=("a", "b"))
    cache.fingerprint_of(root)
    assert not list(root.rglob("hnas_fingerprint_*.json"))
