"""Segment new images with a trained checkpoint; label maps keep the input's geometry.

Each image is preprocessed exactly as in training (transpose, crop, normalise, resample),
predicted by sliding windows, and the class probabilities are resampled back to the cropped
input grid, put back into the uncropped volume (background outside the crop box) and written
with the input's header and affine. A checkpoint of a 2D plan predicts the volume slice by slice
(its preprocessing keeps the slice axis), so its label maps have the input's geometry as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from hnas.cfgunet import UNetSpec, build
from hnas.data import read_images, write_label_map
from hnas.data.dataset import split_channel_file
from hnas.errors import DatasetError, TrainingError
from hnas.grammar.plan import Plan
from hnas.train.checkpoint import load_checkpoint
from hnas.train.inference import OVERLAP, sliding_window_logits
from hnas.train.preprocessing import ChannelNormalization, preprocess_image, restore_probabilities

ENDINGS = (".nii.gz", ".nii")


class Predictor:
    """A checkpoint's network, ready to segment images one by one."""

    def __init__(self, checkpoint: str | Path, *, device: str = "auto", mirror: bool = False,
                 overlap: float = OVERLAP):
        payload = load_checkpoint(checkpoint)
        self.plan = Plan.from_json(payload["plan"])
        self.spec = UNetSpec.from_json(payload["spec"])
        self.normalization = tuple(ChannelNormalization.from_dict(n) for n in payload["normalization"])
        self.labels = tuple((str(n), int(v)) for n, v in payload["labels"])
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.network = build(self.spec, self.device)
        self.network.load_state_dict(payload["trainer"]["model"])
        self.network.eval()
        self.mirror_axes = tuple(range(self.plan.dims)) if mirror else ()  # the patch's axes: in-plane for 2D
        self.overlap = overlap

    @property
    def n_channels(self) -> int:
        return len(self.normalization)

    def probabilities(self, image: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        """Softmax ``[K, z, y, x]`` on the input's grid (classes in ``self.labels`` order); ensembles average these."""
        prepared, _, record = preprocess_image(image, spacing, self.plan, self.normalization)
        probabilities = sliding_window_logits(self.network, prepared, self.plan.patch_size, self.device,
                                              overlap=self.overlap, batch_size=self.plan.batch_size,
                                              mirror_axes=self.mirror_axes).cpu().numpy()
        return restore_probabilities(probabilities, record)

    def to_labels(self, probabilities: np.ndarray) -> np.ndarray:
        """The label map of ``[K, ...]`` class probabilities (argmax mapped to label values)."""
        values = np.array([value for _, value in self.labels], dtype=np.int16)
        return values[np.argmax(probabilities, axis=0)]

    def segment(self, image: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        """Label map ``[z, y, x]`` for a ``[C, z, y, x]`` image with the given spacing."""
        return self.to_labels(self.probabilities(image, spacing))

    def predict_file(self, files: Sequence[str | Path], out_path: str | Path) -> Path:
        volume = read_images(files)
        if volume.array.shape[0] != self.n_channels:
            raise DatasetError(f"{[str(f) for f in files]} give {volume.array.shape[0]} channels; the model expects "
                               f"{self.n_channels}")
        label = self.segment(volume.array, volume.spacing)
        return write_label_map(label, Path(files[0]), out_path)


def predict(checkpoint: str | Path, images: Sequence[str | Path], out_dir: str | Path, *, device: str = "auto",
            mirror: bool = False) -> list[Path]:
    """Segment ``images`` into ``out_dir`` (one ``<case>.nii.gz`` each); returns the written files.

    For a one-channel model every path is a case. For a C-channel model paths are grouped by
    nnU-Net's naming (``<case>_0000.nii.gz`` .. ``<case>_{C-1:04d}.nii.gz``).
    """
    predictor = Predictor(checkpoint, device=device, mirror=mirror)
    out_dir = Path(out_dir)
    written = []
    for case, files in group_cases([Path(p) for p in images], predictor.n_channels).items():
        written.append(predictor.predict_file(files, out_dir / f"{case}.nii.gz"))
    return written


def group_cases(paths: Sequence[Path], n_channels: int) -> dict[str, list[Path]]:
    """Case name -> channel files in channel order."""
    if not paths:
        raise TrainingError("no images given; expected at least one NIfTI file")
    for path in paths:
        if not path.is_file():
            raise DatasetError(f"image {str(path)!r} does not exist")
    if n_channels == 1:
        cases = {}
        for path in paths:
            case = _case_name(path)
            if case in cases:
                raise DatasetError(f"images {str(cases[case][0])!r} and {str(path)!r} would both be written as "
                                   f"{case}.nii.gz; expected distinct case names")
            cases[case] = [path]
        return cases
    grouped: dict[str, dict[int, Path]] = {}
    for path in paths:
        ending = next((e for e in ENDINGS if path.name.endswith(e)), None)
        match = split_channel_file(path.name, ending) if ending else None
        if match is None:
            raise DatasetError(f"image {str(path)!r} is not named <case>_<XXXX>.nii.gz; a {n_channels}-channel model "
                               "needs nnU-Net's channel naming to group files")
        grouped.setdefault(match[0], {})[match[1]] = path
    result = {}
    for case, channels in grouped.items():
        if sorted(channels) != list(range(n_channels)):
            raise DatasetError(f"case {case!r} has channels {sorted(channels)}; expected 0..{n_channels - 1}")
        result[case] = [channels[c] for c in range(n_channels)]
    return result


def _case_name(path: Path) -> str:
    name = path.name
    for ending in ENDINGS:
        if name.endswith(ending):
            name = name[: -len(ending)]
            break
    match = split_channel_file(name + ".nii.gz", ".nii.gz")
    return match[0] if match is not None and match[1] == 0 else name
