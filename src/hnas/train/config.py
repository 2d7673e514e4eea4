"""Search configurations -> validated training settings and the network to train.

Config keys are the search space's names (docs/references.md, "Search spaces"). The HPO keys set
the trainer; the NAS keys of the ``hpo+nas`` space (encoder_type, model_scale, base_features, max_features, activation,
normalization) change the Plan's features and the architecture string; ``architecture`` (the
``hpo+hnas``/``hnas`` spaces) is a grammar sentence used as is; the pipeline keys of the
``pipeline`` spaces (network_dims, intensity_normalization, spacing_factor) choose the 2D or 3D
plan and change its preprocessing. No torch here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping

from hnas.errors import SearchSpaceError
from hnas.grammar import default_architecture, grammar_options
from hnas.grammar.generator import DROPOUTS, NONLINS, NORMS
from hnas.planning.plan import Plan

TRAINING_OPTIMIZERS = ("SGD", "Adam", "AdamW")
SCHEDULERS = ("PolyLR", "CosineAnnealing", "None")
LOSSES = ("Dice", "DiceCE", "CE", "TopK")
ENCODER_TYPES = ("conv", "residual")
MODEL_SCALES = (0.5, 1.0, 1.5, 2.0)
ACTIVATIONS = {"LeakyReLU": "leaky_relu", "ReLU": "relu", "ELU": "elu", "GELU": "gelu", "PReLU": "prelu"}
NORMALIZATIONS = {"BatchNorm": "batch_norm", "InstanceNorm": "instance_norm"}
NAS_KEYS = ("encoder_type", "model_scale", "base_features", "max_features", "activation", "normalization")
ARCHITECTURE_KEY = "architecture"
NETWORK_DIMS = ("3d", "2d")
#: "nnunet" keeps the plan's per-channel scheme (z-score per image; CT statistics for CT channels).
INTENSITY_NORMALIZATIONS = ("nnunet", "percentile_zscore", "minmax")
SPACING_FACTORS = (0.75, 1.0, 1.25, 1.5, 2.0)
PIPELINE_KEYS = ("network_dims", "intensity_normalization", "spacing_factor")
#: nnU-Net's features (3D) that the NAS feature ranges are expressed against (docs/references.md, "nnU-Net defaults").
NNUNET_BASE_FEATURES, NNUNET_MAX_FEATURES = 32, 320
#: nnU-Net's network, in the NAS keys of the ``hpo+nas`` space (a plain conv encoder at scale 1).
NAS_DEFAULTS = {"encoder_type": "conv", "model_scale": 1.0, "base_features": NNUNET_BASE_FEATURES,
                "max_features": NNUNET_MAX_FEATURES, "activation": "LeakyReLU", "normalization": "InstanceNorm"}


@dataclass(frozen=True)
class TrainConfig:
    """The hyperparameters a trial trains with; defaults are nnU-Net's.

    docs/references.md, "Search spaces" and "nnU-Net defaults". The search vocabulary (the choices
    above and these defaults) is defined here once; hnas.pipeline.spaces builds the spaces from it.
    """

    optimizer: str = "SGD"
    momentum: float = 0.99
    initial_lr: float = 1e-2
    lr_scheduler: str = "PolyLR"
    weight_decay: float = 3e-5
    foreground_oversampling: float = 0.33
    loss: str = "DiceCE"
    aug_factor: float = 1.0
    dropout_rate: float = 0.0

    def __post_init__(self):
        _choice("optimizer", self.optimizer, TRAINING_OPTIMIZERS)
        _number("momentum", self.momentum, 0.0, 1.0, high_open=True)
        _number("initial_lr", self.initial_lr, 0.0, math.inf, low_open=True)
        _choice("lr_scheduler", self.lr_scheduler, SCHEDULERS)
        _number("weight_decay", self.weight_decay, 0.0, math.inf)
        _number("foreground_oversampling", self.foreground_oversampling, 0.0, 1.0)
        _choice("loss", self.loss, LOSSES)
        _number("aug_factor", self.aug_factor, 0.0, math.inf)
        _number("dropout_rate", self.dropout_rate, 0.0, 1.0, high_open=True)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PipelineConfig:
    """The AutoMONAI thesis's pipeline choices; defaults are nnU-Net's 3d_fullres pipeline."""

    network_dims: str = "3d"
    intensity_normalization: str = "nnunet"
    spacing_factor: float = 1.0

    def __post_init__(self):
        _choice("network_dims", self.network_dims, NETWORK_DIMS)
        _choice("intensity_normalization", self.intensity_normalization, INTENSITY_NORMALIZATIONS)
        _number("spacing_factor", self.spacing_factor, 0.0, math.inf, low_open=True)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "PipelineConfig":
        return cls(**{k: config[k] for k in PIPELINE_KEYS if k in config})

    def plan(self, plan: Plan, grammar: str, plan_2d: Plan | None = None,
             grammar_2d: str | None = None) -> tuple[Plan, str]:
        """The plan (and its grammar) these choices train on: 2D or 3D, resampled, renormalised.

        The spacing factor scales the target spacing (coarser > 1, finer < 1); the patch stays,
        so a coarser spacing shows the network more anatomy per patch.
        """
        if self.network_dims == "2d":
            if plan_2d is None or grammar_2d is None:
                raise SearchSpaceError("config key 'network_dims' is '2d' but this setup has no 2D plan; expected "
                                       "a search over a 'pipeline' space (which plans both) or network_dims='3d'")
            plan, grammar = plan_2d, grammar_2d
        if self.spacing_factor != 1.0:
            plan = replace(plan, spacing=tuple(float(s) * self.spacing_factor for s in plan.spacing))
        if self.intensity_normalization != "nnunet":
            plan = replace(plan, normalization=(self.intensity_normalization,) * plan.n_input_channels)
        return plan, grammar


@dataclass(frozen=True)
class NetworkChoice:
    """What to build: the (possibly re-featured or 2D) plan, its grammar, the sentence, its dropout rate."""

    plan: Plan
    architecture: str
    dropout_rate: float
    grammar: str


def train_config(config: Mapping[str, Any]) -> TrainConfig:
    """The HPO part of a search config; unknown keys are refused, NAS keys and the architecture skipped.

    ``momentum`` only acts for SGD (the space makes it conditional); given with Adam/AdamW it is
    ignored rather than refused, so configs written by hand need not know the condition.
    """
    if not isinstance(config, Mapping):
        raise SearchSpaceError(f"config must be a mapping of parameter names to values, got {config!r:.80}")
    known = set(TrainConfig.__dataclass_fields__)
    other = set(NAS_KEYS) | set(PIPELINE_KEYS) | {ARCHITECTURE_KEY}
    unknown = sorted(set(config) - known - other)
    if unknown:
        raise SearchSpaceError(f"config has unknown keys {unknown}; expected some of {sorted(known | other)}")
    return TrainConfig(**{k: v for k, v in config.items() if k in known})


def network_choice(config: Mapping[str, Any], plan: Plan, grammar: str, architecture: str | None = None, *,
                   plan_2d: Plan | None = None, grammar_2d: str | None = None,
                   residual_plan: Plan | None = None) -> NetworkChoice:
    """The network a config asks for on ``plan`` (or on ``plan_2d`` when it asks for a 2D network).

    A sentence with a residual encoder trains with ``residual_plan``'s patch and batch (nnU-Net's
    ResEnc M planner: see :func:`residual_fit`).

    Pipeline keys first pick and adjust the plan (:class:`PipelineConfig`); then

    * an explicit ``architecture`` (argument or config key) is used as is, with the config's
      dropout_rate (default 0.0 when absent);
    * NAS keys (``hpo+nas``) give nnU-Net's default sentence for the chosen encoder with
      scaled block counts, norm and nonlinearity, on a plan with the chosen features;
    * otherwise nnU-Net's default network for the plan.
    """
    settings = train_config(config)
    pipeline = PipelineConfig.from_config(config)
    explicit = architecture if architecture is not None else config.get(ARCHITECTURE_KEY)
    nas = {k: config[k] for k in NAS_KEYS if k in config}
    if explicit is not None and nas:
        raise SearchSpaceError(f"config sets both an architecture string and NAS keys {sorted(nas)}; "
                               "expected one way of choosing the network")
    if explicit is not None and pipeline.network_dims != "3d":
        raise SearchSpaceError(f"config sets an architecture string and network_dims={pipeline.network_dims!r}; "
                               "architecture sentences belong to the 3D grammar, expected network_dims='3d'")
    plan, grammar = pipeline.plan(plan, grammar, plan_2d, grammar_2d)
    if explicit is not None:
        if not isinstance(explicit, str):
            raise SearchSpaceError(f"config key 'architecture' is {explicit!r:.80}; expected a grammar sentence")
        choice = NetworkChoice(plan, explicit, settings.dropout_rate, grammar)
    elif not nas:
        choice = NetworkChoice(plan, default_architecture(plan, grammar_options(grammar)), settings.dropout_rate,
                               grammar)
    else:
        choice = nas_network(nas, plan, grammar, settings.dropout_rate)
    return residual_fit(choice, residual_plan)


RESIDUAL_ENCODER_WORD = "res_encoder"


def residual_fit(choice: NetworkChoice, residual_plan: Plan | None) -> NetworkChoice:
    """``choice`` with ResEnc M's patch and batch when its sentence has a residual encoder.

    nnU-Net plans residual encoders with their own memory model (ResEnc M: hippocampus batch 58
    where the default planner gives 7), so a searched residual network should train as nnU-Net
    would train it. Only patch and batch move: the swap happens when both plans share dims, stage
    count, strides and kernels (the grammar's sentence stays valid); otherwise the choice is kept.
    """
    if residual_plan is None or RESIDUAL_ENCODER_WORD not in choice.architecture.split():
        return choice
    plan = choice.plan
    same_topology = (plan.dims, plan.n_stages, plan.strides, plan.kernel_sizes) == (
        residual_plan.dims, residual_plan.n_stages, residual_plan.strides, residual_plan.kernel_sizes)
    if not same_topology:
        return choice
    return replace(choice, plan=replace(plan, patch_size=residual_plan.patch_size,
                                        batch_size=residual_plan.batch_size))


def nas_network(nas: Mapping[str, Any], plan: Plan, grammar: str, dropout_rate: float) -> NetworkChoice:
    """The NAS parameters (docs/references.md, "Search spaces") as a plan with new features and a grammar sentence.

    Feature ranges are nnU-Net's (base 32, max 320); a plan with other features (the CPU preset)
    scales the choice by the same ratio, so a search space means the same on every preset.
    Blocks per stage become ``max(1, round(model_scale * default))`` for encoder and decoder.
    """
    nas = {**NAS_DEFAULTS, **nas}
    encoder = _choice("encoder_type", nas["encoder_type"], ENCODER_TYPES)
    scale = nas["model_scale"]
    if isinstance(scale, bool) or scale not in MODEL_SCALES:
        raise SearchSpaceError(f"config key 'model_scale' is {scale!r}; expected one of {list(MODEL_SCALES)}")
    base = _integer("base_features", nas["base_features"], 1)
    top = _integer("max_features", nas["max_features"], 1)
    nonlin = ACTIVATIONS[_choice("activation", nas["activation"], tuple(ACTIVATIONS))]
    norm = NORMALIZATIONS[_choice("normalization", nas["normalization"], tuple(NORMALIZATIONS))]
    new_plan = with_features(plan, max(1, round(base * plan.base_features / NNUNET_BASE_FEATURES)),
                             max(1, round(top * plan.max_features / NNUNET_MAX_FEATURES)))
    sentence = default_architecture(new_plan, grammar_options(grammar), encoder=encoder)
    dropout = DROPOUTS[1] if dropout_rate > 0 else DROPOUTS[0]
    return NetworkChoice(new_plan, _restyle(sentence, norm, nonlin, dropout, float(scale)), dropout_rate, grammar)


def with_features(plan: Plan, base_features: int, max_features: int) -> Plan:
    """``plan`` with features min(max, base * 2**i) per stage (nnU-Net's rule)."""
    if base_features < 1 or max_features < base_features:
        raise SearchSpaceError(f"features base={base_features}, max={max_features} are invalid; "
                               "expected 1 <= base_features <= max_features")
    features = tuple(min(max_features, base_features * 2 ** i) for i in range(plan.n_stages))
    return replace(plan, features_per_stage=features, base_features=base_features, max_features=max_features)


def _restyle(sentence: str, norm: str, nonlin: str, dropout: str, scale: float) -> str:
    """Swap layer words and scale block counts in a default sentence (encoder and decoder)."""
    words = []
    for word in sentence.split():
        if word in NORMS:
            word = norm
        elif word in NONLINS:
            word = nonlin
        elif word in DROPOUTS:
            word = dropout
        elif word.endswith("b") and word[:-1].isdigit():
            word = f"{max(1, round(scale * int(word[:-1])))}b"
        words.append(word)
    return " ".join(words)


def _choice(key: str, value, choices: tuple) -> Any:
    if not isinstance(value, str) or value not in choices:
        raise SearchSpaceError(f"config key {key!r} is {value!r}; expected one of {list(choices)}")
    return value


def _number(key: str, value, low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        raise SearchSpaceError(f"config key {key!r} is {value!r}; expected a number in {left}{low:g}, {high:g}{right}")


def _integer(key: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < low:
        raise SearchSpaceError(f"config key {key!r} is {value!r}; expected an integer >= {low}")
    return int(value)
