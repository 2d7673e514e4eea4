"""The patch-shrinking loop against nnU-Net's own, and at the limits hnas adds (cases found by `make mutation`).

The oracle is nnunetv2 2.8.1's loop (ExperimentPlanner.get_plans_for_configuration) written out with
nnU-Net's own ``get_pool_and_conv_props`` and the feature-map count of DNA's PlainConvUNet, so every
shrink step and its recomputed divisor come from nnU-Net's code, not from hnas.planning.
"""

from __future__ import annotations

import numpy as np
import pytest

from hnas.planning.planner import _initial_patch, _shrink_once, conv_feature_map_size, make_plan, pool_and_conv_props

from .test_planner import fingerprint, shapes_around

REFERENCE = {3: 560_000_000, 2: 85_000_000}
REFERENCE_BATCH = {3: 2, 2: 12}


def dna_estimate(patch, strides, kernels, n_classes, dims):
    import torch
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    n = len(strides)
    conv = torch.nn.Conv3d if dims == 3 else torch.nn.Conv2d
    with torch.device("meta"):
        network = PlainConvUNet(1, n, [min({3: 320, 2: 512}[dims], 32 * 2 ** i) for i in range(n)], conv, kernels,
                                strides, [2] * n, n_classes, [2] * (n - 1), conv_bias=True)
    return network.compute_conv_feature_map_size(patch)


def nnunet_patch(spacing, median, n_classes, max_numpool=999999, vram_gb=8.0):
    """nnU-Net's initial patch and shrink loop (default planner): (patch, strides)."""
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    dims = len(spacing)
    inverse = 1 / np.array(spacing)
    edge = 256 if dims == 3 else 2048
    initial = [round(i) for i in inverse * (edge ** dims / np.prod(inverse)) ** (1 / dims)]
    initial = np.array([min(i, j) for i, j in zip(initial, median)])
    _, strides, kernels, patch, divisible = get_pool_and_conv_props(spacing, initial, 4, max_numpool)
    estimate = dna_estimate(patch, strides, kernels, n_classes, dims)
    while estimate / REFERENCE_BATCH[dims] * 2 > REFERENCE[dims] * vram_gb / 8:
        axis = np.argsort([i / j for i, j in zip(patch, median)])[-1]
        patch = list(patch)
        trial = list(patch)
        trial[axis] -= divisible[axis]
        _, _, _, _, divisible = get_pool_and_conv_props(spacing, trial, 4, max_numpool)
        patch[axis] -= divisible[axis]
        _, strides, kernels, patch, divisible = get_pool_and_conv_props(spacing, patch, 4, max_numpool)
        estimate = dna_estimate(patch, strides, kernels, n_classes, dims)
    return tuple(int(p) for p in patch), tuple(tuple(int(v) for v in s) for s in strides)


CASES = [  # spacing (z, y, x), median shape: every one shrinks from its initial patch
    ((1.0, 1.0, 1.0), (300, 300, 300)),
    ((1.0, 0.8, 0.8), (180, 420, 420)),
    ((2.5, 0.7, 0.7), (90, 512, 512)),
    ((1.2, 1.0, 1.0), (200, 150, 260)),
    ((0.9, 0.9, 1.1), (330, 240, 170)),
    ((4.0, 1.0, 1.0), (60, 330, 300)),
]


@pytest.mark.parametrize("spacing, median", CASES)
@pytest.mark.parametrize("dims", [3, 2])
def test_shrinking_follows_nnunets_loop(spacing, median, dims):
    pytest.importorskip("nnunetv2.experiment_planning.experiment_planners.network_topology")
    fp = fingerprint("shrink", [spacing] * 10, shapes_around(median, 10, 3), n_labels=3)
    plan = make_plan(fp, dims=dims)
    order = plan.transpose_forward
    median_t = [float(median[i]) for i in order][-dims:]
    spacing_t = [float(spacing[i]) for i in order][-dims:]
    patch, strides = nnunet_patch(spacing_t, median_t, n_classes=3)
    assert (plan.patch_size, plan.strides) == (patch, strides)


@pytest.mark.parametrize("median, max_stages, vram_gb", [
    ((40, 64, 64), 2, 0.3), ((40, 64, 64), 3, 0.3), ((30, 100, 80), 2, 0.3), ((30, 100, 80), 3, 0.3),
    ((300, 300, 300), 3, 1.0), ((300, 300, 300), 4, 0.3), ((64, 48, 40), 2, 0.3)])
def test_stage_capped_shrinking_follows_nnunets_loop_with_capped_pooling(median, max_stages, vram_gb):
    """Isotropic data pools every axis at every step, so capping the stages at n is nnU-Net's
    ``max_numpool`` = n - 1: each shrink step uses the capped divisor, no valid size is skipped."""
    pytest.importorskip("nnunetv2.experiment_planning.experiment_planners.network_topology")
    fp = fingerprint("capped", [(1, 1, 1)] * 10, shapes_around(median, 10, 3), n_labels=3)
    plan = make_plan(fp, max_stages=max_stages, vram_target_gb=vram_gb)
    patch, strides = nnunet_patch([1.0] * 3, [float(m) for m in median], 3, max_stages - 1, vram_gb)
    assert (plan.patch_size, plan.strides) == (patch, strides)


def test_the_default_estimate_has_no_deep_supervision_heads():
    """PlainConvUNet's default: only the top decoder stage has a segmentation head."""
    plan = make_plan(fingerprint("plain", [(1, 1, 1)] * 4, [(96, 96, 96)] * 4))
    expected = dna_estimate(plan.patch_size, [list(s) for s in plan.strides],
                            [list(k) for k in plan.kernel_sizes], plan.n_classes, 3)
    assert conv_feature_map_size(plan.patch_size, plan.strides, plan.features_per_stage, (2,) * plan.n_stages,
                                 (2,) * (plan.n_stages - 1), plan.n_classes) == expected


# --------------------------------------------------------------------------- where nnU-Net never goes


def shrink_steps_left(plan, min_fm=4, min_stages=2, max_stages=None):
    """Axes that one more nnU-Net shrink step could still reduce without losing stages or
    thinning the axis below 2 * min_fm (the limits named in the planner's warning)."""
    spacing, patch = plan.spacing, list(plan.patch_size)
    topology = pool_and_conv_props(spacing, patch, min_fm, max_stages)
    left = []
    for axis in range(len(patch)):
        trial = list(patch)
        trial[axis] -= topology.divisor[axis]
        if trial[axis] < 1:
            continue
        step = pool_and_conv_props(spacing, trial, min_fm, max_stages).divisor[axis]
        smaller = list(patch)
        smaller[axis] -= step
        if smaller[axis] < 2 * min_fm:
            continue
        result = pool_and_conv_props(spacing, smaller, min_fm, max_stages)
        # a step that padding undoes (the same or a larger patch) is no step
        if result.n_stages >= min_stages and np.prod(result.patch_size) < np.prod(patch):
            left.append(axis)
    return left


@pytest.mark.parametrize("spacing, median", [((1, 1, 1), (64, 64, 64)), ((1, 1, 1), (40, 96, 72)),
                                             ((3.0, 1.0, 1.0), (40, 160, 160)), ((1, 1), (64, 96))])
def test_a_tiny_memory_target_shrinks_every_axis_as_far_as_allowed(spacing, median):
    fp = fingerprint("tiny", [spacing] * 4, [median] * 4)
    with pytest.warns(UserWarning, match="cannot shrink further"):
        plan = make_plan(fp, dims=len(spacing), vram_target_gb=1e-6)
    assert plan.n_stages >= 2 and min(plan.patch_size) >= 8
    assert shrink_steps_left(plan) == []


@pytest.mark.parametrize("max_stages", [3, 4])
def test_shrinking_under_a_stage_cap_keeps_the_cap(max_stages):
    fp = fingerprint("capped", [(1, 1, 1)] * 4, [(300, 300, 300)] * 4)
    with pytest.warns(UserWarning, match="cannot shrink further"):
        plan = make_plan(fp, max_stages=max_stages, vram_target_gb=1e-6)
    assert plan.n_stages == max_stages
    divisor = pool_and_conv_props(plan.spacing, plan.patch_size, 4, max_stages).divisor
    assert all(p % d == 0 for p, d in zip(plan.patch_size, divisor))
    assert shrink_steps_left(plan, min_stages=max_stages, max_stages=max_stages) == []


@pytest.mark.parametrize("spacing, median", [((1, 1, 1), (16, 16, 16)), ((1, 1, 1), (12, 40, 24)),
                                             ((1, 1, 1), (8, 64, 64)), ((3.0, 1.0, 1.0), (64, 48, 40)),
                                             ((3.0, 1.0, 1.0), (50, 50, 50))])
def test_one_voxel_bottlenecks_still_shrink_every_axis_as_far_as_allowed(spacing, median):
    fp = fingerprint("min1", [spacing] * 4, [median] * 4)
    with pytest.warns(UserWarning, match="cannot shrink further"):
        plan = make_plan(fp, min_feature_map_size=1, vram_target_gb=1e-9)
    assert shrink_steps_left(plan, min_fm=1) == []


@pytest.mark.parametrize("spacing, median, max_stages", [
    ((1, 1, 1), (300, 300, 300), 2), ((1, 1, 1), (160, 96, 200), 3), ((3.0, 1.0, 1.0), (60, 300, 300), 3),
    ((1.0, 1.0, 1.0), (256, 256, 256), 5)])
def test_stage_capped_shrinking_steps_by_the_capped_divisor(spacing, median, max_stages):
    fp = fingerprint("capped", [spacing] * 4, [median] * 4)
    with pytest.warns(UserWarning, match="cannot shrink further"):
        plan = make_plan(fp, max_stages=max_stages, vram_target_gb=1e-9)
    assert plan.n_stages == max_stages
    assert shrink_steps_left(plan, min_stages=max_stages, max_stages=max_stages) == []


def test_a_shrink_step_makes_the_patch_smaller_or_gives_up():
    spacing, median = np.array([4.0, 1.0, 1.0]), np.array([40.0, 64.0, 64.0])
    topology = pool_and_conv_props(spacing, _initial_patch(spacing, median), 1)
    smaller = _shrink_once(topology, spacing, median, 1, None, 2)
    assert smaller is None or np.prod(smaller.patch_size) < np.prod(topology.patch_size)
