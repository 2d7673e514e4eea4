"""Sliding-window inference over whole cases and the validation Dice (MONAI).

Windows are the training patch, overlapping by half and blended with a Gaussian (nnU-Net's
settings). A 2D network (2-entry patch) predicts a ``[C, S, Y, X]`` case slice by slice along
plan axis 0, the slices going through the network together as one batch; its Dice is still the
3D volume's. Dice follows nnU-Net's convention: per case and foreground label, NaN where neither
the reference nor the prediction contains the label; averaged over cases (ignoring NaN), then
over labels.

Memory (docs/references.md, "Inference memory"): the stitched class scores are the big buffer
(K values a voxel). On a GPU they are accumulated in float16, as nnU-Net does, and the softmax,
the mirror average and the label map are computed in place or in chunks, so a case needs about
``(K + 1) * 2`` bytes a voxel on the device instead of several float32 copies. When the device
still runs out of memory, the case is predicted again with the network on the device and the
stitched result on the CPU, and then wholly on the CPU (:func:`memory_fallbacks`), with one
:class:`MemoryFallbackWarning`; when even the CPU fails, an :class:`InferenceMemoryError` names
the case's shape and the bytes it needs.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from hnas.errors import TrainingError
from hnas.train.preprocessing import PreprocessedDataset
from hnas.train.trainer import autocast

OVERLAP = 0.5
#: Elements a chunked full-volume step (softmax, argmax, Dice counts) converts at once: 16 MiB
#: float32 temporaries, small next to any case worth chunking, and few enough launches on a GPU
#: (a 105-class, 5e7-voxel case takes ~1,250 softmax chunks).
CHUNK_ELEMENTS = 2**22
CPU = torch.device("cpu")


class MemoryFallbackWarning(UserWarning):
    """A case ran out of memory on the device and was predicted with less of it there (slower)."""


class InferenceMemoryError(TrainingError):
    """A case does not fit in memory even with its whole prediction on the CPU."""


@dataclass(frozen=True)
class Placement:
    """Where a case's windows go through the network, and where their stitched scores live."""

    windows: torch.device
    result: torch.device

    def describe(self) -> str:
        if self.windows == self.result:
            return f"the whole case on {self.windows}"
        return f"the network on {self.windows} and the stitched scores on {self.result}"


def memory_fallbacks(device: torch.device) -> tuple[Placement, ...]:
    """Placements tried in turn, each when the one before ran out of memory.

    On a GPU: everything there; then the network there and the result on the CPU (nnU-Net's
    retry); then the whole case on the CPU. A CPU has nowhere else to go.
    """
    if device.type == "cpu":
        return (Placement(CPU, CPU),)
    return Placement(device, device), Placement(device, CPU), Placement(CPU, CPU)


def accumulator_dtype(result_device: torch.device) -> torch.dtype:
    """float16 where the stitched scores stay on a GPU (half the memory, as nnU-Net); float32 on the
    CPU, where half-precision arithmetic is slow and memory is usually plentiful."""
    return torch.float16 if result_device.type == "cuda" else torch.float32


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA's out-of-memory error, a host MemoryError, or a RuntimeError saying either (torch's CPU
    allocator, or MONAI re-raising one from its importance map: the cause is looked at too)."""
    while error is not None:
        if isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)):
            return True
        if isinstance(error, RuntimeError) and any(words in str(error) for words in
                                                   ("out of memory", "can't allocate memory")):
            return True
        error = error.__cause__
    return False


def estimated_bytes(image_shape: Sequence[int], n_classes: int, dtype: torch.dtype = torch.float32,
                    mirrored: bool = False) -> int:
    """Bytes of a case's full-volume buffers: the input, the stitched scores and their weight map,
    and the mirror average's second score volume. Activations of the windows come on top."""
    channels, voxels = int(image_shape[0]), math.prod(int(n) for n in image_shape[1:])
    item = torch.empty((), dtype=dtype).element_size()
    return voxels * item * (channels + n_classes * (2 if mirrored else 1) + 1)


@torch.no_grad()
def sliding_window_logits(network: nn.Module, image: np.ndarray, patch_size: Sequence[int], device: torch.device, *,
                          overlap: float = OVERLAP, batch_size: int = 2, amp: bool = True,
                          mirror_axes: Sequence[int] = (), accumulator: torch.dtype | None = None,
                          forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Class probabilities ``[K, ...]`` for a ``[C, ...]`` image (softmax, not logits, despite the name).

    float16 on ``device`` when it is a GPU, float32 on the CPU (:func:`accumulator_dtype`;
    ``accumulator`` forces one, e.g. to measure); on the CPU too after an out-of-memory fallback
    (:func:`memory_fallbacks`), so callers move the result where they need it. A 2-entry
    ``patch_size`` on a ``[C, S, Y, X]`` image runs a 2D network on every slice.
    ``mirror_axes`` adds nnU-Net's test-time mirroring: the softmax is averaged over every
    combination of flips along those axes of the patch (in 2D: the in-plane axes).
    ``forward`` calls the network on a batch of windows (a :class:`~hnas.train.compilation.CompiledNetwork`
    of it); default the network itself, which is what is switched to eval mode and moved in any case.
    """
    planar = _is_planar(image, patch_size)
    was_training = network.training
    supervision = network.decoder.deep_supervision
    network.eval()
    network.decoder.deep_supervision = False
    try:
        return _predict_with_fallbacks(network, image, tuple(patch_size), device, planar=planar, overlap=overlap,
                                       batch_size=batch_size, amp=amp, mirror_axes=tuple(mirror_axes),
                                       accumulator=accumulator, forward=forward or network)
    finally:
        network.decoder.deep_supervision = supervision
        network.train(was_training)


def _predict_with_fallbacks(network: nn.Module, image: np.ndarray, patch_size: tuple[int, ...], device: torch.device,
                            *, accumulator: torch.dtype | None, **options) -> torch.Tensor:
    """The first placement of :func:`memory_fallbacks` that does not run out of memory; one warning if not the first."""
    failed: list[Placement] = []
    for placement in memory_fallbacks(device):
        if failed:
            _release_cached_memory()
        dtype = accumulator or accumulator_dtype(placement.result)
        try:
            with _network_on(network, placement.windows):
                scores = _predict_case(network, image, patch_size, placement, dtype, **options)
        except Exception as error:  # leaving the except block frees the failed attempt's tensors
            if not is_out_of_memory(error):
                raise
            failed.append(placement)
            continue
        if failed:
            warnings.warn(f"a case of shape {tuple(image.shape)} ran out of memory with "
                          f"{' and then with '.join(p.describe() for p in failed)}; predicted it with "
                          f"{placement.describe()} instead (slower)", MemoryFallbackWarning, stacklevel=4)
        return scores
    raise _memory_error(network, image, failed, accumulator, bool(options["mirror_axes"]))


def _memory_error(network: nn.Module, image: np.ndarray, failed: Sequence[Placement], accumulator: torch.dtype | None,
                  mirrored: bool) -> InferenceMemoryError:
    n_classes = int(network.spec.n_classes) if hasattr(network, "spec") else 1
    needed = estimated_bytes(image.shape, n_classes, accumulator or torch.float32, mirrored)
    tried = "; then ".join(p.describe() for p in failed)
    return InferenceMemoryError(
        f"a case of shape {tuple(image.shape)} ({math.prod(image.shape[1:]):,} voxels) ran out of memory "
        f"with {tried}: its {n_classes} class scores need about {needed / 2**30:.1f} GiB ({needed:,} bytes) "
        "besides the network; expected a machine with that much free memory, or a smaller case (crop it)")


def _predict_case(network: nn.Module, image: np.ndarray, patch_size: tuple[int, ...], placement: Placement,
                  dtype: torch.dtype, *, planar: bool, overlap: float, batch_size: int, amp: bool,
                  mirror_axes: tuple[int, ...], forward: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Mean softmax over the mirror flips, accumulated in ``dtype`` on ``placement.result``."""
    inputs = _network_input(image, planar, placement.result, dtype)
    total, count = None, 0
    for flips in _flip_sets(mirror_axes):
        dims = [2 + a for a in flips]
        flipped = torch.flip(inputs, dims) if dims else inputs
        with autocast(placement.windows, amp and placement.windows.type == "cuda"):
            scores = sliding_window_inference(flipped, patch_size, batch_size, _float_windows(forward),
                                              overlap=overlap, mode="gaussian", sw_device=placement.windows,
                                              device=placement.result)
        del flipped
        scores = torch.as_tensor(scores)
        softmax_in_place(scores)
        if total is None:  # the first flip set is the unflipped image
            total = scores
        else:
            _add_flipped(total, scores, dims)
        del scores
        count += 1
    if count > 1:
        total /= count
    return total.transpose(0, 1) if planar else total[0]  # a view: no second copy of the scores


def _network_input(image: np.ndarray, planar: bool, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``[1, C, ...]`` (3D) or ``[S, C, Y, X]`` (2D: slices are the batch) in ``dtype``, which MONAI also
    stitches in (float16 loses nothing under autocast: the first convolution casts to half anyway).
    A copy: the cache is read-only."""
    array = np.swapaxes(image, 0, 1) if planar else image[None]
    numpy_dtype = np.float16 if dtype == torch.float16 else np.float32
    return torch.from_numpy(np.array(array, dtype=numpy_dtype)).to(device=device, dtype=dtype)


def _float_windows(forward: Callable[[torch.Tensor], torch.Tensor]):
    """The network on float32 windows (its weights' dtype; under autocast it computes in half anyway)."""
    def predict(window: torch.Tensor) -> torch.Tensor:
        return forward(window.float())
    return predict


@contextmanager
def _network_on(network: nn.Module, device: torch.device) -> Iterator[None]:
    """The network's weights on ``device`` for a while (the CPU fallback), then back where they were."""
    parameter = next(network.parameters(), None)
    home = parameter.device if parameter is not None else device
    if home != device:
        network.to(device)
    try:
        yield
    finally:
        if home != device:
            network.to(home)


def _release_cached_memory() -> None:
    """Give a failed attempt's cached blocks back to the GPU before retrying."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _chunks(length: int, per_index: int) -> Iterator[slice]:
    """Slices of ``range(length)`` covering at most CHUNK_ELEMENTS elements each (``per_index`` per index)."""
    step = max(1, CHUNK_ELEMENTS // max(1, per_index))
    for start in range(0, length, step):
        yield slice(start, min(length, start + step))


def softmax_in_place(scores: torch.Tensor) -> None:
    """Softmax over dim 1 of ``[B, K, ...]`` scores, written back into them a chunk (of dim 2) at a time;
    computed in float32 whatever the storage, so float16 scores lose no more than their rounding."""
    if scores.ndim < 3:
        scores.copy_(torch.softmax(scores.float(), dim=1))
        return
    per_index = scores.numel() // scores.shape[2]
    for part in _chunks(scores.shape[2], per_index):
        chunk = scores[:, :, part]
        chunk.copy_(torch.softmax(chunk.float(), dim=1))


def _add_flipped(total: torch.Tensor, scores: torch.Tensor, dims: Sequence[int]) -> None:
    """``total += flip(scores)``, a class at a time: the flipped copy is one class's volume, not all K."""
    for k in range(scores.shape[1]):
        total[:, k:k + 1] += torch.flip(scores[:, k:k + 1], dims)


def label_map(probabilities: torch.Tensor) -> torch.Tensor:
    """Argmax over the classes of ``[K, ...]`` scores as uint8 (int16 beyond 256 classes), in chunks:
    torch's argmax alone gives int64, 8 bytes a voxel."""
    n_classes, spatial = probabilities.shape[0], probabilities.shape[1:]
    labels = torch.empty(spatial, dtype=torch.uint8 if n_classes <= 256 else torch.int16, device=probabilities.device)
    if not spatial:
        labels.copy_(probabilities.argmax(0))
        return labels
    for part in _chunks(spatial[0], probabilities.numel() // spatial[0]):
        labels[part] = probabilities[:, part].argmax(0)
    return labels


def confusion_counts(prediction: torch.Tensor, reference: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``[K, K]`` voxel counts (predicted label, reference label) of two label maps of one shape, in chunks
    of int32 indices: no one-hot or int64 copy of the volume."""
    if prediction.shape != reference.shape:
        raise TrainingError(f"prediction of shape {tuple(prediction.shape)} and reference of shape "
                            f"{tuple(reference.shape)} differ; expected label maps of one case")
    predicted, truth = prediction.reshape(-1), reference.reshape(-1)
    counts = torch.zeros(n_classes * n_classes, dtype=torch.int64, device=prediction.device)
    for part in _chunks(predicted.numel(), 1):
        truth_part = truth[part].to(torch.int32)
        _check_labels(truth_part, n_classes)
        index = predicted[part].to(torch.int32) * n_classes + truth_part
        counts += torch.bincount(index, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes).cpu()


def _check_labels(labels: torch.Tensor, n_classes: int) -> None:
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise TrainingError(f"reference label map holds values from {int(labels.min())} to {int(labels.max())}; "
                            f"expected 0..{n_classes - 1}")


def case_dice(prediction: torch.Tensor, reference: torch.Tensor, n_classes: int) -> np.ndarray:
    """Dice per foreground label of one case (label maps of the same shape); NaN where both are empty."""
    counts = confusion_counts(prediction, reference, n_classes).double().numpy()
    overlap = np.diag(counts)
    sizes = counts.sum(axis=1) + counts.sum(axis=0)  # predicted + reference voxels of each label
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(sizes > 0, 2 * overlap / sizes, np.nan)
    return dice[1:]


@dataclass(frozen=True)
class ValidationResult:
    """Dice per foreground label name (averaged over cases) and their mean."""

    dice_per_class: dict[str, float]
    mean_dice: float
    n_cases: int


def validate(network: nn.Module, data: PreprocessedDataset, case_ids: Sequence[str], patch_size: Sequence[int],
             device: torch.device, *, overlap: float = OVERLAP, batch_size: int = 2, amp: bool = True,
             forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> ValidationResult:
    """Sliding-window predictions of whole preprocessed cases against their label maps (``forward``: as
    :func:`sliding_window_logits`)."""
    n_classes = len(data.labels)
    scores = []
    for case_id in case_ids:
        case = data.load(case_id)  # all of it: the whole case is predicted
        try:
            probabilities = sliding_window_logits(network, case.image, patch_size, device, overlap=overlap,
                                                  batch_size=batch_size, amp=amp, forward=forward)
        except InferenceMemoryError as exc:
            raise InferenceMemoryError(f"validation case {case_id!r}: {exc}") from None
        prediction = label_map(probabilities)
        del probabilities
        reference = torch.from_numpy(np.array(case.label, dtype=np.int16)).to(prediction.device)
        scores.append(case_dice(prediction, reference, n_classes))
    per_class = _nanmean(np.array(scores).reshape(len(scores), n_classes - 1), axis=0)
    names = [name for name, value in data.labels if value != 0]
    finite = per_class[np.isfinite(per_class)]
    mean = float(finite.mean()) if finite.size else 0.0
    return ValidationResult({name: float(v) for name, v in zip(names, per_class)}, mean, len(case_ids))


def _is_planar(image: np.ndarray, patch_size: Sequence[int]) -> bool:
    """Whether the patch is a 2D network's on a volume (one axis fewer than the image's spatial axes)."""
    spatial = image.ndim - 1
    if len(patch_size) == spatial:
        return False
    if len(patch_size) == spatial - 1 == 2:
        return True
    raise TrainingError(f"patch size {tuple(patch_size)} does not fit an image of shape {tuple(image.shape)}; "
                        f"expected {spatial} entries (or 2 for a 2D network on a [C, S, Y, X] volume)")


def _flip_sets(axes: Sequence[int]) -> list[tuple[int, ...]]:
    sets: list[tuple[int, ...]] = [()]
    for axis in axes:
        sets += [s + (axis,) for s in sets]
    return sets


def _nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    """Mean ignoring NaN; NaN (no warning) where a column holds only NaN."""
    present = np.isfinite(values)
    counts = present.sum(axis=axis)
    sums = np.where(present, values, 0.0).sum(axis=axis)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
