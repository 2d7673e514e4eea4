"""The dataset fingerprint: what planning needs to know about a dataset.

All per-axis values use nnU-Net's axis order: the NIfTI axes reversed (z, y, x), i.e. the
order SimpleITK's ``GetArrayFromImage`` gives. This keeps our plans comparable with
nnU-Net's ``nnUNetPlans.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from hnas.data.dataset import parse_channel_names, parse_labels, read_dataset_json, read_json_object
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
