"""Fingerprint -> Plan, following nnU-Net v2's (2.8.1) planners in numpy.

Two planners (:data:`PLANNERS`): ``default`` is nnU-Net's ExperimentPlanner (``nnUNetPlans``,
PlainConvUNet), ``resenc_m`` is nnUNetPlannerResEncM (``nnUNetResEncUNetMPlans``): the same
spacing and topology rules, but the patch and batch are fitted to the ResidualEncoderUNet's
memory estimate, its own reference values and no dataset-coverage cap.

nnU-Net instantiates a PyTorch network to estimate memory; we compute the same
feature-map count arithmetically (:func:`conv_feature_map_size`,
:func:`residual_encoder_feature_map_size`) so that planning stays torch-free and fast. Every
rule here mirrors nnU-Net's so a plan matches nnU-Net's plans file (3d_fullres or 2d);
``max_stages`` is our only extension.

All per-axis values are in nnU-Net's axis order: the fingerprint's (z, y, x) order,
permuted by ``transpose_forward`` so that the axis with the largest spacing comes first.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from numbers import Integral
from typing import Sequence

import numpy as np

from hnas.data.fingerprint import Fingerprint
from hnas.errors import PlanError
from hnas.planning.plan import RESENC_M_BLOCKS, Plan

# nnU-Net's constants (ExperimentPlanner.__init__ and nnunetv2.configuration).
ANISOTROPY_THRESHOLD = 3
REFERENCE_FEATURE_MAPS = {3: 560_000_000, 2: 85_000_000}  # calibrated for 8 GB
REFERENCE_BATCH_SIZE = {3: 2, 2: 12}
REFERENCE_GB = 8.0
INITIAL_PATCH_EDGE = {3: 256, 2: 2048}  # initial patch volume = edge ** dims
DEFAULT_MAX_FEATURES = {3: 320, 2: 512}
DEFAULT_BASE_FEATURES = 32
MIN_BATCH_SIZE = 2
MAX_DATASET_COVERED = 0.05
CONV_BLOCKS = 2
CONV_DECODER_BLOCKS = 2
RESIDUAL_DECODER_BLOCKS = 1


@dataclass(frozen=True)
class PlannerRules:
    """What tells nnU-Net's planners apart: the network whose memory is estimated and its budget."""

    name: str
    reference_feature_maps: dict[int, int]  # per dims, for REFERENCE_BATCH_SIZE at REFERENCE_GB
    max_dataset_covered: float  # a batch sees at most this fraction of the dataset's voxels
    residual: bool  # estimate a ResidualEncoderUNet (ResEnc M blocks) instead of a PlainConvUNet
    # The default planner shrinks the patch until MIN_BATCH_SIZE fits (estimate / ref batch * 2);
    # ResEnc shrinks until the reference batch fits (estimate alone): the same in 3D (ref batch 2),
    # a 6x larger 2D patch budget.
    shrink_for_min_batch: bool


#: nnU-Net's ExperimentPlanner and nnUNetPlannerResEncM (its constants, 2.8.1).
PLANNERS = {
    "default": PlannerRules("default", REFERENCE_FEATURE_MAPS, MAX_DATASET_COVERED, residual=False,
                            shrink_for_min_batch=True),
    "resenc_m": PlannerRules("resenc_m", {3: 680_000_000, 2: 135_000_000}, 1.0, residual=True,
                             shrink_for_min_batch=False),
}


@dataclass(frozen=True)
class Topology:
    """Result of nnU-Net's pooling rules for one patch size (``get_pool_and_conv_props``)."""

    strides: tuple[tuple[int, ...], ...]  # stage 0 is all ones
    kernel_sizes: tuple[tuple[int, ...], ...]
    patch_size: tuple[int, ...]  # input patch padded to a multiple of 2**pools per axis
    pools_per_axis: tuple[int, ...]
    stop_reason: str  # why pooling stopped, for error messages

    @property
    def n_stages(self) -> int:
        return len(self.strides)

    @property
    def divisor(self) -> tuple[int, ...]:
        """Each patch axis must be a multiple of this (2**pools)."""
        return tuple(2 ** p for p in self.pools_per_axis)


# --------------------------------------------------------------------------- spacing / shape


def target_spacing(fingerprint: Fingerprint) -> np.ndarray:
    """Per-axis median spacing; a strongly anisotropic axis gets its 10th percentile instead.

    nnU-Net avoids the median on e.g. (10, 1.5, 1.5) data because many cases have finer
    slices and would be resampled with heavy interpolation artifacts.
    """
    spacings = np.asarray(fingerprint.spacings, dtype=np.float64)
    shapes = np.asarray(fingerprint.shapes_after_crop, dtype=np.float64)
    target = np.percentile(spacings, 50, axis=0)
    median_size = np.percentile(shapes, 50, axis=0)
    worst = int(np.argmax(target))
    others = [i for i in range(len(target)) if i != worst]
    other_spacings = [target[i] for i in others]
    other_sizes = [median_size[i] for i in others]
    aniso_spacing = target[worst] > ANISOTROPY_THRESHOLD * max(other_spacings)
    aniso_voxels = median_size[worst] * ANISOTROPY_THRESHOLD < min(other_sizes)
    if aniso_spacing and aniso_voxels:
        spacing_of_axis = float(np.percentile(spacings[:, worst], 10))
        if spacing_of_axis < max(other_spacings):
            spacing_of_axis = max(max(other_spacings), spacing_of_axis) + 1e-5
        target[worst] = spacing_of_axis
    return target


def transpose_forward(spacing: Sequence[float]) -> tuple[int, ...]:
    """The axis with the largest spacing goes first (nnU-Net's ``determine_transpose``)."""
    first = int(np.argmax(spacing))
    return (first, *[i for i in range(len(spacing)) if i != first])


def median_shape_after_resampling(fingerprint: Fingerprint, spacing: Sequence[float]) -> np.ndarray:
    """Median over cases of each case's shape resampled to ``spacing`` (not transposed)."""
    new_shapes = [
        [int(round(old_sp / new_sp * size)) for old_sp, new_sp, size in zip(case_spacing, spacing, shape)]
        for case_spacing, shape in zip(fingerprint.spacings, fingerprint.shapes_after_crop)
    ]
    return np.median(np.asarray(new_shapes, dtype=np.float64), axis=0)


# --------------------------------------------------------------------------- topology


def pad_shape(shape: Sequence[float], divisor: Sequence[int]) -> tuple[int, ...]:
    """Round each axis up to a multiple of its divisor."""
    padded = []
    for size, div in zip(shape, divisor):
        remainder = size % div
        padded.append(int(size if remainder == 0 else size + div - remainder))
    return tuple(padded)


def pool_and_conv_props(
    spacing: Sequence[float],
    patch_size: Sequence[float],
    min_feature_map_size: int = 4,
    max_stages: int | None = None,
) -> Topology:
    """nnU-Net's ``get_pool_and_conv_props``, optionally stopped after ``max_stages`` stages.

    An axis pools while it has >= 2*min_feature_map_size voxels and its spacing is < 2x the
    finest spacing among poolable axes (a lone pooling axis needs 3*min_feature_map_size).
    A kernel axis becomes 3 once its spacing is within 2x the finest; the bottleneck is all 3.
    """
    dims = len(spacing)
    current_spacing = [float(s) for s in spacing]
    current_size = [float(s) for s in patch_size]
    strides: list[tuple[int, ...]] = [(1,) * dims]
    kernels: list[tuple[int, ...]] = []
    pools = [0] * dims
    kernel = [1] * dims
    while True:
        if max_stages is not None and len(strides) >= max_stages:
            stop = f"capped at {max_stages} stages"
            break
        axes, stop = _poolable_axes(current_spacing, current_size, min_feature_map_size)
        if not axes:
            break
        finest = min(current_spacing)
        kernel = [3 if k == 3 or current_spacing[d] / finest < 2 else 1 for d, k in enumerate(kernel)]
        stride = tuple(2 if d in axes else 1 for d in range(dims))
        for d in axes:
            pools[d] += 1
            current_spacing[d] *= 2
            current_size[d] = float(np.ceil(current_size[d] / 2))
        strides.append(stride)
        kernels.append(tuple(kernel))
    kernels.append((3,) * dims)
    divisor = [2 ** p for p in pools]
    return Topology(tuple(strides), tuple(kernels), pad_shape(patch_size, divisor), tuple(pools), stop)


def _poolable_axes(spacing: list[float], size: list[float], min_fm: int) -> tuple[list[int], str]:
    """Axes allowed to pool at this step, or [] with the reason pooling stops."""
    axes = [d for d in range(len(size)) if size[d] >= 2 * min_fm]
    if not axes:
        return [], f"every axis has fewer than {2 * min_fm} voxels left (bottleneck {_fmt(size)})"
    finest = min(spacing[d] for d in axes)
    axes = [d for d in axes if spacing[d] / finest < 2]
    if len(axes) == 1 and size[axes[0]] < 3 * min_fm:
        return [], (f"only axis {axes[0]} could still pool and a lone axis needs >= {3 * min_fm} voxels "
                    f"(bottleneck {_fmt(size)})")
    return axes, ""


# --------------------------------------------------------------------------- memory estimate


def conv_feature_map_size(
    patch_size: Sequence[int],
    strides: Sequence[Sequence[int]],
    features_per_stage: Sequence[int],
    conv_per_stage: Sequence[int],
    conv_per_stage_decoder: Sequence[int],
    n_classes: int,
    deep_supervision: bool = False,
) -> int:
    """Output voxels x channels of every conv in a PlainConvUNet (DNA's memory proxy).

    Equals DNA's ``PlainConvUNet.compute_conv_feature_map_size``: encoder convs at each
    stage's (floor-divided) size; per decoder stage its convs, the transposed conv and, with
    deep supervision (or at the top), the segmentation head at the skip's size.
    """
    stage_voxels = _stage_voxels(patch_size, strides)
    total = sum(n * f * v for n, f, v in zip(conv_per_stage, features_per_stage, stage_voxels))
    return int(total + _decoder_feature_map_size(stage_voxels, features_per_stage, conv_per_stage_decoder,
                                                 n_classes, deep_supervision))


def residual_encoder_feature_map_size(
    patch_size: Sequence[int],
    strides: Sequence[Sequence[int]],
    features_per_stage: Sequence[int],
    blocks_per_stage: Sequence[int],
    conv_per_stage_decoder: Sequence[int],
    n_classes: int,
    deep_supervision: bool = False,
) -> int:
    """DNA's ``ResidualEncoderUNet.compute_conv_feature_map_size`` (BasicBlockD, default stem).

    The stem is one conv at full size; each BasicBlockD has two convs and, in a stage's first
    block when it strides or changes the width, a projection on the skip path. The decoder is
    the same plain-conv decoder as PlainConvUNet's.
    """
    stage_voxels = _stage_voxels(patch_size, strides)
    in_size = [int(s) for s in patch_size]
    in_features = features_per_stage[0]  # the stem's width
    total = in_features * int(np.prod(in_size, dtype=np.int64))
    for stride, features, blocks, voxels in zip(strides, features_per_stage, blocks_per_stage, stage_voxels):
        size = [s // st for s, st in zip(in_size, stride)]
        projection = features != in_features or size != in_size
        total += 2 * blocks * features * voxels + (features * voxels if projection else 0)
        in_features, in_size = features, size
    return int(total + _decoder_feature_map_size(stage_voxels, features_per_stage, conv_per_stage_decoder,
                                                 n_classes, deep_supervision))


def _stage_voxels(patch_size: Sequence[int], strides: Sequence[Sequence[int]]) -> list[int]:
    """Voxels per stage after its stride (floor division, as DNA counts them)."""
    size = [int(s) for s in patch_size]
    voxels = []
    for stride in strides:
        size = [s // st for s, st in zip(size, stride)]
        voxels.append(int(np.prod(size, dtype=np.int64)))
    return voxels


def _decoder_feature_map_size(stage_voxels, features_per_stage, conv_per_stage_decoder, n_classes,
                              deep_supervision) -> int:
    total = 0
    n_decoder = len(stage_voxels) - 1
    for s in range(n_decoder):
        skip = n_decoder - 1 - s  # decoder runs from the bottleneck up
        voxels, features = stage_voxels[skip], features_per_stage[skip]
        total += conv_per_stage_decoder[s] * features * voxels + features * voxels
        if deep_supervision or s == n_decoder - 1:
            total += n_classes * voxels
    return total


def _topology_estimate(topology: Topology, features: tuple[int, ...], n_classes: int, rules: PlannerRules) -> int:
    """Memory proxy of the planner's network (nnU-Net's ``static_estimate_VRAM_usage``)."""
    n = topology.n_stages
    if rules.residual:
        return residual_encoder_feature_map_size(topology.patch_size, topology.strides, features,
                                                 resenc_m_blocks(n), (RESIDUAL_DECODER_BLOCKS,) * (n - 1), n_classes)
    return conv_feature_map_size(topology.patch_size, topology.strides, features,
                                 (CONV_BLOCKS,) * n, (CONV_DECODER_BLOCKS,) * (n - 1), n_classes)


# --------------------------------------------------------------------------- make_plan


def make_plan(
    fingerprint: Fingerprint,
    max_stages: int | None = None,
    *,
    dims: int = 3,
    base_features: int | None = None,
    max_features: int | None = None,
    min_feature_map_size: int = 4,
    vram_target_gb: float = 8.0,
    planner: str = "default",
) -> Plan:
    """nnU-Net's 3d_fullres (``dims=3``) or 2d plan for a dataset fingerprint.

    ``planner`` is ``"default"`` (nnUNetPlans) or ``"resenc_m"`` (nnUNetResEncUNetMPlans: patch
    and batch sized for a residual encoder). ``max_stages`` caps the stage count below
    nnU-Net's natural one, or lets the topology grow up to it where the largest admissible
    patch (the initial patch clipped to the median shape) supports that many stages; otherwise
    :class:`PlanError` says how many stages the data supports and why.
    """
    _validate_fingerprint(fingerprint)
    _validate_options(fingerprint, max_stages, dims, min_feature_map_size, vram_target_gb)
    rules = planner_rules(planner)
    base = DEFAULT_BASE_FEATURES if base_features is None else base_features
    cap = DEFAULT_MAX_FEATURES[dims] if max_features is None else max_features
    _validate_features(base, cap)

    full_spacing = target_spacing(fingerprint)
    transpose = transpose_forward(full_spacing) if fingerprint.dims == 3 else tuple(range(fingerprint.dims))
    full_median = median_shape_after_resampling(fingerprint, full_spacing)[list(transpose)]
    spacing = full_spacing[list(transpose)][-dims:]
    median = full_median[-dims:]
    if dims == 3 and full_median[0] == 1:
        raise PlanError(f"dataset {fingerprint.name!r} is 2D (median shape {_fmt(full_median)}); use dims=2")
    n_voxels_dataset = float(np.prod(full_median, dtype=np.float64) * fingerprint.n_cases)

    initial = _initial_patch(spacing, median)
    _check_stage_request(initial, spacing, median, min_feature_map_size, max_stages)
    topology = _fit_memory(spacing, median, initial, min_feature_map_size, max_stages,
                           base, cap, fingerprint.n_classes, vram_target_gb, rules)
    features = features_per_stage(topology.n_stages, base, cap)
    batch = _batch_size(topology, features, fingerprint.n_classes, vram_target_gb, n_voxels_dataset, rules)
    n = topology.n_stages
    return Plan(
        dataset_name=fingerprint.name,
        dims=dims,
        patch_size=topology.patch_size,
        spacing=tuple(float(s) for s in spacing),
        median_shape=tuple(int(round(float(m))) for m in median),
        n_stages=n,
        strides=topology.strides,
        kernel_sizes=topology.kernel_sizes,
        features_per_stage=features,
        conv_blocks_per_stage=(CONV_BLOCKS,) * n,
        conv_decoder_blocks_per_stage=(CONV_DECODER_BLOCKS,) * (n - 1),
        residual_blocks_per_stage=resenc_m_blocks(n),
        residual_decoder_blocks_per_stage=(RESIDUAL_DECODER_BLOCKS,) * (n - 1),
        batch_size=batch,
        n_input_channels=fingerprint.n_channels,
        n_classes=fingerprint.n_classes,
        normalization=tuple(normalization_for_channel(c) for c in fingerprint.channel_names),
        base_features=base,
        max_features=cap,
        transpose_forward=tuple(int(t) for t in transpose),
        planner=rules.name,
    )


def planner_rules(planner: str) -> PlannerRules:
    """The rules of a planner name (``"resenc-m"`` is accepted for ``"resenc_m"``, as on the CLI)."""
    key = planner.replace("-", "_") if isinstance(planner, str) else None
    if key not in PLANNERS:
        raise PlanError(f"planner {planner!r} is unknown; expected one of {sorted(PLANNERS)}")
    return PLANNERS[key]


def resenc_m_blocks(n_stages: int) -> tuple[int, ...]:
    """ResEnc M encoder blocks per stage; stages beyond the table keep 6."""
    return tuple(RESENC_M_BLOCKS[i] if i < len(RESENC_M_BLOCKS) else RESENC_M_BLOCKS[-1] for i in range(n_stages))


# nnU-Net's channel_name_to_normalization_mapping (names compared case-folded) -> our schemes.
CHANNEL_NORMALIZATION = {"ct": "ct", "nonorm": "none", "zscore": "zscore", "rescale_to_0_1": "minmax",
                         "rgb_to_0_1": "rgb_to_0_1"}


def normalization_for_channel(channel_name: str) -> str:
    """nnU-Net's scheme for a dataset.json channel name (any case); other names get z-score."""
    return CHANNEL_NORMALIZATION.get(channel_name.casefold(), "zscore")


def features_per_stage(n_stages: int, base: int, cap: int) -> tuple[int, ...]:
    """nnU-Net's features: ``base`` doubling per stage, capped at ``cap``."""
    return tuple(min(cap, base * 2 ** i) for i in range(n_stages))


def _initial_patch(spacing: np.ndarray, median: np.ndarray) -> np.ndarray:
    """Patch with aspect ratio 1/spacing and volume edge**dims, clipped to the median shape."""
    dims = len(spacing)
    inverse = 1 / np.asarray(spacing, dtype=np.float64)
    edge = INITIAL_PATCH_EDGE[dims]
    scaled = [round(float(i)) for i in inverse * (edge ** dims / np.prod(inverse)) ** (1 / dims)]
    return np.array([min(i, float(j)) for i, j in zip(scaled, median)], dtype=np.float64)


def _check_stage_request(initial, spacing, median, min_fm: int, max_stages: int | None) -> None:
    """Refuse a stage count that even the largest admissible patch cannot pool to."""
    largest = pool_and_conv_props(spacing, initial, min_fm)
    if largest.n_stages < 2:
        raise PlanError(f"median shape {_fmt(median)} at spacing {_fmt(spacing)} is too small for a U-Net: "
                        f"{largest.stop_reason}; need at least {2 * min_fm} voxels on some axis")
    if max_stages is not None and largest.n_stages < max_stages:
        raise PlanError(
            f"median shape {_fmt(median)} at spacing {_fmt(spacing)} allows patch {_fmt(largest.patch_size)}, "
            f"which can be pooled {_fmt(largest.pools_per_axis)} times per axis with feature maps >= {min_fm} "
            f"voxels ({largest.stop_reason}): at most {largest.n_stages} stages; "
            f"--max-stages {max_stages} asked for")


def _fit_memory(spacing, median, initial, min_fm, max_stages, base, cap, n_classes, vram_gb,
                rules: PlannerRules) -> Topology:
    """Shrink the patch until the feature-map estimate fits the memory reference (nnU-Net's loop).

    The axis largest relative to the median shape shrinks first, by its current divisor
    recomputed after one step, so that no valid size is skipped. Axes whose reduction would
    lose stages (below ``max_stages``, or below 2) or leave fewer than 2*min_fm voxels are
    skipped; if none is left the plan keeps the patch and warns that it exceeds the memory
    target. For realistic targets nnU-Net's own plans never reach these limits.
    """
    dims = len(spacing)
    min_stages = 2 if max_stages is None else max_stages
    reference = rules.reference_feature_maps[dims] * vram_gb / REFERENCE_GB
    scale = MIN_BATCH_SIZE / REFERENCE_BATCH_SIZE[dims] if rules.shrink_for_min_batch else 1
    topology = pool_and_conv_props(spacing, initial, min_fm, max_stages)
    estimate = _topology_estimate(topology, features_per_stage(topology.n_stages, base, cap), n_classes, rules)
    while estimate * scale > reference:
        smaller = _shrink_once(topology, spacing, median, min_fm, max_stages, min_stages)
        if smaller is None:
            warnings.warn(f"patch {_fmt(topology.patch_size)} with {topology.n_stages} stages needs "
                          f"{estimate:.3g} feature-map voxels, more than the {reference:.3g} of the "
                          f"{vram_gb} GB target; it cannot shrink further without losing stages or "
                          f"thinning an axis below {2 * min_fm} voxels", stacklevel=3)
            break
        topology = smaller
        estimate = _topology_estimate(topology, features_per_stage(topology.n_stages, base, cap), n_classes, rules)
    return topology


def _shrink_once(topology, spacing, median, min_fm, max_stages, min_stages) -> Topology | None:
    """One nnU-Net reduction step on the first axis (by patch/median ratio) that keeps the stages."""
    ratios = [p / float(m) for p, m in zip(topology.patch_size, median)]
    for axis in np.argsort(ratios, kind="stable")[::-1]:
        trial = list(topology.patch_size)
        trial[axis] -= topology.divisor[axis]
        if trial[axis] < 1:
            continue
        step = pool_and_conv_props(spacing, trial, min_fm, max_stages).divisor[axis]
        patch = list(topology.patch_size)
        patch[axis] -= step
        if patch[axis] < 2 * min_fm:  # an axis too thin to pool helps no stage and degrades the patch
            continue
        smaller = pool_and_conv_props(spacing, patch, min_fm, max_stages)
        # padding to the new divisor can restore what the step removed: only a smaller patch is a step
        if smaller.n_stages >= min_stages and np.prod(smaller.patch_size) < np.prod(topology.patch_size):
            return smaller
    return None


def _batch_size(topology, features, n_classes, vram_gb, n_voxels_dataset, rules: PlannerRules) -> int:
    """Fill the memory target, but see at most the planner's share of the dataset's voxels per
    step (default: 5%; ResEnc: all of it), and at least 2."""
    dims = len(topology.patch_size)
    reference = rules.reference_feature_maps[dims] * vram_gb / REFERENCE_GB
    estimate = _topology_estimate(topology, features, n_classes, rules)
    by_memory = round(reference / estimate * REFERENCE_BATCH_SIZE[dims])
    by_coverage = round(n_voxels_dataset * rules.max_dataset_covered
                        / float(np.prod(topology.patch_size, dtype=np.float64)))
    return int(max(min(by_memory, by_coverage), MIN_BATCH_SIZE))


# --------------------------------------------------------------------------- validation


def _validate_fingerprint(fp: Fingerprint) -> None:
    if fp.n_cases == 0:
        raise PlanError(f"fingerprint {fp.name!r} has no cases; expected at least one case's spacing and shape")
    if len(fp.shapes_after_crop) != fp.n_cases:
        raise PlanError(f"fingerprint {fp.name!r} has {fp.n_cases} spacings but {len(fp.shapes_after_crop)} "
                        f"shapes; expected one of each per case")
    dims = len(fp.spacings[0])
    if dims not in (2, 3):
        raise PlanError(f"fingerprint {fp.name!r} has {dims}-dimensional spacing {fp.spacings[0]}; expected 2 or 3")
    for i, (spacing, shape) in enumerate(zip(fp.spacings, fp.shapes_after_crop)):
        if len(spacing) != dims or len(shape) != dims:
            raise PlanError(f"fingerprint {fp.name!r} mixes dimensions: case {i} has spacing {tuple(spacing)} and "
                            f"shape {tuple(shape)}; expected {dims} values each like case 0")
        if not all(np.isfinite(s) and s > 0 for s in spacing):
            raise PlanError(f"fingerprint {fp.name!r} case {i} has spacing {tuple(spacing)}; "
                            f"expected positive finite values")
        if not all(s > 0 for s in shape):
            raise PlanError(f"fingerprint {fp.name!r} case {i} has shape {tuple(shape)}; expected positive sizes")
    if fp.n_channels == 0:
        raise PlanError(f"fingerprint {fp.name!r} has no channels; expected at least one channel name")
    if fp.n_classes < 2:
        raise PlanError(f"fingerprint {fp.name!r} has labels {fp.labels}; expected background and at least "
                        f"one foreground label")


def _validate_options(fp: Fingerprint, max_stages, dims, min_fm, vram_gb) -> None:
    if max_stages is not None and (not _is_int(max_stages) or max_stages < 2):
        raise PlanError(f"max_stages={max_stages!r} is invalid; expected an integer >= 2")
    if dims not in (2, 3) or isinstance(dims, bool):
        raise PlanError(f"dims={dims!r} is invalid; expected 2 or 3")
    if dims > fp.dims:
        raise PlanError(f"dims={dims} asked for, but fingerprint {fp.name!r} is {fp.dims}D")
    if not _is_int(min_fm) or min_fm < 1:
        raise PlanError(f"min_feature_map_size={min_fm!r} is invalid; expected an integer >= 1")
    if isinstance(vram_gb, bool) or not isinstance(vram_gb, (int, float)) or not vram_gb > 0:
        raise PlanError(f"vram_target_gb={vram_gb!r} is invalid; expected a positive number")


def _validate_features(base, cap) -> None:
    if not _is_int(base) or base < 1:
        raise PlanError(f"base_features={base!r} is invalid; expected a positive integer")
    if not _is_int(cap) or cap < base:
        raise PlanError(f"max_features={cap!r} is invalid; expected an integer >= base_features ({base})")


def _is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _fmt(values) -> str:
    """36x50x35 style, integers without a trailing .0."""
    return "x".join(f"{float(v):g}" for v in values)
