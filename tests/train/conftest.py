"""Tiny synthetic data and a 3-stage plan, so the training tests run in seconds on a CPU."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from conftest import isotropic_plan

from hnas.data import make_synthetic_dataset
from hnas.grammar import make_grammar
from hnas.planning.plan import Plan


def tiny_plan(**overrides) -> Plan:
    """A 3-stage isotropic plan with 4..16 features and a 16^3 patch."""
    fields = dict(
        dataset_name="Dataset900_SyntheticBrain", dims=3, patch_size=(16, 16, 16), spacing=(1.0, 1.0, 1.0),
        median_shape=(22, 22, 22), n_stages=3, strides=((1, 1, 1), (2, 2, 2), (2, 2, 2)),
        kernel_sizes=((3, 3, 3),) * 3, features_per_stage=(4, 8, 16), conv_blocks_per_stage=(2, 2, 2),
        conv_decoder_blocks_per_stage=(2, 2), residual_blocks_per_stage=(1, 3, 4),
        residual_decoder_blocks_per_stage=(1, 1), batch_size=2, n_input_channels=1, n_classes=3,
        normalization=("zscore",), base_features=4, max_features=16, transpose_forward=(0, 1, 2))
    fields.update(overrides)
    return Plan(**fields)


def tiny_plan_2d(**overrides) -> Plan:
    """nnU-Net's 2d counterpart of :func:`tiny_plan`: 3 stages, 4..16 features, 16^2 patches of z slices."""
    plan = isotropic_plan(3, dims=2, patch=16, base=4, top=16, name="Dataset900_SyntheticBrain")
    return replace(plan, **{"median_shape": (22, 22), "transpose_forward": (0, 1, 2), **overrides})


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """Six 24^3 synthetic cases (two labels) at 1 mm."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("data"), n_cases=6, shape=(24, 24, 24), seed=3)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("preprocessed")


@pytest.fixture(scope="session")
def tiny_setup(tiny_dataset, cache_dir):
    """Two iterations per epoch of batch 2, no workers, CPU, a 4-epoch schedule."""
    from hnas.train import TrainSetup

    plan = tiny_plan()
    return TrainSetup(dataset=tiny_dataset, plan=plan, grammar=make_grammar(plan), cache_dir=cache_dir, fold=0,
                      iterations_per_epoch=2, batch_size=2, num_workers=0, device="cpu", max_epochs=4, seed=0)
