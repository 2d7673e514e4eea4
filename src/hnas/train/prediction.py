"""Segment new images with a trained checkpoint; label maps keep the input's geometry.

Each image is preprocessed exactly as in training (transpose, crop, normalise, resample),
predicted by sliding windows, and the class probabilities are resampled back to the cropped
input grid, put back into the uncropped volume (background outside the crop box) and written
with the input's header and affine. A checkpoint of a 2D plan predicts the volume slice by slice
(its preprocessing keeps the slice axis), so its label maps have the input's geometry as well.

Before any voxel is resampled, each input is checked against the model (:meth:`Predictor.check_input`):
its voxel size must be finite and positive, a voxel size far from the model's warns, a volume that
would take long warns with an estimate of the work, and one that would be absurdly large once
resampled is refused. Reading a file gives plan's header checks (:func:`hnas.data.geometry.read_input`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hnas.cfgunet import UNetSpec, build
from hnas.data import write_label_map
from hnas.data.dataset import split_channel_file
from hnas.data.geometry import read_input
from hnas.data.io import check_voxel_size
from hnas.errors import DatasetError, HnasError, TrainingError
from hnas.planning.plan import Plan
from hnas.train.checkpoint import load_checkpoint
from hnas.train.compilation import CompiledNetwork, without_compiled_prefix
from hnas.train.inference import OVERLAP, InferenceMemoryError, estimated_bytes, sliding_window_logits
from hnas.train.preprocessing import (ChannelNormalization, preprocess_image, resampled_spacing, restore_probabilities,
                                      spacing_in_file_order, target_shape)

ENDINGS = (".nii.gz", ".nii")

#: An input whose voxel size differs from the model's (per resampled axis) by more than this factor
#: either way is warned about. Resampling makes up for ordinary differences between scanners, and a
#: dataset's voxel sizes commonly spread a few-fold around the median the plan resamples to (CT slice
#: thickness from 0.5 to 5 mm, say), while nnU-Net's scale augmentation covers only 0.7-1.4
#: (docs/references.md); beyond 8x an input is unlike any training case. Header unit mistakes are
#: 10x (cm) or 1000x (m, um), so they all land beyond it.
SPACING_WARNING_FACTOR = 8.0
#: An input needing more than this many times the sliding windows of the training set's median case
#: (the plan's median shape: what validation during training took) and at least
#: LONG_PREDICTION_PASSES network passes warns, with the estimate, before the sliding window starts:
#: the user learns the prediction will take long, and why. The floor keeps small volumes quiet: a
#: pass is one U-Net forward over a training patch, and a thousand of them at nnU-Net's patch sizes
#: is minutes on a CPU.
WORK_WARNING_FACTOR = 10.0
LONG_PREDICTION_PASSES = 1000
#: Refuse inputs whose resampled volume would exceed 2**30 voxels (4 GiB per float32 channel; the
#: softmax of K classes needs K times that on the device and again on the host). Real scans stay well
#: below: a 1 mm whole-body CT is ~5e8 voxels. Data that is genuinely bigger (microscopy) lifts it
#: (:class:`InputLimits`, the CLI's --allow-unusual-inputs).
MAX_RESAMPLED_VOXELS = 2**30


@dataclass(frozen=True)
class InputLimits:
    """How far an input may stray from the training data before prediction refuses it.

    Refused by default: a resampled volume above ``max_voxels`` (memory), and an input both unlike
    any training case (voxel size beyond :data:`SPACING_WARNING_FACTOR` from the model's: most often
    a header in other units) and costly to predict (more than :data:`WORK_WARNING_FACTOR` times the
    sliding windows of the median training case): up to minutes of sliding window for a label map
    that is probably meaningless. :meth:`lifted` (the CLI's ``--allow-unusual-inputs``)
    predicts them anyway, still with the warnings.
    """

    max_voxels: int | None = MAX_RESAMPLED_VOXELS
    allow_unusual_spacing: bool = False

    @classmethod
    def lifted(cls) -> "InputLimits":
        return cls(max_voxels=None, allow_unusual_spacing=True)


LIFT_HINT = "pass --allow-unusual-inputs (Python: limits=InputLimits.lifted()) to predict it anyway"


class PredictionWarning(UserWarning):
    """An input the model will predict, but probably badly or slowly (said before the work starts)."""


def window_count(shape: Sequence[int], patch_size: Sequence[int], overlap: float = OVERLAP) -> int:
    """Sliding windows MONAI's ``sliding_window_inference`` runs on a plan-order ``shape``.

    Per axis: one window when the axis fits the patch (it is padded), else
    ``ceil((n - p) / step) + 1`` with ``step = int(p * (1 - overlap))``. A 2-entry patch (2D plan)
    slides over every slice of the first axis.
    """
    total = 1
    for n, p in zip(tuple(shape)[-len(patch_size):], patch_size):
        step = max(1, int(p * (1 - overlap)))
        total *= 1 if n <= p else math.ceil((n - p) / step) + 1
    return total * (int(shape[0]) if len(patch_size) < len(shape) else 1)


@dataclass(frozen=True)
class Work:
    """What predicting one input with one model costs, known before any voxel is touched.

    ``shape`` and ``spacing`` are the resampled volume's, in (z, y, x); before cropping to the
    nonzero region, so an upper bound.
    """

    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    windows: int
    passes: int  # windows x mirrored copies
    median_windows: int  # of the training set's median case (per slice for a 2D plan)
    per_case: int  # this input's windows comparable to median_windows (per slice for a 2D plan)

    @property
    def voxels(self) -> int:
        return math.prod(self.shape)


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


def tune_for_fixed_windows(device: torch.device) -> None:
    """On CUDA let cuDNN pick the fastest kernels: every window has the patch size, as in training."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def host_float32(scores: torch.Tensor) -> np.ndarray:
    """Class scores as a float32 array on the host, converted after the move (float16 on a GPU)."""
    return scores.cpu().float().numpy()


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


ARGMAX_SLAB_VOXELS = 2**22


def label_map_of(probabilities: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values[argmax]`` over the classes of ``[K, z, ...]`` scores, in ``values``' dtype.

    Slab by slab along z: argmax's int64 indices (8 bytes a voxel, four times an int16 label map)
    never span more than ARGMAX_SLAB_VOXELS voxels (32 MiB) of a large volume (docs/references.md, "Input
    sanity at prediction and evaluation").
    """
    out = np.empty(probabilities.shape[1:], dtype=values.dtype)
    if out.ndim == 0:
        return values[np.argmax(probabilities, axis=0)]
    step = max(1, ARGMAX_SLAB_VOXELS // max(1, math.prod(out.shape[1:])))
    for start in range(0, out.shape[0], step):
        out[start:start + step] = values[np.argmax(probabilities[:, start:start + step], axis=0)]
    return out


class Predictor:
    """A checkpoint's network, ready to segment images one by one (``compile``: its windows through
    ``torch.compile``, :mod:`hnas.train.compilation`)."""

    def __init__(self, checkpoint: str | Path, *, device: str = "auto", mirror: bool = False,
                 overlap: float = OVERLAP, limits: InputLimits = InputLimits(), compile: bool = False):
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
        tune_for_fixed_windows(self.device)
        self.network = build(self.spec, self.device)
        try:
            self.network.load_state_dict(without_compiled_prefix(weights))
        except RuntimeError as exc:  # missing, unexpected or reshaped tensors
            first = str(exc).strip().splitlines()[-1].strip()
            raise TrainingError(f"{where} holds weights that do not fit its own network spec ({first}); expected "
                                "the weights saved with that spec") from None
        self.network.eval()
        self.set_compile(compile)
        self.mirror_axes = tuple(range(self.plan.dims)) if mirror else ()  # the patch's axes: in-plane for 2D
        self.overlap = overlap
        self.limits = limits

    def set_compile(self, enabled: bool) -> None:
        """Predict through ``torch.compile`` (or eagerly) from now on; an ensemble's members are set one by one."""
        self.forward = CompiledNetwork(self.network, enabled)

    @property
    def n_channels(self) -> int:
        return len(self.normalization)

    def _transpose(self) -> tuple[int, ...]:
        return tuple(self.plan.transpose_forward) if self.plan.transpose_forward is not None else (0, 1, 2)

    def work(self, shape: Sequence[int], spacing: Sequence[float]) -> Work:
        """The resampled size and the sliding windows of a ``shape`` (z, y, x) volume at ``spacing``."""
        transpose = self._transpose()
        own = tuple(float(spacing[t]) for t in transpose)
        new_spacing = resampled_spacing(own, self.plan)
        resampled = target_shape(tuple(int(shape[t]) for t in transpose), own, new_spacing)
        patch = tuple(self.plan.patch_size)
        windows = window_count(resampled, patch, self.overlap)
        per_case = windows // resampled[0] if len(patch) < len(resampled) else windows  # per slice in 2D
        median = window_count(tuple(self.plan.median_shape)[-len(patch):], patch, self.overlap)
        return Work(shape=spacing_in_file_order(resampled, transpose),
                    spacing=spacing_in_file_order(new_spacing, transpose), windows=windows,
                    passes=windows * 2 ** len(self.mirror_axes), median_windows=median, per_case=per_case)

    def input_warnings(self, shape: Sequence[int], spacing: Sequence[float], source: str = "image") -> list[str]:
        """Check a ``shape`` (z, y, x) input at ``spacing`` before predicting it; returns the warnings to give.

        Refuses (DatasetError) a voxel size that is not finite and positive; warns about a voxel size
        more than :data:`SPACING_WARNING_FACTOR` from the model's and about more than
        :data:`WORK_WARNING_FACTOR` times the median training case's sliding windows (and at least
        :data:`LONG_PREDICTION_PASSES` network passes); refuses what ``self.limits`` does not allow
        (a resampled volume too large, an unusual voxel size with a long prediction).
        """
        check_voxel_size(source, spacing)
        spacing = tuple(float(f"{float(s):.6g}") for s in spacing)  # a float32 header's 0.01 is 0.00999999977
        work = self.work(shape, spacing)
        patch = tuple(self.plan.patch_size)
        estimate = f"{work.windows:,} sliding windows of {patch}" + (
            f" ({work.passes:,} network passes with mirroring)" if self.mirror_axes else "")
        max_voxels = self.limits.max_voxels
        if max_voxels is not None and work.voxels > max_voxels:
            raise DatasetError(f"{source} would be resampled to {work.shape} = {work.voxels:,} voxels at the model's "
                               f"spacing {work.spacing} mm (from {tuple(int(n) for n in shape)} at {spacing} mm; "
                               f"{estimate}); expected at most {max_voxels:,}: check the voxel size in its "
                               f"header, or {LIFT_HINT}")
        ratios = [own / new for own, new in zip(spacing, work.spacing)]
        coarse, fine = max(ratios), min(ratios)
        unusual = coarse > SPACING_WARNING_FACTOR or fine < 1 / SPACING_WARNING_FACTOR
        costly = work.per_case > WORK_WARNING_FACTOR * work.median_windows  # than validating a training case
        long = costly and work.passes >= LONG_PREDICTION_PASSES
        words = f"{coarse:.3g}x coarser" if coarse >= 1 / fine else f"{1 / fine:.3g}x finer"
        spacing_text = f"{source} has voxel size {spacing} mm (z, y, x), {words} than the model's {work.spacing} mm"
        unit = " per slice" if self.plan.dims < len(work.shape) else ""
        work_text = (f"resampled to {work.shape} voxels at {work.spacing} mm (z, y, x): {estimate}, "
                     f"{work.per_case / work.median_windows:.0f}x the median training case{unit} "
                     f"({work.median_windows:,})")
        if unusual and costly and not self.limits.allow_unusual_spacing:
            raise DatasetError(f"{spacing_text} (more than {SPACING_WARNING_FACTOR:g}x: unlike any training case, "
                               f"or a header in other units), and would be {work_text}; expected a voxel size "
                               f"within {SPACING_WARNING_FACTOR:g}x of the model's: check its header, or {LIFT_HINT}")
        found = []
        if unusual:
            found.append(f"{spacing_text} (more than {SPACING_WARNING_FACTOR:g}x: unlike any training case, or a "
                         "header in other units); its label map may be meaningless")
        if long:
            found.append(f"{source} is {work_text}; expect a long prediction")
        return found

    def check_input(self, shape: Sequence[int], spacing: Sequence[float], source: str = "image") -> None:
        """:meth:`input_warnings`, given as :class:`PredictionWarning` s."""
        for message in self.input_warnings(shape, spacing, source):
            warnings.warn(message, PredictionWarning, stacklevel=3)

    def probabilities(self, image: np.ndarray, spacing: Sequence[float], *, source: str = "image") -> np.ndarray:
        """Softmax ``[K, z, y, x]`` on the input's grid (classes in ``self.labels`` order); ensembles average these.

        The input is checked first (:meth:`check_input`; ``source`` names it in messages).
        """
        self.check_input(image.shape[1:], spacing, source)
        return self.checked_probabilities(image, spacing)

    def checked_probabilities(self, image: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        """:meth:`probabilities` of an input already checked (an ensemble checks with every member first)."""
        try:
            prepared, _, record = preprocess_image(image, spacing, self.plan, self.normalization)
            scores = sliding_window_logits(self.network, prepared, self.plan.patch_size, self.device,
                                           overlap=self.overlap, batch_size=self.plan.batch_size,
                                           mirror_axes=self.mirror_axes, forward=self.forward)
            probabilities = host_float32(scores)
            del scores
            return restore_probabilities(probabilities, record)
        except MemoryError:  # the host, in preprocessing or resampling back (the device's are handled inside)
            raise self._memory_error(image.shape) from None

    def _memory_error(self, shape: Sequence[int]) -> TrainingError:
        """Out of host memory: the input's shape and what its float32 class scores take."""
        needed = estimated_bytes(shape, len(self.labels), torch.float32, bool(self.mirror_axes))
        return InferenceMemoryError(f"an image of shape {tuple(shape)} ran out of host memory: its "
                                    f"{len(self.labels)} class scores need about {needed / 2**30:.1f} GiB "
                                    f"({needed:,} bytes) at its own size, more if resampled to a finer voxel "
                                    "size; expected a machine with that much free memory, or a smaller image")

    def to_labels(self, probabilities: np.ndarray) -> np.ndarray:
        """The label map of ``[K, ...]`` class probabilities (argmax mapped to label values)."""
        return label_map_of(probabilities, np.array([value for _, value in self.labels], dtype=np.int16))

    def segment(self, image: np.ndarray, spacing: Sequence[float], *, source: str = "image") -> np.ndarray:
        """Label map ``[z, y, x]`` for a ``[C, z, y, x]`` image with the given spacing."""
        return self.to_labels(self.probabilities(image, spacing, source=source))

    def predict_file(self, files: Sequence[str | Path], out_path: str | Path,
                     channel_in_file: Sequence[int | None] | None = None) -> Path:
        """Segment one case's channel files (or 4D stacks, ``channel_in_file`` as in
        :func:`~hnas.data.io.read_images`) into ``out_path``, with the first file's header."""
        volume = read_input(files, channel_in_file)
        if volume.array.shape[0] != self.n_channels:
            raise DatasetError(f"{[str(f) for f in files]} give {volume.array.shape[0]} channels; the model expects "
                               f"{self.n_channels}")
        label = self.segment(volume.array, volume.spacing, source=f"image {str(files[0])!r}")
        return write_label_map(label, Path(files[0]), out_path)


def predict(checkpoint: str | Path, images: Sequence[str | Path], out_dir: str | Path, *, device: str = "auto",
            mirror: bool = False, overwrite: bool = False, limits: InputLimits = InputLimits(),
            compile: bool = False) -> list[Path]:
    """Segment ``images`` into ``out_dir`` (one ``<case>.nii.gz`` each); returns the written files.

    For a one-channel model every path is a case. For a C-channel model paths are grouped by
    nnU-Net's naming (``<case>_0000.nii.gz`` .. ``<case>_{C-1:04d}.nii.gz``). Existing label maps
    are refused before any prediction unless ``overwrite``; ``limits`` says which unusual inputs are
    refused (:class:`InputLimits`); ``compile`` runs the network through ``torch.compile``.
    """
    predictor = Predictor(checkpoint, device=device, mirror=mirror, limits=limits, compile=compile)
    out_dir = Path(out_dir)
    cases = group_cases([Path(p) for p in images], predictor.n_channels)
    refuse_existing([out_dir / f"{case}.nii.gz" for case in cases], overwrite)
    return [predictor.predict_file(files, out_dir / f"{case}.nii.gz") for case, files in cases.items()]


def group_cases(paths: Sequence[Path], n_channels: int) -> dict[str, list[Path]]:
    """Case name -> channel files in channel order; a folder stands for its NIfTI files (nnUNetv2_predict -i)."""
    files = image_files(paths)
    if n_channels == 1:
        return _single_channel_cases(files)
    return _channel_cases(files, n_channels)


def image_files(paths: Sequence[Path]) -> list[Path]:
    """The image files ``paths`` name: files as given, each folder replaced by its NIfTI files."""
    if not paths:
        raise TrainingError("no images given; expected at least one NIfTI file or a folder of them")
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += folder_images(path)
        elif path.is_file():
            files.append(path)
        else:
            raise DatasetError(f"image {str(path)!r} does not exist")
    return files


def folder_images(folder: Path) -> list[Path]:
    """A folder's NIfTI files, sorted by name, as nnUNetv2_predict -i reads it: not its subfolders, and no
    hidden files (macOS leaves ``._<name>.nii.gz`` copies that are not images)."""
    found = sorted(p for p in folder.iterdir() if p.name.endswith(ENDINGS) and not p.name.startswith(".")
                   and p.is_file())
    if not found:
        raise DatasetError(f"folder {str(folder)!r} holds no NIfTI image; expected files ending in "
                           f"{' or '.join(ENDINGS)} directly in it (as nnUNetv2_predict -i reads a folder)")
    return found


_TWICE = "expected each case once (a folder already gives all its images)"


def _single_channel_cases(files: Sequence[Path]) -> dict[str, list[Path]]:
    """One case per file, named without the optional ``_0000``; two files of one name would overwrite each other."""
    cases: dict[str, list[Path]] = {}
    for path in files:
        case = _case_name(path)
        if case in cases:
            raise DatasetError(f"case {case!r} is given twice, as {str(cases[case][0])!r} and {str(path)!r} (both "
                               f"would be written as {case}.nii.gz); {_TWICE}")
        cases[case] = [path]
    return cases


def _channel_cases(files: Sequence[Path], n_channels: int) -> dict[str, list[Path]]:
    """Files grouped by nnU-Net's ``<case>_<XXXX>`` naming, every case with exactly channels 0..n-1."""
    grouped: dict[str, dict[int, Path]] = {}
    for path in files:
        case, channel = _channel_of(path, n_channels)
        channels = grouped.setdefault(case, {})
        if channel in channels:
            raise DatasetError(f"case {case!r} channel {channel} is given twice, as {str(channels[channel])!r} and "
                               f"{str(path)!r}; {_TWICE}")
        channels[channel] = path
    for case, channels in grouped.items():
        _check_channels(case, channels, n_channels)
    return {case: [channels[c] for c in range(n_channels)] for case, channels in grouped.items()}


def _channel_of(path: Path, n_channels: int) -> tuple[str, int]:
    ending = next((e for e in ENDINGS if path.name.endswith(e)), None)
    match = split_channel_file(path.name, ending) if ending else None
    if match is None:
        raise DatasetError(f"image {str(path)!r} is not named <case>_<XXXX>.nii.gz; a {n_channels}-channel model "
                           "needs nnU-Net's channel naming to group files")
    return match


def _check_channels(case: str, channels: dict[int, Path], n_channels: int) -> None:
    """Name the file a case lacks (or the channel it has beyond the model's): a guess would mix up modalities."""
    first = channels[min(channels)]
    missing = [c for c in range(n_channels) if c not in channels]
    if missing:
        ending = next(e for e in ENDINGS if first.name.endswith(e))
        expected = [str(first.parent / f"{case}_{c:04d}{ending}") for c in missing]
        raise DatasetError(f"case {case!r} lacks channel(s) {missing}: {str(first)!r} has no "
                           f"{' or '.join(map(repr, expected))} beside it; expected channels 0..{n_channels - 1} "
                           f"for a {n_channels}-channel model")
    extra = sorted(set(channels) - set(range(n_channels)))
    if extra:
        raise DatasetError(f"case {case!r} has channel(s) {extra} ({str(channels[extra[0]])!r}) beyond the model's; "
                           f"expected channels 0..{n_channels - 1} for a {n_channels}-channel model")


def _case_name(path: Path) -> str:
    name = path.name
    for ending in ENDINGS:
        if name.endswith(ending):
            name = name[: -len(ending)]
            break
    match = split_channel_file(name + ".nii.gz", ".nii.gz")
    return match[0] if match is not None and match[1] == 0 else name
