"""Training batches: random patches with foreground oversampling, augmented in background workers.

Batch ``b`` of a run is a pure function of ``(seed, b)``: each batch draws from its own
generator, and DataLoader workers take every ``num_workers``-th batch (the DataLoader returns
them in order). So the stream does not depend on the number of workers, and training continued
from a checkpoint at epoch ``e`` sees exactly the batches an uninterrupted run would.

Sample ``i`` of a batch of ``B`` is centred on a random foreground voxel (of a random label the
case contains) when ``i >= B - round(B * foreground_oversampling)``; otherwise its position is
uniform, with cases smaller than the patch padded evenly (nnU-Net's rule).

A 2-entry patch (a 2D plan) samples one slice along plan axis 0 of the ``[C, S, Y, X]`` case:
the forced voxel's slice, or a uniform one, and a 2D patch in it; batches are ``[B, C, py, px]``.
It is the 3D rule with a patch one voxel thick, so both share one code path.

Each sample opens its case from the compressed cache and decompresses only the blocks its patch
touches (:meth:`PatchSampler.case`); no case stays in memory.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from hnas.errors import TrainingError
from hnas.train.augmentation import Augmenter
from hnas.train.preprocessing import PreprocessedCase, PreprocessedDataset

LABEL_DTYPE = torch.int16


def forced_foreground(batch_size: int, rate: float) -> list[bool]:
    """Which samples of a batch must be centred on foreground: the last round(B * rate)."""
    forced = int(round(batch_size * rate))
    return [i >= batch_size - forced for i in range(batch_size)]


def patch_bounds(shape: Sequence[int], patch: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest lower corner of a patch; a too-small case is padded evenly (nnU-Net)."""
    shape, patch = np.asarray(shape), np.asarray(patch)
    need = np.maximum(patch - shape, 0)
    low = -(need // 2)
    high = shape + need // 2 + need % 2 - patch
    return low, high


def crop_padded(array: np.ndarray, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """``array[..., start:start+size]`` over the last len(size) axes, zero outside the array."""
    lead = array.shape[: array.ndim - len(size)]
    out = np.zeros(lead + tuple(size), dtype=array.dtype)
    source, target = [], []
    for begin, length, extent in zip(start, size, array.shape[len(lead):]):
        lo, hi = max(begin, 0), min(begin + length, extent)
        if hi <= lo:
            return out
        source.append(slice(lo, hi))
        target.append(slice(lo - begin, hi - begin))
    full = (slice(None),) * len(lead)
    out[full + tuple(target)] = array[full + tuple(source)]
    return out


class PatchSampler:
    """Makes one batch from its index: case choice, patch position, augmentation."""

    def __init__(self, data: PreprocessedDataset, case_ids: Sequence[str], patch_size: Sequence[int],
                 batch_size: int, foreground_oversampling: float, aug_factor: float, seed: int):
        self.data = data
        self.case_ids = tuple(case_ids)
        self.patch_size = tuple(int(p) for p in patch_size)
        if len(self.patch_size) not in (2, 3):
            raise TrainingError(f"patch size {self.patch_size} has {len(self.patch_size)} axes; expected 2 (a 2D "
                                "plan) or 3")
        # a 2D patch is a one-voxel-thick 3D patch: the case keeps its slice axis in front
        self.volume_patch = (1,) * (3 - len(self.patch_size)) + self.patch_size
        self.batch_size = int(batch_size)
        self.forced = forced_foreground(self.batch_size, foreground_oversampling)
        self.augmenter = Augmenter(self.patch_size, aug_factor)
        self.seed = int(seed)

    def case(self, case_id: str) -> PreprocessedCase:
        """The case opened lazily, for one sample: a patch decompresses only its blocks, and nothing is kept,
        so a loader's memory does not grow with the number of cases (nnU-Net's nnUNetDatasetBlosc2 alike)."""
        return self.data.load(case_id, lazy=True)

    def batch(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, index])
        images, labels = [], []
        for force in self.forced:
            image, label = self.sample(rng, force)
            images.append(image)
            labels.append(label)
        return {"image": torch.stack(images), "label": torch.stack(labels)}

    def sample(self, rng: np.random.Generator, force_foreground: bool) -> tuple[torch.Tensor, torch.Tensor]:
        case = self.case(self.case_ids[rng.integers(len(self.case_ids))])
        corner = self.patch_corner(case, rng, force_foreground)
        draw = self.augmenter.draw_spatial(rng)
        region = draw.region(self.patch_size)
        lead = len(self.volume_patch) - len(self.patch_size)  # 1 for a 2D patch: the slice axis
        start = corner[:lead] + [c - (r - p) // 2 for c, r, p in zip(corner[lead:], region, self.patch_size)]
        size = self.volume_patch[:lead] + region
        image = crop_padded(case.image, start, size).reshape(case.image.shape[0], *region)
        label = crop_padded(case.label, start, size).reshape(1, *region).astype(np.float32)
        image, label = self.augmenter(torch.from_numpy(image), torch.from_numpy(label), draw, rng)
        return image, label.to(LABEL_DTYPE)  # half the bytes to the device; the loss makes it float

    def patch_corner(self, case: PreprocessedCase, rng: np.random.Generator, force_foreground: bool) -> list[int]:
        """Lower corner of the (one-slice thick, for 2D) patch in the case's voxel grid."""
        low, high = patch_bounds(case.label.shape, self.volume_patch)
        present = [positions for positions in case.foreground.values() if len(positions)]
        if force_foreground and present:
            positions = present[rng.integers(len(present))]
            voxel = positions[rng.integers(len(positions))]
            corner = np.clip(voxel - np.asarray(self.volume_patch) // 2, low, high)
        else:
            corner = [rng.integers(lo, hi + 1) for lo, hi in zip(low, high)]
        return [int(c) for c in corner]


class BatchStream(IterableDataset):
    """Batches ``start, start + 1, ...`` forever; worker ``w`` of ``W`` makes ``start + w + k*W``."""

    def __init__(self, sampler: PatchSampler, start: int = 0):
        super().__init__()
        self.sampler = sampler
        self.start = int(start)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        index = self.start + worker
        while True:
            yield self.sampler.batch(index)
            index += workers


def _init_worker(_: int) -> None:
    torch.set_num_threads(1)


def batch_loader(sampler: PatchSampler, start: int, num_workers: int, *, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over :class:`BatchStream`; ``num_workers = 0`` makes batches in this process.

    A daemonic process (e.g. a Dask worker) may not start children, so it falls back to 0.
    """
    if multiprocessing.current_process().daemon:
        num_workers = 0
    options = {}
    if num_workers > 0:
        options = {"persistent_workers": True, "prefetch_factor": 4, "worker_init_fn": _init_worker}
    return DataLoader(BatchStream(sampler, start), batch_size=None, num_workers=num_workers,
                      pin_memory=pin_memory, **options)
