"""The dataset fingerprint: what planning needs to know about a dataset.

All per-axis values use nnU-Net's axis order: the NIfTI axes reversed (z, y, x), i.e. the
order SimpleITK's ``GetArrayFromImage`` gives. This keeps our plans comparable with
nnU-Net's ``nnUNetPlans.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ChannelIntensity:
    """Intensity statistics of one channel over foreground voxels (nnU-Net's definition)."""

    mean: float
    std: float
    median: float
    min: float
    max: float
    percentile_00_5: float
    percentile_99_5: float


@dataclass(frozen=True)
class Fingerprint:
    """Spacings, cropped shapes, channels, labels and foreground intensity statistics."""

    name: str
    spacings: tuple[tuple[float, ...], ...]
    shapes_after_crop: tuple[tuple[int, ...], ...]
    channel_names: tuple[str, ...]
    labels: tuple[tuple[str, int], ...]  # (name, value), background included, sorted by value
    intensity: tuple[ChannelIntensity, ...] = field(default=())

    @property
    def n_cases(self) -> int:
        return len(self.spacings)

    @property
    def dims(self) -> int:
        return len(self.spacings[0])

    @property
    def n_channels(self) -> int:
        return len(self.channel_names)

    @property
    def n_classes(self) -> int:
        """Number of network outputs: labels including background."""
        return len(self.labels)
