"""The search vocabulary: the spaces of the paper and of the AutoMONAI thesis, and the optimizers offered.

Choices and defaults come from :mod:`hnas.train.config` (what the trainer accepts, nnU-Net's
defaults); this module adds only the ranges searched and how the parameters combine into the
six spaces (docs/references.md, "Search spaces": the paper's Table 4). The search engine
(:mod:`hnas.search`) only sees the resulting :class:`~hnas.search.SearchSpace`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hnas.cfgunet.spec import DEFAULT_DROPOUT_RATE  # the grammar spaces' dropout default, not nnU-Net's 0
from hnas.errors import SearchSpaceError
from hnas.grammar import parse
from hnas.priors import CONFIDENCES, Confidence
from hnas.sampling import GrammarArchitecture, Prior
from hnas.search import Architecture, ArchitectureDistribution, Categorical, Condition, Float, Int, Ordinal, SearchSpace
from hnas.search.space import Parameter
from hnas.train.config import (ACTIVATIONS, ENCODER_TYPES, INTENSITY_NORMALIZATIONS, LOSSES, MODEL_SCALES, NAS_DEFAULTS,
                               NETWORK_DIMS, NORMALIZATIONS, SCHEDULERS, SPACING_FACTORS, TRAINING_OPTIMIZERS,
                               PipelineConfig, TrainConfig)

SPACES: tuple[str, ...] = ("hpo", "hpo+nas", "hpo+hnas", "hnas", "pipeline", "hpo+pipeline")
#: Spaces whose architecture is a grammar sentence (they need the grammar's distribution).
GRAMMAR_SPACES: tuple[str, ...] = ("hpo+hnas", "hnas")
#: Spaces whose network_dims may pick nnU-Net's 2d plan.
PIPELINE_SPACES: tuple[str, ...] = ("pipeline", "hpo+pipeline")
#: The optimizers `hnas search --optimizer` offers: the engine's registry (hnas.search.OPTIMIZERS) without
#: plain successive halving, which is one bracket of Hyperband rather than a search of its own.
SEARCH_OPTIMIZERS: tuple[str, ...] = ("random", "hyperband", "priorband", "regularized-priorband", "bohb",
                                      "priorband-bo")


def _hpo_parameters(confidence: Confidence) -> list[Parameter]:
    c, nnunet = confidence, TrainConfig()
    return [
        Categorical("optimizer", TRAINING_OPTIMIZERS, nnunet.optimizer, c),
        Float("momentum", 0.5, 0.999, nnunet.momentum, log=True, confidence=c,
              condition=Condition("optimizer", ("SGD",))),
        Float("initial_lr", 1e-5, 1e-1, nnunet.initial_lr, log=True, confidence=c),
        Categorical("lr_scheduler", SCHEDULERS, nnunet.lr_scheduler, c),
        Float("weight_decay", 1e-6, 1e-2, nnunet.weight_decay, log=True, confidence=c),
        Float("foreground_oversampling", 0.0, 1.0, nnunet.foreground_oversampling, confidence=c),
        Categorical("loss", LOSSES, nnunet.loss, c),
        Float("aug_factor", 0.0, 3.0, nnunet.aug_factor, confidence=c),
    ]


def _nas_parameters(confidence: Confidence) -> list[Parameter]:
    c, nnunet = confidence, NAS_DEFAULTS
    return [
        Categorical("encoder_type", ENCODER_TYPES, nnunet["encoder_type"], c),
        Ordinal("model_scale", MODEL_SCALES, nnunet["model_scale"], c),
        Int("base_features", 16, 64, nnunet["base_features"], confidence=c),
        Int("max_features", 160, 640, nnunet["max_features"], confidence=c),
        Categorical("activation", tuple(ACTIVATIONS), nnunet["activation"], c),
        Categorical("normalization", tuple(NORMALIZATIONS), nnunet["normalization"], c),
        Float("dropout_rate", 0.0, 0.5, TrainConfig().dropout_rate, confidence=c),
    ]


def _pipeline_parameters(confidence: Confidence) -> list[Parameter]:
    """The AutoMONAI thesis's pipeline choices around nnU-Net's 3d_fullres defaults.

    network_dims: a 2D (nnU-Net's 2d plan) or 3D network on the same data; intensity_normalization:
    nnU-Net's scheme (z-score per image, CT statistics for CT), percentile clipping + z-score, or
    min-max; spacing_factor: the target spacing times this factor (ordinal: each value is one
    preprocessed copy of the data).
    """
    c, nnunet = confidence, PipelineConfig()
    return [
        Categorical("network_dims", NETWORK_DIMS, nnunet.network_dims, c),
        Categorical("intensity_normalization", INTENSITY_NORMALIZATIONS, nnunet.intensity_normalization, c),
        Ordinal("spacing_factor", SPACING_FACTORS, nnunet.spacing_factor, c),
    ]


def make_space(name: str, architecture: ArchitectureDistribution | None = None, *,
               confidence: Confidence = "medium") -> SearchSpace:
    """The paper's spaces ``hpo``, ``hpo+nas``, ``hpo+hnas``, ``hnas`` and the thesis's ``pipeline``
    (loss + pipeline choices) and ``hpo+pipeline``.

    ``hpo+hnas`` and ``hnas`` need ``architecture`` (the grammar's prior-weighted distribution).
    """
    if name not in SPACES:
        raise SearchSpaceError(f"unknown search space {name!r}; expected one of {list(SPACES)}")
    if confidence not in CONFIDENCES:
        raise SearchSpaceError(f"parameter '<preset>': confidence {confidence!r} is not one of {list(CONFIDENCES)}")
    needs_architecture = name in GRAMMAR_SPACES
    if needs_architecture and architecture is None:
        raise SearchSpaceError(f"space {name!r} searches architectures and needs a grammar distribution "
                               "(architecture=...)")
    if not needs_architecture and architecture is not None:
        raise SearchSpaceError(f"space {name!r} has no architecture parameter; use 'hpo+hnas' or 'hnas' to search "
                               "grammar architectures")
    grammar_dropout = Float("dropout_rate", 0.0, 0.5, DEFAULT_DROPOUT_RATE, confidence=confidence)
    if name == "hpo":
        parameters = _hpo_parameters(confidence)
    elif name == "hpo+nas":
        parameters = _hpo_parameters(confidence) + _nas_parameters(confidence)
    elif name == "hpo+hnas":
        parameters = _hpo_parameters(confidence) + [grammar_dropout, Architecture(architecture)]
    elif name == "hnas":
        parameters = [grammar_dropout, Architecture(architecture)]
    elif name == "pipeline":
        loss = next(p for p in _hpo_parameters(confidence) if p.name == "loss")
        parameters = [loss] + _pipeline_parameters(confidence)
    else:
        parameters = _hpo_parameters(confidence) + _pipeline_parameters(confidence)
    return SearchSpace(parameters)


def run_space(name: str, grammar: str | None, confidence: Confidence = "medium",
              prior_from: Mapping[str, Any] | None = None) -> SearchSpace:
    """The space a run searches: ``make_space`` over ``grammar``'s prior (grammar spaces), and with a
    ``--prior-from`` record (docs/transfer.md) its prior centred on the record's architecture and hyperparameters.

    The centres move the grammar prior's identity and the parameters' defaults, so the space hash a
    resumed run is checked against holds them.
    """
    architecture = None
    if name in GRAMMAR_SPACES:
        if grammar is None:
            raise SearchSpaceError(f"space {name!r} searches architectures and needs a grammar")
        prior = Prior.from_grammar(grammar, confidence)
        if prior_from is not None and prior_from.get("architecture") is not None:
            prior = prior.centered_on(parse(grammar, prior_from["architecture"]))
        architecture = GrammarArchitecture(grammar, prior)
    space = make_space(name, architecture, confidence=confidence)
    if prior_from is None:
        return space
    unknown = sorted(set(prior_from["centres"]) - set(space.names))
    if unknown:
        raise SearchSpaceError(f"the --prior-from centres name {unknown}, which space {name!r} lacks; expected some "
                               f"of {list(space.names)}")
    return space.centered_on(prior_from["centres"])
