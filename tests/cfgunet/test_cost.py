"""cost(spec, patch): exact parameters and conv FLOPs, activation estimate close to a real forward."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from dynamic_network_architectures.building_blocks.residual import BasicBlockD
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from conftest import isotropic_plan
from hnas.cfgunet import build, compile_architecture, cost
from hnas.cfgunet.cost import training_memory, training_memory_bytes
from hnas.errors import SpecError
from hnas.grammar import GrammarOptions, default_architecture, make_grammar
from hnas.testing.memory import saved_for_backward

from .cfgunet_helpers import make_test_plan, one_torch_thread, random_sentence, tiny_plan  # noqa: F401 (autouse fixture)


class _CreatedElements(TorchDispatchMode):
    """Counts elements of every new (not in-place, not view) tensor the forward pass creates."""

    def __init__(self):
        super().__init__()
        self.elements = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        schema = func._schema
        if not schema.is_mutable and all(r.alias_info is None for r in schema.returns):
            for tensor in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(tensor, torch.Tensor):
                    self.elements += tensor.numel()
        return out


def _random_specs(dims: int, n_stages: int, count: int, seed: int):
    rng = np.random.default_rng(seed)
    plan = tiny_plan(n_stages, dims, base=4, top=24, n_input_channels=2)
    for options in (GrammarOptions(), GrammarOptions.extended()):
        grammar = make_grammar(plan, options)
        for _ in range(count):
            yield plan, compile_architecture(grammar, random_sentence(grammar, rng), plan,
                                             deep_supervision=bool(rng.integers(2)))


CASES = [(2, 2), (2, 4), (2, 6), (3, 3), (3, 4)]


@pytest.mark.parametrize("dims, n_stages", CASES)
def test_parameters_and_flops_are_exact(dims, n_stages):
    for plan, spec in _random_specs(dims, n_stages, 4, seed=10 * dims + n_stages):
        net = build(spec)
        patch = tuple(2 * t for t in spec.total_strides)
        estimate = cost(spec, patch)
        assert estimate.parameters == sum(p.numel() for p in net.parameters()), spec
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            net(torch.randn(1, plan.n_input_channels, *patch))
        assert estimate.flops == counter.get_total_flops(), spec


@pytest.mark.parametrize("dims, n_stages", CASES)
def test_activation_elements_match_a_training_forward(dims, n_stages):
    for plan, spec in _random_specs(dims, n_stages, 3, seed=100 + 10 * dims + n_stages):
        patch = tuple((8 if dims == 2 else 4) * t for t in spec.total_strides)
        net, x = build(spec).train(), torch.randn(1, plan.n_input_channels, *patch)
        with _CreatedElements() as created:
            net(x)
        estimate = cost(spec, patch)
        assert estimate.activation_elements == pytest.approx(created.elements, rel=0.02), spec
        assert estimate.activation_bytes == 4 * estimate.activation_elements


@pytest.mark.parametrize("encoder", ["conv", "residual"])
def test_full_size_default_parameters_equal_dnas(encoder):
    """nnU-Net's 6-stage 3D network (32..320, 31 M parameters for conv), counted on the meta device."""
    plan = isotropic_plan(6)
    spec = compile_architecture(make_grammar(plan), default_architecture(plan, encoder=encoder), plan)
    common = dict(input_channels=1, n_stages=6, features_per_stage=list(plan.features_per_stage), conv_op=nn.Conv3d,
                  kernel_sizes=[[3, 3, 3]] * 6, strides=[list(s) for s in plan.strides], num_classes=3,
                  conv_bias=True, norm_op=nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
                  nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=True)
    with torch.device("meta"):
        if encoder == "conv":
            dna = PlainConvUNet(n_conv_per_stage=[2] * 6, n_conv_per_stage_decoder=[2] * 5, **common)
        else:
            dna = ResidualEncoderUNet(n_blocks_per_stage=[1, 3, 4, 6, 6, 6], n_conv_per_stage_decoder=[1] * 5,
                                      block=BasicBlockD, **common)
    assert cost(spec, plan.patch_size).parameters == sum(p.numel() for p in dna.parameters())


def _hippocampus_spec(hippocampus_plan, text_change=("", "")):
    plan = hippocampus_plan
    text = default_architecture(plan).replace(*text_change) if text_change[0] else default_architecture(plan)
    return compile_architecture(make_grammar(plan), text, plan)


def test_cost_grows_with_patch_and_blocks(hippocampus_plan):
    spec = _hippocampus_spec(hippocampus_plan)
    small, large = cost(spec, (40, 56, 40)), cost(spec, (80, 112, 80))
    assert small.parameters == large.parameters
    assert large.flops > small.flops and large.activation_elements > small.activation_elements
    assert large.flops == pytest.approx(8 * small.flops, rel=0.01)
    deeper = _hippocampus_spec(hippocampus_plan, ("2b down", "4b down"))
    deep_cost = cost(deeper, (40, 56, 40))
    assert deep_cost.parameters > small.parameters and deep_cost.flops > small.flops
    assert deep_cost.activation_elements > small.activation_elements
    # Hippocampus default: ~ 10 GFLOPs at the plan's patch, activations of a few hundred MB in float32.
    assert 1e9 < small.flops < 1e11 and 1e7 < small.activation_bytes < 2e9


def test_deep_supervision_changes_flops_not_parameters(hippocampus_plan):
    spec = _hippocampus_spec(hippocampus_plan)
    on, off = cost(spec, (40, 56, 40)), cost(dataclasses.replace(spec, deep_supervision=False), (40, 56, 40))
    assert on.parameters == off.parameters
    assert on.flops > off.flops and on.activation_elements > off.activation_elements


def test_anisotropic_plan_is_counted_per_axis():
    plan = make_test_plan([(1, 1, 1), (1, 2, 2), (2, 2, 2)], [(1, 3, 3), (3, 3, 3), (3, 3, 3)], (4, 8, 16),
                          patch=(8, 32, 32))
    spec = compile_architecture(make_grammar(plan), default_architecture(plan), plan)
    net = build(spec)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.randn(1, 1, 8, 32, 32))
    assert cost(spec, (8, 32, 32)).flops == counter.get_total_flops()
    assert cost(spec, [8, 32, 32]) == cost(spec, (8, 32, 32))


@pytest.mark.parametrize("patch, message", [
    ((40, 56, 42), r"patch_size=\(40, 56, 42\) is not a multiple of the network's total stride \(8, 8, 8\)"),
    ((40, 56), r"patch_size=\(40, 56\); expected 3 positive integers"),
    ((40, 56, 0), "expected 3 positive integers"),
    ("40x56x40", "expected 3 positive integers"),
])
def test_bad_patch_is_named(patch, message, hippocampus_plan):
    with pytest.raises(SpecError, match=message):
        cost(_hippocampus_spec(hippocampus_plan), patch)


def test_cost_needs_a_spec():
    with pytest.raises(SpecError, match="cost\\(\\) needs a UNetSpec"):
        cost({"dims": 3}, (8, 8, 8))


# ------------------------------------------------------------------ training memory (hnas search --gpu-memory)


def test_training_memory_counts_weights_gradients_and_each_optimizers_state(hippocampus_plan):
    spec, patch = _hippocampus_spec(hippocampus_plan), hippocampus_plan.patch_size
    parameters = cost(spec, patch).parameters
    sgd = training_memory(spec, patch, 2, amp=False, optimizer="SGD")
    assert sgd.weights == sgd.gradients == sgd.optimizer_state == 4 * parameters and sgd.weight_copies == 0
    assert training_memory(spec, patch, 2, amp=False, optimizer="Adam").optimizer_state == 8 * parameters
    assert training_memory(spec, patch, 2, amp=False, optimizer="AdamW").optimizer_state == 12 * parameters  # amsgrad
    assert sgd.total == sum(getattr(sgd, f.name) for f in dataclasses.fields(sgd))
    assert training_memory_bytes(spec, patch, 2, amp=False) == sgd.total


def test_amp_halves_the_activations_and_the_batch_scales_them(hippocampus_plan):
    spec, patch = _hippocampus_spec(hippocampus_plan), hippocampus_plan.patch_size
    fp32, amp = training_memory(spec, patch, 2, amp=False), training_memory(spec, patch, 2, amp=True)
    assert amp.activations * 2 == fp32.activations == 2 * 4 * cost(spec, patch).activation_elements
    assert amp.weight_copies == 2 * cost(spec, patch).parameters and amp.weights == fp32.weights
    four = training_memory(spec, patch, 4, amp=False)
    assert (four.activations, four.batch, four.loss) == (2 * fp32.activations, 2 * fp32.batch, 2 * fp32.loss)
    assert four.weights == fp32.weights


def test_deep_supervision_adds_the_loss_of_every_output_but_the_lowest(hippocampus_plan):
    """Hippocampus: 4 stages, outputs at 40x56x40, 20x28x20, 10x14x10; the lowest has weight 0 and is skipped."""
    spec, patch = _hippocampus_spec(hippocampus_plan), hippocampus_plan.patch_size
    on = training_memory(spec, patch, 1)
    off = training_memory(dataclasses.replace(spec, deep_supervision=False), patch, 1)
    assert off.loss == 16 * spec.n_classes * 40 * 56 * 40
    assert on.loss == 16 * spec.n_classes * (40 * 56 * 40 + 20 * 28 * 20)


@pytest.mark.parametrize("batch, optimizer, message", [
    (0, "SGD", "batch_size=0; expected a positive integer"),
    (True, "SGD", "batch_size=True"),
    (2, "RMSprop", r"optimizer='RMSprop'; expected one of \['SGD', 'Adam', 'AdamW'\]"),
])
def test_bad_training_memory_arguments_are_named(batch, optimizer, message, hippocampus_plan):
    with pytest.raises(SpecError, match=message):
        training_memory(_hippocampus_spec(hippocampus_plan), hippocampus_plan.patch_size, batch, optimizer=optimizer)


def _saved_for_backward(net, x) -> int:
    """Bytes autograd keeps for the backward pass of a training forward (unique storages, parameters left out)."""
    with saved_for_backward(net) as saved:
        net(x)
    return sum(saved.values())


@pytest.mark.parametrize("dims, n_stages", [(2, 3), (3, 3), (3, 4)])
def test_estimated_activations_cover_what_autograd_saves(dims, n_stages):
    """float32, batch 2: the estimate is never below the saved bytes and at most 1.3x them (the upsampled maps
    and the logits are created but kept by no layer of the network itself)."""
    for plan, spec in _random_specs(dims, n_stages, 2, seed=200 + 10 * dims + n_stages):
        patch = tuple(4 * t for t in spec.total_strides)
        saved = _saved_for_backward(build(spec).train(), torch.randn(2, plan.n_input_channels, *patch))
        estimate = training_memory(spec, patch, 2, amp=False).activations
        assert saved <= estimate <= 1.3 * saved, spec
