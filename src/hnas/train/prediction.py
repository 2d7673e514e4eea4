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
from hnas.errors import DatasetError, HnasError, TrainingError
from hnas.planning.plan import Plan
from hnas.train.checkpoint import load_checkpoint
from hnas.train.inference import OVERLAP, sliding_window_logits
from hnas.train.preprocessing import ChannelNormalization, preprocess_image, restore_probabilities

ENDINGS = (".nii.gz", ".nii")


def resolve_device(device: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU; a device this machine lacks is an error, not a traceback."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise TrainingError(f"device {device!r} is unknown; expected auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise TrainingError(f"device {device!r} was asked for but this machine has no CUDA GPU usable by "
                                "torch; expected --device cpu (or auto)")
        if resolved.index is not None and resolved.index >= count:
            raise TrainingError(f"device {device!r} does not exist: this machine has {count} CUDA GPU(s), "
                                f"cuda:0..cuda:{count - 1}")
    elif resolved.type != "cpu":
        raise TrainingError(f"device {device!r} is not supported for prediction; expected auto, cpu, cuda or cuda:N")
    return resolved


def check_weights(weights, where: str) -> None:
    """Refuse NaN/inf weights: such a network predicts background everywhere without any error."""
    if not isinstance(weights, dict) or not all(isinstance(t, torch.Tensor) for t in weights.values()):
        raise TrainingError(f"{where} has no state dict of tensors under trainer.model; expected a checkpoint "
                            "written by hnas training")
    bad = [name for name, tensor in weights.items()
           if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if bad:
        raise TrainingError(f"{where} holds non-finite (NaN/inf) weights in {len(bad)} tensor(s), e.g. {bad[0]!r}; "
                            "expected a checkpoint of a training that did not diverge")


def refuse_existing(paths: Sequence[Path], overwrite: bool) -> None:
    """Before any work: label maps already there are kept unless ``overwrite`` (--overwrite) says otherwise."""
    if overwrite:
        return
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        raise DatasetError(f"output {existing[0]!r} already exists" +
                           (f" (and {len(existing) - 1} more)" if len(existing) > 1 else "") +
                           "; expected a new file (pass --overwrite to replace)")


class Predictor:
    """A checkpoint's network, ready to segment images one by one."""

    def __init__(self, checkpoint: str | Path, *, device: str = "auto", mirror: bool = False,
                 overlap: float = OVERLAP):
        payload = load_checkpoint(checkpoint)
        where = f"checkpoint {str(checkpoint)!r}"
        try:
            self.plan = Plan.from_json(payload["plan"])
            self.spec = UNetSpec.from_json(payload["spec"])
            self.normalization = tuple(ChannelNormalization.from_dict(n) for n in payload["normalization"])
            self.labels = tuple((str(n), int(v)) for n, v in payload["labels"])
            weights = payload["trainer"]["model"]
        except HnasError as exc:
            raise TrainingError(f"{where} is inconsistent: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise TrainingError(f"{where} lacks or garbles entry {exc}; expected a checkpoint written by hnas "
                                "training") from None
        check_weights(weights, where)
        self.device = resolve_device(device)
        self.network = build(self.spec, self.device)
        try:
            self.network.load_state_dict(weights)
        except RuntimeError as exc:  # missing, unexpected or reshaped tensors
            first = str(exc).strip().splitlines()[-1].strip()
            raise TrainingError(f"{where} holds weights that do not fit its own network spec ({first}); expected "
                                "the weights saved with that spec") from None
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
            mirror: bool = False, overwrite: bool = False) -> list[Path]:
    """Segment ``images`` into ``out_dir`` (one ``<case>.nii.gz`` each); returns the written files.

    For a one-channel model every path is a case. For a C-channel model paths are grouped by
    nnU-Net's naming (``<case>_0000.nii.gz`` .. ``<case>_{C-1:04d}.nii.gz``). Existing label maps
    are refused before any prediction unless ``overwrite``.
    """
    predictor = Predictor(checkpoint, device=device, mirror=mirror)
    out_dir = Path(out_dir)
    cases = group_cases([Path(p) for p in images], predictor.n_channels)
    refuse_existing([out_dir / f"{case}.nii.gz" for case in cases], overwrite)
    return [predictor.predict_file(files, out_dir / f"{case}.nii.gz") for case, files in cases.items()]


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
