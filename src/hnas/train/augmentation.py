"""nnU-Net's training augmentation from MONAI transforms, probabilities scaled by ``aug_factor``.

Order as nnU-Net: spatial (rotation +-30 deg per axis, scaling 0.7..1.4, applied to a region
large enough that the rotated patch has no empty corners), then intensity (noise, blur,
brightness, contrast, low resolution, inverted gamma, gamma), then mirroring on every axis.
A 2-entry patch (nnU-Net's 2d) rotates in the plane by one angle, +-180 deg, or +-15 deg when
the patch is elongated (longest/shortest side > 1.5), as nnU-Net's 2d configuration does.
Every probability is ``min(1, base * aug_factor)`` (docs/references.md, "Search spaces"); ``aug_factor = 0`` switches
augmentation off entirely, mirroring included.

All randomness comes from the ``numpy.random.Generator`` handed in, so a batch is a pure
function of its seed: continuing a training run replays exactly the batches it would have seen.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from monai.data import get_track_meta, set_track_meta
from monai.transforms import (
    Affine,
    Flip,
    RandAdjustContrast,
    RandGaussianNoise,
    RandGaussianSmooth,
    RandScaleIntensity,
    RandScaleIntensityFixedMean,
    RandSimulateLowResolution,
)
from monai.transforms.utils import create_rotate, create_scale

#: nnU-Net's augmentation probabilities, each multiplied by aug_factor (capped at 1)
#: (docs/references.md, "Search spaces").
BASE_PROBABILITIES = {
    "scale": 0.2, "rotation": 0.2, "noise": 0.1, "blur": 0.2, "brightness": 0.15, "contrast": 0.15,
    "low_resolution": 0.25, "inverted_gamma": 0.1, "gamma": 0.3,
}
MIRROR_PROBABILITY = 0.5  # per axis, nnU-Net's mirroring (on whenever augmentation is)
ROTATION_RADIANS = math.radians(30.0)
ROTATION_RADIANS_2D = math.pi
ROTATION_RADIANS_2D_ELONGATED = math.radians(15.0)
ELONGATED_ASPECT = 1.5  # nnU-Net limits 2D rotation above this patch aspect ratio
SCALE_RANGE = (0.7, 1.4)
NOISE_MAX_STD = math.sqrt(0.1)  # nnU-Net draws the noise variance from (0, 0.1)
BLUR_SIGMA = (0.5, 1.0)
MULTIPLICATIVE_RANGE = 0.25  # brightness and contrast factors in 0.75..1.25
LOW_RESOLUTION_ZOOM = (0.5, 1.0)
GAMMA_RANGE = (0.7, 1.5)
_SEED_LIMIT = 2 ** 31 - 1


def augmentation_probabilities(aug_factor: float) -> dict[str, float]:
    """Each augmentation's probability for ``aug_factor`` (0 -> all off)."""
    return {name: min(1.0, base * aug_factor) for name, base in BASE_PROBABILITIES.items()}


def rotation_limit(patch_size: tuple[int, ...]) -> float:
    """Largest rotation angle (radians) for a patch: nnU-Net's +-30 deg in 3D; in 2D any angle,
    unless the patch is so elongated that a large rotation would show mostly padding."""
    if len(patch_size) == 3:
        return ROTATION_RADIANS
    if max(patch_size) / min(patch_size) > ELONGATED_ASPECT:
        return ROTATION_RADIANS_2D_ELONGATED
    return ROTATION_RADIANS_2D


def rotation_angles(dims: int) -> int:
    """How many angles a rotation has: one in the plane, one per axis in 3D."""
    return 1 if dims == 2 else 3


@dataclass(frozen=True)
class SpatialDraw:
    """One sample's spatial augmentation: rotation angles (one in 2D) and scale (None = not applied)."""

    angles: tuple[float, ...] | None
    scale: float | None

    @property
    def active(self) -> bool:
        return self.angles is not None or self.scale is not None

    def region(self, patch_size: tuple[int, ...]) -> tuple[int, ...]:
        """Input region whose transform covers the whole patch (same parity as the patch)."""
        if not self.active:
            return tuple(patch_size)
        dims = len(patch_size)
        matrix = np.eye(dims + 1)  # MONAI's Affine maps output to input coordinates with this matrix
        if self.angles is not None:
            matrix = matrix @ create_rotate(dims, self.angles)
        if self.scale is not None:
            matrix = matrix @ create_scale(dims, (self.scale,) * dims)
        half = np.asarray(patch_size, dtype=np.float64) / 2
        needed = 2 * (np.abs(matrix[:dims, :dims]) @ half) + 2  # +2: interpolation margin
        return tuple(int(p + 2 * math.ceil(max(0.0, n - p) / 2)) for p, n in zip(patch_size, needed))


class Augmenter:
    """Applies the augmentation pipeline to one ``[C, *patch]`` image and its ``[1, *patch]`` label."""

    def __init__(self, patch_size: tuple[int, ...], aug_factor: float):
        self.patch_size = tuple(int(p) for p in patch_size)
        self.aug_factor = float(aug_factor)
        self.probabilities = augmentation_probabilities(self.aug_factor)
        self.max_rotation = rotation_limit(self.patch_size)
        p = self.probabilities
        self.intensity = [] if self.aug_factor == 0 else [
            RandGaussianNoise(prob=p["noise"], mean=0.0, std=NOISE_MAX_STD),
            RandGaussianSmooth(sigma_x=BLUR_SIGMA, sigma_y=BLUR_SIGMA, sigma_z=BLUR_SIGMA, prob=p["blur"]),
            RandScaleIntensity(factors=MULTIPLICATIVE_RANGE, prob=p["brightness"]),
            RandScaleIntensityFixedMean(prob=p["contrast"], factors=MULTIPLICATIVE_RANGE, preserve_range=True),
            RandSimulateLowResolution(prob=p["low_resolution"], downsample_mode="nearest",
                                      upsample_mode="bilinear" if len(self.patch_size) == 2 else "trilinear",
                                      zoom_range=LOW_RESOLUTION_ZOOM),
            RandAdjustContrast(prob=p["inverted_gamma"], gamma=GAMMA_RANGE, invert_image=True, retain_stats=True),
            RandAdjustContrast(prob=p["gamma"], gamma=GAMMA_RANGE, retain_stats=True),
        ]

    @property
    def enabled(self) -> bool:
        return self.aug_factor > 0

    def draw_spatial(self, rng: np.random.Generator) -> SpatialDraw:
        if not self.enabled:
            return SpatialDraw(None, None)
        rotate = rng.random() < self.probabilities["rotation"]
        scale = rng.random() < self.probabilities["scale"]
        n_angles = rotation_angles(len(self.patch_size))
        angles = tuple(rng.uniform(-self.max_rotation, self.max_rotation, size=n_angles)) if rotate else None
        return SpatialDraw(angles, float(rng.uniform(*SCALE_RANGE)) if scale else None)

    def __call__(self, image: torch.Tensor, label: torch.Tensor, draw: SpatialDraw,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``image``/``label`` cover ``draw.region(patch)``; returns patch-sized tensors."""
        with _plain_tensors():
            if draw.active:
                image, label = self._spatial(image, label, draw)
            if self.intensity:
                state = np.random.RandomState(int(rng.integers(_SEED_LIMIT)))  # one stream for all transforms
                for transform in self.intensity:
                    transform.set_random_state(state=state)
                    image = transform(image)
            if self.enabled:
                axes = [axis for axis in range(len(self.patch_size)) if rng.random() < MIRROR_PROBABILITY]
                if axes:
                    flip = Flip(spatial_axis=axes)
                    image, label = flip(image), flip(label)
        return torch.as_tensor(image), torch.as_tensor(label)

    def _spatial(self, image: torch.Tensor, label: torch.Tensor, draw: SpatialDraw):
        scale = (draw.scale,) * len(self.patch_size) if draw.scale is not None else None
        affine = Affine(rotate_params=draw.angles, scale_params=scale, spatial_size=self.patch_size,
                        padding_mode="zeros", image_only=True)
        return affine(image, mode="bilinear"), affine(label, mode="nearest")


@contextmanager
def _plain_tensors():
    """MONAI transforms return plain tensors inside (no MetaTensor bookkeeping per sample)."""
    previous = get_track_meta()
    set_track_meta(False)
    try:
        yield
    finally:
        set_track_meta(previous)
