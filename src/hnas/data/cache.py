"""Where hnas keeps what it derives from data, and the one key of a cached fingerprint.

``cache_dir()`` holds the built-in dataset and the preprocessed data. A fingerprint is cached
under the dataset's content digest (dataset.json and the bytes of every case file), so editing
a case, even a label in place with the same size and mtime, computes a new one.
"""

from __future__ import annotations

import os
from pathlib import Path

from hnas.data.dataset import Dataset, content_digest, load_dataset
from hnas.data.fingerprint import Fingerprint, compute_fingerprint, load_fingerprint, save_fingerprint
from hnas.data.synthetic import ensure_synthetic_dataset
from hnas.data.validation import validate_dataset

FINGERPRINT_STEM = "hnas_fingerprint"
#: Fingerprinting reads every case: a few processes, not the whole machine (a search may run beside it).
FINGERPRINT_WORKERS = 4


def cache_dir() -> Path:
    """Where hnas keeps generated data: $HNAS_CACHE, else ~/.cache/hnas."""
    return Path(os.environ.get("HNAS_CACHE", Path.home() / ".cache" / "hnas"))


def fingerprint_key(dataset: Dataset) -> str:
    """The cache key of ``dataset``'s fingerprint: 16 hex digits of its content digest."""
    return content_digest(dataset)[:16]


def cached_fingerprint(dataset: Dataset, folder: str | Path, *, workers: int = 1,
                       validate: bool = False) -> Fingerprint:
    """``dataset``'s fingerprint, computed once per content and kept in ``folder``.

    ``validate`` checks the dataset before computing (a cached fingerprint was checked when it
    was made). The file is written atomically, so parallel workers never read half of one.
    """
    path = Path(folder) / f"{FINGERPRINT_STEM}_{fingerprint_key(dataset)}.json"
    if path.is_file():
        return load_fingerprint(path)
    if validate:
        validate_dataset(dataset)
    fingerprint = compute_fingerprint(dataset, workers=max(1, workers))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_fingerprint(fingerprint, temporary)
    os.replace(temporary, path)
    return fingerprint


def fingerprint_of(dataset: Path) -> Fingerprint:
    """Validate a dataset folder and compute its fingerprint (cached for data under :func:`cache_dir`)."""
    loaded = load_dataset(dataset)
    workers = min(FINGERPRINT_WORKERS, os.cpu_count() or 1)
    if loaded.root.is_relative_to(cache_dir().resolve()):
        return cached_fingerprint(loaded, loaded.root, workers=workers, validate=True)
    validate_dataset(loaded)
    return compute_fingerprint(loaded, workers=workers)


def builtin_dataset() -> Path:
    """The built-in synthetic dataset (generated once into :func:`cache_dir`, then reused)."""
    return ensure_synthetic_dataset(cache_dir() / "synthetic")
