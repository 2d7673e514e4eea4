"""Where hnas keeps what it derives from data, and the keys its fingerprints are cached under.

``cache_dir()`` holds the built-in dataset, the preprocessed data and dataset fingerprints.
A fingerprint reads and decodes every image (minutes for BraTS or a few hundred CT scans) and
every command needs one, so :func:`fingerprint_of` computes it once per state of the dataset's
files and reuses it, as nnU-Net reuses its ``dataset_fingerprint.json``. Which state counts
as the same is :func:`stat_key`'s docstring.

:func:`cached_fingerprint` (preprocessing's cache) keys on the bytes of every file instead
(:func:`fingerprint_key`): preprocessing hashes them anyway for its own key.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import warnings
from pathlib import Path

from hnas.data.dataset import Dataset, content_digest, load_dataset
from hnas.data.fingerprint import (COMPUTATION_VERSION, SAMPLES_PER_CASE, SAMPLING_SEED, Fingerprint,
                                   compute_fingerprint, load_fingerprint, save_fingerprint)
from hnas.data.synthetic import ensure_synthetic_dataset
from hnas.data.validation import DatasetWarning, validate_dataset
from hnas.errors import HnasError

FINGERPRINT_STEM = "hnas_fingerprint"
#: Sub-folder of :func:`cache_dir` with the fingerprints of datasets that lie elsewhere, one folder per name.
FINGERPRINTS_FOLDER = "fingerprints"
#: Each edit of a dataset leaves a fingerprint no key reaches again; a folder keeps only the newest ones.
KEPT_PER_FOLDER = 16
#: Bump when :func:`stat_key` hashes something else, so old entries are not matched by accident.
STAT_KEY_VERSION = 1
#: Fingerprinting reads every case: a few processes, not the whole machine (a search may run beside it).
FINGERPRINT_WORKERS = 4


class CacheWarning(UserWarning):
    """A fingerprint could not be stored: the command goes on, the next one computes it again."""


def cache_dir() -> Path:
    """Where hnas keeps generated data: $HNAS_CACHE, else ~/.cache/hnas."""
    return Path(os.environ.get("HNAS_CACHE", Path.home() / ".cache" / "hnas"))


# ---------------------------------------------------------------- keys


def fingerprint_key(dataset: Dataset) -> str:
    """The content key of ``dataset``'s fingerprint: 16 hex digits of its content digest (reads every byte)."""
    return content_digest(dataset)[:16]


def stat_key(dataset: Dataset) -> str:
    """A key that changes whenever the dataset's files may have changed, from stat calls alone.

    It hashes where the dataset lies, dataset.json's bytes, the file names in imagesTr and labelsTr
    (validation refuses stray files there) and, per case file, its size, mtime, ctime and inode,
    plus the version of the fingerprint computation. Checking it costs one stat per file
    (milliseconds for hundreds of cases); hashing the bytes (:func:`fingerprint_key`) reads
    gigabytes, and the fingerprint itself decodes them.

    * an edit in place changes mtime; a replaced or converted file its inode or size;
    * an edit whose mtime was put back (``touch -d``, ``rsync -t``; issue 10) still changes ctime,
      which the kernel sets on every change and user space cannot set back;
    * an added, removed or renamed case changes the file list; a moved dataset its root.

    Not caught: a change that leaves size, mtime, ctime and inode as they were. That takes a
    change of the system clock, two writes within one timestamp tick of a filesystem with coarse
    timestamps (programs, not a person editing), or an NFS client whose attribute cache has not yet
    seen another host's edit (up to ``acregmax``, 60 s by default). That is acceptable: nnU-Net
    does not check at all, it reuses dataset_fingerprint.json until someone deletes it. A
    change that alters only metadata (a copy, chmod, touch) costs one recomputation, never a
    stale fingerprint.
    """
    identity = {
        "version": STAT_KEY_VERSION,
        "computation": [COMPUTATION_VERSION, SAMPLES_PER_CASE, SAMPLING_SEED],
        "root": str(dataset.root),
        "dataset_json": hashlib.sha256((dataset.root / "dataset.json").read_bytes()).hexdigest(),
        "folders": {name: _names_in(dataset.root / name) for name in ("imagesTr", "labelsTr")},
        "files": [_file_state(path) for path in _case_files(dataset)],
    }
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()


def _case_files(dataset: Dataset) -> list[Path]:
    """Every image and label file once (an MSD 4D image is listed once per channel)."""
    files = (path for case in dataset.cases for path in (*case.image_files, case.label_file) if path is not None)
    return list(dict.fromkeys(files))


def _file_state(path: Path) -> list:
    try:
        stat = path.stat()
    except OSError:
        return [str(path), "missing"]
    return [str(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


def _names_in(folder: Path) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except OSError:  # no such folder (an MSD layout may lack labelsTr's siblings): nothing to list
        return []


# ---------------------------------------------------------------- cached fingerprints


def fingerprint_folder(dataset: Dataset) -> Path:
    """Where :func:`fingerprint_of` keeps ``dataset``'s fingerprints.

    Beside data hnas generated itself (under :func:`cache_dir`), else in
    ``cache_dir()/fingerprints/<dataset name>``: a user's dataset folder may be read-only or shared.
    """
    home = cache_dir().resolve()
    if dataset.root.is_relative_to(home):
        return dataset.root
    return home / FINGERPRINTS_FOLDER / dataset.name


def fingerprint_of(dataset: Path) -> Fingerprint:
    """Validate a dataset folder and compute its fingerprint, once per state of its files (:func:`stat_key`).

    A cached fingerprint was validated when it was made, so a hit opens no image or label.
    """
    loaded = load_dataset(dataset)
    path = fingerprint_folder(loaded) / f"{FINGERPRINT_STEM}_{stat_key(loaded)[:16]}.json"
    workers = min(FINGERPRINT_WORKERS, os.cpu_count() or 1)
    return _cached_or_computed(loaded, path, workers=workers, validate=True)


def cached_fingerprint(dataset: Dataset, folder: str | Path, *, workers: int = 1,
                       validate: bool = False) -> Fingerprint:
    """``dataset``'s fingerprint, computed once per content (:func:`fingerprint_key`) and kept in ``folder``.

    ``validate`` checks the dataset before computing (a cached fingerprint was checked when it was made).
    """
    path = Path(folder) / f"{FINGERPRINT_STEM}_{fingerprint_key(dataset)}.json"
    return _cached_or_computed(dataset, path, workers=workers, validate=validate)


def _cached_or_computed(dataset: Dataset, path: Path, *, workers: int, validate: bool) -> Fingerprint:
    cached = _read_cached(path, dataset)
    if cached is not None:
        _replay_warnings(path)
        return cached
    found = _validated(dataset) if validate else []
    fingerprint = compute_fingerprint(dataset, workers=max(1, workers))
    _store(fingerprint, path)
    if validate:
        _store_warnings(found, path)
    return fingerprint


def _warnings_file(path: Path) -> Path:
    """A fingerprint's DatasetWarnings (JSON), beside it; not matched by the fingerprints' glob."""
    return path.with_suffix(".warnings")


def _validated(dataset: Dataset) -> list[str]:
    """Validate ``dataset``, giving its DatasetWarnings as usual, and return them to be kept with the fingerprint:
    a later command served from the cache says the same (a user who missed them once sees them again)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        validate_dataset(dataset)
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return [str(w.message) for w in caught if issubclass(w.category, DatasetWarning)]


def _store_warnings(messages: list[str], path: Path) -> None:
    if not messages:
        return
    try:
        _warnings_file(path).write_text(json.dumps(messages))
    except OSError:
        pass  # the fingerprint's own store already warned


def _replay_warnings(path: Path) -> None:
    try:
        messages = json.loads(_warnings_file(path).read_text())
    except (OSError, ValueError):
        return  # none recorded (a clean dataset, or a fingerprint cached before warnings were kept)
    for message in messages if isinstance(messages, list) else []:
        warnings.warn(str(message), DatasetWarning, stacklevel=4)


def _read_cached(path: Path, dataset: Dataset) -> Fingerprint | None:
    """The fingerprint stored at ``path``, or None: a missing, damaged or foreign file is a cache miss, no error."""
    if not path.is_file():
        return None
    try:
        fingerprint = load_fingerprint(path)
    except (HnasError, OSError, ValueError, TypeError, KeyError, RecursionError):  # whatever a damaged file raises
        return None
    return fingerprint if _describes(fingerprint, dataset) else None


def _describes(fingerprint: Fingerprint, dataset: Dataset) -> bool:
    """Whether ``fingerprint`` could be ``dataset``'s: a cheap guard against a file from elsewhere."""
    return (fingerprint.name == dataset.name and fingerprint.channel_names == dataset.channel_names
            and fingerprint.labels == dataset.labels and fingerprint.n_cases == len(dataset.cases)
            and len(fingerprint.intensity) == dataset.n_channels)


def _store(fingerprint: Fingerprint, path: Path) -> None:
    """Write atomically (parallel workers never read half a file); a folder that cannot be
    written costs a warning, not the command."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        save_fingerprint(fingerprint, temporary)
        os.replace(temporary, path)
    except OSError as exc:
        _remove_quietly(temporary)
        warnings.warn(f"cannot cache the fingerprint of dataset {fingerprint.name!r} in {str(path.parent)!r} "
                      f"({exc.strerror or exc}); the next command computes it again. Expected a writable "
                      "folder: set $HNAS_CACHE to one", CacheWarning, stacklevel=4)
        return
    _prune(path.parent)


def _prune(folder: Path) -> None:
    """Delete all but the :data:`KEPT_PER_FOLDER` newest fingerprints of ``folder``.

    Each edit of a dataset leaves one behind that no key reaches again.
    """
    dated = []
    for path in folder.glob(f"{FINGERPRINT_STEM}_*.json"):
        try:
            dated.append((path.stat().st_mtime_ns, path))
        except OSError:  # removed meanwhile by a parallel worker
            continue
    for _, path in sorted(dated, reverse=True)[KEPT_PER_FOLDER:]:
        _remove_quietly(path)
        _remove_quietly(_warnings_file(path))


def _remove_quietly(path: Path) -> None:
    """Remove a file if possible: a leftover only takes space, never fails the command."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def builtin_dataset() -> Path:
    """The built-in synthetic dataset (generated once into :func:`cache_dir`, then reused)."""
    return ensure_synthetic_dataset(cache_dir() / "synthetic")
