"""Do two files lie on one voxel grid, and does a label map hold only known values?

One implementation for every place hnas pairs volumes: the training data (image and label of a
case, :mod:`hnas.data.validation`), a labelled test set (each label and its image) and an
evaluation (a prediction and its label). The tolerances follow nnU-Net's
``verify_dataset_integrity`` (docs/references.md): a shape or spacing mismatch is an error; a
differing affine (origin or direction) is only nnU-Net's warning for training data, and stays a
:class:`DatasetWarning` there, but a label scored against an image that lies elsewhere in the
world gives a meaningless Dice/HD95, so evaluation refuses it.

Messages are single sentences naming each file (when given) and both values, in (z, y, x) for
shapes and spacings and in NIfTI world millimetres for origins.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from hnas.data.dataset import SPACING_RTOL, spacing_mismatch
from hnas.data.io import ImageVolume, read_header, read_images, read_label_map
from hnas.errors import DatasetError

#: mm. Affines of one case written by the same tool agree far closer than this (a float32 header
#: stores an origin of 500 mm to ~3e-5 mm); any real misplacement is a sizeable fraction of a voxel.
AFFINE_ATOL = 1e-3
#: The oddity plan and search report (as a DatasetWarning) and predict/evaluate repeat word for word.
ZERO_PIXDIM = "store pixdim 0 (no spacing; read as 1 mm)"
AFFINE_CHOICES = ("error", "warn", "ignore")


class DatasetWarning(UserWarning):
    """A dataset is usable but something in it is probably not what the user meant."""


class Grid(Protocol):
    """What :class:`~hnas.data.io.HeaderInfo` and :class:`~hnas.data.io.ImageGeometry` share."""

    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    affine: tuple[tuple[float, ...], ...] | None


#: (role, file or None, grid): e.g. ("image", Path("imagesTs/a_0000.nii.gz"), read_header(...)).
Side = tuple[str, "str | Path | None", Grid]


def _named(role: str, path: str | Path | None) -> str:
    return role if path is None else f"{role} {str(path)!r}"


def grid_problems(first: Side, second: Side) -> list[str]:
    """Shape and spacing disagreements of two grids (empty when they agree), each one sentence.

    Without file names the sentences are the training validation's: ``image/label shape mismatch:
    image (6, 7, 8), label (6, 7, 9) (z, y, x); expected the same shape``.
    """
    (role_a, path_a, a), (role_b, path_b, b) = first, second
    kind = f"{role_a}/{role_b}"
    problems = []
    if tuple(a.shape) != tuple(b.shape):
        problems.append(f"{kind} shape mismatch: {_named(role_a, path_a)} {tuple(a.shape)}, {_named(role_b, path_b)} "
                        f"{tuple(b.shape)} (z, y, x); expected the same shape")
    if spacing_mismatch(b.spacing, a.spacing):
        problems.append(f"{kind} spacing mismatch: {_named(role_a, path_a)} {tuple(a.spacing)}, "
                        f"{_named(role_b, path_b)} {tuple(b.spacing)} (z, y, x); expected equal within "
                        f"{SPACING_RTOL:g} relative")
    return problems


def affine_difference(a, b) -> float | None:
    """The largest difference of two voxel-to-world affines when beyond :data:`AFFINE_ATOL`, else None."""
    if a is None or b is None:
        return None
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or np.allclose(a, b, rtol=0.0, atol=AFFINE_ATOL):
        return None if a.shape == b.shape else float("inf")
    return float(np.max(np.abs(a - b)))


def _vector(values) -> tuple[float, ...]:
    return tuple(float(f"{float(v):.6g}") + 0.0 for v in values)  # + 0.0: no "-0.0"


def _direction(affine: np.ndarray) -> tuple[tuple[float, ...], ...]:
    """World direction of each voxel axis (NIfTI i, j, k): the affine's columns divided by the spacing."""
    columns = affine[:3, :3].T
    return tuple(_vector(c / (np.linalg.norm(c) or 1.0)) for c in columns)


def affine_problem(first: Side, second: Side) -> str | None:
    """One sentence when the two grids lie differently in the world (origin or direction), else None.

    Affines that differ only in their voxel sizes are left to :func:`grid_problems`' spacing check.
    """
    (role_a, path_a, a), (role_b, path_b, b) = first, second
    worst = affine_difference(a.affine, b.affine)
    if worst is None:
        return None
    affine_a, affine_b = np.asarray(a.affine, dtype=np.float64), np.asarray(b.affine, dtype=np.float64)
    parts = []
    origin_a, origin_b = affine_a[:3, 3], affine_b[:3, 3]
    if not np.allclose(origin_a, origin_b, rtol=0.0, atol=AFFINE_ATOL):
        parts.append(f"origin {_vector(origin_a)} vs {_vector(origin_b)} mm, "
                     f"{float(np.linalg.norm(origin_a - origin_b)):.4g} mm apart")
    if _direction(affine_a) != _direction(affine_b):
        parts.append(f"direction {_direction(affine_a)} vs {_direction(affine_b)}")
    if not parts:  # only the voxel sizes in the affine differ: the spacing check (relative) judges those
        return None
    return (f"{role_a}/{role_b} affine mismatch: {_named(role_a, path_a)} and {_named(role_b, path_b)} lie "
            f"differently in the world ({'; '.join(parts)}); expected the same affine within {AFFINE_ATOL:g} mm")


def check_same_grid(first: Side, second: Side, *, affine: str = "error") -> None:
    """Refuse (one DatasetError naming both files and values) two volumes on different voxel grids.

    ``affine`` says what a differing origin or direction is: ``"error"`` (a test label against its
    image), ``"warn"`` (a :class:`DatasetWarning`, as plan gives for training data) or ``"ignore"``.
    """
    if affine not in AFFINE_CHOICES:
        raise ValueError(f"affine is {affine!r}; expected one of {AFFINE_CHOICES}")
    problems = grid_problems(first, second)
    placed = affine_problem(first, second) if affine != "ignore" else None
    if placed is not None and affine == "error":
        problems.append(placed)
    if problems:
        raise DatasetError("; ".join(problems))
    if placed is not None:
        warnings.warn(placed, DatasetWarning, stacklevel=2)


# ---------------------------------------------------------------- label values


def unknown_values(label: np.ndarray, allowed: Iterable[int]) -> list[int]:
    """Values in ``label`` that ``allowed`` does not list, sorted."""
    return sorted(set(np.unique(label).tolist()) - {int(v) for v in allowed})


def label_value_problem(name: str, label: np.ndarray, allowed: Sequence[int],
                        not_listed: str = "dataset.json does not list") -> str | None:
    """``label file NAME holds values [5, 7] that dataset.json does not list; expected only [0, 1, 2]``, or None."""
    unknown = unknown_values(label, allowed)
    if not unknown:
        return None
    return f"label file {name} holds values {unknown} that {not_listed}; expected only {[int(v) for v in allowed]}"


def check_label_values(path: str | Path, label: np.ndarray, allowed: Sequence[int],
                       not_listed: str = "dataset.json does not list") -> None:
    """Refuse a label map (or a prediction) holding values outside ``allowed``, naming them and the file."""
    problem = label_value_problem(repr(str(path)), label, allowed, not_listed)
    if problem is not None:
        raise DatasetError(problem)


def check_label_file(image_files: Sequence[str | Path], label_file: str | Path, allowed: Sequence[int], *,
                     not_listed: str = "the model's labels do not list") -> None:
    """A labelled case of a test set before anything is predicted for it.

    The label must lie on its image's grid (shape, spacing, affine: all errors) and hold only
    ``allowed`` values; a zero pixdim in either file warns as plan does.
    """
    image_path, label_path = Path(image_files[0]), Path(label_file)
    warn_zero_pixdim([image_path, label_path])
    check_same_grid(("image", image_path, read_header(image_path)), ("label", label_path, read_header(label_path)))
    check_label_values(label_path, read_label_map(label_path)[0], allowed, not_listed)


def check_same_labels(found: Sequence[tuple[str, int]], source: str | Path,
                      expected: Sequence[tuple[str, int]] | None, model: str | Path | None) -> None:
    """Refuse a test set whose dataset.json (``source``) lists other labels (names or values) than
    ``model`` predicts (``expected``); nothing to compare when either is None."""
    if model is None or expected is None or tuple(map(tuple, found)) == tuple(map(tuple, expected)):
        return
    raise DatasetError(f"test set {str(source)!r} lists other labels than model {str(model)!r} predicts: "
                       f"{dict(found)} vs {dict(expected)}; expected the same names and values")


# ---------------------------------------------------------------- an image to predict


def read_input(files: Sequence[str | Path], channel_in_file: Sequence[int | None] | None = None) -> ImageVolume:
    """An image to predict, with the header checks plan makes on training images.

    Every channel file must give a finite positive voxel size (else a DatasetError names it) and
    the spacing of the first within :data:`~hnas.data.dataset.SPACING_RTOL`; a stored pixdim 0
    gives plan's :class:`DatasetWarning`. Then the voxels are read (:func:`~hnas.data.io.read_images`).
    """
    paths = [Path(f) for f in files]
    headers = {path: read_header(path) for path in dict.fromkeys(paths)}
    if paths:
        first = headers[paths[0]]
        for path, header in headers.items():
            if spacing_mismatch(header.spacing, first.spacing):
                raise DatasetError(f"channel file {str(path)!r} has spacing {header.spacing} (z, y, x); expected "
                                   f"{first.spacing} like {str(paths[0])!r} within {SPACING_RTOL:g} relative")
        _warn_zero_pixdim(headers)
    return read_images(paths, channel_in_file)


# ---------------------------------------------------------------- header oddities


def zero_pixdim_detail(name: str, spacing: Sequence[float]) -> str:
    return f"{name} read as spacing {tuple(spacing)} (z, y, x)"


def warn_zero_pixdim(paths: Iterable[str | Path]) -> None:
    """One :class:`DatasetWarning` naming the files whose header stores pixdim 0 (nibabel reads 1 mm)."""
    _warn_zero_pixdim({path: read_header(path) for path in dict.fromkeys(Path(p) for p in paths)})


def _warn_zero_pixdim(headers: dict) -> None:
    details = [zero_pixdim_detail(repr(str(path)), header.spacing) for path, header in headers.items()
               if header.zero_pixdim]
    if details:
        warnings.warn(f"{len(details)} file(s) {ZERO_PIXDIM}: {'; '.join(details)}", DatasetWarning, stacklevel=3)
