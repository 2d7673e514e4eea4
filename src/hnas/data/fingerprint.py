"""The dataset fingerprint: what planning needs to know about a dataset, and how it is computed.

Computed the way nnU-Net v2's DatasetFingerprintExtractor does it. Per case: the spacing, the
shape after cropping to the bounding box of voxels where any channel is non-zero, and a seeded
sample of foreground intensities (voxels with label > 0 inside that box). Intensity statistics
are computed over the pooled samples of all cases. A case contributes all its foreground voxels
when it has at most ``samples_per_case`` of them and a seeded random subset otherwise, so the
result is deterministic and independent of ``workers``.

All per-axis values use nnU-Net's axis order: the NIfTI axes reversed (z, y, x), i.e. the
order SimpleITK's ``GetArrayFromImage`` gives. This keeps our plans comparable with
nnU-Net's ``nnUNetPlans.json``. Fingerprints are saved and read in nnU-Net's
``dataset_fingerprint.json`` form.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from hnas.data.dataset import (Case, Dataset, as_dataset, parse_channel_names, parse_labels, read_case,
                               read_dataset_json, read_json_object)
from hnas.data.processes import map_in_processes
from hnas.data.validation import warn_dataset
from hnas.errors import DatasetError


@dataclass(frozen=True)
class ChannelIntensity:
    """Intensity statistics of one channel over foreground voxels (nnU-Net's definition)."""

    mean: float
    std: float
    median: float
    min: float
    max: float
    percentile_00_5: float
    percentile_99_5: float


@dataclass(frozen=True)
class Fingerprint:
    """Spacings, cropped shapes, channels, labels and foreground intensity statistics."""

    name: str
    spacings: tuple[tuple[float, ...], ...]
    shapes_after_crop: tuple[tuple[int, ...], ...]
    channel_names: tuple[str, ...]
    labels: tuple[tuple[str, int], ...]  # (name, value), background included, sorted by value
    intensity: tuple[ChannelIntensity, ...] = field(default=())

    @property
    def n_cases(self) -> int:
        return len(self.spacings)

    @property
    def dims(self) -> int:
        return len(self.spacings[0])

    @property
    def n_channels(self) -> int:
        return len(self.channel_names)

    @property
    def n_classes(self) -> int:
        """Number of network outputs: labels including background."""
        return len(self.labels)


# ---------------------------------------------------------------- nnU-Net's dataset_fingerprint.json

HNAS_KEY = "hnas"  # our sibling entry: what nnU-Net keeps in dataset.json instead
FORMAT_VERSION = 1
INTENSITY_KEY = "foreground_intensity_properties_per_channel"
_STAT_NAMES = tuple(f.name for f in fields(ChannelIntensity))


def to_nnunet_dict(fp: Fingerprint, median_relative_size_after_cropping: float | None = None) -> dict:
    """nnU-Net's fingerprint keys plus an ``"hnas"`` entry with name, channels and labels."""
    data = {
        "spacings": [list(s) for s in fp.spacings],
        "shapes_after_crop": [list(s) for s in fp.shapes_after_crop],
        INTENSITY_KEY: {str(i): {k: getattr(stats, k) for k in sorted(_STAT_NAMES)}
                        for i, stats in enumerate(fp.intensity)},
    }
    if median_relative_size_after_cropping is not None:
        data["median_relative_size_after_cropping"] = float(median_relative_size_after_cropping)
    data[HNAS_KEY] = {
        "format_version": FORMAT_VERSION,
        "name": fp.name,
        "channel_names": list(fp.channel_names),
        "labels": [[name, value] for name, value in fp.labels],
    }
    return data


def save_fingerprint(fp: Fingerprint, path: str | Path, *,
                     median_relative_size_after_cropping: float | None = None) -> Path:
    """Write ``fp`` as nnU-Net's dataset_fingerprint.json (plus the "hnas" entry; see load_fingerprint).

    nnU-Net's planner also reads ``median_relative_size_after_cropping`` (to decide whether to
    normalise inside the non-zero mask); it is written when given, e.g. from
    ``analyze_dataset(...).median_relative_size_after_cropping``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_nnunet_dict(fp, median_relative_size_after_cropping), indent=2) + "\n")
    return path


def load_fingerprint(path: str | Path) -> Fingerprint:
    """Read a file written by :func:`save_fingerprint` (exact round trip).

    A plain nnU-Net dataset_fingerprint.json (no "hnas" entry) is read together with the
    dataset.json beside it, as nnUNet_preprocessed/DatasetXXX_Name/ holds both.
    """
    path = Path(path)
    data = _read_json(path)
    if HNAS_KEY not in data:
        sibling = path.parent / "dataset.json"
        if sibling.is_file():
            return read_nnunet_fingerprint(path, sibling)
        raise DatasetError(f"{str(path)!r} lacks the key {HNAS_KEY!r} and has no dataset.json beside it; "
                           "expected a file from save_fingerprint, or use read_nnunet_fingerprint(fingerprint, "
                           "dataset_json)")
    meta = data[HNAS_KEY]
    if not isinstance(meta, dict):
        raise DatasetError(f"{str(path)!r}: key {HNAS_KEY!r} is {meta!r}; expected an object")
    for key in ("name", "channel_names", "labels"):
        if key not in meta:
            raise DatasetError(f"{str(path)!r}: key {HNAS_KEY!r} lacks {key!r}")
    try:
        labels = tuple((str(name), int(value)) for name, value in meta["labels"])
    except (TypeError, ValueError):
        raise DatasetError(f"{str(path)!r}: key 'hnas.labels' is {meta['labels']!r}; "
                           "expected a list of [name, value] pairs") from None
    return _from_nnunet_dict(data, path, str(meta["name"]), tuple(str(c) for c in meta["channel_names"]), labels)


def read_nnunet_fingerprint(fingerprint_json: str | Path, dataset_json: str | Path) -> Fingerprint:
    """A Fingerprint from nnU-Net's dataset_fingerprint.json and its dataset.json.

    Spacings and shapes are already in (z, y, x) order there. The name is the folder that holds
    dataset.json (e.g. ``Dataset004_Hippocampus``), as for :func:`hnas.data.load_dataset`.
    """
    fingerprint_json, dataset_json = Path(fingerprint_json), Path(dataset_json)
    data = _read_json(fingerprint_json)
    meta = read_dataset_json(dataset_json)
    name = dataset_json.resolve().parent.name
    return _from_nnunet_dict(data, fingerprint_json, name, parse_channel_names(meta, dataset_json),
                             parse_labels(meta, dataset_json))


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise DatasetError(f"fingerprint file {str(path)!r} does not exist")
    return read_json_object(path)


def _from_nnunet_dict(data: dict, source: Path, name: str, channel_names: tuple[str, ...],
                      labels: tuple[tuple[str, int], ...]) -> Fingerprint:
    for key in ("spacings", "shapes_after_crop", INTENSITY_KEY):
        if key not in data:
            raise DatasetError(f"{str(source)!r} lacks the key {key!r}; expected nnU-Net's dataset_fingerprint.json")
    spacings = _per_case(data, "spacings", float, source)
    shapes = _per_case(data, "shapes_after_crop", int, source)
    if len(spacings) != len(shapes) or not spacings:
        raise DatasetError(f"{str(source)!r}: 'spacings' has {len(spacings)} cases and 'shapes_after_crop' "
                           f"{len(shapes)}; expected the same, non-zero number")
    dims = {len(s) for s in spacings + shapes}
    if len(dims) != 1:
        raise DatasetError(f"{str(source)!r}: spacings and shapes have lengths {sorted(dims)}; expected one "
                           "dimensionality for all cases")
    return Fingerprint(name=name, spacings=spacings, shapes_after_crop=shapes, channel_names=channel_names,
                       labels=labels, intensity=_intensities(data[INTENSITY_KEY], len(channel_names), source))


def _per_case(data: dict, key: str, kind: type, source: Path) -> tuple[tuple, ...]:
    try:
        return tuple(tuple(kind(v) for v in case) for case in data[key])
    except (TypeError, ValueError):
        raise DatasetError(f"{str(source)!r}: key {key!r} is not a list of per-case "
                           f"{kind.__name__} lists") from None


def _intensities(per_channel, n_channels: int, source: Path) -> tuple[ChannelIntensity, ...]:
    where = f"{str(source)!r}: key {INTENSITY_KEY!r}"
    if not isinstance(per_channel, dict):
        raise DatasetError(f"{where} is a {type(per_channel).__name__}; expected an object keyed by channel")
    if not per_channel:
        return ()  # a fingerprint made without intensity statistics
    try:
        by_index = {int(k): v for k, v in per_channel.items()}
    except ValueError:
        raise DatasetError(f"{where} has keys {list(per_channel)}; expected channel indices") from None
    if sorted(by_index) != list(range(n_channels)):
        raise DatasetError(f"{where} has channels {sorted(by_index)}; expected 0..{n_channels - 1} "
                           "to match dataset.json")
    result = []
    for index in range(n_channels):
        stats = by_index[index]
        missing = [k for k in _STAT_NAMES if not isinstance(stats, dict) or k not in stats]
        if missing:
            raise DatasetError(f"{where}[{str(index)!r}] lacks {missing}")
        result.append(ChannelIntensity(**{k: float(stats[k]) for k in _STAT_NAMES}))
    return tuple(result)


# ---------------------------------------------------------------- computing a fingerprint

SAMPLES_PER_CASE = 10_000
SAMPLING_SEED = 1234  # nnU-Net's seed for foreground intensity sampling
#: Bump when compute_fingerprint gives a different result for the same files: fingerprints cached
#: under a key of the files (hnas.data.cache) are then computed afresh instead of served stale.
COMPUTATION_VERSION = 1


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
    return map_in_processes(_analyze_packed, args, min(workers, len(args)), what="reading the dataset's cases",
                            chunksize=max(1, len(args) // (4 * workers)))


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
