"""make_plan / plan_from_nnunet against nnU-Net v2's published plans, with hand-built fingerprints."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from hnas.data.fingerprint import Fingerprint
from hnas.errors import PlanError
from hnas.planning.plan import Plan
from hnas.planning import plan_from_nnunet
from hnas.planning.planner import (
    PLANNERS,
    REFERENCE_FEATURE_MAPS,
    conv_feature_map_size,
    make_plan,
    pool_and_conv_props,
    residual_encoder_feature_map_size,
    target_spacing,
)


def shapes_around(median, n_cases, spread, seed=0):
    """Shapes scattered symmetrically around ``median`` so that their per-axis median is exact."""
    rng = np.random.default_rng(seed)
    median = np.asarray(median)
    offsets = rng.integers(-spread, spread + 1, size=(n_cases // 2, len(median)))
    shapes = [median + offsets, median - offsets] + ([median[None]] if n_cases % 2 else [])
    return tuple(tuple(int(v) for v in row) for row in np.concatenate(shapes))


def fingerprint(name, spacings, shapes, channels=("MRI",), n_labels=3):
    labels = (("background", 0),) + tuple((f"label{i}", i) for i in range(1, n_labels))
    return Fingerprint(name=name, spacings=tuple(tuple(map(float, s)) for s in spacings),
                       shapes_after_crop=tuple(tuple(s) for s in shapes), channel_names=tuple(channels),
                       labels=labels)


@pytest.fixture(scope="module")
def hippocampus():
    return fingerprint("Dataset004_Hippocampus", [(1, 1, 1)] * 260, shapes_around((36, 50, 35), 260, 6))


@pytest.fixture(scope="module")
def prostate():
    return fingerprint("Dataset005_Prostate", [(3.6, 0.625, 0.625)] * 32, shapes_around((20, 320, 319), 32, 3),
                       channels=("T2", "ADC"))


@pytest.fixture(scope="module")
def large_isotropic():
    return fingerprint("synthetic128", [(1, 1, 1)] * 20, shapes_around((128, 128, 128), 20, 5), n_labels=2)


@pytest.fixture(scope="module")
def huge_isotropic():
    return fingerprint("huge", [(1, 1, 1)] * 20, shapes_around((300, 300, 300), 20, 5), channels=("CT",))


# --------------------------------------------------------------------------- nnU-Net's published plans


def test_hippocampus_matches_nnunet_3d_fullres(hippocampus):
    plan = make_plan(hippocampus)
    assert plan == Plan(
        dataset_name="Dataset004_Hippocampus", dims=3, patch_size=(40, 56, 40), spacing=(1.0, 1.0, 1.0),
        median_shape=(36, 50, 35), n_stages=4, strides=((1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2)),
        kernel_sizes=((3, 3, 3),) * 4, features_per_stage=(32, 64, 128, 256),
        conv_blocks_per_stage=(2, 2, 2, 2), conv_decoder_blocks_per_stage=(2, 2, 2),
        residual_blocks_per_stage=(1, 3, 4, 6), residual_decoder_blocks_per_stage=(1, 1, 1),
        batch_size=9, n_input_channels=1, n_classes=3, normalization=("zscore",),
        base_features=32, max_features=320, transpose_forward=(0, 1, 2))


def test_hippocampus_matches_nnunet_2d(hippocampus):
    plan = make_plan(hippocampus, dims=2)
    assert (plan.patch_size, plan.n_stages, plan.batch_size) == ((56, 40), 4, 366)
    assert plan.strides == ((1, 1), (2, 2), (2, 2), (2, 2))
    assert plan.kernel_sizes == ((3, 3),) * 4
    assert plan.features_per_stage == (32, 64, 128, 256) and plan.max_features == 512
    assert plan.spacing == (1.0, 1.0) and plan.median_shape == (50, 35)


def test_prostate_matches_nnunet_task005_3d_fullres(prostate):
    plan = make_plan(prostate)
    assert plan.spacing == (3.6, 0.625, 0.625) and plan.median_shape == (20, 320, 319)
    assert plan.patch_size == (20, 320, 256)
    assert plan.n_stages == 7
    assert plan.strides == ((1, 1, 1), (1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2), (1, 2, 2))
    assert plan.kernel_sizes == ((1, 3, 3), (1, 3, 3)) + ((3, 3, 3),) * 5
    assert plan.features_per_stage == (32, 64, 128, 256, 320, 320, 320)
    assert plan.residual_blocks_per_stage == (1, 3, 4, 6, 6, 6, 6)
    assert plan.batch_size == 2
    assert plan.n_input_channels == 2 and plan.normalization == ("zscore", "zscore")


def test_large_isotropic_gives_six_stages(large_isotropic):
    plan = make_plan(large_isotropic)
    assert plan.patch_size == (128, 128, 128)
    assert plan.n_stages == 6
    assert plan.strides == ((1, 1, 1),) + ((2, 2, 2),) * 5
    assert plan.features_per_stage == (32, 64, 128, 256, 320, 320)
    assert plan.batch_size == 2


def hippocampus_folder() -> Path:
    default = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "Dataset004_Hippocampus"
    folder = Path(os.environ.get("HNAS_HIPPOCAMPUS", default))
    if not (folder / "dataset.json").is_file():
        pytest.skip(f"real hippocampus dataset not found at {folder} (set HNAS_HIPPOCAMPUS)")
    return folder


def test_real_hippocampus_headers_give_nnunet_topology():
    """The shared copy has 208 of MSD's 260 cases, so the 5% coverage cap gives batch 7, not 9."""
    nib = pytest.importorskip("nibabel")
    folder = hippocampus_folder()
    images = [nib.load(path) for path in sorted((folder / "imagesTr").glob("*_0000.nii.gz"))]
    # nibabel gives (x, y, z); nnU-Net's numpy order is reversed. MSD cases are pre-cropped.
    fp = fingerprint("Dataset004_Hippocampus", [img.header.get_zooms()[::-1] for img in images],
                     [img.shape[::-1] for img in images])
    plan = make_plan(fp)
    assert (plan.median_shape, plan.patch_size, plan.n_stages) == ((36, 50, 35), (40, 56, 40), 4)
    # the 5% dataset-coverage cap binds (memory alone would allow 58)
    assert plan.batch_size == round(36 * 50 * 35 * len(images) * 0.05 / (40 * 56 * 40))
    resenc = make_plan(fp, planner="resenc_m")  # nnUNetResEncUNetMPlans: no 5% cap, its own memory reference
    assert (len(images), resenc.patch_size, resenc.batch_size) == (208, (40, 56, 40), 58)


# --------------------------------------------------------------------------- rules


def test_anisotropic_axis_uses_10th_percentile_spacing():
    z_spacings = [2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0]
    fp = fingerprint("aniso", [(z, 0.7, 0.7) for z in z_spacings], [(20, 300, 300)] * 10)
    assert target_spacing(fp) == pytest.approx([np.percentile(z_spacings, 10), 0.7, 0.7])


def test_anisotropic_spacing_is_median_when_that_axis_has_many_voxels():
    fp = fingerprint("aniso", [(z, 0.7, 0.7) for z in (2.0, 3.0, 5.0, 5.0, 5.0)], [(200, 300, 300)] * 5)
    assert target_spacing(fp) == pytest.approx([5.0, 0.7, 0.7])


def test_largest_spacing_axis_goes_first_and_2d_slices_along_it():
    fp = fingerprint("sagittal", [(0.8, 0.8, 4.0)] * 10, [(200, 180, 30)] * 10)
    plan3d = make_plan(fp)
    assert plan3d.transpose_forward == (2, 0, 1)
    assert plan3d.spacing == (4.0, 0.8, 0.8) and plan3d.median_shape == (30, 200, 180)
    assert plan3d.kernel_sizes[0] == (1, 3, 3) and plan3d.strides[1] == (1, 2, 2)
    plan2d = make_plan(fp, dims=2)
    assert plan2d.spacing == (0.8, 0.8) and plan2d.median_shape == (200, 180)


def test_padding_makes_patch_divisible_by_strides(prostate, hippocampus, large_isotropic):
    for fp in (prostate, hippocampus, large_isotropic):
        plan = make_plan(fp)
        divisor = np.prod(np.asarray(plan.strides), axis=0)
        assert all(p % d == 0 for p, d in zip(plan.patch_size, divisor))


def test_lone_axis_needs_three_times_min_feature_map():
    topology = pool_and_conv_props((1.0, 1.0, 1.0), (10, 20, 10), min_feature_map_size=4)
    # 10x20x10 -> 5x10x5: only y could pool further but 10 < 12
    assert topology.strides == ((1, 1, 1), (2, 2, 2))
    assert "lone axis" in topology.stop_reason


def test_ct_channel_gets_ct_normalization():
    fp = fingerprint("ct", [(1, 1, 1)] * 4, [(64, 64, 64)] * 4, channels=("Ct", "PET", "mri"))
    assert make_plan(fp).normalization == ("ct", "zscore", "zscore")


def test_lower_vram_target_gives_smaller_patch(large_isotropic):
    small = make_plan(large_isotropic, vram_target_gb=2.0)
    assert np.prod(small.patch_size) < 128 ** 3


def test_feature_options_are_used(hippocampus):
    plan = make_plan(hippocampus, base_features=16, max_features=64)
    assert plan.features_per_stage == (16, 32, 64, 64)
    assert (plan.base_features, plan.max_features) == (16, 64)


# --------------------------------------------------------------------------- max_stages


def test_max_stages_caps_the_topology(hippocampus):
    plan = make_plan(hippocampus, max_stages=3)
    assert plan.n_stages == 3
    assert plan.strides == ((1, 1, 1), (2, 2, 2), (2, 2, 2))
    assert len(plan.kernel_sizes) == len(plan.features_per_stage) == 3
    assert len(plan.conv_decoder_blocks_per_stage) == len(plan.residual_decoder_blocks_per_stage) == 2
    assert plan.patch_size == (36, 52, 36)  # padded to multiples of 2**2 only


def test_max_stages_equal_to_natural_count_changes_nothing(hippocampus):
    assert make_plan(hippocampus, max_stages=4) == make_plan(hippocampus)


def test_max_stages_beyond_what_the_patch_allows_explains_why(hippocampus):
    with pytest.raises(PlanError) as info:
        make_plan(hippocampus, max_stages=6)
    message = str(info.value)
    assert "at most 4 stages" in message and "6" in message
    assert "36x50x35" in message and "40x56x40" in message


def test_max_stages_grows_where_the_patch_allows(huge_isotropic):
    natural = make_plan(huge_isotropic)
    assert natural.n_stages == 6
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grown = make_plan(huge_isotropic, max_stages=7)
    assert grown.n_stages == 7
    divisor = np.prod(np.asarray(grown.strides), axis=0)
    assert all(p % d == 0 for p, d in zip(grown.patch_size, divisor))
    estimate = conv_feature_map_size(grown.patch_size, grown.strides, grown.features_per_stage,
                                     grown.conv_blocks_per_stage, grown.conv_decoder_blocks_per_stage,
                                     grown.n_classes)
    assert estimate <= REFERENCE_FEATURE_MAPS[3]  # batch 2 fits the 8 GB reference (made for batch 2)


def test_stages_kept_over_memory_target_warn(huge_isotropic):
    with pytest.warns(UserWarning, match="7 stages .* 0.5 GB target"):
        plan = make_plan(huge_isotropic, max_stages=7, vram_target_gb=0.5)
    assert plan.n_stages == 7 and plan.batch_size == 2
    assert min(plan.patch_size) >= 8  # no axis is thinned below what can pool


def test_smaller_min_feature_map_allows_more_stages(hippocampus):
    plan = make_plan(hippocampus, max_stages=5, min_feature_map_size=2)
    assert plan.n_stages == 5


@pytest.mark.parametrize("bad", [1, 0, -3, 2.5, "4", True])
def test_invalid_max_stages_is_named(hippocampus, bad):
    with pytest.raises(PlanError, match="max_stages"):
        make_plan(hippocampus, max_stages=bad)


# --------------------------------------------------------------------------- validation


def test_empty_fingerprint_is_refused():
    with pytest.raises(PlanError, match="no cases"):
        make_plan(fingerprint("empty", [], []))


def test_mixed_dimensions_are_refused():
    fp = fingerprint("mixed", [(1, 1, 1), (1, 1)], [(30, 30, 30), (30, 30)])
    with pytest.raises(PlanError, match=r"case 1 .*\(1\.0, 1\.0\)"):
        make_plan(fp)


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_non_positive_spacing_is_refused(bad):
    fp = fingerprint("bad", [(1, 1, 1), (1, bad, 1)], [(30, 30, 30)] * 2)
    with pytest.raises(PlanError, match=f"case 1 has spacing .*{bad}"):
        make_plan(fp)


def test_2d_dataset_needs_dims_2():
    fp = fingerprint("flat", [(999, 0.5, 0.5)] * 6, [(1, 256, 256)] * 6)
    with pytest.raises(PlanError, match="dims=2"):
        make_plan(fp)
    assert make_plan(fp, dims=2).patch_size == (256, 256)


def test_native_2d_fingerprint():
    fp = fingerprint("2d", [(0.5, 0.5)] * 6, [(200, 180)] * 6)
    plan = make_plan(fp, dims=2)
    assert plan.dims == 2 and plan.transpose_forward == (0, 1) and len(plan.patch_size) == 2
    with pytest.raises(PlanError, match="dims=3"):
        make_plan(fp, dims=3)


def test_too_small_images_are_refused():
    fp = fingerprint("tiny", [(1, 1, 1)] * 3, [(6, 6, 6)] * 3)
    with pytest.raises(PlanError, match="too small"):
        make_plan(fp)


# --------------------------------------------------------------------------- JSON, memory estimate, imports


def test_plan_json_round_trip(hippocampus, prostate, tmp_path):
    for plan in (make_plan(hippocampus), make_plan(prostate), make_plan(hippocampus, dims=2)):
        assert Plan.from_json(plan.to_json()) == plan
        plan.save(tmp_path / "plan.json")
        assert Plan.load(tmp_path / "plan.json") == plan


def test_plan_without_transpose_still_loads(hippocampus):
    data = make_plan(hippocampus).to_dict()
    del data["transpose_forward"]
    assert Plan.from_dict(data).transpose_forward is None


@pytest.mark.parametrize("which", ["hippocampus", "prostate", "hippocampus2d"])
@pytest.mark.parametrize("deep_supervision", [False, True])
def test_numpy_estimate_equals_dna(which, deep_supervision, request):
    torch = pytest.importorskip("torch")
    unet = pytest.importorskip("dynamic_network_architectures.architectures.unet")
    fp = request.getfixturevalue(which.removesuffix("2d"))
    plan = make_plan(fp, dims=2 if which.endswith("2d") else 3)
    conv_op = torch.nn.Conv3d if plan.dims == 3 else torch.nn.Conv2d
    with torch.device("meta"):  # no weights needed to count feature maps
        net = unet.PlainConvUNet(plan.n_input_channels, plan.n_stages, plan.features_per_stage, conv_op,
                                 plan.kernel_sizes, plan.strides, plan.conv_blocks_per_stage, plan.n_classes,
                                 plan.conv_decoder_blocks_per_stage, deep_supervision=deep_supervision)
    expected = int(net.compute_conv_feature_map_size(plan.patch_size))
    assert conv_feature_map_size(plan.patch_size, plan.strides, plan.features_per_stage,
                                 plan.conv_blocks_per_stage, plan.conv_decoder_blocks_per_stage,
                                 plan.n_classes, deep_supervision) == expected


def test_planner_does_not_import_torch():
    code = "import sys, hnas.planning; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# --------------------------------------------------------------------------- nnU-Net plans files


def nnunet_hippocampus_plans(**arch_overrides):
    """Minimal nnUNetPlans.json as nnU-Net 2.4+ writes it for Dataset004_Hippocampus."""
    arch_kwargs = {
        "n_stages": 4, "features_per_stage": [32, 64, 128, 256],
        "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [[3, 3, 3]] * 4,
        "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
        "n_conv_per_stage": [2, 2, 2, 2], "n_conv_per_stage_decoder": [2, 2, 2],
    }
    arch_kwargs.update(arch_overrides)
    return {
        "dataset_name": "Dataset004_Hippocampus",
        "transpose_forward": [0, 1, 2],
        "configurations": {
            "3d_fullres": {
                "batch_size": 9, "patch_size": [40, 56, 40], "median_image_size_in_voxels": [36.0, 50.0, 35.0],
                "spacing": [1.0, 1.0, 1.0], "normalization_schemes": ["ZScoreNormalization"],
                "architecture": {
                    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                    "arch_kwargs": arch_kwargs,
                },
            },
            "3d_big": {"inherits_from": "3d_fullres", "batch_size": 4},
        },
    }


HIPPOCAMPUS_DATASET_JSON = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "Anterior": 1,
                                                                      "Posterior": 2}}


def test_plan_from_nnunet_equals_make_plan(hippocampus):
    plan = plan_from_nnunet(nnunet_hippocampus_plans(), dataset_json=HIPPOCAMPUS_DATASET_JSON)
    assert plan == make_plan(hippocampus)


def test_plan_from_nnunet_reads_files_and_inheritance(tmp_path):
    (tmp_path / "nnUNetPlans.json").write_text(json.dumps(nnunet_hippocampus_plans()))
    (tmp_path / "dataset.json").write_text(json.dumps(HIPPOCAMPUS_DATASET_JSON))
    plan = plan_from_nnunet(tmp_path / "nnUNetPlans.json", configuration="3d_big")
    assert plan.batch_size == 4 and plan.patch_size == (40, 56, 40) and plan.n_classes == 3


def test_plan_from_nnunet_residual_encoder():
    plans = nnunet_hippocampus_plans(n_blocks_per_stage=[1, 3, 4, 6], n_conv_per_stage_decoder=[1, 1, 1])
    del plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["n_conv_per_stage"]
    plan = plan_from_nnunet(plans, dataset_json=HIPPOCAMPUS_DATASET_JSON)
    assert plan.residual_blocks_per_stage == (1, 3, 4, 6)
    assert plan.residual_decoder_blocks_per_stage == (1, 1, 1)
    assert plan.conv_blocks_per_stage == (2, 2, 2, 2) and plan.conv_decoder_blocks_per_stage == (2, 2, 2)


@pytest.mark.parametrize("scheme, name", [("ZScoreNormalization", "zscore"), ("CTNormalization", "ct"),
                                          ("RescaleTo01Normalization", "minmax"), ("NoNormalization", "none"),
                                          ("RGBTo01Normalization", "rgb_to_0_1")])
def test_plan_from_nnunet_maps_normalisation_schemes(scheme, name):
    plans = nnunet_hippocampus_plans()
    plans["configurations"]["3d_fullres"]["normalization_schemes"] = [scheme]
    assert plan_from_nnunet(plans, dataset_json=HIPPOCAMPUS_DATASET_JSON).normalization == (name,)


def test_plan_from_nnunet_names_an_unsupported_normalisation():
    plans = nnunet_hippocampus_plans()
    plans["configurations"]["3d_fullres"]["normalization_schemes"] = ["HistogramNormalization"]
    with pytest.raises(PlanError, match="'HistogramNormalization'.*RGBTo01Normalization"):
        plan_from_nnunet(plans, dataset_json=HIPPOCAMPUS_DATASET_JSON)


def test_plan_from_nnunet_refuses_pre_2_4_plans():
    plans = nnunet_hippocampus_plans()
    config = plans["configurations"]["3d_fullres"]
    del config["architecture"]
    config["pool_op_kernel_sizes"] = [[1, 1, 1], [2, 2, 2]]
    with pytest.raises(PlanError, match="pool_op_kernel_sizes.*2.4"):
        plan_from_nnunet(plans, dataset_json=HIPPOCAMPUS_DATASET_JSON)


def test_plan_from_nnunet_names_missing_configuration_and_labels():
    with pytest.raises(PlanError, match="'2d'.*3d_fullres"):
        plan_from_nnunet(nnunet_hippocampus_plans(), "2d", dataset_json=HIPPOCAMPUS_DATASET_JSON)
    with pytest.raises(PlanError, match="dataset_json"):
        plan_from_nnunet(nnunet_hippocampus_plans())


# --------------------------------------------------------------------------- ResEnc M planner (nnUNetResEncUNetMPlans)
# Expected values are what nnU-Net 2.8.1's own nnUNetPlannerResEncM.get_plans_for_configuration returns
# for the same target spacing, median shape and dataset voxel count (run outside the test suite: its
# planner module needs SimpleITK and scikit-image, which the venv lacks).


@pytest.mark.parametrize("n_cases", [208, 260])  # the shared copy has 208 cases, MSD's task 260
def test_resenc_m_hippocampus_matches_nnunet(n_cases):
    fp = fingerprint("Dataset004_Hippocampus", [(1, 1, 1)] * n_cases, shapes_around((36, 50, 35), n_cases, 6))
    plan = make_plan(fp, planner="resenc_m")
    assert (plan.patch_size, plan.batch_size, plan.n_stages) == ((40, 56, 40), 58, 4)
    assert plan.planner == "resenc_m"
    assert plan.residual_blocks_per_stage == (1, 3, 4, 6) and plan.residual_decoder_blocks_per_stage == (1, 1, 1)
    # memory binds, not coverage: ResEnc M lets a batch see the whole dataset (the default planner: 5%)
    assert make_plan(fp).batch_size == {208: 7, 260: 9}[n_cases]
    plan2d = make_plan(fp, dims=2, planner="resenc_m")
    assert (plan2d.patch_size, plan2d.batch_size) == ((56, 40), 1618)


def test_resenc_m_prostate_matches_nnunet(prostate):
    plan = make_plan(prostate, planner="resenc_m")
    assert (plan.patch_size, plan.batch_size) == ((20, 256, 256), 2)  # the default planner: 20x320x256
    assert plan.strides == make_plan(prostate).strides
    assert (make_plan(prostate, dims=2, planner="resenc_m").patch_size,
            make_plan(prostate, dims=2, planner="resenc_m").batch_size) == ((320, 320), 32)


def test_resenc_m_2d_shrinks_only_until_the_reference_batch_fits():
    """ResEnc's loop compares the estimate itself with the reference (the default: estimate * 2/12)."""
    fp = fingerprint("natural", [(999, 0.5, 0.5)] * 6, [(1, 1024, 1024)] * 6, channels=("R", "G", "B"))
    resenc = make_plan(fp, dims=2, planner="resenc_m")
    assert (resenc.patch_size, resenc.batch_size) == ((512, 512), 12)
    estimate = residual_encoder_feature_map_size(resenc.patch_size, resenc.strides, resenc.features_per_stage,
                                                 resenc.residual_blocks_per_stage,
                                                 resenc.residual_decoder_blocks_per_stage, resenc.n_classes)
    assert estimate <= PLANNERS["resenc_m"].reference_feature_maps[2]


def test_resenc_m_anisotropic_and_large_match_nnunet(huge_isotropic):
    aniso = fingerprint("aniso", [(5.0, 0.7, 0.7)] * 10, shapes_around((30, 400, 400), 10, 4))
    assert make_plan(aniso, planner="resenc_m").patch_size == (24, 256, 256)
    assert make_plan(aniso, dims=2, planner="resenc_m").batch_size == 16
    huge = make_plan(huge_isotropic, planner="resenc_m")
    assert (huge.patch_size, huge.batch_size, huge.n_stages) == ((128, 128, 128), 2, 6)


# --------------------------------------------------------------------------- batch size, by nnU-Net's formula
# nnunetv2 2.8.1, ExperimentPlanner.get_plans_for_configuration (and nnUNetPlannerResEncM's), written out:
#   estimate  = the planner's network (built as nnU-Net builds it) .compute_conv_feature_map_size(patch)
#   batch     = round(reference / estimate * reference_batch)      reference: 560e6 / 85e6 (3D / 2D) for an
#               8 GB target, ResEnc M 680e6 / 135e6; reference_batch 2 (3D) / 12 (2D)
#   cap       = round(n_voxels_dataset * max_dataset_covered / prod(patch))   0.05 (default), 1 (ResEnc M)
#   batch     = max(min(batch, cap), 2)
# n_voxels_dataset = prod(median shape after resampling) * numTraining, the 3D count also for the 2d plan.

NNUNET_BATCH_RULES = {  # planner: (class, reference per dims, max_dataset_covered, encoder blocks, decoder blocks)
    "default": ("dynamic_network_architectures.architectures.unet.PlainConvUNet", {3: 560_000_000, 2: 85_000_000},
                0.05, (2,) * 14, (2,) * 13),
    "resenc_m": ("dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
                 {3: 680_000_000, 2: 135_000_000}, 1.0, (1, 3, 4, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6), (1,) * 12),
}


def nnunet_batch_size(plan, fp, planner):
    """nnU-Net's batch size for ``plan``'s patch and topology, its network built by nnunetv2's own code."""
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    network_class, references, covered, encoder_blocks, decoder_blocks = NNUNET_BATCH_RULES[planner]
    n, dims = plan.n_stages, plan.dims
    features = tuple(min({3: 320, 2: 512}[dims], 32 * 2 ** i) for i in range(n))  # _features_per_stage
    blocks = "n_conv_per_stage" if planner == "default" else "n_blocks_per_stage"
    norm = "torch.nn.InstanceNorm3d" if dims == 3 else "torch.nn.InstanceNorm2d"
    arch_kwargs = {
        "n_stages": n, "features_per_stage": features, "conv_op": f"torch.nn.Conv{dims}d",
        "kernel_sizes": [list(k) for k in plan.kernel_sizes], "strides": [list(s) for s in plan.strides],
        blocks: encoder_blocks[:n], "n_conv_per_stage_decoder": decoder_blocks[:n - 1], "conv_bias": True,
        "norm_op": norm, "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None,
        "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
    with torch.device("meta"):  # only the feature-map count is needed
        network = get_network_from_plans(network_class, arch_kwargs, ("conv_op", "norm_op", "dropout_op", "nonlin"),
                                         len(fp.channel_names), len(fp.labels), allow_init=False)
    estimate = network.compute_conv_feature_map_size(plan.patch_size)
    by_memory = round(references[dims] * (8 / 8) / estimate * {3: 2, 2: 12}[dims])
    # every fixture below has one spacing for all cases, so resampling keeps the shapes
    assert len(set(fp.spacings)) == 1
    n_voxels = float(np.prod(np.median(np.array(fp.shapes_after_crop), axis=0), dtype=np.float64) * fp.n_cases)
    by_coverage = round(n_voxels * covered / np.prod(plan.patch_size, dtype=np.float64))
    return max(min(by_memory, by_coverage), 2), by_memory, by_coverage


@pytest.mark.parametrize("planner", ["default", "resenc_m"])
@pytest.mark.parametrize("which,dims", [("hippocampus", 3), ("hippocampus", 2), ("hippocampus208", 3),
                                        ("prostate", 3), ("prostate", 2), ("large_isotropic", 3),
                                        ("large_isotropic", 2), ("huge_isotropic", 3), ("huge_isotropic", 2)])
def test_batch_size_follows_nnunets_formula(which, dims, planner, request):
    pytest.importorskip("nnunetv2.utilities.get_network_from_plans")
    if which == "hippocampus208":  # the shared copy's case count: the 5% cap binds at 7
        fp = fingerprint("Dataset004_Hippocampus", [(1, 1, 1)] * 208, shapes_around((36, 50, 35), 208, 6))
    else:
        fp = request.getfixturevalue(which)
    plan = make_plan(fp, dims=dims, planner=planner)
    expected, by_memory, by_coverage = nnunet_batch_size(plan, fp, planner)
    assert plan.batch_size == expected, f"memory allows {by_memory}, coverage {by_coverage}"


def test_batch_size_branches_by_hand(hippocampus, large_isotropic):
    """The dataset cap by hand. Hippocampus (median 36x50x35 = 63,000 voxels), default planner: 3d patch
    40x56x40 -> round(63000 * 260 * 0.05 / 89600) = round(9.14) = 9 (208 cases: round(7.31) = 7); 2d patch
    56x40 -> round(63000 * 260 * 0.05 / 2240) = round(365.6) = 366. ResEnc M covers the whole dataset: its
    caps (183 and 7312) do not bind. 20 cases of 128^3 with a 128^3 patch: the cap is round(20 * 0.05) = 1,
    and the floor of 2 wins."""
    assert make_plan(hippocampus).batch_size == round(63000 * 260 * 0.05 / (40 * 56 * 40)) == 9
    fp208 = fingerprint("Dataset004_Hippocampus", [(1, 1, 1)] * 208, shapes_around((36, 50, 35), 208, 6))
    assert make_plan(fp208).batch_size == round(63000 * 208 * 0.05 / (40 * 56 * 40)) == 7
    assert make_plan(hippocampus, dims=2).batch_size == round(63000 * 260 * 0.05 / (56 * 40)) == 366
    assert make_plan(hippocampus, planner="resenc_m").batch_size < round(63000 * 260 / (40 * 56 * 40)) == 183
    large = make_plan(large_isotropic)
    assert large.patch_size == (128, 128, 128) and round(20 * 0.05) == 1 and large.batch_size == 2


@pytest.mark.parametrize("which", ["hippocampus", "prostate", "hippocampus2d"])
@pytest.mark.parametrize("deep_supervision", [False, True])
def test_residual_estimate_equals_dna(which, deep_supervision, request):
    torch = pytest.importorskip("torch")
    unet = pytest.importorskip("dynamic_network_architectures.architectures.unet")
    fp = request.getfixturevalue(which.removesuffix("2d"))
    plan = make_plan(fp, dims=2 if which.endswith("2d") else 3, planner="resenc_m")
    conv_op = torch.nn.Conv3d if plan.dims == 3 else torch.nn.Conv2d
    with torch.device("meta"):  # no weights needed to count feature maps
        net = unet.ResidualEncoderUNet(plan.n_input_channels, plan.n_stages, plan.features_per_stage, conv_op,
                                       plan.kernel_sizes, plan.strides, plan.residual_blocks_per_stage,
                                       plan.n_classes, plan.residual_decoder_blocks_per_stage,
                                       deep_supervision=deep_supervision)
    expected = int(net.compute_conv_feature_map_size(plan.patch_size))
    assert residual_encoder_feature_map_size(plan.patch_size, plan.strides, plan.features_per_stage,
                                             plan.residual_blocks_per_stage,
                                             plan.residual_decoder_blocks_per_stage, plan.n_classes,
                                             deep_supervision) == expected


def test_planner_is_recorded_and_default_plans_keep_their_json(hippocampus):
    resenc = make_plan(hippocampus, planner="resenc-m")  # the CLI's spelling
    assert resenc.planner == "resenc_m" and Plan.from_json(resenc.to_json()) == resenc
    default = make_plan(hippocampus)
    assert default.planner == "default" and "planner" not in default.to_dict()
    assert Plan.from_json(default.to_json()) == default


@pytest.mark.parametrize("bad", ["resenc_l", "", None])
def test_unknown_planner_is_named(hippocampus, bad):
    with pytest.raises(PlanError, match=f"planner {bad!r} is unknown; expected one of .*resenc_m"):
        make_plan(hippocampus, planner=bad)


def test_plan_from_nnunet_resenc_m_equals_make_plan(hippocampus):
    plans = nnunet_hippocampus_plans(n_blocks_per_stage=[1, 3, 4, 6], n_conv_per_stage_decoder=[1, 1, 1])
    del plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["n_conv_per_stage"]
    plans["plans_name"] = "nnUNetResEncUNetMPlans"
    plans["configurations"]["3d_fullres"]["batch_size"] = 58
    assert plan_from_nnunet(plans, dataset_json=HIPPOCAMPUS_DATASET_JSON) == make_plan(hippocampus, planner="resenc_m")
    plans["plans_name"] = "nnUNetResEncUNetLPlans"
    assert plan_from_nnunet(plans, dataset_json=HIPPOCAMPUS_DATASET_JSON).planner == "nnUNetResEncUNetLPlans"


CHANNEL_NAMES = ("noNorm", "NONORM", "rescale_to_0_1", "RGB_to_0_1", "CT", "zScore", "T2", "MRI")


def test_channel_names_map_to_nnunets_schemes():
    fp = fingerprint("channels", [(1, 1, 1)] * 4, [(64, 64, 64)] * 4, channels=CHANNEL_NAMES)
    assert make_plan(fp).normalization == ("none", "none", "minmax", "rgb_to_0_1", "ct", "zscore", "zscore",
                                           "zscore")


def test_channel_names_agree_with_nnunet_and_its_plans():
    mapping = pytest.importorskip("nnunetv2.preprocessing.normalization.map_channel_name_to_normalization")
    fp = fingerprint("channels", [(1, 1, 1)] * 4, [(64, 64, 64)] * 4, channels=CHANNEL_NAMES)
    plans = nnunet_hippocampus_plans()
    plans["configurations"]["3d_fullres"]["normalization_schemes"] = [
        mapping.get_normalization_scheme(name).__name__ for name in CHANNEL_NAMES]
    assert plan_from_nnunet(plans, dataset_json=HIPPOCAMPUS_DATASET_JSON).normalization == make_plan(fp).normalization


def test_cli_plans_a_dataset_with_the_resenc_m_planner(tmp_path, capsys):
    from hnas.cli import main
    from hnas.data import make_synthetic_dataset

    root = make_synthetic_dataset(tmp_path / "data", n_cases=4, shape=(24, 32, 28), seed=0)
    assert main(["plan", str(root), "--planner", "resenc-m", "-o", str(tmp_path / "plan.json")]) == 0
    out = capsys.readouterr().out
    saved = Plan.load(tmp_path / "plan.json")
    assert saved.planner == "resenc_m" and saved.residual_blocks_per_stage[:2] == (1, 3)
    assert re.search(r"^planner\s+resenc_m$", out, re.M) and re.search(rf"^batch size\s+{saved.batch_size}$", out, re.M)


def test_cli_refuses_another_planner_for_an_nnunet_plans_file(tmp_path, capsys):
    from hnas.cli import main

    (tmp_path / "nnUNetPlans.json").write_text(json.dumps(nnunet_hippocampus_plans()))
    (tmp_path / "dataset.json").write_text(json.dumps(HIPPOCAMPUS_DATASET_JSON))
    assert main(["plan", str(tmp_path / "nnUNetPlans.json"), "--planner", "resenc-m"]) == 1
    assert "holds plans of planner 'default'; give the dataset folder" in capsys.readouterr().err


def test_nnunet_plans_without_a_dataset_json_beside_them_say_where_it_belongs(tmp_path, capsys):
    from hnas.cli import main

    plans = tmp_path / "nnUNetPlans.json"
    plans.write_text(json.dumps(nnunet_hippocampus_plans()))
    assert main(["plan", str(plans)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "plan_from_nnunet" not in err
    assert f"expected the dataset's dataset.json beside {str(plans)!r} (nnU-Net copies it into " in err
    with pytest.raises(PlanError, match=r"Python: pass dataset_json="):
        plan_from_nnunet(nnunet_hippocampus_plans())
