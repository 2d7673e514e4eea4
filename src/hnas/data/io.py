"""Reading and writing NIfTI volumes in nnU-Net's axis order.

nnU-Net reads images with SimpleITK, whose arrays index (z, y, x): the NIfTI axes reversed.
Plans, patch sizes and fingerprints are all expressed in that order, so every array and
spacing that leaves this module is reversed the same way. Images are float32 ``[C, z, y, x]``,
label maps integer ``[z, y, x]``.
"""

from __future__ import annotations

import hashlib
import math
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

import nibabel as nib
import numpy as np

from hnas.errors import DatasetError

#: dtype of every label map we return: wide enough for any nnU-Net label set, small in memory.
LABEL_DTYPE = np.int16
NIFTI_ENDINGS = (".nii.gz", ".nii")


@dataclass(frozen=True)
class ImageGeometry:
    """Where an image lies in space, enough to write a label map back onto it.

    ``affine`` is the NIfTI voxel-to-world matrix (NIfTI axis order, as stored in the file);
    ``shape`` and ``spacing`` are in nnU-Net order (z, y, x).
    """

    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    affine: tuple[tuple[float, ...], ...]
    qform_code: int = 1
    sform_code: int = 1


class ImageVolume(NamedTuple):
    """A multi-channel image as the network sees it, plus what is needed to write results back."""

    array: np.ndarray  # float32 [C, z, y, x]
    spacing: tuple[float, ...]  # (z, y, x)
    geometry: ImageGeometry


@dataclass(frozen=True)
class HeaderInfo:
    """What a NIfTI header says without reading the voxels (fast validation)."""

    shape: tuple[int, ...]  # spatial, (z, y, x)
    spacing: tuple[float, ...]  # (z, y, x)
    n_channels: int | None  # length of the 4th NIfTI axis, None for a 3D file
    affine: tuple[tuple[float, ...], ...] | None = None  # voxel-to-world, NIfTI order (as stored)
    zero_pixdim: bool = False  # the file stores pixdim 0 on a spatial axis (nibabel reads it as 1)


#: file digests by (path, size, mtime_ns, ctime_ns, inode): each file is hashed once per process.
#: ctime is in the key because a user can restore mtime (touch -d) after editing a file, never ctime.
_DIGESTS: dict[tuple, str] = {}
#: The same digests kept across processes, in $HNAS_CACHE (every command checks a run's dataset by
#: content: hashing BraTS-size data again each time would take minutes).
DIGEST_DATABASE = "file_digests.sqlite"
_DATABASES: dict[tuple[int, str], sqlite3.Connection | None] = {}  # by (pid, cache folder): never across a fork


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes, memoised by its stat: caches keyed on it (preprocessed data,
    fingerprints) must not survive a label edited in place with the same size and mtime.

    Memoised in the process and in ``$HNAS_CACHE/file_digests.sqlite`` under the same stat key;
    a cache that cannot be read or written only costs the hashing.
    """
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
    if key not in _DIGESTS:
        stored = _stored_digest(key)
        if stored is None:
            with path.open("rb") as handle:
                stored = hashlib.file_digest(handle, "sha256").hexdigest()
            _store_digest(key, stored)
        _DIGESTS[key] = stored
    return _DIGESTS[key]


def _digest_database() -> sqlite3.Connection | None:
    """This process's connection to the cache's digest table (None: the cache cannot be used)."""
    from hnas.data.cache import cache_dir  # hnas.data.cache imports this module

    folder = str(cache_dir())
    key = (os.getpid(), folder)  # a forked child opens its own: SQLite connections must not cross a fork
    if key not in _DATABASES:
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(str(Path(folder) / DIGEST_DATABASE), timeout=5.0, isolation_level=None)
            # WAL + NORMAL: a commit per digest without an fsync each (hundreds of files per command); a crash
            # may lose the last digests, never corrupt the table
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("CREATE TABLE IF NOT EXISTS digests (file TEXT PRIMARY KEY, digest TEXT NOT NULL)")
            _DATABASES[key] = connection
        except (sqlite3.Error, OSError):
            _DATABASES[key] = None
    return _DATABASES[key]


def _stored_digest(key: tuple) -> str | None:
    database = _digest_database()
    if database is None:
        return None
    try:
        row = database.execute("SELECT digest FROM digests WHERE file = ?", (repr(key),)).fetchone()
    except sqlite3.Error:  # a damaged or locked database: hash the file instead
        return None
    return row[0] if row and isinstance(row[0], str) and len(row[0]) == 64 else None


def _store_digest(key: tuple, digest: str) -> None:
    database = _digest_database()
    if database is None:
        return
    try:
        database.execute("INSERT OR REPLACE INTO digests VALUES (?, ?)", (repr(key), digest))
    except sqlite3.Error:
        pass  # read-only, full or locked: the next command hashes the file again


def is_nifti(path: str | Path) -> bool:
    return str(path).endswith(NIFTI_ENDINGS)


def _load(path: Path) -> nib.Nifti1Image:
    """Open a NIfTI file (header only until data is asked for), naming the file on failure."""
    if not path.is_file():
        raise DatasetError(f"file {str(path)!r} does not exist")
    if not is_nifti(path):
        raise DatasetError(f"file {str(path)!r} is not NIfTI; expected a name ending in {' or '.join(NIFTI_ENDINGS)}")
    try:
        img = nib.load(str(path))
        affine = img.affine
    except Exception as exc:  # nibabel raises many types for corrupt files (an undecomposable affine too)
        raise DatasetError(f"file {str(path)!r} cannot be read as NIfTI: {' '.join(str(exc).split())}") from exc
    if affine is None or not np.all(np.isfinite(affine)):
        raise DatasetError(f"file {str(path)!r} has a non-finite affine (sform/qform) {np.asarray(affine).tolist()}; "
                           "expected finite voxel-to-world coordinates")
    return img


def _spatial_rank_check(path: Path, shape: tuple[int, ...]) -> None:
    if len(shape) not in (3, 4):
        raise DatasetError(f"file {str(path)!r} has shape {shape}; expected a 3D volume or a 4D stack of 3D channels")


def check_voxel_size(what: str, spacing: Sequence[float]) -> None:
    """Refuse a (z, y, x) spacing that is not finite and > 0: resampling to the plan's spacing turns
    NaN into a traceback and a negative or infinite size into an empty or endless volume.

    ``what`` names the source, e.g. ``file '/data/a.nii.gz'``. (A stored pixdim 0 never gets here:
    nibabel reads it as 1, which :attr:`HeaderInfo.zero_pixdim` reports.)
    """
    values = [float(s) for s in spacing]
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise DatasetError(f"{what} has voxel size {tuple(values)} mm (z, y, x); expected finite sizes > 0")


def _zooms(path: Path, img: nib.Nifti1Image) -> tuple[float, ...]:
    """The voxel size (z, y, x) the header gives, refused unless finite and positive."""
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])[::-1]
    check_voxel_size(f"file {str(path)!r}", zooms)
    return zooms


def read_header(path: str | Path) -> HeaderInfo:
    """Shape, spacing and channel count from the header alone, in (z, y, x) order."""
    path = Path(path)
    img = _load(path)
    shape = tuple(int(s) for s in img.shape)
    _spatial_rank_check(path, shape)
    spacing = _zooms(path, img)
    affine = tuple(tuple(float(v) for v in row) for row in img.affine)
    return HeaderInfo(shape=shape[:3][::-1], spacing=spacing, n_channels=shape[3] if len(shape) == 4 else None,
                      affine=affine, zero_pixdim=_stores_zero_pixdim(path, img))


def _stores_zero_pixdim(path: Path, img: nib.Nifti1Image) -> bool:
    """Whether the stored header has pixdim 0 on a spatial axis.

    nibabel's header check silently sets such a pixdim to 1 on load, so a broken spacing would
    become 1 mm unnoticed; the header is read again unchecked to see what the file says.
    """
    header_class = type(img.header)
    if not hasattr(header_class, "from_fileobj"):
        return False
    try:
        with nib.openers.Opener(str(path)) as handle:
            stored = header_class.from_fileobj(handle, check=False)
        return bool(np.any(np.asarray(stored["pixdim"][1:4]) == 0))
    except Exception:  # the checked load above succeeded; an unreadable raw header says nothing more
        return False


def geometry_of(img: nib.Nifti1Image) -> ImageGeometry:
    header = img.header
    return ImageGeometry(
        shape=tuple(int(s) for s in img.shape[:3])[::-1],
        spacing=tuple(float(z) for z in header.get_zooms()[:3])[::-1],
        affine=tuple(tuple(float(v) for v in row) for row in img.affine),
        qform_code=int(header["qform_code"]),
        sform_code=int(header["sform_code"]),
    )


def _to_nnunet_axes(data: np.ndarray) -> np.ndarray:
    """Reverse the three spatial NIfTI axes: (x, y, z) -> (z, y, x)."""
    return np.ascontiguousarray(data.transpose(2, 1, 0))


def _channel(path: Path, data: np.ndarray, index: int | None) -> np.ndarray:
    """One 3D channel of a file's voxels in NIfTI order; ``index`` selects from a 4D stack."""
    shape = data.shape
    _spatial_rank_check(path, shape)
    if index is None:
        if len(shape) == 4 and shape[3] != 1:
            raise DatasetError(f"file {str(path)!r} holds {shape[3]} channels (shape {shape}); expected a single 3D channel")
        return data.reshape(shape[:3])
    if len(shape) != 4 or not 0 <= index < shape[3]:
        raise DatasetError(f"file {str(path)!r} has shape {shape}; expected a 4D stack with channel index {index}")
    return data[..., index]


def _voxels(path: Path, img: nib.Nifti1Image) -> np.ndarray:
    """All voxels of a file (scaled by the header's slope/intercept), in NIfTI order.

    The header may be intact while the voxels are not (a truncated download or copy): nibabel
    then raises one of several types, each turned into an error naming the file.
    """
    try:
        return np.asanyarray(img.dataobj)
    except Exception as exc:  # OSError, EOFError, zlib.error, ValueError, ... for damaged data
        reason = " ".join(str(exc).split()) or type(exc).__name__  # nibabel's messages span lines
        raise DatasetError(f"file {str(path)!r} is damaged: its voxels cannot be read ({reason}); "
                           "expected a complete NIfTI file") from exc


def check_finite(path: str | Path, channel: np.ndarray) -> None:
    """Refuse NaN/inf intensities: they poison normalisation and make every prediction background."""
    if np.issubdtype(channel.dtype, np.floating):
        finite = np.isfinite(channel)
        if not finite.all():
            bad = channel[~finite]
            raise DatasetError(f"image file {str(path)!r} holds {bad.size} non-finite voxel(s) "
                               f"(e.g. {bad[0]}); expected finite intensities")


def read_images(files: Sequence[str | Path], channel_in_file: Sequence[int | None] | None = None) -> ImageVolume:
    """Read one image from its channel files (or 4D stacks) as float32 ``[C, z, y, x]``.

    ``channel_in_file[i]`` picks channel i out of a 4D file (MSD layout); ``None`` means the
    file is a single 3D channel (nnU-Net layout). A 4D file is decompressed once however many
    channels it holds. All channels must share one grid.
    """
    paths = [Path(f) for f in files]
    if not paths:
        raise DatasetError("no image files given; expected at least one channel file")
    indices = list(channel_in_file) if channel_in_file is not None else [None] * len(paths)
    if len(indices) != len(paths):
        raise DatasetError(f"{len(paths)} image files but {len(indices)} channel indices; expected one index per file")
    images: dict[Path, nib.Nifti1Image] = {}
    voxels: dict[Path, np.ndarray] = {}
    channels = []
    for path, index in zip(paths, indices):
        if path not in images:
            images[path] = _load(path)
            _zooms(path, images[path])
            voxels[path] = _voxels(path, images[path])
            check_finite(path, voxels[path])
        channels.append(_to_nnunet_axes(_channel(path, voxels[path], index)).astype(np.float32, copy=False))
    geometry = geometry_of(images[paths[0]])
    for path, channel in zip(paths, channels):
        if channel.shape != geometry.shape:
            raise DatasetError(
                f"channel file {str(path)!r} has shape {channel.shape} (z, y, x); expected {geometry.shape} "
                f"like {str(paths[0])!r}")
    return ImageVolume(np.stack(channels), geometry.spacing, geometry)


def read_label_map(path: str | Path) -> tuple[np.ndarray, ImageGeometry]:
    """Read a label map as an integer ``[z, y, x]`` array; whole-number floats are accepted."""
    path = Path(path)
    img = _load(path)
    _zooms(path, img)
    data = _channel(path, _voxels(path, img), None)
    return as_label_array(data, path), geometry_of(img)


def as_label_array(data: np.ndarray, source: str | Path) -> np.ndarray:
    """Convert stored label values to LABEL_DTYPE, refusing fractional or out-of-range values."""
    if np.issubdtype(data.dtype, np.integer):
        low, high = (int(data.min()), int(data.max())) if data.size else (0, 0)
    else:
        finite = np.isfinite(data)
        if not finite.all() or not np.array_equal(data, np.round(data)):
            bad = np.unique(data[~finite | (data != np.round(data))])[:5]
            raise DatasetError(f"label file {str(source)!r} holds non-integer values {bad.tolist()}; "
                               "expected whole-number class indices")
        low, high = (float(data.min()), float(data.max())) if data.size else (0, 0)
    limits = np.iinfo(LABEL_DTYPE)
    if low < limits.min or high > limits.max:
        raise DatasetError(f"label file {str(source)!r} holds values from {low} to {high}; "
                           f"expected class indices within [{limits.min}, {limits.max}]")
    return _to_nnunet_axes(data).astype(LABEL_DTYPE, copy=False)


def _label_storage_dtype(array: np.ndarray) -> type:
    if array.size and (array.min() < 0 or array.max() > 255):
        return np.int16
    return np.uint8


def write_label_map(array: np.ndarray, reference: str | Path | ImageGeometry, out_path: str | Path) -> Path:
    """Write a ``[z, y, x]`` label map with the geometry of ``reference`` (an image file or its geometry).

    Predictions must land on the input's grid, so the reference's affine (and, for a file, its
    whole header) is copied; only the data type changes to a compact integer type.
    """
    array = np.asarray(array)
    out_path = Path(out_path)
    if not is_nifti(out_path):
        raise DatasetError(f"output {str(out_path)!r} must end in {' or '.join(NIFTI_ENDINGS)}")
    if isinstance(reference, ImageGeometry):
        geometry, header = reference, None
    else:
        ref_img = _load(Path(reference))
        geometry, header = geometry_of(ref_img), ref_img.header.copy()
    if array.shape != geometry.shape:
        raise DatasetError(f"label map has shape {array.shape} (z, y, x); expected {geometry.shape} to match the reference image")
    if not np.issubdtype(array.dtype, np.integer) and not np.array_equal(array, np.round(array)):
        raise DatasetError("label map holds non-integer values; expected class indices")
    affine = np.array(geometry.affine, dtype=np.float64)
    dtype = _label_storage_dtype(array)
    data = np.asarray(array).transpose(2, 1, 0).astype(dtype)
    if header is not None:
        header.set_data_shape(data.shape)
    img = nib.Nifti1Image(data, affine, header=header)
    img.set_data_dtype(dtype)
    img.header.set_slope_inter(1.0, 0.0)
    if header is None:
        img.set_qform(affine, code=geometry.qform_code)
        img.set_sform(affine, code=geometry.sform_code)
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(img, str(out_path))
    except OSError as exc:  # a read-only folder, a full disk, a file where a folder should be
        raise DatasetError(f"cannot write label map {str(out_path)!r}: {exc.strerror or exc}; expected a "
                           "writable output folder") from None
    return out_path


def write_volume(array: np.ndarray, spacing: Sequence[float], out_path: str | Path) -> Path:
    """Write a ``[z, y, x]`` array as an axis-aligned NIfTI with the given (z, y, x) spacing."""
    array = np.asarray(array)
    zooms = [float(s) for s in spacing][::-1]
    affine = np.diag(zooms + [1.0])
    img = nib.Nifti1Image(array.transpose(2, 1, 0), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(out_path))
    return Path(out_path)
