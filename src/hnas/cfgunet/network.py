"""UNetSpec -> torch U-Net assembled from dynamic-network-architectures (DNA) blocks.

DNA's ``PlainConvUNet`` / ``ResidualEncoderUNet`` give encoder and decoder the same norm,
nonlinearity and dropout, so the encoder (``PlainConvEncoder`` / ``ResidualEncoder``) and
decoder (``UNetDecoder`` / ``UNetResDecoder``) are assembled here with separate settings.
Module names and order are DNA's, so the default derivation of a plan gives a network whose
state dict loads strictly into nnU-Net's own (and back).

Building allocates parameters on the meta device and initialises them once (nnU-Net's He
initialisation, residual blocks' last norm zeroed) instead of letting torch initialise every
layer and then overwriting it: that keeps ``build`` as fast as constructing DNA's network.
"""

from __future__ import annotations

import torch
from dynamic_network_architectures.architectures.abstract_arch import AbstractDynamicNetworkArchitectures
from dynamic_network_architectures.building_blocks.helper import (
    convert_dim_to_conv_op,
    get_matching_batchnorm,
    get_matching_dropout,
    get_matching_instancenorm,
)
from dynamic_network_architectures.building_blocks.plain_conv_encoder import PlainConvEncoder
from dynamic_network_architectures.building_blocks.residual import BasicBlockD, BottleneckD
from dynamic_network_architectures.building_blocks.residual_encoders import ResidualEncoder
from dynamic_network_architectures.building_blocks.unet_decoder import UNetDecoder
from dynamic_network_architectures.building_blocks.unet_residual_decoder import UNetResDecoder
from dynamic_network_architectures.initialization.weight_init import InitWeights_He, init_last_bn_before_add_to_0
from torch import nn

from hnas.cfgunet.spec import UNetSpec
from hnas.errors import SpecError

NORM_KWARGS = {"eps": 1e-5, "affine": True}  # nnU-Net's norm settings
HE_NEGATIVE_SLOPE = 1e-2  # nnU-Net's InitWeights_He(1e-2)
NONLINS = {
    "leaky_relu": (nn.LeakyReLU, {"negative_slope": 1e-2, "inplace": True}),
    "relu": (nn.ReLU, {"inplace": True}),
    "elu": (nn.ELU, {"inplace": True}),
    "prelu": (nn.PReLU, {}),
    "gelu": (nn.GELU, {}),
}
_CONV_TYPES = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)  # what InitWeights_He touches


class HnasUNet(AbstractDynamicNetworkArchitectures):
    """A U-Net built from a UNetSpec: ``decoder(encoder(x))`` like DNA's PlainConvUNet.

    nnU-Net toggles ``decoder.deep_supervision``; with it on, the forward returns
    ``n_stages - 1`` outputs, highest resolution first. ``spec`` is kept for reference.
    Constructing the class initialises weights the torch way; :func:`build` does it the
    nnU-Net way (and faster).
    """

    def __init__(self, spec: UNetSpec):
        super().__init__()
        if not isinstance(spec, UNetSpec):
            raise SpecError(f"HnasUNet needs a UNetSpec, got {type(spec).__name__} {spec!r:.80}")
        self.spec = spec
        self.encoder = _encoder(spec)
        self.decoder = _decoder(spec, self.encoder)
        self._set_dna_keys(spec)

    def _set_dna_keys(self, spec: UNetSpec) -> None:
        """The module paths DNA's tools (e.g. nnU-Net pretraining) look up."""
        self.key_to_encoder = "encoder.stages"
        if spec.encoder.kind == "residual":
            self.key_to_stem = "encoder.stem"
            self.keys_to_in_proj = ("encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0")
        else:
            first = "encoder.stages.0." + ("1" if _pools_before_convs(spec, 0) else "0")
            self.key_to_stem = "encoder.stages.0"
            self.keys_to_in_proj = (f"{first}.convs.0.all_modules.0", f"{first}.convs.0.conv")

    def forward(self, x):
        return self.decoder(self.encoder(x))

    def compute_conv_feature_map_size(self, input_size):
        """DNA's feature-map count (nnU-Net's memory proxy) for a patch of ``input_size``."""
        return self.encoder.compute_conv_feature_map_size(input_size) + \
            self.decoder.compute_conv_feature_map_size(input_size)

    @staticmethod
    def initialize(module):
        """nnU-Net's initialisation, applied per module (``net.apply(net.initialize)``)."""
        InitWeights_He(HE_NEGATIVE_SLOPE)(module)
        init_last_bn_before_add_to_0(module)


def build(spec: UNetSpec, device: str | torch.device = "cpu") -> HnasUNet:
    """The network of ``spec`` with nnU-Net's initialisation, on ``device``."""
    with torch.device("meta"):
        network = HnasUNet(spec)
    network.to_empty(device=device)
    initialize_weights(network)
    return network


def initialize_weights(network: nn.Module) -> None:
    """Every parameter and buffer initialised once: He for convs, defaults for the rest.

    Raises SpecError for a module holding tensors it does not know how to initialise,
    so uninitialised memory can never reach training.
    """
    for module in network.modules():
        if isinstance(module, _CONV_TYPES):
            InitWeights_He(HE_NEGATIVE_SLOPE)(module)
        elif _holds_tensors(module):
            if not hasattr(module, "reset_parameters"):
                raise SpecError(f"cannot initialise {type(module).__name__}: it has parameters or buffers "
                                f"but no reset_parameters()")
            module.reset_parameters()
    for module in network.modules():  # after the resets above, which would undo it
        init_last_bn_before_add_to_0(module)


def _holds_tensors(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False))


# ------------------------------------------------------------------------ assembly


def _encoder(spec: UNetSpec) -> nn.Module:
    enc = spec.encoder
    common = dict(input_channels=spec.input_channels, n_stages=spec.n_stages,
                  features_per_stage=list(spec.features_per_stage), conv_op=convert_dim_to_conv_op(spec.dims),
                  kernel_sizes=[list(k) for k in spec.kernel_sizes], strides=[list(s) for s in spec.strides],
                  conv_bias=True, return_skips=True,
                  **_layers(spec, enc.norm, enc.nonlin, enc.dropout))
    if enc.kind == "conv":
        return PlainConvEncoder(n_conv_per_stage=list(enc.blocks_per_stage), nonlin_first=False, pool=enc.pool,
                                **common)
    bottleneck = spec.bottleneck_channels
    return ResidualEncoder(n_blocks_per_stage=list(enc.blocks_per_stage),
                           block=BottleneckD if bottleneck else BasicBlockD,
                           bottleneck_channels=list(bottleneck) if bottleneck else None,
                           disable_default_stem=False, stem_channels=None, pool_type=enc.pool,
                           squeeze_excitation=enc.squeeze_excitation, **common)


def _decoder(spec: UNetSpec, encoder: nn.Module) -> nn.Module:
    dec = spec.decoder
    layers = _layers(spec, dec.norm, dec.nonlin, dec.dropout)
    if not dec.dropout and spec.encoder.dropout:
        # DNA decoders inherit the encoder's dropout when given None; Identity switches it off.
        layers.update(dropout_op=nn.Identity, dropout_op_kwargs={})
    decoder_class = UNetDecoder if dec.kind == "conv" else UNetResDecoder
    return decoder_class(encoder, spec.n_classes, list(dec.blocks_per_stage), spec.deep_supervision,
                         nonlin_first=False, conv_bias=True, **layers)


def _layers(spec: UNetSpec, norm: str, nonlin: str, dropout: bool) -> dict:
    """DNA keyword arguments for one side's norm, nonlinearity and dropout."""
    norm_op = (get_matching_instancenorm if norm == "instance" else get_matching_batchnorm)(dimension=spec.dims)
    nonlin_op, nonlin_kwargs = NONLINS[nonlin]
    return dict(
        norm_op=norm_op, norm_op_kwargs=dict(NORM_KWARGS),
        nonlin=nonlin_op, nonlin_kwargs=dict(nonlin_kwargs),
        dropout_op=get_matching_dropout(dimension=spec.dims) if dropout else None,
        dropout_op_kwargs={"p": float(spec.dropout_rate)} if dropout else None,
    )


def _pools_before_convs(spec: UNetSpec, stage: int) -> bool:
    """PlainConvEncoder puts a pooling layer in front of a stage's convs when it pools there."""
    return spec.encoder.pool != "conv" and any(s != 1 for s in spec.strides[stage])
