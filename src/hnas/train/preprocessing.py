"""nnU-Net's preprocessing for one Plan, cached on disk.

Per case, in nnU-Net's order: transpose to the plan's axis order, crop to the bounding box of
non-zero voxels, normalise each channel (:data:`NORMALIZATION_SCHEMES`; CT: clip to the
foreground 0.5/99.5 percentiles and z-score with the foreground mean/std of the fingerprint),
then resample to the plan's spacing (image: cubic spline; label: linear per label, then argmax;
the out-of-plane axis of anisotropic data with nearest neighbour, as nnU-Net's separate-z).

A 2D plan (nnU-Net's ``2d``) keeps the volume: arrays stay ``[C, S, Y, X]`` in plan axis order,
only the two in-plane axes are resampled to the plan's 2-entry spacing, and the slice axis
(plan axis 0) keeps its own spacing and size, so a network sees one slice at a time.

The cache is a folder per (dataset, preprocessing key): ``<id>_image.b2nd`` (float32
``[C, z, y, x]``), ``<id>_label.b2nd`` (int16), ``<id>_foreground.npz`` (sampled foreground voxel
positions per label, for oversampling) and ``manifest.json``, written last. The key hashes
only what changes the voxels (spacing, axis order, normalisation and its statistics, the case
files), so a search preprocesses once, and a plan with another spacing gets its own folder.

The arrays are blosc2 NDArrays chunked like nnU-Net's (:func:`blosc2_layout`): compressed on disk
(benchmarks/README.md measures the choice) and read lazily, a patch decompressing only the blocks
it touches (:meth:`PreprocessedDataset.load` with ``lazy=True``). The chunks follow the patch of
the plan that wrote the folder; another patch size reads the same voxels. The manifest names the file
format (:data:`CACHE_FORMAT`): a folder of another format (the ``.npy`` cache before it) is not
read but preprocessed again in place, its old files removed. The format is not in the key: the
voxels are the same. Cases are preprocessed by ``workers`` processes; the files do not depend on
how many. No torch here: workers and the CLI can preprocess without it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import multiprocessing
import os
import time
import zipfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import blosc2
import numpy as np
from scipy import ndimage

from hnas.data import Dataset, Fingerprint, crop_to_nonzero, load_dataset, read_case
from hnas.data.cache import cached_fingerprint
from hnas.data.io import file_digest
from hnas.data.processes import map_in_processes
from hnas.data.splits import fold_split
from hnas.errors import DatasetError, TrainingError
from hnas.planning import ANISOTROPY_THRESHOLD, Plan

PREPROCESSING_VERSION = 1
#: How the arrays are stored (manifest "format"; absent = 1, ``.npy``): 2 is blosc2 ``.b2nd``.
CACHE_FORMAT = 2
ARRAY_SUFFIX = ".b2nd"
#: nnU-Net 2.8.1's blosc2 layout (comp_blosc2_params): blocks at most 128 KiB, chunks at most 6 MiB
#: and 1.5x the patch per axis (docs/references.md).
BLOCK_BYTES = 128 * 1024
CHUNK_BYTES = 6 * 1024**2
CHUNK_TO_PATCH = 1.5
#: nnU-Net's codec and level, chosen by benchmarks/bench_cache.py (benchmarks/README.md); the filter is
#: picked per array among FILTERS by trial compression (nnU-Net's _select_filter): byte shuffling wins on
#: resampled intensities, no filter on quantised ones (hippocampus: 2.0 vs 3.7 bytes per voxel).
CODEC = blosc2.Codec.LZ4HC
CLEVEL = 5
FILTERS = (blosc2.Filter.NOFILTER, blosc2.Filter.SHUFFLE)
#: nnU-Net's default number of preprocessing processes (default_num_processes, `-np`).
PREPROCESSING_WORKERS = 8
#: What starting them costs (forkserver, then numpy/scipy/hnas imported in each): a pool is used only where
#: it saves more (docs/references.md: 6 tiny cases, 5.7 s with 2 processes vs 0.2 s in one, 2 cores under load).
POOL_START_SECONDS = 2.0
MANIFEST = "manifest.json"
FOREGROUND_SAMPLES = 10_000  # foreground positions kept per label (nnU-Net's class_locations)
FOREGROUND_SEED = 1234
#: Per-channel intensity normalisations a plan may name (AutoMONAI's choices plus nnU-Net's own:
#: ct, none = NoNormalization, rgb_to_0_1 = RGBTo01Normalization).
NORMALIZATION_SCHEMES = ("zscore", "ct", "percentile_zscore", "minmax", "none", "rgb_to_0_1")
RGB_RANGE = (0.0, 255.0)
PERCENTILES = (0.5, 99.5)  # percentile_zscore clips each image where "ct" clips the dataset's foreground
SUPPORTED_DIMS = (2, 3)


def _zscore(channel: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over this image (a constant image becomes 0)."""
    return (channel - channel.mean()) / np.float32(max(float(channel.std()), 1e-8))


def _percentile_zscore(channel: np.ndarray) -> np.ndarray:
    """Clip to this image's 0.5/99.5 percentiles first, so outliers do not squash the z-score."""
    lower, upper = np.percentile(channel, PERCENTILES)
    return _zscore(np.clip(channel, np.float32(lower), np.float32(upper)))


def _minmax(channel: np.ndarray) -> np.ndarray:
    """This image's range to [0, 1]; a constant image has no range and becomes 0."""
    lower, upper = channel.min(), channel.max()
    if upper <= lower:
        return np.zeros_like(channel)
    return (channel - lower) / (upper - lower)


def _unchanged(channel: np.ndarray) -> np.ndarray:
    """nnU-Net's NoNormalization: the intensities as they are (as float32)."""
    return channel


def _rgb_to_0_1(channel: np.ndarray) -> np.ndarray:
    """8-bit colour to [0, 1] by /255; like nnU-Net, values outside 0..255 are refused, not clipped,
    because they mean the channel is not 8-bit RGB and /255 would not map it to [0, 1]."""
    lower, upper = float(channel.min()), float(channel.max())
    if lower < RGB_RANGE[0] or upper > RGB_RANGE[1]:
        raise DatasetError(f"a channel normalised with rgb_to_0_1 has values in [{lower:g}, {upper:g}]; expected "
                           f"8-bit RGB values in [0, 255] (rename the channel in dataset.json for another scheme)")
    return channel / np.float32(RGB_RANGE[1])


_PER_IMAGE = {"zscore": _zscore, "percentile_zscore": _percentile_zscore, "minmax": _minmax, "none": _unchanged,
              "rgb_to_0_1": _rgb_to_0_1}


@dataclass(frozen=True)
class ChannelNormalization:
    """How one channel is normalised: one of :data:`NORMALIZATION_SCHEMES`.

    ``ct`` uses dataset statistics (mean, std, clip bounds); the other schemes use the image's own.
    """

    scheme: str
    mean: float = 0.0
    std: float = 1.0
    lower: float = -np.inf
    upper: float = np.inf

    def __post_init__(self):
        if self.scheme not in NORMALIZATION_SCHEMES:
            raise TrainingError(f"normalisation scheme {self.scheme!r} is unknown; expected one of "
                                f"{list(NORMALIZATION_SCHEMES)}")

    def apply(self, channel: np.ndarray) -> np.ndarray:
        channel = channel.astype(np.float32, copy=True)
        if self.scheme == "ct":
            np.clip(channel, self.lower, self.upper, out=channel)
            return (channel - np.float32(self.mean)) / np.float32(max(self.std, 1e-8))
        return _PER_IMAGE[self.scheme](channel)

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "ChannelNormalization":
        lower = -np.inf if data.get("lower") is None else data["lower"]
        upper = np.inf if data.get("upper") is None else data["upper"]
        return cls(data["scheme"], float(data["mean"]), float(data["std"]), float(lower), float(upper))


@dataclass(frozen=True)
class CropRecord:
    """Where a preprocessed array came from: enough to put a prediction back on the input grid."""

    original_shape: tuple[int, ...]  # (z, y, x) of the input file
    original_spacing: tuple[float, ...]
    bbox: tuple[tuple[int, int], ...]  # crop box in the plan's axis order
    cropped_shape: tuple[int, ...]
    transpose: tuple[int, ...]
    spacing: tuple[float, ...]  # spacing the array was resampled to (plan axis order, one per array axis)
    dims: int = 3  # the plan's: 2 means plan axis 0 is the slice axis, never resampled

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "CropRecord":
        return cls(tuple(data["original_shape"]), tuple(data["original_spacing"]),
                   tuple(tuple(b) for b in data["bbox"]), tuple(data["cropped_shape"]), tuple(data["transpose"]),
                   tuple(data["spacing"]), int(data.get("dims", 3)))


@dataclass(frozen=True, eq=False)
class PreprocessedCase:
    case_id: str
    image: np.ndarray  # float32 [C, z, y, x] in plan axis order (a blosc2 NDArray when loaded lazily)
    label: np.ndarray  # int16 [z, y, x]; for a 2D plan axis 0 is the slice axis (likewise)
    foreground: dict[int, np.ndarray]  # label value -> int32 [n, 3] voxel positions


@dataclass(frozen=True)
class PreprocessedDataset:
    """A cache folder: case ids, labels and the normalisation its voxels were made with."""

    root: Path
    key: str
    dataset_name: str
    case_ids: tuple[str, ...]
    labels: tuple[tuple[str, int], ...]
    normalization: tuple[ChannelNormalization, ...]
    shapes: dict[str, tuple[int, ...]]

    @property
    def foreground_labels(self) -> tuple[int, ...]:
        return tuple(value for _, value in self.labels if value != 0)

    def image_path(self, case_id: str) -> Path:
        return _array_file(self.root, case_id, "image")

    def label_path(self, case_id: str) -> Path:
        return _array_file(self.root, case_id, "label")

    def load(self, case_id: str, *, lazy: bool = False) -> PreprocessedCase:
        """One case; ``lazy`` leaves image and label compressed on disk (blosc2 NDArrays, opened
        memory-mapped: indexing with slices decompresses only the blocks it touches, into numpy)."""
        if case_id not in self.shapes:
            raise TrainingError(f"preprocessed dataset {self.dataset_name!r} has no case {case_id!r}")
        foreground_path = self.root / f"{case_id}_foreground.npz"
        try:
            with np.load(foreground_path) as stored:
                foreground = {int(name.split("_")[1]): stored[name] for name in stored.files}
            image = _open_array(self.image_path(case_id), np.float32, 4, lazy)
            label = _open_array(self.label_path(case_id), np.int16, 3, lazy)
        except (OSError, ValueError, EOFError, IndexError, RuntimeError, zipfile.BadZipFile) as exc:
            # damaged, truncated or foreign cache files (object arrays are refused: allow_pickle stays False)
            raise TrainingError(f"the preprocessed files of case {case_id!r} in {str(self.root)!r} (e.g. "
                                f"{str(foreground_path)!r}) cannot be read safely ({exc}); expected the files hnas "
                                "preprocessing wrote: remove the folder to preprocess again") from exc
        return PreprocessedCase(case_id, image, label, foreground)

    def split(self, fold: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return fold_split(self.case_ids, fold)


# ---------------------------------------------------------------- per-array steps


def normalization_for(plan: Plan, fingerprint: Fingerprint | None) -> tuple[ChannelNormalization, ...]:
    """The per-channel normalisation of ``plan``; CT channels need the fingerprint's statistics."""
    result = []
    for index, scheme in enumerate(plan.normalization):
        if scheme not in NORMALIZATION_SCHEMES:
            raise TrainingError(f"plan normalization[{index}] is {scheme!r}; expected one of "
                                f"{list(NORMALIZATION_SCHEMES)}")
        if scheme == "ct":
            if fingerprint is None or len(fingerprint.intensity) <= index:
                raise TrainingError(f"channel {index} uses CT normalisation, which needs the fingerprint's "
                                    "foreground intensity statistics; expected a fingerprint with intensity")
            stats = fingerprint.intensity[index]
            result.append(ChannelNormalization("ct", stats.mean, stats.std, stats.percentile_00_5,
                                               stats.percentile_99_5))
        else:
            result.append(ChannelNormalization(scheme))
    return tuple(result)


def target_shape(shape: Sequence[int], spacing: Sequence[float], new_spacing: Sequence[float]) -> tuple[int, ...]:
    """nnU-Net's resampled shape: round(shape * spacing / new_spacing)."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, new_spacing))


def separate_axis(spacing: Sequence[float], new_spacing: Sequence[float]) -> int | None:
    """The out-of-plane axis nnU-Net resamples on its own (nearest) for anisotropic data, else None."""
    for candidate in (spacing, new_spacing):
        if max(candidate) / min(candidate) > ANISOTROPY_THRESHOLD:
            return int(np.argmax(candidate))
    return None


def _zoom(volume: np.ndarray, shape: tuple[int, ...], order: int, axis: int | None) -> np.ndarray:
    """Resize one volume to ``shape`` (pixel-centre aligned, as skimage's resize in nnU-Net)."""
    factors = [n / o for n, o in zip(shape, volume.shape)]
    if axis is None:
        return ndimage.zoom(volume, factors, order=order, mode="nearest", grid_mode=True)
    in_plane = [1.0 if a == axis else f for a, f in enumerate(factors)]
    volume = ndimage.zoom(volume, in_plane, order=order, mode="nearest", grid_mode=True)
    if volume.shape[axis] == shape[axis]:  # e.g. a 2D plan's slice axis: nearest neighbour would only copy
        return volume
    along = [factors[a] if a == axis else 1.0 for a in range(volume.ndim)]
    return ndimage.zoom(volume, along, order=0, mode="nearest", grid_mode=True)


def resample_image(image: np.ndarray, shape: tuple[int, ...], axis: int | None = None) -> np.ndarray:
    """``[C, ...]`` float image to ``shape`` with cubic splines (nearest along a separate axis)."""
    if tuple(image.shape[1:]) == tuple(shape):
        return image.astype(np.float32, copy=False)
    return np.stack([_zoom(c.astype(np.float32, copy=False), shape, 3, axis) for c in image]).astype(np.float32)


def resample_label(label: np.ndarray, shape: tuple[int, ...], values: Sequence[int],
                   axis: int | None = None) -> np.ndarray:
    """Label map to ``shape``: each label's mask interpolated linearly, the largest wins."""
    if tuple(label.shape) == tuple(shape):
        return label.astype(np.int16, copy=False)
    best = np.full(shape, -1.0, dtype=np.float32)
    result = np.zeros(shape, dtype=np.int16)
    for value in values:
        score = _zoom((label == value).astype(np.float32), shape, 1, axis)
        better = score > best
        result[better], best[better] = value, score[better]
    return result


def resample_probabilities(probabilities: np.ndarray, shape: tuple[int, ...], axis: int | None = None) -> np.ndarray:
    """``[K, ...]`` class scores to ``shape`` (linear; nearest along a separate axis)."""
    if tuple(probabilities.shape[1:]) == tuple(shape):
        return probabilities
    return np.stack([_zoom(p.astype(np.float32, copy=False), shape, 1, axis) for p in probabilities])


def _transpose(plan: Plan) -> tuple[int, ...]:
    return tuple(plan.transpose_forward) if plan.transpose_forward is not None else tuple(range(3))


def resampled_spacing(spacing: Sequence[float], plan: Plan) -> tuple[float, ...]:
    """Spacing (plan axis order) a case with ``spacing`` is resampled to.

    A 2D plan's spacing has only the in-plane axes: the slice axis keeps the case's own
    spacing, as nnU-Net's 2d configuration does.
    """
    if plan.dims == 2:
        return (float(spacing[0]), *(float(s) for s in plan.spacing))
    return tuple(float(s) for s in plan.spacing)


def _resampling_axis(spacing: Sequence[float], new_spacing: Sequence[float], dims: int) -> int | None:
    """The axis resampled on its own: a 2D plan's slice axis, or the anisotropic axis of 3D data."""
    return 0 if dims == 2 else separate_axis(spacing, new_spacing)


def preprocess_image(image: np.ndarray, spacing: Sequence[float], plan: Plan,
                     normalization: Sequence[ChannelNormalization],
                     label: np.ndarray | None = None, label_values: Sequence[int] = ()):
    """One case as the network sees it: returns (image, label or None, CropRecord)."""
    check_plan(plan)
    if image.shape[0] != len(normalization):
        raise TrainingError(f"image has {image.shape[0]} channels; the plan expects {len(normalization)}")
    transpose = _transpose(plan)
    original_shape = tuple(int(s) for s in image.shape[1:])
    image = image.transpose(0, *(1 + t for t in transpose))
    spacing = tuple(float(spacing[t]) for t in transpose)
    if label is not None:
        label = label.transpose(*transpose)
    image, label, bbox = crop_to_nonzero(image, label)
    cropped_shape = tuple(int(s) for s in image.shape[1:])
    image = np.stack([norm.apply(channel) for norm, channel in zip(normalization, image)])
    new_spacing = resampled_spacing(spacing, plan)
    shape = target_shape(cropped_shape, spacing, new_spacing)
    axis = _resampling_axis(spacing, new_spacing, plan.dims)
    image = resample_image(image, shape, axis)
    if label is not None:
        label = resample_label(label, shape, label_values, axis)
    record = CropRecord(original_shape, tuple(float(s) for s in spacing_in_file_order(spacing, transpose)),
                        tuple((int(b.start), int(b.stop)) for b in bbox), cropped_shape, transpose,
                        new_spacing, plan.dims)
    return image, label, record


def spacing_in_file_order(spacing: Sequence[float], transpose: Sequence[int]) -> tuple[float, ...]:
    result = [0.0] * len(transpose)
    for position, axis in enumerate(transpose):
        result[axis] = spacing[position]
    return tuple(result)


def restore_label(label: np.ndarray, record: CropRecord) -> np.ndarray:
    """A label map on the preprocessed grid back on the input's grid (un-resample, un-crop, un-transpose)."""
    return np.argmax(restore_probabilities(_one_hot(label), record), axis=0).astype(np.int16)


def restore_probabilities(probabilities: np.ndarray, record: CropRecord) -> np.ndarray:
    """``[K, ...]`` class scores back on the input grid; outside the crop box the background wins."""
    spacing = tuple(record.original_spacing[t] for t in record.transpose)
    axis = _resampling_axis(spacing, record.spacing, record.dims)
    cropped = resample_probabilities(probabilities, record.cropped_shape, axis)
    plan_order_shape = tuple(record.original_shape[t] for t in record.transpose)
    full = np.zeros((cropped.shape[0],) + plan_order_shape, dtype=np.float32)
    full[0] = 1.0
    full[(slice(None),) + tuple(slice(lo, hi) for lo, hi in record.bbox)] = cropped
    inverse = np.argsort(record.transpose)
    return full.transpose(0, *(1 + int(i) for i in inverse))


def _one_hot(label: np.ndarray) -> np.ndarray:
    n = int(label.max()) + 1 if label.size else 1
    return (np.arange(n).reshape((n,) + (1,) * label.ndim) == label[None]).astype(np.float32)


def foreground_positions(label: np.ndarray, values: Sequence[int], seed: int = FOREGROUND_SEED) -> dict[int, np.ndarray]:
    """Up to FOREGROUND_SAMPLES voxel positions per foreground label (seeded subsample)."""
    rng = np.random.default_rng(seed)
    result = {}
    for value in values:
        positions = np.argwhere(label == value).astype(np.int32)
        if len(positions) > FOREGROUND_SAMPLES:
            positions = positions[np.sort(rng.choice(len(positions), FOREGROUND_SAMPLES, replace=False))]
        result[int(value)] = positions
    return result


def check_plan(plan: Plan) -> None:
    """Refuse plans whose geometry the trainer cannot follow, before any voxel is touched."""
    if isinstance(plan.dims, bool) or plan.dims not in SUPPORTED_DIMS:
        raise TrainingError(f"plan {plan.dataset_name!r} has dims={plan.dims!r}; expected 2 (nnU-Net's 2d) "
                            "or 3 (3d_fullres)")
    for name in ("patch_size", "spacing"):
        if len(getattr(plan, name)) != plan.dims:
            raise TrainingError(f"plan {plan.dataset_name!r} is {plan.dims}D but its {name} is "
                                f"{tuple(getattr(plan, name))}; expected {plan.dims} entries")
    if sorted(_transpose(plan)) != [0, 1, 2]:
        raise TrainingError(f"plan {plan.dataset_name!r} has transpose_forward {plan.transpose_forward}; "
                            "expected a permutation of the data's 3 axes (0, 1, 2)")


# ---------------------------------------------------------------- the cache


def _file_identity(dataset: Dataset) -> list:
    """Case ids, file names, sizes and content digests: changes whenever a case file's bytes do."""
    files = []
    for case in dataset.cases:
        for path in (*case.image_files, case.label_file):
            path = Path(path)
            present = path.is_file()
            files.append([case.case_id, path.name, path.stat().st_size if present else -1,
                          file_digest(path) if present else None])
    return files


def preprocessing_key(dataset: Dataset, plan: Plan, normalization: Sequence[ChannelNormalization]) -> str:
    """Hash of everything that changes the preprocessed voxels (not features, patch or batch)."""
    identity = {
        "version": PREPROCESSING_VERSION, "dataset": dataset.name, "files": _file_identity(dataset),
        "spacing": [float(s) for s in plan.spacing], "transpose": list(_transpose(plan)),
        "normalization": [n.to_dict() for n in normalization], "labels": [list(label) for label in dataset.labels],
    }
    if plan.dims != 3:  # only 2D keys name it, so caches written for 3D plans before 2D existed stay valid
        identity["dims"] = plan.dims
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def default_workers() -> int:
    """nnU-Net's :data:`PREPROCESSING_WORKERS` processes, or fewer on a machine (or CPU affinity) with fewer cores."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(PREPROCESSING_WORKERS, cores))


def check_workers(workers) -> int:
    """``workers`` if it is a positive integer; the number of processes never changes the files written."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise TrainingError(f"preprocessing workers is {workers!r}; expected a positive integer (processes that "
                            "preprocess cases at once)")
    return workers


def preprocess_dataset(dataset: Dataset | str | Path, plan: Plan, cache_dir: str | Path, *,
                       fingerprint: Fingerprint | None = None, workers: int = 1) -> PreprocessedDataset:
    """The dataset preprocessed for ``plan`` under ``cache_dir`` (reused when the key matches).

    The fingerprint is only needed for CT channels; when not given it is computed once and
    cached (:func:`hnas.data.cache.cached_fingerprint`). Concurrent
    callers (search workers) serialise on a lock file; every file is written atomically.
    ``workers`` processes preprocess the cases; the files are the same for any number.
    """
    check_plan(plan)
    check_workers(workers)
    dataset = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    if len(plan.normalization) != dataset.n_channels:
        raise TrainingError(f"plan {plan.dataset_name!r} normalises {len(plan.normalization)} channels but dataset "
                            f"{dataset.name!r} has {dataset.n_channels}; expected the plan made for this dataset")
    if "ct" in plan.normalization and fingerprint is None:
        fingerprint = cached_fingerprint(dataset, Path(cache_dir) / dataset.name, workers=workers)
    normalization = normalization_for(plan, fingerprint)
    key = preprocessing_key(dataset, plan, normalization)
    root = Path(cache_dir) / dataset.name / key[:16]
    cached = _read_manifest(root, key)
    if cached is not None:
        return cached
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root.with_suffix(".lock")):
        cached = _read_manifest(root, key)
        if cached is not None:
            return cached
        _remove_other_formats(root)
        shapes = _preprocess_cases(dataset, plan, normalization, root, workers)
        manifest = {"version": PREPROCESSING_VERSION, "format": CACHE_FORMAT, "key": key, "dataset": dataset.name,
                    "labels": [list(label) for label in dataset.labels],
                    "normalization": [n.to_dict() for n in normalization],
                    "spacing": list(plan.spacing), "cases": {cid: list(shape) for cid, shape in shapes.items()}}
        _atomic_write(root / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
    return _read_manifest(root, key)


def _preprocess_cases(dataset: Dataset, plan: Plan, normalization, root: Path, workers: int) -> dict:
    """Each case's files and shape, by up to ``workers`` processes.

    The first case is preprocessed here and timed: the others go to a process pool only if that
    saves more than :data:`POOL_START_SECONDS` (hippocampus-sized cases take milliseconds each and
    are faster without one). A daemonic process (a Dask worker's trial) may not start children.
    """
    jobs = [(dataset, case.case_id, plan, normalization, root) for case in dataset.cases]
    start = time.perf_counter()
    results = [_preprocess_case(*jobs[0])] if jobs else []
    serial = (time.perf_counter() - start) * (len(jobs) - 1)  # the rest, one after another (estimate)
    processes = min(workers, len(jobs) - 1)
    if processes <= 1 or serial * (1 - 1 / processes) <= POOL_START_SECONDS or multiprocessing.current_process().daemon:
        return dict(results + [_preprocess_case(*job) for job in jobs[1:]])
    return dict(results + map_in_processes(_preprocess_packed, jobs[1:], processes, what="preprocessing the cases",
                                           setting="--preprocessing-workers 1"))


def _preprocess_packed(job):
    return _preprocess_case(*job)


def _preprocess_case(dataset: Dataset, case_id: str, plan: Plan, normalization, root: Path):
    data = read_case(dataset, case_id)
    values = dataset.label_values
    image, label, _ = preprocess_image(data.image, data.spacing, plan, normalization, data.label, values)
    if not np.isfinite(image).all():
        raise DatasetError(f"dataset {dataset.name!r}, case {case_id!r}: preprocessing produced non-finite values")
    foreground = foreground_positions(label, [v for v in values if v != 0])
    _save_array(_array_file(root, case_id, "image"), image, plan.patch_size)
    _save_array(_array_file(root, case_id, "label"), label, plan.patch_size)
    _atomic_save(root / f"{case_id}_foreground.npz",
                 lambda f: np.savez(f, **{f"label_{v}": p for v, p in foreground.items()}))
    return case_id, tuple(int(s) for s in image.shape[1:])


def _array_file(root: Path, case_id: str, part: str) -> Path:
    return root / f"{case_id}_{part}{ARRAY_SUFFIX}"


def _pow2_ceil(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def _pow2_below(n: int) -> int:
    return 1 if n <= 1 else 1 << ((n - 1).bit_length() - 1)


def blosc2_layout(shape: Sequence[int], patch_size: Sequence[int], itemsize: int) -> tuple[tuple[int, ...], ...]:
    """Blocks and chunks of an array ``[..., z, y, x]`` read in ``patch_size`` patches (nnU-Net's comp_blosc2_params).

    A block, the unit blosc2 decompresses, is the patch rounded up to powers of two, halved along
    the axis furthest over its target until it fits :data:`BLOCK_BYTES`; a chunk, the unit stored,
    grows from one block, a block at a time along the least covered axis, up to
    :data:`CHUNK_TO_PATCH` x the patch per axis and :data:`CHUNK_BYTES`. So a patch touches a few
    blocks, not the case. Leading (channel) axes get 1; a 2D patch is one slice thick and so are its chunks.
    """
    spatial = [int(s) for s in shape[-3:]]
    patch = [1] * (3 - len(patch_size)) + [int(p) for p in patch_size]
    target = [max(1, min(s, int(CHUNK_TO_PATCH * p))) for s, p in zip(spatial, patch)]
    block = [min(_pow2_ceil(p), s) for p, s in zip(patch, spatial)]
    while math.prod(block) * itemsize > BLOCK_BYTES:
        axis = max((a for a in range(3) if block[a] > 1), key=lambda a: (block[a] / target[a], a))
        block[axis] = _pow2_below(block[axis])
    chunk = list(block)
    while True:
        grown = []
        for axis in range(3):
            if patch[axis] == 1 or chunk[axis] >= target[axis]:
                continue
            candidate = chunk.copy()
            candidate[axis] = min(chunk[axis] + block[axis], target[axis])
            if math.prod(candidate) * itemsize <= CHUNK_BYTES:
                grown.append(((chunk[axis] / target[axis], -spatial[axis], axis), candidate))
        if not grown:
            break
        chunk = min(grown)[1]
    lead = (1,) * (len(shape) - 3)
    return lead + tuple(block), lead + tuple(chunk)


def compression(array: np.ndarray, blocks: Sequence[int], chunks: Sequence[int], codec=CODEC,
                clevel: int = CLEVEL) -> "blosc2.CParams":
    """Compression parameters for ``array``: the filter of :data:`FILTERS` that compresses its central chunk
    smallest (the first on a tie), so the choice is a function of the voxels alone."""
    shape = array.shape
    slab_shape = [min(int(c), int(s)) for c, s in zip(chunks, shape)]
    slab = np.ascontiguousarray(array[tuple(slice((s - n) // 2, (s - n) // 2 + n) for s, n in zip(shape, slab_shape))])
    trial_blocks = tuple(max(1, min(int(b), n)) for b, n in zip(blocks, slab_shape))
    sizes = []
    for candidate in FILTERS:
        cparams = blosc2.CParams(codec=codec, clevel=clevel, filters=[candidate], nthreads=1)
        sizes.append(blosc2.asarray(slab, chunks=tuple(slab_shape), blocks=trial_blocks, cparams=cparams).schunk.cbytes)
    best = FILTERS[int(np.argmin(sizes))]
    return blosc2.CParams(codec=codec, clevel=clevel, filters=[best], nthreads=1)


def _save_array(path: Path, array: np.ndarray, patch_size: Sequence[int]) -> None:
    """``array`` as a compressed, chunked blosc2 NDArray, written atomically (one thread: workers are processes)."""
    array = np.ascontiguousarray(array)
    blocks, chunks = blosc2_layout(array.shape, patch_size, array.itemsize)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp{ARRAY_SUFFIX}")
    cparams = compression(array, blocks, chunks)
    try:
        blosc2.asarray(array, urlpath=str(temporary), mode="w", chunks=chunks, blocks=blocks, cparams=cparams)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _open_array(path: Path, dtype, ndim: int, lazy: bool):
    """A cached array: the NDArray itself (lazy: decompressed per slice) or all of it in numpy. One thread, as
    nnU-Net's loader: data-loader processes are the parallelism, and forked ones inherit no blosc2 threads."""
    stored = blosc2.open(str(path), mode="r", mmap_mode="r", dparams=blosc2.DParams(nthreads=1))
    if not isinstance(stored, blosc2.NDArray) or stored.dtype != np.dtype(dtype) or stored.ndim != ndim:
        raise ValueError(f"{path.name} holds a {type(stored).__name__} of {getattr(stored, 'dtype', '?')} with "
                         f"{getattr(stored, 'ndim', '?')} axes, not {ndim} axes of {np.dtype(dtype)}")
    return stored if lazy else stored[...]


def _remove_other_formats(root: Path) -> None:
    """Arrays of an earlier cache format in a folder about to be preprocessed again: dead weight (GBs)."""
    for pattern in ("*_image.npy", "*_label.npy"):
        for path in root.glob(pattern):
            path.unlink(missing_ok=True)


def _read_manifest(root: Path, key: str) -> PreprocessedDataset | None:
    try:
        data = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if data.get("key") != key or data.get("version") != PREPROCESSING_VERSION or data.get("format", 1) != CACHE_FORMAT:
        return None
    return PreprocessedDataset(
        root=root, key=key, dataset_name=data["dataset"], case_ids=tuple(sorted(data["cases"])),
        labels=tuple((str(n), int(v)) for n, v in data["labels"]),
        normalization=tuple(ChannelNormalization.from_dict(n) for n in data["normalization"]),
        shapes={cid: tuple(shape) for cid, shape in data["cases"].items()})


def load_preprocessed(root: str | Path) -> PreprocessedDataset:
    """A cache folder written by :func:`preprocess_dataset` (its manifest names the key)."""
    root = Path(root)
    try:
        key = json.loads((root / MANIFEST).read_text())["key"]
    except (OSError, ValueError, KeyError):
        raise TrainingError(f"{str(root)!r} is not a preprocessed dataset (no valid {MANIFEST})") from None
    loaded = _read_manifest(root, key)
    if loaded is None:
        raise TrainingError(f"{str(root)!r} was written by another preprocessing version or cache format; expected "
                            f"format {CACHE_FORMAT}: preprocess again")
    return loaded


@contextmanager
def _locked(path: Path):
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _atomic_save(path: Path, write) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as handle:
        write(handle)
    os.replace(temporary, path)


def _atomic_write(path: Path, data: bytes) -> None:
    _atomic_save(path, lambda handle: handle.write(data))
