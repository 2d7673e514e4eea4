"""Scale presets: the same code on a 2-core laptop and on a GPU cluster.

A preset only overrides Plan fields (features, patch, batch) and trainer fields (iterations
per epoch, workers, the epoch range); it never changes the grammar's productions or the
optimizer. ``nnunet`` is the paper's setting; ``cpu`` is sized so that a small search on the
built-in data finishes in minutes on two cores.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from hnas.errors import TrainingError
from hnas.planning.plan import Plan
from hnas.train.config import with_features


@dataclass(frozen=True)
class ScalePreset:
    """Plan and trainer overrides; ``None`` keeps the plan's own value."""

    name: str
    base_features: int | None
    max_features: int | None
    max_patch_voxels: int | None  # shrink the patch (keeping it divisible by the strides) above this
    batch_size: int | None
    iterations_per_epoch: int
    num_workers: int
    min_epochs: int
    max_epochs: int
    eta: int = 3
    overlap: float = 0.5  # sliding-window overlap of the validation
    validation_cases: int | None = None  # None: every validation case of the fold
    batch_size_2d: int | None = None  # batch of a 2D plan (slices are far cheaper than 3D patches)

    def apply(self, plan: Plan) -> Plan:
        """``plan`` with this preset's features, patch and batch size."""
        if self.base_features is not None:
            plan = with_features(plan, self.base_features, self.max_features or plan.max_features)
        if self.max_patch_voxels is not None:
            plan = replace(plan, patch_size=shrink_patch(plan, self.max_patch_voxels))
        batch_size = self.batch_size_2d if plan.dims == 2 else self.batch_size
        if batch_size is not None:
            plan = replace(plan, batch_size=batch_size)
        return plan

    def save(self, path: Path) -> None:
        """Write the resolved values, so a resumed run trains as it started even if the defaults change."""
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "ScalePreset":
        try:
            values = json.loads(Path(path).read_text())
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(values) - known) if isinstance(values, dict) else None
            if unknown:
                raise TypeError(f"unknown keys {unknown}")
            return cls(**values)
        except (ValueError, TypeError) as error:  # not JSON, not an object, unknown or missing keys
            raise TrainingError(f"{str(path)!r} is not a scale preset file ({error}); expected the preset.json "
                                "`hnas search` writes into its run folder") from None

    def differences(self, other: "ScalePreset") -> list[str]:
        """``name: ours vs theirs`` for every value that differs."""
        return [f"{f.name} {getattr(self, f.name)!r} vs {getattr(other, f.name)!r}" for f in fields(self)
                if getattr(self, f.name) != getattr(other, f.name)]

    def describe(self, plan: Plan | None = None) -> str:
        """The lines a search prints at its start."""
        validation = "all" if self.validation_cases is None else f"at most {self.validation_cases}"
        workers = "augmentation in-process" if self.num_workers == 0 else f"{self.num_workers} augmentation workers"
        lines = [f"scale preset {self.name!r}: iterations/epoch {self.iterations_per_epoch}, "
                 f"epochs {self.min_epochs}..{self.max_epochs} (eta {self.eta}), {workers}, "
                 f"validation: {validation} cases, window overlap {self.overlap}"]
        if plan is not None:
            plan = self.apply(plan)
            lines.append(f"  plan {plan.dataset_name}: {plan.n_stages} stages, patch {'x'.join(map(str, plan.patch_size))}, "
                         f"batch {plan.batch_size}, features {plan.base_features}..{plan.max_features}, "
                         f"spacing {tuple(round(s, 3) for s in plan.spacing)}")
        return "\n".join(lines)


NNUNET = ScalePreset(name="nnunet", base_features=None, max_features=None, max_patch_voxels=None, batch_size=None,
                     iterations_per_epoch=250, num_workers=8, min_epochs=10, max_epochs=1000)
# On a CPU every core already runs the training step's threads: a background data worker can only
# take a core from them (benchmarks/bench_train.py measured it slower than in-process augmentation
# on 2 cores), so the CPU preset augments in-process; augmentation is ~2% of a CPU step.
# Validation keeps nnU-Net's window overlap 0.5: without overlap, every voxel near a window's border is
# predicted from one window only, and on the built-in data (volumes several times the CPU patch) the
# default network's Dice after 144 iterations was 0.52 instead of 0.81 (lesion class 0.34 instead of 0.71).
CPU = ScalePreset(name="cpu", base_features=8, max_features=64, max_patch_voxels=48 ** 3, batch_size=2,
                  iterations_per_epoch=8, num_workers=0, min_epochs=1, max_epochs=9, overlap=0.5, batch_size_2d=32)
SCALE_PRESETS = {"nnunet": NNUNET, "gpu": NNUNET, "cpu": CPU}


def gpu_preset() -> ScalePreset:
    """nnU-Net's own setting (the paper's budgets)."""
    return NNUNET


def cpu_preset() -> ScalePreset:
    """Small features (8..64), a patch of at most 48^3 voxels (all stages kept), batch 2 (2D: 32), 8 iterations
    per epoch, epochs 1..9, in-process augmentation, validation windows overlapping by half as nnU-Net's (cases
    larger than the patch lose much of their Dice without overlap)."""
    return CPU


def preset(name: str = "auto") -> ScalePreset:
    """A preset by name; ``auto`` picks nnunet with CUDA and cpu without."""
    if name == "auto":
        import torch

        return NNUNET if torch.cuda.is_available() else CPU
    if name not in SCALE_PRESETS:
        raise TrainingError(f"unknown scale preset {name!r}; expected one of {sorted(SCALE_PRESETS) + ['auto']}")
    return SCALE_PRESETS[name]


def shrink_patch(plan: Plan, max_voxels: int) -> tuple[int, ...]:
    """The plan's patch, its largest axis cut by one total stride at a time until it fits ``max_voxels``.

    Every axis stays a multiple of its total stride (at least one stride), so all stages remain.
    """
    total = [math.prod(stride[axis] for stride in plan.strides) for axis in range(plan.dims)]
    patch = list(plan.patch_size)
    while math.prod(patch) > max_voxels:
        shrinkable = [a for a in range(plan.dims) if patch[a] - total[a] >= total[a]]
        if not shrinkable:
            break
        axis = max(shrinkable, key=lambda a: (patch[a] / total[a], patch[a]))
        patch[axis] -= total[axis]
    return tuple(patch)
