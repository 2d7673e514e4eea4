"""build(spec): the default derivation is exactly nnU-Net's network; every derivation runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from dynamic_network_architectures.architectures.abstract_arch import test_submodules_loadable as check_dna_keys
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from dynamic_network_architectures.building_blocks.regularization import SqueezeExcite
from dynamic_network_architectures.building_blocks.residual import BasicBlockD, BottleneckD
from dynamic_network_architectures.building_blocks.unet_residual_decoder import UNetResDecoder
from torch import nn

from conftest import isotropic_plan
from hnas.cfgunet import HnasUNet, build, compile_architecture
from hnas.errors import SpecError
from hnas.grammar import GrammarOptions, default_architecture, make_grammar

from .cfgunet_helpers import make_test_plan, one_torch_thread, random_sentence, tiny_plan  # noqa: F401 (autouse fixture)


def anisotropic_plan():
    """Prostate-like: no pooling along the coarse axis at high resolution, 1x3x3 kernels there."""
    return make_test_plan([(1, 1, 1), (1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2)],
                          [(1, 3, 3), (1, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3)], (8, 16, 32, 64, 64),
                          patch=(16, 64, 64), n_input_channels=2, name="Anisotropic")


def plans_for_equivalence(hippocampus_plan):
    six = isotropic_plan(6, base=4, top=40, name="Six3D")
    two_d = isotropic_plan(6, dims=2, base=8, top=64, name="Six2D")
    return {"hippocampus": (hippocampus_plan, (16, 16, 16)), "six_stages_3d": (six, (64, 64, 64)),
            "anisotropic": (anisotropic_plan(), (8, 32, 32)), "2d": (two_d, (64, 64))}


def dna_network(plan, encoder: str, deep_supervision: bool = True, initialise: bool = True) -> nn.Module:
    """The network nnU-Net v2 builds for ``plan`` (3d_fullres / ResEnc M), initialised as nnU-Net does."""
    conv_op, norm_op = (nn.Conv3d, nn.InstanceNorm3d) if plan.dims == 3 else (nn.Conv2d, nn.InstanceNorm2d)
    common = dict(input_channels=plan.n_input_channels, n_stages=plan.n_stages,
                  features_per_stage=list(plan.features_per_stage), conv_op=conv_op,
                  kernel_sizes=[list(k) for k in plan.kernel_sizes], strides=[list(s) for s in plan.strides],
                  num_classes=plan.n_classes, conv_bias=True, norm_op=norm_op,
                  norm_op_kwargs={"eps": 1e-5, "affine": True}, dropout_op=None, dropout_op_kwargs=None,
                  nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=deep_supervision)
    if encoder == "conv":
        network = PlainConvUNet(n_conv_per_stage=list(plan.conv_blocks_per_stage),
                                n_conv_per_stage_decoder=list(plan.conv_decoder_blocks_per_stage), **common)
    else:
        network = ResidualEncoderUNet(n_blocks_per_stage=list(plan.residual_blocks_per_stage),
                                      n_conv_per_stage_decoder=list(plan.residual_decoder_blocks_per_stage),
                                      block=BasicBlockD, **common)
    if initialise:
        network.apply(network.initialize)
    return network


def default_network(plan, encoder: str, deep_supervision: bool = True) -> nn.Module:
    spec = compile_architecture(make_grammar(plan), default_architecture(plan, encoder=encoder), plan,
                                deep_supervision=deep_supervision)
    return build(spec)


def n_parameters(network: nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())


@pytest.mark.parametrize("encoder", ["conv", "residual"])
@pytest.mark.parametrize("which", ["hippocampus", "six_stages_3d", "anisotropic", "2d"])
def test_default_derivation_is_exactly_dnas_network(which, encoder, hippocampus_plan):
    plan, input_size = plans_for_equivalence(hippocampus_plan)[which]
    torch.manual_seed(0)
    ours, theirs = default_network(plan, encoder), dna_network(plan, encoder)
    assert n_parameters(ours) == n_parameters(theirs)
    assert repr(ours.encoder) == repr(theirs.encoder) and repr(ours.decoder) == repr(theirs.decoder)
    assert ours.compute_conv_feature_map_size(input_size) == theirs.compute_conv_feature_map_size(input_size)
    theirs.load_state_dict(ours.state_dict(), strict=True)  # ours -> DNA
    ours.load_state_dict(theirs.state_dict(), strict=True)  # DNA -> ours
    x = torch.randn(1, plan.n_input_channels, *input_size)
    with torch.no_grad():
        mine, reference = ours.eval()(x), theirs.eval()(x)
    assert len(mine) == len(reference) == plan.n_stages - 1
    for a, b in zip(mine, reference):
        assert torch.equal(a, b)


@pytest.mark.parametrize("encoder", ["conv", "residual"])
def test_full_size_six_stage_default_matches_dna_on_meta(encoder):
    """nnU-Net's default 6-stage 3D network (32..320), compared without allocating weights."""
    plan = isotropic_plan(6)
    spec = compile_architecture(make_grammar(plan), default_architecture(plan, encoder=encoder), plan)
    with torch.device("meta"):
        ours, theirs = HnasUNet(spec), dna_network(plan, encoder, initialise=False)
    assert n_parameters(ours) == n_parameters(theirs)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    assert list(ours.state_dict()) == list(theirs.state_dict())


@pytest.mark.parametrize("encoder", ["conv", "residual"])
def test_initialisation_is_nnunets(encoder):
    plan = isotropic_plan(4, base=16, top=64)
    torch.manual_seed(0)
    ours, theirs = default_network(plan, encoder), dna_network(plan, encoder)
    for (name, mine), (_, reference) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        assert torch.isfinite(mine).all(), name
        if mine.ndim == 1:  # norm weights/biases (ones, zeros, zeroed last norms) and conv biases (zero)
            assert torch.equal(mine, reference), name
        elif mine.numel() > 10_000:  # He normal, a = 1e-2; torch's fan_in is dim 1 x kernel (transposed too)
            fan_in = mine[0].numel()
            assert mine.std().item() == pytest.approx(math.sqrt(2 / (1 + 1e-4) / fan_in), rel=0.05), name
            assert mine.std().item() == pytest.approx(reference.std().item(), rel=0.05), name
    zeroed = [n for n, p in ours.named_parameters() if n.endswith("norm.weight") and not p.any()]
    assert bool(zeroed) == (encoder == "residual")


def test_batch_norm_buffers_are_reset():
    plan = tiny_plan(3, 2)
    text = ("unet conv_encoder batch_norm relu no_dropout 1b down 1b down 1b "
            "conv_decoder batch_norm relu no_dropout up 1b up 1b")
    net = build(compile_architecture(make_grammar(plan), text, plan))
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(not m.running_mean.any() and torch.equal(m.running_var, torch.ones_like(m.running_var))
                         and m.num_batches_tracked.item() == 0 for m in norms)


def _forward_and_check(spec, plan):
    net = build(spec)
    size = tuple(2 * t for t in spec.total_strides)  # instance norm needs > 1 voxel at the bottleneck
    x = torch.randn(1, plan.n_input_channels, *size)
    outputs = net(x)
    assert isinstance(outputs, list) and len(outputs) == spec.n_stages - 1
    expected = size
    for stage, output in enumerate(outputs):
        assert output.shape == (1, plan.n_classes, *expected), (stage, spec)
        expected = tuple(e // s for e, s in zip(expected, spec.strides[stage + 1]))
    sum(o.float().mean() for o in outputs).backward()
    net.decoder.deep_supervision = False
    with torch.no_grad():
        single = net.eval()(x)
    assert isinstance(single, torch.Tensor) and single.shape == (1, plan.n_classes, *size)


@pytest.mark.parametrize("dims, n", [(2, n) for n in range(2, 9)] + [(3, n) for n in range(2, 6)])
def test_random_derivations_build_and_run(dims, n):
    rng = np.random.default_rng(1000 * dims + n)
    plan = tiny_plan(n, dims, n_input_channels=2)
    for options in (GrammarOptions(), GrammarOptions.extended()):
        grammar = make_grammar(plan, options)
        for _ in range(2):
            spec = compile_architecture(grammar, random_sentence(grammar, rng), plan,
                                        dropout_rate=float(rng.uniform(0, 0.5)))
            _forward_and_check(spec, plan)


EXTENDED = {
    "conv_max_pool": ("unet conv_encoder instance_norm leaky_relu no_dropout max_pool 2b down 2b down 2b "
                      "conv_decoder instance_norm leaky_relu no_dropout up 2b up 2b", [nn.MaxPool3d]),
    "conv_avg_pool": ("unet conv_encoder instance_norm leaky_relu no_dropout avg_pool 2b down 2b down 2b "
                      "conv_decoder instance_norm leaky_relu no_dropout up 2b up 2b", [nn.AvgPool3d]),
    "res_max_pool_bottleneck": ("unet res_encoder instance_norm relu no_dropout max_pool bottleneck_block no_se "
                                "1b down 2b down 2b conv_decoder instance_norm relu no_dropout up 1b up 1b",
                                [nn.MaxPool3d, BottleneckD]),
    "res_se": ("unet res_encoder batch_norm elu dropout conv_pool basic_block se 1b down 2b down 2b "
               "conv_decoder instance_norm relu no_dropout up 1b up 1b", [SqueezeExcite, BasicBlockD]),
    "res_decoder": ("unet conv_encoder instance_norm gelu no_dropout avg_pool 1b down 1b down 1b "
                    "res_decoder batch_norm prelu dropout up 2b up 1b", [UNetResDecoder, nn.PReLU]),
}


@pytest.mark.parametrize("name", EXTENDED)
def test_extended_choices_build_what_they_say(name):
    text, module_types = EXTENDED[name]
    plan = tiny_plan(3, 3, base=8, top=16)
    spec = compile_architecture(make_grammar(plan, GrammarOptions.extended()), text, plan)
    net = build(spec)
    present = {type(m) for m in net.modules()}
    assert set(module_types) <= present
    check_dna_keys(net)
    _forward_and_check(spec, plan)


@pytest.mark.parametrize("enc, dec", [("batch_norm relu dropout", "instance_norm gelu no_dropout"),
                                      ("instance_norm elu no_dropout", "batch_norm leaky_relu dropout")])
def test_encoder_and_decoder_layers_are_independent(enc, dec):
    plan = tiny_plan(3, 3)
    text = f"unet conv_encoder {enc} 2b down 2b down 2b conv_decoder {dec} up 2b up 2b"
    spec = compile_architecture(make_grammar(plan), text, plan, dropout_rate=0.3)
    net = build(spec)
    encoder_types = {type(m) for m in net.encoder.modules()}
    decoder_types = {type(m) for m in net.decoder.stages.modules()}
    for side, types in (("encoder", encoder_types), ("decoder", decoder_types)):
        setting = getattr(spec, side)
        assert (nn.InstanceNorm3d if setting.norm == "instance" else nn.BatchNorm3d) in types
        assert (nn.BatchNorm3d if setting.norm == "instance" else nn.InstanceNorm3d) not in types
        assert {"relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, "leaky_relu": nn.LeakyReLU}[setting.nonlin] in types
        assert (nn.Dropout3d in types) == setting.dropout
    dropouts = [m for m in net.modules() if isinstance(m, nn.Dropout3d)]
    assert dropouts and all(m.p == 0.3 for m in dropouts)
    _forward_and_check(spec, plan)


def test_hnas_unet_rejects_non_spec():
    with pytest.raises(SpecError, match="HnasUNet needs a UNetSpec"):
        HnasUNet({"dims": 3})


def test_build_keeps_spec_and_dna_keys():
    plan = tiny_plan(3, 3)
    for encoder in ("conv", "residual"):
        spec = compile_architecture(make_grammar(plan), default_architecture(plan, encoder=encoder), plan)
        net = build(spec)
        assert net.spec == spec
        check_dna_keys(net)
