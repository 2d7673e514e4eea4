"""Scale presets override only plan and trainer fields."""

from __future__ import annotations

import math

import pytest

from hnas.errors import TrainingError
from hnas.train import TrainSetup, cpu_preset, gpu_preset, preset
from hnas.train.presets import shrink_patch

from .conftest import tiny_plan


def _six_stage_plan():
    return tiny_plan(patch_size=(128, 128, 128), n_stages=6, strides=((1, 1, 1),) + ((2, 2, 2),) * 5,
                     kernel_sizes=((3, 3, 3),) * 6, features_per_stage=(32, 64, 128, 256, 320, 320),
                     conv_blocks_per_stage=(2,) * 6, conv_decoder_blocks_per_stage=(2,) * 5,
                     residual_blocks_per_stage=(1, 3, 4, 6, 6, 6), residual_decoder_blocks_per_stage=(1,) * 5,
                     batch_size=2, base_features=32, max_features=320)


def test_cpu_preset_shrinks_features_patch_and_batch():
    plan = _six_stage_plan()
    small = cpu_preset().apply(plan)
    assert small.features_per_stage == (8, 16, 32, 64, 64, 64)
    assert math.prod(small.patch_size) <= cpu_preset().max_patch_voxels
    assert all(p % 32 == 0 for p in small.patch_size)  # every stage kept
    assert small.batch_size == 2 and small.n_stages == plan.n_stages and small.strides == plan.strides
    text = cpu_preset().describe(plan)
    assert "cpu" in text and "x".join(map(str, small.patch_size)) in text and "8..64" in text


def test_every_preset_validates_with_nnunets_half_window_overlap():
    # Windows without overlap cost the built-in data's default network 0.81 -> 0.52 Dice (presets.py).
    assert cpu_preset().overlap == gpu_preset().overlap == 0.5
    assert "window overlap 0.5" in cpu_preset().describe()


def test_gpu_preset_is_nnunets():
    plan = _six_stage_plan()
    assert gpu_preset().apply(plan) == plan
    assert gpu_preset().iterations_per_epoch == 250 and (gpu_preset().min_epochs, gpu_preset().max_epochs) == (10, 1000)
    assert preset("nnunet") is gpu_preset() and preset("cpu") is cpu_preset()
    with pytest.raises(TrainingError, match="'huge'"):
        preset("huge")


def test_shrinking_stops_at_one_stride_per_axis():
    assert shrink_patch(_six_stage_plan(), 1) == (32, 32, 32)
    assert shrink_patch(tiny_plan(patch_size=(40, 56, 40)), 40 * 56 * 40) == (40, 56, 40)


def test_setup_from_preset(tiny_dataset, cache_dir):
    plan = tiny_plan()
    setup = TrainSetup.from_preset(cpu_preset(), dataset=tiny_dataset, plan=plan, grammar="", cache_dir=cache_dir,
                                   num_workers=0)
    assert setup.iterations_per_epoch == cpu_preset().iterations_per_epoch and setup.num_workers == 0
    assert setup.plan.base_features == 8 and setup.max_epochs == cpu_preset().max_epochs
