"""Analytic cost of a UNetSpec: parameters, FLOPs and activation memory, without torch.

The count walks the same layer structure :func:`hnas.cfgunet.network.build` assembles from DNA
blocks (stems, projection skips, squeeze-excitation, deep-supervision heads), so the search
can rank or filter architectures without allocating a single weight.

* ``parameters``: exactly ``sum(p.numel() for p in build(spec).parameters())``.
* ``flops``: 2 x multiply-accumulates of every convolution (transposed included) in one
  forward pass at batch size 1, the convention of ``torch.utils.flop_counter`` (bias,
  norms and nonlinearities not counted).
* ``activation_elements``: elements of the feature maps a training-mode forward pass
  creates at batch size 1 (conv, norm and its statistics, dropout, pooling and max-pooling indices,
  concatenation, non-in-place nonlinearities, squeeze-excitation gates, segmentation heads)
  - what autograd mostly keeps for the backward pass. ``activation_bytes`` assumes 4 bytes
  per element (float32).

:func:`training_memory` turns these counts into the bytes one training step holds at its peak
(docs/references.md, "Training memory"): weights, gradients and optimizer state from the parameter
count; activations for the whole batch at 2 bytes an element under AMP (4 without; a dropout keeps
its one-byte mask, and the map it read is freed); autocast's float16 copies of the weights; the input
batch and its label; the loss's float32 tensors for each supervised output; and the gradients of the
two largest feature maps alive during the backward pass. Not counted: the CUDA context, cuDNN
workspaces and the caching allocator's rounding and fragmentation (``torch.cuda.max_memory_allocated``
does not count the context either).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hnas.cfgunet.spec import UNetSpec
from hnas.errors import SpecError

INPLACE_NONLINS = frozenset({"leaky_relu", "relu", "elu"})  # built with inplace=True
PARAMETRIC_NONLINS = {"prelu": 1}  # nn.PReLU(): one slope per module
SE_RATIO, SE_DIVISOR = 1 / 16, 8  # DNA's squeeze-excitation reduction


@dataclass(frozen=True)
class Cost:
    parameters: int
    flops: int
    activation_elements: int
    #: of which dropout outputs: autograd keeps their one-byte mask and frees the map dropout read
    dropout_elements: int = 0

    @property
    def activation_bytes(self) -> int:
        """Activation memory in float32 at batch size 1."""
        return 4 * self.activation_elements


#: docs/references.md, "Training memory": bytes per element of float32 and of AMP's float16.
FLOAT32_BYTES, FLOAT16_BYTES = 4, 2
#: Optimizer state in copies of the weights: SGD's momentum buffer; Adam's two moments; AdamW with
#: amsgrad (as hnas builds it) also keeps the running maximum of the second moment.
OPTIMIZER_STATE_COPIES = {"SGD": 1, "Adam": 2, "AdamW": 3}
#: float32 bytes per class and voxel of each supervised output in the loss: the float32 copy of the
#: logits, their softmax, the one-hot target and the cross-entropy's log-softmax.
LOSS_BYTES_PER_CLASS_VOXEL = 16
#: Bytes per voxel of the batch: the float32 image per channel, the int16 label, its float32 copy.
IMAGE_BYTES, LABEL_BYTES, TARGET_BYTES = 4, 2, 4
#: Dropout keeps a one-byte mask per element for the backward pass; the map it read (a conv's output,
#: counted in the activations) is freed instead, as no one keeps it.
DROPOUT_MASK_BYTES = 1
GIB = 2**30


@dataclass(frozen=True)
class TrainingMemory:
    """Bytes one training step holds at its peak, by what holds them (module docstring)."""

    weights: int
    gradients: int
    optimizer_state: int
    weight_copies: int  # autocast's float16 copies of the weights (AMP only)
    activations: int  # what autograd keeps for the backward pass, whole batch
    batch: int  # images, labels and the float32 targets at each supervised scale
    loss: int  # the loss's float32 tensors of each supervised output
    backward: int  # gradients of the two largest feature maps while the backward pass runs

    @property
    def total(self) -> int:
        return (self.weights + self.gradients + self.optimizer_state + self.weight_copies + self.activations
                + self.batch + self.loss + self.backward)


def training_memory(spec: UNetSpec, patch_size, batch_size: int, *, amp: bool = True,
                    optimizer: str = "SGD") -> TrainingMemory:
    """Estimated peak bytes of one training step of ``spec`` (deep supervision as the spec says)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise SpecError(f"batch_size={batch_size!r}; expected a positive integer")
    if optimizer not in OPTIMIZER_STATE_COPIES:
        raise SpecError(f"optimizer={optimizer!r}; expected one of {list(OPTIMIZER_STATE_COPIES)}")
    counted = cost(spec, patch_size)
    sizes = stage_sizes(spec, patch_size)
    element = FLOAT16_BYTES if amp else FLOAT32_BYTES
    weights = FLOAT32_BYTES * counted.parameters
    outputs = [math.prod(size) for size in sizes[:-1]]  # voxels of each decoder output, highest resolution first
    # the lowest output's weight is 0: nnU-Net (and hnas) skip it
    supervised = outputs[:-1] if spec.deep_supervision and len(outputs) > 1 else outputs[:1]
    voxels = math.prod(tuple(patch_size))
    largest_map = max(f * math.prod(size) for f, size in zip(spec.features_per_stage, sizes))
    return TrainingMemory(
        weights=weights, gradients=weights, optimizer_state=OPTIMIZER_STATE_COPIES[optimizer] * weights,
        weight_copies=FLOAT16_BYTES * counted.parameters if amp else 0,
        activations=batch_size * (element * (counted.activation_elements - counted.dropout_elements)
                                  + DROPOUT_MASK_BYTES * counted.dropout_elements),
        batch=batch_size * (voxels * (IMAGE_BYTES * spec.input_channels + LABEL_BYTES)
                            + TARGET_BYTES * sum(supervised)),
        loss=batch_size * LOSS_BYTES_PER_CLASS_VOXEL * spec.n_classes * sum(supervised),
        backward=batch_size * 2 * element * max(largest_map, spec.features_per_stage[0] * voxels))


def training_memory_bytes(spec: UNetSpec, patch_size, batch_size: int, *, amp: bool = True,
                          optimizer: str = "SGD") -> int:
    """:func:`training_memory`'s total."""
    return training_memory(spec, patch_size, batch_size, amp=amp, optimizer=optimizer).total


def cost(spec: UNetSpec, patch_size) -> Cost:
    """Parameters, forward FLOPs and activation elements of ``spec`` on one patch."""
    if not isinstance(spec, UNetSpec):
        raise SpecError(f"cost() needs a UNetSpec, got {type(spec).__name__} {spec!r:.80}")
    sizes = stage_sizes(spec, patch_size)
    tally = _Tally()
    input_size = tuple(patch_size)
    if spec.encoder.kind == "conv":
        _conv_encoder(tally, spec, input_size, sizes)
    else:
        _residual_encoder(tally, spec, input_size, sizes)
    _decoder(tally, spec, sizes)
    return Cost(parameters=tally.parameters, flops=tally.flops, activation_elements=tally.activations,
                dropout_elements=tally.dropout)


def stage_sizes(spec: UNetSpec, patch_size) -> list[tuple[int, ...]]:
    """Feature-map size at each stage; the patch must divide by the total stride on every axis."""
    patch = tuple(patch_size) if isinstance(patch_size, (list, tuple)) else patch_size
    if type(patch) is not tuple or len(patch) != spec.dims or not all(type(p) is int and p >= 1 for p in patch):
        raise SpecError(f"patch_size={patch_size!r}; expected {spec.dims} positive integers")
    total = spec.total_strides
    if any(p % t for p, t in zip(patch, total)):
        raise SpecError(f"patch_size={patch!r} is not a multiple of the network's total stride {total} on every "
                        f"axis; the upsampled maps would not match the skips")
    sizes, size = [], patch
    for stride in spec.strides:
        size = tuple(p // s for p, s in zip(size, stride))
        sizes.append(size)
    return sizes


class _Tally:
    """Running totals; one method per layer type DNA builds."""

    def __init__(self):
        self.parameters = 0
        self.flops = 0
        self.activations = 0
        self.dropout = 0

    def conv_norm_nonlin(self, side, c_in: int, c_out: int, kernel: int, voxels: int, *, bias: bool = True,
                         dropout: bool = False, nonlin: bool = True) -> None:
        """DNA's ConvDropoutNormReLU (kernel = kernel volume, voxels = output voxels)."""
        self.conv(c_in, c_out, kernel, voxels, bias=bias)
        maps = c_out * voxels
        if dropout:
            self.activations += maps
            self.dropout += maps
        self.parameters += 2 * c_out  # affine norm
        self.activations += maps + 2 * c_out  # normalised map; mean and inverse std kept for backward
        if nonlin:
            self.nonlin(side, maps)

    def conv(self, c_in: int, c_out: int, kernel: int, voxels: int, *, bias: bool = True) -> None:
        self.parameters += c_in * c_out * kernel + (c_out if bias else 0)
        self.flops += 2 * c_in * c_out * kernel * voxels
        self.activations += c_out * voxels

    def nonlin(self, side, maps: int) -> None:
        self.parameters += PARAMETRIC_NONLINS.get(side.nonlin, 0)
        if side.nonlin not in INPLACE_NONLINS:
            self.activations += maps

    def pool(self, kind: str, maps: int) -> None:
        """Pooled map; max pooling also keeps its argmax indices for the backward pass."""
        self.activations += 2 * maps if kind == "max" else maps

    def squeeze_excitation(self, channels: int, size: tuple[int, ...]) -> None:
        """DNA's SqueezeExcite averages over axes 2 and 3 only, so a 3D map keeps its last axis."""
        reduced = _make_divisible(channels * SE_RATIO, SE_DIVISOR)
        pooled = 1 if len(size) == 2 else size[-1]
        self.conv(channels, reduced, 1, pooled)
        self.conv(reduced, channels, 1, pooled)
        self.activations += channels * pooled  # the mean
        self.activations += channels * pooled + channels * math.prod(size)  # sigmoid gate, gated map


def _conv_encoder(tally: _Tally, spec: UNetSpec, input_size, sizes) -> None:
    enc = spec.encoder
    c_in = spec.input_channels
    for stage, (features, size) in enumerate(zip(spec.features_per_stage, sizes)):
        voxels = math.prod(size)
        if enc.pool != "conv" and any(s != 1 for s in spec.strides[stage]):
            tally.pool(enc.pool, c_in * voxels)
        kernel = math.prod(spec.kernel_sizes[stage])
        for conv in range(enc.blocks_per_stage[stage]):
            tally.conv_norm_nonlin(enc, c_in if conv == 0 else features, features, kernel, voxels,
                                   dropout=enc.dropout)
        c_in = features


def _residual_encoder(tally: _Tally, spec: UNetSpec, input_size, sizes) -> None:
    enc = spec.encoder
    stem = spec.features_per_stage[0]
    tally.conv_norm_nonlin(enc, spec.input_channels, stem, math.prod(spec.kernel_sizes[0]), math.prod(input_size),
                           dropout=enc.dropout)
    c_in, previous = stem, input_size
    bottleneck = spec.bottleneck_channels
    for stage, (features, size) in enumerate(zip(spec.features_per_stage, sizes)):
        strided = any(s != 1 for s in spec.strides[stage])
        if enc.pool != "conv":  # DNA pools in front of every stage, stride 1 included
            tally.pool(enc.pool, c_in * math.prod(size))
            previous, strided = size, False
        kernel = math.prod(spec.kernel_sizes[stage])
        for index in range(enc.blocks_per_stage[stage]):
            block_in, block_input_size = (c_in, previous) if index == 0 else (features, size)
            block_strided = strided and index == 0
            if bottleneck:
                _bottleneck_block(tally, enc, block_in, bottleneck[stage], features, kernel, block_input_size, size,
                                  block_strided)
            else:
                _basic_block(tally, enc, block_in, features, kernel, size, block_strided, enc.squeeze_excitation)
        c_in, previous = features, size


def _basic_block(tally: _Tally, side, c_in: int, c_out: int, kernel: int, size, strided: bool, se: bool) -> None:
    """DNA's BasicBlockD: conv-norm-nonlin, conv-norm, (SE), + skip, nonlin."""
    voxels = math.prod(size)
    tally.conv_norm_nonlin(side, c_in, c_out, kernel, voxels, dropout=side.dropout)
    tally.conv_norm_nonlin(side, c_out, c_out, kernel, voxels, nonlin=False)
    _block_tail(tally, side, c_in, c_out, size, strided, se)


def _bottleneck_block(tally: _Tally, side, c_in: int, width: int, c_out: int, kernel: int, input_size, size,
                      strided: bool) -> None:
    """DNA's BottleneckD: 1x1 reduce, kxk (strided, dropout), 1x1 expand, (SE), + skip, nonlin."""
    voxels = math.prod(size)
    tally.conv_norm_nonlin(side, c_in, width, 1, math.prod(input_size))
    tally.conv_norm_nonlin(side, width, width, kernel, voxels, dropout=side.dropout)
    tally.conv_norm_nonlin(side, width, c_out, 1, voxels, nonlin=False)
    _block_tail(tally, side, c_in, c_out, size, strided, side.squeeze_excitation)


def _block_tail(tally: _Tally, side, c_in: int, c_out: int, size, strided: bool, se: bool) -> None:
    voxels = math.prod(size)
    if se:
        tally.squeeze_excitation(c_out, size)
    if strided:  # ResNet-D skip: average pooling ...
        tally.activations += c_in * voxels
    if c_in != c_out:  # ... and a bias-free 1x1 projection
        tally.conv_norm_nonlin(side, c_in, c_out, 1, voxels, bias=False, nonlin=False)
    tally.nonlin(side, c_out * voxels)  # the residual add itself is in place


def _decoder(tally: _Tally, spec: UNetSpec, sizes) -> None:
    dec = spec.decoder
    features = spec.features_per_stage
    n_decoder = spec.n_stages - 1
    for index, n_blocks in enumerate(dec.blocks_per_stage):  # from the bottleneck up
        skip_stage = n_decoder - 1 - index
        below, skip = features[skip_stage + 1], features[skip_stage]
        voxels, below_voxels = math.prod(sizes[skip_stage]), math.prod(sizes[skip_stage + 1])
        stride = math.prod(spec.strides[skip_stage + 1])
        tally.parameters += below * skip * stride + skip  # transposed conv (kernel = stride)
        tally.flops += 2 * below * skip * stride * below_voxels
        tally.activations += skip * voxels + 2 * skip * voxels  # upsampled map, concatenation
        kernel = math.prod(spec.kernel_sizes[skip_stage])
        for block in range(n_blocks):
            c_in = 2 * skip if block == 0 else skip
            if dec.kind == "conv":
                tally.conv_norm_nonlin(dec, c_in, skip, kernel, voxels, dropout=dec.dropout)
            else:
                _basic_block(tally, dec, c_in, skip, kernel, sizes[skip_stage], False, False)
        tally.parameters += skip * spec.n_classes + spec.n_classes  # segmentation head, always built
        if spec.deep_supervision or index == n_decoder - 1:
            tally.flops += 2 * skip * spec.n_classes * voxels
            tally.activations += spec.n_classes * voxels


def _make_divisible(value: float, divisor: int) -> int:
    """timm's make_divisible with round_limit=0, as DNA's SqueezeExcite calls it."""
    return max(divisor, int(value + divisor / 2) // divisor * divisor)
