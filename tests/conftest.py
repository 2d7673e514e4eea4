"""Shared fixtures: hand-built plans (no planner needed) and the optional real dataset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hnas.planning.plan import RESENC_M_BLOCKS, Plan

REPO = Path(__file__).resolve().parents[1]


def isotropic_plan(n_stages: int, *, dims: int = 3, patch: int = 128, base: int = 32, top: int = 320,
                   name: str = "Isotropic") -> Plan:
    """A plan like nnU-Net's for isotropic data: stride 2 everywhere after stage 0."""
    one, two, three = (1,) * dims, (2,) * dims, (3,) * dims
    return Plan(
        dataset_name=name, dims=dims, patch_size=(patch,) * dims, spacing=(1.0,) * dims,
        median_shape=(patch,) * dims, n_stages=n_stages,
        strides=tuple(one if i == 0 else two for i in range(n_stages)),
        kernel_sizes=(three,) * n_stages,
        features_per_stage=tuple(min(top, base * 2 ** i) for i in range(n_stages)),
        conv_blocks_per_stage=(2,) * n_stages, conv_decoder_blocks_per_stage=(2,) * (n_stages - 1),
        residual_blocks_per_stage=tuple(RESENC_M_BLOCKS[min(i, len(RESENC_M_BLOCKS) - 1)] for i in range(n_stages)),
        residual_decoder_blocks_per_stage=(1,) * (n_stages - 1), batch_size=2, n_input_channels=1,
        n_classes=3, normalization=("zscore",), base_features=base, max_features=top)


#: Three labels as the checkpoints of :func:`untrained_checkpoint` carry them by default.
THREE_LABELS = (("background", 0), ("left", 1), ("right", 2))


def untrained_checkpoint(path, plan: Plan, seed: int, labels=THREE_LABELS) -> Path:
    """A checkpoint of ``plan``'s default network with a seeded init (no training): predicting needs only
    weights, plan, labels and a z-score normalisation per input channel. Torch is imported here, so the
    torch-free test packages can import this module."""
    import torch

    from hnas.cfgunet import build, compile_architecture
    from hnas.grammar import default_architecture, make_grammar
    from hnas.train.checkpoint import save_checkpoint
    from hnas.train.preprocessing import ChannelNormalization

    torch.manual_seed(seed)
    spec = compile_architecture(make_grammar(plan), default_architecture(plan), plan, deep_supervision=True)
    network = build(spec, torch.device("cpu"))
    return save_checkpoint(path, {"trainer": {"model": network.state_dict()}, "plan": plan.to_json(),
                                  "spec": spec.to_json(), "labels": [list(pair) for pair in labels],
                                  "normalization": [ChannelNormalization("zscore").to_dict()] * plan.n_input_channels})


@pytest.fixture
def hippocampus_plan() -> Plan:
    """nnU-Net's 3d_fullres plan for Dataset004_Hippocampus."""
    plan = isotropic_plan(4, name="Dataset004_Hippocampus")
    return Plan(**{**plan.to_dict(), "patch_size": (40, 56, 40), "median_shape": (36, 50, 35), "batch_size": 9})


@pytest.fixture
def hippocampus_dir() -> Path:
    """The real MSD hippocampus task in nnU-Net raw format, when present."""
    path = Path(os.environ.get("HNAS_HIPPOCAMPUS", REPO.parent / "shared" / "data" / "Dataset004_Hippocampus"))
    if not (path / "dataset.json").is_file():
        pytest.skip(f"real hippocampus data not found at {path} (set HNAS_HIPPOCAMPUS to its folder)")
    return path


def pytest_collection_modifyitems(config, items):
    """Every test runs in `make test`, slow-marked ones included, except the few marked very_slow (minutes of
    CPU each on 2 cores): those run only with HNAS_SLOW=1 (`make test-slow`)."""
    if os.environ.get("HNAS_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="very slow test (minutes on 2 cores): run with HNAS_SLOW=1 (make test-slow)")
    for item in items:
        if "very_slow" in item.keywords:
            item.add_marker(skip)
