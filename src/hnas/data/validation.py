"""Dataset integrity checks, in the spirit of nnU-Net's ``verify_dataset_integrity``.

Everything except the label values is checked from NIfTI headers, so validating a few hundred
cases takes seconds. All problems are collected and reported together (each naming its case),
so a user fixes a broken dataset in one pass instead of one error at a time.

Oddities that do not stop nnU-Net but usually mean a broken export (a label whose affine differs
from its image's, a zero pixdim) are reported as one :class:`DatasetWarning` per kind instead.
How two grids are compared, and how a label value or a zero pixdim is worded, lives in
:mod:`hnas.data.geometry`, which prediction and evaluation use as well.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from hnas.data.dataset import (NNUNET, SPACING_RTOL, Case, Dataset, as_dataset, spacing_mismatch,
                               split_channel_file, visible_files)
from hnas.data.geometry import (ZERO_PIXDIM, DatasetWarning, affine_difference, grid_problems, label_value_problem,
                                zero_pixdim_detail)
from hnas.data.io import HeaderInfo, read_header, read_label_map
from hnas.errors import DatasetError

MAX_REPORTED_PROBLEMS = 20
__all__ = ["DatasetWarning", "case_problems", "validate_dataset", "warn_dataset"]  # DatasetWarning: its old home


def validate_dataset(dataset: Dataset | str | Path, check_label_values: bool = True) -> Dataset:
    """Check every case of a dataset; raise one DatasetError listing all problems, else return it.

    ``dataset`` may be a folder path (then a missing folder or dataset.json, a malformed
    dataset.json or an empty imagesTr raises straight away).
    """
    dataset = as_dataset(dataset)
    problems = _dataset_problems(dataset)
    oddities: dict[str, list[str]] = {}
    for case in dataset.cases:
        problems += [f"case {case.case_id!r}: {p}" for p in case_problems(dataset, case, check_label_values, oddities)]
    if problems:
        raise DatasetError(_summary(dataset, problems))
    for kind, cases in oddities.items():
        warn_dataset(dataset, kind, cases)
    return dataset


def warn_dataset(dataset: Dataset, kind: str, details: list[str]) -> None:
    """One warning per kind of oddity, naming the first few cases (hundreds of lines help nobody)."""
    shown = "; ".join(details[:5]) + (f"; ... and {len(details) - 5} more" if len(details) > 5 else "")
    warnings.warn(f"dataset {dataset.name!r}: {len(details)} case(s) {kind}: {shown}", DatasetWarning, stacklevel=3)


def _summary(dataset: Dataset, problems: list[str]) -> str:
    shown = problems[:MAX_REPORTED_PROBLEMS]
    lines = [f"dataset {dataset.name!r} ({dataset.root}) has {len(problems)} problem(s):"]
    lines += [f"  - {p}" for p in shown]
    if len(problems) > len(shown):
        lines.append(f"  ... and {len(problems) - len(shown)} more")
    return "\n".join(lines)


def _relative(dataset: Dataset, path: Path) -> str:
    try:
        return str(path.relative_to(dataset.root))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------- whole dataset


def _dataset_problems(dataset: Dataset) -> list[str]:
    problems = []
    if dataset.num_training is not None and dataset.num_training != len(dataset.cases):
        problems.append(f"dataset.json key 'numTraining' is {dataset.num_training} but {len(dataset.cases)} "
                        "training cases were found; expected them to agree")
    # folder-naming rules apply only when cases come from imagesTr, not from dataset.json's explicit "dataset" list
    if dataset.format == NNUNET and all(c.image_files and c.image_files[0].parent == dataset.root / "imagesTr"
                                        for c in dataset.cases):
        problems += _nnunet_folder_problems(dataset)
    return problems


def _nnunet_folder_problems(dataset: Dataset) -> list[str]:
    """Files in imagesTr/labelsTr that nnU-Net would silently ignore or misread."""
    problems = []
    ending = dataset.file_ending
    for name in visible_files(dataset.root / "imagesTr", ending):
        parsed = split_channel_file(name, ending)
        if parsed is None:
            problems.append(f"imagesTr file {name!r} does not follow {{case}}_{{XXXX}}{ending}; expected a "
                            "4-digit channel index before the ending")
        elif parsed[1] >= dataset.n_channels:
            problems.append(f"case {parsed[0]!r}: imagesTr file {name!r} has channel index {parsed[1]} but "
                            f"dataset.json declares {dataset.n_channels} channel(s) {list(dataset.channel_names)}")
    labels_dir = dataset.root / "labelsTr"
    if labels_dir.is_dir():
        known = set(dataset.case_ids)
        for name in visible_files(labels_dir, ending):
            case_id = name[: -len(ending)]
            if case_id not in known:
                problems.append(f"case {case_id!r}: label file labelsTr/{name} has no image in imagesTr "
                                f"(expected imagesTr/{case_id}_0000{ending})")
    return problems


# ---------------------------------------------------------------- one case


def case_problems(dataset: Dataset, case: Case, check_label_values: bool = True,
                  oddities: dict[str, list[str]] | None = None) -> list[str]:
    """Problems of one case (empty when it is fine), each a sentence naming the file and what was expected.

    Header oddities that are no error (see :func:`_header_oddities`) are added to ``oddities``.
    """
    problems = _missing_files(dataset, case)
    if problems:
        return problems
    headers: dict[Path, HeaderInfo] = {}
    try:
        for path in case.image_files + (case.label_file,):
            if path not in headers:
                headers[path] = read_header(path)
    except DatasetError as exc:
        return [str(exc)]
    problems += _channel_problems(dataset, case, headers)
    if problems:
        return problems
    problems += _label_grid_problems(dataset, case, headers)
    if oddities is not None:
        for kind, detail in _header_oddities(dataset, case, headers):
            oddities.setdefault(kind, []).append(f"{case.case_id!r} ({detail})")
    if not problems and check_label_values:
        problems += _label_value_problems(dataset, case)
    return problems


def _missing_files(dataset: Dataset, case: Case) -> list[str]:
    problems = []
    for index, path in enumerate(case.image_files):
        if not path.is_file():
            problems.append(f"channel {index} ({dataset.channel_names[index]}) image file "
                            f"{_relative(dataset, path)} is missing")
    if case.label_file is None or not case.label_file.is_file():
        where = _relative(dataset, case.label_file) if case.label_file else "(none listed)"
        problems.append(f"label file {where} is missing")
    return list(dict.fromkeys(problems))  # a 4D MSD file missing is one problem, not one per channel


def _channel_problems(dataset: Dataset, case: Case, headers: dict[Path, HeaderInfo]) -> list[str]:
    problems = []
    first = headers[case.image_files[0]]
    for index, (path, in_file) in enumerate(zip(case.image_files, case.channel_in_file)):
        header = headers[path]
        name = _relative(dataset, path)
        if in_file is None and header.n_channels not in (None, 1):
            problems.append(f"image file {name} holds {header.n_channels} channels; expected one 3D channel")
        elif in_file is not None and header.n_channels != dataset.n_channels:
            problems.append(f"image file {name} holds {header.n_channels or 1} channel(s); dataset.json declares "
                            f"{dataset.n_channels} {list(dataset.channel_names)}")
        elif header.shape != first.shape:
            problems.append(f"channel {index} file {name} has shape {header.shape} but channel 0 has {first.shape} "
                            "(z, y, x); expected all channels on one grid")
        elif spacing_mismatch(header.spacing, first.spacing):
            problems.append(f"channel {index} file {name} has spacing {header.spacing} but channel 0 has "
                            f"{first.spacing}; expected equal within {SPACING_RTOL:g} relative")
    return list(dict.fromkeys(problems))


def _label_grid_problems(dataset: Dataset, case: Case, headers: dict[Path, HeaderInfo]) -> list[str]:
    image, label = headers[case.image_files[0]], headers[case.label_file]
    name = _relative(dataset, case.label_file)
    if label.n_channels not in (None, 1):
        return [f"label file {name} is 4D with {label.n_channels} volumes; expected one 3D label map"]
    return grid_problems(("image", None, image), ("label", None, label))


def _header_oddities(dataset: Dataset, case: Case, headers: dict[Path, HeaderInfo]) -> list[tuple[str, str]]:
    """(kind, detail) of header values nnU-Net accepts but that usually mean a broken export.

    A zero pixdim means the file has no spacing (nibabel reads it as 1 mm); a label affine that differs from
    its image's (origin or direction, the spacing is checked as an error) puts the segmentation
    somewhere else in the world than the image.
    """
    found = []
    for path in dict.fromkeys(case.image_files + (case.label_file,)):
        if headers[path].zero_pixdim:
            found.append((ZERO_PIXDIM, zero_pixdim_detail(_relative(dataset, path), headers[path].spacing)))
    worst = affine_difference(headers[case.image_files[0]].affine, headers[case.label_file].affine)
    if worst is not None:
        found.append(("have a label affine that differs from the image's",
                      f"{_relative(dataset, case.label_file)} differs by up to {worst:g}"))
    return found


def _label_value_problems(dataset: Dataset, case: Case) -> list[str]:
    try:
        label, _ = read_label_map(case.label_file)
    except DatasetError as exc:
        return [str(exc)]
    problem = label_value_problem(_relative(dataset, case.label_file), label, dataset.label_values)
    return [] if problem is None else [problem]
