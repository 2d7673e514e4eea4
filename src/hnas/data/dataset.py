"""Dataset folders: nnU-Net v2 raw format and the original Medical Segmentation Decathlon layout.

Both layouts load into the same :class:`Dataset`, so nothing downstream needs to know which
one the user had. An MSD multi-channel image is one 4D NIfTI; each :class:`Case` records, per
channel, which file and which index of its last axis holds the channel.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hnas.data.io import NIFTI_ENDINGS, ImageGeometry, file_digest, is_nifti, read_images, read_label_map
from hnas.errors import DatasetError

NNUNET = "nnunet"
MSD = "msd"
CHANNEL_SUFFIX_DIGITS = 4  # nnU-Net names channel files {case}_{XXXX}{ending}


@dataclass(frozen=True)
class Case:
    """One training case: a file per channel (possibly one 4D file repeated) and its label map."""

    case_id: str
    image_files: tuple[Path, ...]
    label_file: Path | None
    channel_in_file: tuple[int | None, ...]  # index into a 4D file's last axis, None for a 3D file


@dataclass(frozen=True)
class Dataset:
    """A dataset folder after its dataset.json has been read; files are checked by validate_dataset."""

    name: str
    root: Path
    format: str  # "nnunet" | "msd"
    channel_names: tuple[str, ...]
    labels: tuple[tuple[str, int], ...]  # (name, value) sorted by value, background included
    cases: tuple[Case, ...]
    file_ending: str = ".nii.gz"
    num_training: int | None = None  # what dataset.json promises, checked by validate_dataset

    @property
    def n_channels(self) -> int:
        return len(self.channel_names)

    @property
    def label_values(self) -> tuple[int, ...]:
        return tuple(value for _, value in self.labels)

    @property
    def case_ids(self) -> tuple[str, ...]:
        return tuple(case.case_id for case in self.cases)

    def case(self, case_id: str) -> Case:
        for case in self.cases:
            if case.case_id == case_id:
                return case
        raise DatasetError(f"dataset {self.name!r} has no case {case_id!r}; it has {len(self.cases)} cases "
                           f"such as {list(self.case_ids[:3])}")


@dataclass(frozen=True, eq=False)
class CaseData:
    """The voxels of one case in nnU-Net axis order."""

    case_id: str
    image: np.ndarray  # float32 [C, z, y, x]
    label: np.ndarray | None  # int16 [z, y, x]
    spacing: tuple[float, ...]  # (z, y, x)
    geometry: ImageGeometry


# ---------------------------------------------------------------- dataset.json


def read_dataset_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DatasetError(f"dataset folder {str(path.parent)!r} has no dataset.json; expected {str(path)!r}")
    return read_json_object(path)


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file that must hold an object; DatasetError names the file otherwise."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"{str(path)!r} holds a {type(data).__name__}; expected a JSON object")
    return data


def _require(data: dict, key: str, kind: type, source: Path) -> Any:
    if key not in data:
        raise DatasetError(f"{str(source)!r} lacks the key {key!r}")
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DatasetError(f"{str(source)!r}: key {key!r} is a {type(value).__name__}; expected a {kind.__name__}")
    return value


def _int_key(key: Any, field: str, source: Path) -> int:
    try:
        return int(key)
    except (TypeError, ValueError):
        raise DatasetError(f"{str(source)!r}: {field} has key {key!r}; expected integer indices") from None


def parse_channel_names(data: dict, source: Path) -> tuple[str, ...]:
    """Channel names from "channel_names" (nnU-Net v2) or "modality" (MSD), indexed 0..C-1."""
    key = "channel_names" if "channel_names" in data else "modality"
    mapping = _require(data, key, dict, source)
    if not mapping:
        raise DatasetError(f"{str(source)!r}: key {key!r} is empty; expected at least one channel")
    by_index = {_int_key(k, repr(key), source): str(v) for k, v in mapping.items()}
    if sorted(by_index) != list(range(len(by_index))):
        raise DatasetError(f"{str(source)!r}: key {key!r} has indices {sorted(by_index)}; "
                           f"expected consecutive indices 0..{len(by_index) - 1}")
    return tuple(by_index[i] for i in range(len(by_index)))


def parse_labels(data: dict, source: Path) -> tuple[tuple[str, int], ...]:
    """Labels as (name, value) sorted by value; accepts nnU-Net {name: value} and MSD {value: name}."""
    mapping = _require(data, "labels", dict, source)
    for key, value in mapping.items():
        if isinstance(value, (list, tuple)):
            raise DatasetError(f"{str(source)!r}: label {key!r} is a region {value}; region-based labels "
                               "are not supported, expected one integer value per label")
    if all(isinstance(v, int) and not isinstance(v, bool) for v in mapping.values()):
        pairs = [(str(name), int(value)) for name, value in mapping.items()]  # nnU-Net v2: name -> value
    elif all(isinstance(v, str) for v in mapping.values()):
        pairs = [(name, _int_key(key, "'labels'", source)) for key, name in mapping.items()]  # MSD: "value" -> name
    else:
        raise DatasetError(f"{str(source)!r}: key 'labels' is {mapping}; expected integer values "
                           "(nnU-Net {name: value}) or names (MSD {value: name}) throughout")
    pairs.sort(key=lambda pair: pair[1])
    values = [value for _, value in pairs]
    if values != list(range(len(values))):
        raise DatasetError(f"{str(source)!r}: key 'labels' has values {values}; expected consecutive values "
                           f"0..{len(values) - 1} with 0 = background")
    if len(pairs) < 2:
        raise DatasetError(f"{str(source)!r}: key 'labels' lists only {pairs}; expected background and "
                           "at least one foreground label")
    return tuple(pairs)


def _optional_int(data: dict, key: str, source: Path) -> int | None:
    if key not in data:
        return None
    value = data[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise DatasetError(f"{str(source)!r}: key {key!r} is {value!r}; expected a non-negative integer")
    return value


# ---------------------------------------------------------------- layouts


def _detect_format(data: dict, source: Path) -> str:
    if "channel_names" in data:
        return NNUNET
    if "modality" in data:
        return MSD
    raise DatasetError(f"{str(source)!r} has neither 'channel_names' (nnU-Net v2) nor 'modality' (MSD); "
                       "expected one of them")


def visible_files(folder: Path, ending: str) -> list[str]:
    """File names in a folder with the ending, skipping hidden files (e.g. macOS '._' copies)."""
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.name.endswith(ending)
                  and not p.name.startswith("."))


def split_channel_file(name: str, ending: str) -> tuple[str, int] | None:
    """'case_0001.nii.gz' -> ('case', 1); None when the name does not follow {case}_{XXXX}{ending}."""
    match = re.fullmatch(rf"(.+)_(\d{{{CHANNEL_SUFFIX_DIGITS}}}){re.escape(ending)}", name)
    return (match.group(1), int(match.group(2))) if match else None


def _nnunet_cases(root: Path, data: dict, n_channels: int, source: Path) -> tuple[str, tuple[Case, ...]]:
    ending = _require(data, "file_ending", str, source)
    if ending not in NIFTI_ENDINGS:
        raise DatasetError(f"{str(source)!r}: key 'file_ending' is {ending!r}; only NIfTI is supported, "
                           f"expected one of {list(NIFTI_ENDINGS)}")
    if "dataset" in data:  # nnU-Net's explicit file list for non-standard layouts
        return ending, _explicit_cases(root, _require(data, "dataset", dict, source), n_channels, source)
    images_dir = root / "imagesTr"
    if not images_dir.is_dir():
        raise DatasetError(f"dataset {root.name!r} has no imagesTr folder; expected {str(images_dir)!r}")
    parsed = (split_channel_file(name, ending) for name in visible_files(images_dir, ending))
    case_ids = sorted({match[0] for match in parsed if match is not None})
    cases = tuple(
        Case(case_id=cid,
             image_files=tuple(images_dir / f"{cid}_{c:0{CHANNEL_SUFFIX_DIGITS}d}{ending}" for c in range(n_channels)),
             label_file=root / "labelsTr" / f"{cid}{ending}",
             channel_in_file=(None,) * n_channels)
        for cid in case_ids)
    return ending, cases


def _explicit_cases(root: Path, entries: dict, n_channels: int, source: Path) -> tuple[Case, ...]:
    cases = []
    for cid, entry in sorted(entries.items()):
        where = f"'dataset'[{cid!r}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("images"), list) or "label" not in entry:
            raise DatasetError(f"{str(source)!r}: {where} is {entry!r}; expected {{'images': [...], 'label': ...}}")
        images = tuple(_resolve(root, p) for p in entry["images"])
        if len(images) != n_channels:
            raise DatasetError(f"{str(source)!r}: {where} lists {len(images)} images; expected one per channel "
                               f"({n_channels})")
        cases.append(Case(str(cid), images, _resolve(root, entry["label"]), (None,) * n_channels))
    return tuple(cases)


def _resolve(root: Path, relative: str) -> Path:
    path = Path(relative)
    return path if path.is_absolute() else (root / path)


def _strip_ending(name: str) -> str:
    for ending in (".nii.gz", ".nii"):
        if name.endswith(ending):
            return name[: -len(ending)]
    return name


def _msd_cases(root: Path, data: dict, n_channels: int, source: Path) -> tuple[Case, ...]:
    entries = _require(data, "training", list, source)
    cases = []
    for i, entry in enumerate(entries):
        where = f"'training'[{i}]"
        if not isinstance(entry, dict):
            raise DatasetError(f"{str(source)!r}: {where} is {entry!r}; expected {{'image': ..., 'label': ...}}")
        for key in ("image", "label"):
            if not isinstance(entry.get(key), str):
                raise DatasetError(f"{str(source)!r}: {where} lacks the key {key!r} (a relative file path)")
        image = _resolve(root, entry["image"])
        if not is_nifti(image):
            raise DatasetError(f"{str(source)!r}: {where}.image {entry['image']!r} is not a NIfTI file name")
        indices = (None,) if n_channels == 1 else tuple(range(n_channels))
        cases.append(Case(_strip_ending(image.name), (image,) * n_channels,
                          _resolve(root, entry["label"]), indices))
    return tuple(sorted(cases, key=lambda c: c.case_id))


#: nnU-Net's environment variable naming the folder of raw datasets (``DatasetXXX_Name`` folders).
NNUNET_RAW = "nnUNet_raw"
_DATASET_NAME = re.compile(r"Dataset(\d{3})_[^/\\]+")


def locate_dataset(name: str | Path) -> Path:
    """A dataset argument as nnU-Net resolves it: a folder, else a ``DatasetXXX_Name`` or its id under $nnUNet_raw.

    A folder of that name in the working directory wins (as before nnU-Net names were accepted);
    ``4``, ``004`` and ``Dataset004_Hippocampus`` find ``$nnUNet_raw/Dataset004_Hippocampus``.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve()
    text = str(name)
    raw = os.environ.get(NNUNET_RAW)
    if raw and _is_dataset_name(text):
        prefix = f"Dataset{int(text):03d}_" if text.isdigit() else None
        found = sorted(p for p in Path(raw).glob("Dataset*") if p.is_dir()
                       and (p.name.startswith(prefix) if prefix else p.name == text))
        if len(found) == 1:
            return found[0].resolve()
        if len(found) > 1:
            raise DatasetError(f"dataset id {text!r} matches {[p.name for p in found]} in ${NNUNET_RAW} "
                               f"({raw!r}); expected one folder per id: give the full name")
    raise DatasetError(f"dataset {text!r} is neither a folder nor a dataset in ${NNUNET_RAW} ({_raw_setting()}); "
                       "expected a dataset folder, a DatasetXXX_Name or its id (as nnU-Net takes them)")


def _is_dataset_name(text: str) -> bool:
    return text.isdigit() or bool(_DATASET_NAME.fullmatch(text))


def _raw_setting() -> str:
    raw = os.environ.get(NNUNET_RAW)
    return f"{raw!r}" if raw else "not set"


def load_dataset(path: str | Path) -> Dataset:
    """Read a dataset folder's dataset.json and list its training cases (nnU-Net v2 or MSD layout).

    ``path`` may also be a ``DatasetXXX_Name`` or its id under $nnUNet_raw (:func:`locate_dataset`).
    Files are not opened here; :func:`validate_dataset` checks them.
    """
    root = Path(path).expanduser().resolve()  # resolved, so '.' still has a name
    if not root.exists() and _is_dataset_name(str(path)) and os.environ.get(NNUNET_RAW):
        root = locate_dataset(path)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {str(root)!r} does not exist; expected a folder with dataset.json, "
                           f"imagesTr and labelsTr (or a DatasetXXX_Name or its id in ${NNUNET_RAW}, "
                           f"{_raw_setting()})")
    source = root / "dataset.json"
    data = read_dataset_json(source)
    fmt = _detect_format(data, source)
    channel_names = parse_channel_names(data, source)
    labels = parse_labels(data, source)
    if fmt == NNUNET:
        ending, cases = _nnunet_cases(root, data, len(channel_names), source)
        _require(data, "numTraining", int, source)
    else:
        ending, cases = ".nii.gz", _msd_cases(root, data, len(channel_names), source)
    duplicates = sorted(cid for cid, n in Counter(case.case_id for case in cases).items() if n > 1)
    if duplicates:
        raise DatasetError(f"dataset {root.name!r} lists cases {duplicates} more than once; expected unique case ids")
    if not cases:
        raise DatasetError(f"dataset {root.name!r} has no training cases: imagesTr is empty or dataset.json "
                           "lists none; expected at least one case")
    return Dataset(name=root.name, root=root, format=fmt, channel_names=channel_names, labels=labels,
                   cases=cases, file_ending=ending, num_training=_optional_int(data, "numTraining", source))


def content_digest(dataset: Dataset) -> str:
    """SHA-256 over dataset.json and the bytes of every case file: the key of caches derived from the data.

    Sizes and mtimes alone miss a label edited in place; each file is hashed once per process
    (:func:`hnas.data.io.file_digest`), so asking again is cheap.
    """
    digest = hashlib.sha256()
    for path in (dataset.root / "dataset.json",) + tuple(p for c in dataset.cases for p in (*c.image_files, c.label_file)):
        if path is not None:
            digest.update(f"{path.name}:{file_digest(path) if path.is_file() else 'missing'};".encode())
    return digest.hexdigest()


def as_dataset(dataset: Dataset | str | Path) -> Dataset:
    return dataset if isinstance(dataset, Dataset) else load_dataset(dataset)


def _as_case(dataset: Dataset, case: Case | str) -> Case:
    return case if isinstance(case, Case) else dataset.case(case)


def read_case(dataset: Dataset, case: Case | str, *, with_label: bool = True) -> CaseData:
    """Read one case's image ``[C, z, y, x]`` and label ``[z, y, x]``; errors name the case."""
    case = _as_case(dataset, case)
    try:
        volume = read_images(case.image_files, case.channel_in_file)
        label = None
        if with_label:
            if case.label_file is None:
                raise DatasetError("it has no label file")
            label, label_geometry = read_label_map(case.label_file)
            _check_same_grid(volume.geometry, label_geometry)
    except DatasetError as exc:
        raise DatasetError(f"dataset {dataset.name!r}, case {case.case_id!r}: {exc}") from exc
    return CaseData(case.case_id, volume.array, label, volume.spacing, volume.geometry)


SPACING_RTOL = 1e-3


def spacing_mismatch(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return not np.allclose(a, b, rtol=SPACING_RTOL, atol=0.0)


def _check_same_grid(image: ImageGeometry, label: ImageGeometry) -> None:
    if image.shape != label.shape:
        raise DatasetError(f"image shape {image.shape} and label shape {label.shape} (z, y, x) differ; "
                           "expected the same grid")
    if spacing_mismatch(image.spacing, label.spacing):
        raise DatasetError(f"image spacing {image.spacing} and label spacing {label.spacing} (z, y, x) differ; "
                           f"expected equal within {SPACING_RTOL:g} relative")
