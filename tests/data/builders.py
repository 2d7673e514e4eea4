"""Small NIfTI dataset folders for the data tests, written with nibabel directly.

Arrays are given in nnU-Net order (z, y, x) and written transposed, as a scanner's NIfTI
would store them, so the reader's axis reversal is exercised on every test.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

LABELS_NNUNET = {"background": 0, "left": 1, "right": 2}


def write_zyx(path: Path, array_zyx: np.ndarray, spacing_zyx=(1.0, 1.0, 1.0)) -> Path:
    """Write a (z, y, x) array, or a list of them as a 4D channel stack, as NIfTI (x, y, z[, c])."""
    if isinstance(array_zyx, (list, tuple)):
        data = np.stack([np.asarray(a).transpose(2, 1, 0) for a in array_zyx], axis=-1)
    else:
        data = np.asarray(array_zyx).transpose(2, 1, 0)
    affine = np.diag([float(s) for s in spacing_zyx][::-1] + [1.0])
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def case_arrays(index: int, shape=(6, 7, 8), n_channels: int = 1):
    """Deterministic image channels (zero margin, so cropping does something) and a label map."""
    rng = np.random.default_rng(index)
    channels = []
    for c in range(n_channels):
        image = np.zeros(shape, dtype=np.int16)
        image[1:-1, 1:-1, 1 + c:-1] = rng.integers(10, 100, size=(shape[0] - 2, shape[1] - 2, shape[2] - 2 - c))
        channels.append(image)
    label = np.zeros(shape, dtype=np.uint8)
    label[2:4, 2:4, 2:4] = 1
    label[2:4, 4:5, 2:4] = 2
    return channels, label


def write_dataset_json(root: Path, data: dict) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(data, indent=1))


def nnunet_dataset(root: Path, case_ids=("case_a", "case_b", "case_c"), shape=(6, 7, 8), spacing=(2.0, 1.0, 1.0),
                   channel_names=("MRI",), labels=None) -> Path:
    """An nnU-Net v2 raw dataset folder."""
    labels = dict(LABELS_NNUNET if labels is None else labels)
    write_dataset_json(root, {"channel_names": {str(i): n for i, n in enumerate(channel_names)}, "labels": labels,
                              "numTraining": len(case_ids), "file_ending": ".nii.gz"})
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    for index, case_id in enumerate(case_ids):
        channels, label = case_arrays(index, shape, len(channel_names))
        for c, image in enumerate(channels):
            write_zyx(root / "imagesTr" / f"{case_id}_{c:04d}.nii.gz", image, spacing)
        write_zyx(root / "labelsTr" / f"{case_id}.nii.gz", label, spacing)
    return root


def msd_dataset(root: Path, case_ids=("hippo_1", "hippo_2"), shape=(6, 7, 8), spacing=(1.0, 1.0, 1.5),
                channel_names=("T1", "T2")) -> Path:
    """An original MSD task folder; several channels go into one 4D NIfTI per case."""
    write_dataset_json(root, {
        "name": "Test", "modality": {str(i): n for i, n in enumerate(channel_names)},
        "labels": {"0": "background", "1": "left", "2": "right"},
        "numTraining": len(case_ids),
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in case_ids],
        "test": [],
    })
    for index, case_id in enumerate(case_ids):
        channels, label = case_arrays(index, shape, len(channel_names))
        write_zyx(root / "imagesTr" / f"{case_id}.nii.gz", channels if len(channels) > 1 else channels[0], spacing)
        write_zyx(root / "labelsTr" / f"{case_id}.nii.gz", label, spacing)
    return root


def set_stored_pixdim(path: Path, axis_zyx: int, value: float) -> Path:
    """Store ``value`` as the voxel size of (z, y, x) axis ``axis_zyx`` in a .nii.gz header, bypassing nibabel
    (which refuses or 'fixes' such values on save); the affine (sform) is left as it was."""
    import gzip

    raw = bytearray(gzip.decompress(path.read_bytes()))
    offset = 76 + 4 * (3 - axis_zyx)  # pixdim: float32[8] at byte 76; pixdim[1] is NIfTI x = nnU-Net axis 2
    raw[offset:offset + 4] = np.float32(value).tobytes()
    path.write_bytes(gzip.compress(bytes(raw)))
    return path


def shifted(path: Path, offset_xyz=(20.0, 0.0, 0.0), out: Path | None = None) -> Path:
    """Rewrite a NIfTI with its origin moved by ``offset_xyz`` mm (world x, y, z), voxels unchanged."""
    image = nib.load(str(path))
    affine = image.affine.copy()
    affine[:3, 3] += offset_xyz
    moved = nib.Nifti1Image(np.asarray(image.dataobj), affine, image.header.copy())
    moved.set_sform(affine, code=1)
    moved.set_qform(affine, code=1)
    out = path if out is None else out
    nib.save(moved, str(out))
    return out


def counting_hashes(monkeypatch) -> list[str]:
    """Count the files hnas.data.io hashes from now on, in a fresh process's memo (one entry per hash)."""
    from hnas.data import io as data_io

    calls: list[str] = []
    real = data_io.hashlib.file_digest

    def counting(handle, name):
        calls.append(name)
        return real(handle, name)

    monkeypatch.setattr(data_io.hashlib, "file_digest", counting)
    monkeypatch.setattr(data_io, "_DIGESTS", {})
    return calls
