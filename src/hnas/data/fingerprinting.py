"""Computing a dataset's fingerprint the way nnU-Net v2's DatasetFingerprintExtractor does.

Per case: the spacing, the shape after cropping to the bounding box of voxels where any channel
is non-zero, and a seeded sample of foreground intensities (voxels with label > 0 inside that
box). Intensity statistics are computed over the pooled samples of all cases. A case
contributes all its foreground voxels when it has at most ``samples_per_case`` of them and a
seeded random subset otherwise, so the result is deterministic and independent of ``workers``.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hnas.data.dataset import Case, Dataset, as_dataset, read_case
from hnas.data.fingerprint import ChannelIntensity, Fingerprint
from hnas.data.validation import warn_dataset
from hnas.errors import DatasetError

SAMPLES_PER_CASE = 10_000
SAMPLING_SEED = 1234  # nnU-Net's seed for foreground intensity sampling


@dataclass(frozen=True, eq=False)
class CaseAnalysis:
    """What the fingerprint needs from one case."""

    case_id: str
    spacing: tuple[float, ...]
    shape_before_crop: tuple[int, ...]
    shape_after_crop: tuple[int, ...]
    foreground_samples: np.ndarray  # float32 [C, n]
    constant_channels: tuple[int, ...] = ()  # channels with one value everywhere (an empty or failed export)


@dataclass(frozen=True)
class DatasetAnalysis:
    """The fingerprint plus the crop statistics nnU-Net's fingerprint file also records."""

    fingerprint: Fingerprint
    shapes_before_crop: tuple[tuple[int, ...], ...]
    median_relative_size_after_cropping: float


def nonzero_bbox(image: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of voxels where any channel is non-zero (the whole image when all are zero).

    nnU-Net fills holes in this mask before taking the box; filling holes never grows a
    bounding box, so the box of the raw mask is the same.
    """
    mask = np.any(image != 0, axis=0)
    spatial = mask.shape
    if not mask.any():
        return tuple(slice(0, s) for s in spatial)
    box = []
    for axis in range(mask.ndim):
        other_axes = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other_axes))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def crop_to_nonzero(image: np.ndarray, label: np.ndarray | None = None):
    """Crop ``[C, ...]`` image (and label) to :func:`nonzero_bbox`; returns (image, label, bbox)."""
    bbox = nonzero_bbox(image)
    cropped_label = label[bbox] if label is not None else None
    return image[(slice(None),) + bbox], cropped_label, bbox


def sample_foreground(image: np.ndarray, label: np.ndarray, samples: int | None, seed: int) -> np.ndarray:
    """Intensities ``[C, n]`` of foreground voxels: all of them, or a seeded subset of ``samples``."""
    positions = np.flatnonzero(label > 0)
    if samples is not None and positions.size > samples:
        rng = np.random.default_rng(seed)
        positions = np.sort(rng.choice(positions, size=samples, replace=False))
    flat = image.reshape(image.shape[0], -1)
    return flat[:, positions].astype(np.float32, copy=False)


def analyze_case(dataset: Dataset, case: Case | str, samples_per_case: int | None = SAMPLES_PER_CASE,
                 seed: int = SAMPLING_SEED) -> CaseAnalysis:
    data = read_case(dataset, case)
    image, label, _ = crop_to_nonzero(data.image, data.label)
    return CaseAnalysis(
        case_id=data.case_id,
        spacing=tuple(float(s) for s in data.spacing),
        shape_before_crop=tuple(int(s) for s in data.image.shape[1:]),
        shape_after_crop=tuple(int(s) for s in image.shape[1:]),
        foreground_samples=sample_foreground(image, label, samples_per_case, seed),
        constant_channels=constant_channels(data.image),
    )


def constant_channels(image: np.ndarray) -> tuple[int, ...]:
    """Channels of ``[C, ...]`` holding a single value: normalisation maps them to zeros."""
    flat = image.reshape(image.shape[0], -1)
    return tuple(c for c in range(flat.shape[0]) if flat.shape[1] and flat[c].min() == flat[c].max())


def intensity_statistics(values: np.ndarray) -> ChannelIntensity:
    """nnU-Net's per-channel statistics (population std, linear percentiles)."""
    values = np.asarray(values, dtype=np.float64)
    p00_5, median, p99_5 = np.percentile(values, [0.5, 50.0, 99.5])
    return ChannelIntensity(mean=float(values.mean()), std=float(values.std()), median=float(median),
                            min=float(values.min()), max=float(values.max()),
                            percentile_00_5=float(p00_5), percentile_99_5=float(p99_5))


def _analyze_all(dataset: Dataset, workers: int, samples_per_case: int | None, seed: int) -> list[CaseAnalysis]:
    if workers < 1:
        raise DatasetError(f"workers is {workers}; expected at least 1")
    args = [(dataset, case, samples_per_case, seed) for case in dataset.cases]
    if workers == 1 or len(args) == 1:
        return [analyze_case(*a) for a in args]
    # forkserver: safe even when the caller has started threads (e.g. torch), no __main__ re-import cost
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=min(workers, len(args)), mp_context=context) as pool:
        return list(pool.map(_analyze_packed, args, chunksize=max(1, len(args) // (4 * workers))))


def _analyze_packed(args) -> CaseAnalysis:
    return analyze_case(*args)


def analyze_dataset(dataset: Dataset | str | Path, *, workers: int = 1,
                    samples_per_case: int | None = SAMPLES_PER_CASE, seed: int = SAMPLING_SEED) -> DatasetAnalysis:
    """Read every case once and summarise it (see module docstring); ``samples_per_case=None`` uses all voxels."""
    dataset = as_dataset(dataset)
    cases = _analyze_all(dataset, workers, samples_per_case, seed)
    constant = [f"{c.case_id!r} (channel(s) {list(c.constant_channels)})" for c in cases if c.constant_channels]
    if constant:
        warn_dataset(dataset, "have a constant image (one value in every voxel)", constant)
    pooled = np.concatenate([c.foreground_samples for c in cases], axis=1)
    if pooled.shape[1] == 0:
        raise DatasetError(f"dataset {dataset.name!r} has no foreground voxels (label > 0) in any case; "
                           "expected labelled structures to segment")
    fingerprint = Fingerprint(
        name=dataset.name,
        spacings=tuple(c.spacing for c in cases),
        shapes_after_crop=tuple(c.shape_after_crop for c in cases),
        channel_names=dataset.channel_names,
        labels=dataset.labels,
        intensity=tuple(intensity_statistics(channel) for channel in pooled),
    )
    relative = [np.prod(c.shape_after_crop) / np.prod(c.shape_before_crop) for c in cases]
    return DatasetAnalysis(fingerprint, tuple(c.shape_before_crop for c in cases), float(np.median(relative)))


def compute_fingerprint(dataset: Dataset | str | Path, *, workers: int = 1,
                        samples_per_case: int | None = SAMPLES_PER_CASE, seed: int = SAMPLING_SEED) -> Fingerprint:
    """The dataset's :class:`Fingerprint` (spacings and shapes in (z, y, x) order)."""
    return analyze_dataset(dataset, workers=workers, samples_per_case=samples_per_case, seed=seed).fingerprint
