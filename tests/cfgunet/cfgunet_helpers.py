"""Shared helpers for the cfgunet tests: hand-built plans and random derivations.

Random sentences walk the grammar's choice table with a seeded Generator (uniform per
production), so the tests do not depend on hnas.sampling.
"""

from __future__ import annotations

import numpy as np
import pytest

from hnas.grammar import grammar_info
from hnas.planning import RESENC_M_BLOCKS, Plan


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny networks run faster on one thread; restores the setting for other test modules.

    Autouse in the modules that import it; torch is imported here, not at the top, so the
    torch-free tests that share these helpers stay torch-free.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_test_plan(strides, kernels, features, *, patch, n_classes=3, n_input_channels=1, name="T") -> Plan:
    """A Plan with the given topology and nnU-Net's default block counts."""
    n, dims = len(strides), len(patch)
    return Plan(
        dataset_name=name, dims=dims, patch_size=tuple(patch), spacing=(1.0,) * dims, median_shape=tuple(patch),
        n_stages=n, strides=tuple(tuple(s) for s in strides), kernel_sizes=tuple(tuple(k) for k in kernels),
        features_per_stage=tuple(features), conv_blocks_per_stage=(2,) * n,
        conv_decoder_blocks_per_stage=(2,) * (n - 1),
        residual_blocks_per_stage=tuple(RESENC_M_BLOCKS[min(i, len(RESENC_M_BLOCKS) - 1)] for i in range(n)),
        residual_decoder_blocks_per_stage=(1,) * (n - 1), batch_size=2, n_input_channels=n_input_channels,
        n_classes=n_classes, normalization=("zscore",) * n_input_channels)


def tiny_plan(n_stages: int, dims: int, *, base: int = 4, top: int = 16, n_input_channels: int = 1) -> Plan:
    """Isotropic plan with tiny features; the patch is twice the total stride (2 voxels at the bottleneck)."""
    strides = [(1,) * dims] + [(2,) * dims] * (n_stages - 1)
    features = [min(top, base * 2 ** i) for i in range(n_stages)]
    return make_test_plan(strides, [(3,) * dims] * n_stages, features, patch=(2 ** n_stages,) * dims,
                          n_input_channels=n_input_channels, name=f"Tiny{dims}D{n_stages}")


def random_sentence(grammar: str, rng: np.random.Generator) -> str:
    """A uniformly drawn (per production) sentence of ``grammar``."""
    info = grammar_info(grammar)
    words: list[str] = []
    stack = [info.start]
    while stack:
        symbol = stack.pop()
        if symbol in info.words:
            words.append(info.words[symbol])
            continue
        choice = info.choices[symbol]
        alternative = choice.alternatives[rng.integers(choice.size)]
        stack.extend(s.name for s in reversed(alternative))
    return " ".join(words)
