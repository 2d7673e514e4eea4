"""Model-based multi-fidelity optimizers: BOHB and PriorBand+BO.

* ``bohb`` -- BOHB (Falkner, Klein & Hutter, ICML 2018): Hyperband's brackets, whose new
  configurations come from a TPE-style density model (:mod:`hnas.search.model`). With
  probability ``random_fraction`` (1/3) a new configuration is uniform; otherwise the model of
  the highest rung with at least ``min_points + 2`` finished observations proposes the
  candidate maximising l(x)/g(x). Until some rung has that many, every job is Hyperband's.
* ``priorband-bo`` -- PriorBand+BO (Mallik et al., "PriorBand: Practical Hyperparameter
  Optimization in the Age of Deep Learning", NeurIPS 2023): PriorBand made model-based the way
  BOHB makes Hyperband model-based, switching to the model once enough observations exist.
  Rule implemented here: PriorBand's ensemble sampling policy stays in charge -- the default
  first at b_max, then p_random (at least 1/(1+eta^r), plus the uniform's evidence share), p_prior
  and p_inc exactly as in hnas's PriorBand (docs/references.md, "PriorBand") --
  and once some rung holds ``min_points + 2`` finished observations (BOHB's threshold; NePS's
  per-rung model waits for d + 2) the p_random share is handed to BOHB's sampler: the model of
  the highest such rung proposes, except for a ``random_fraction`` (1/3) of those draws, which
  stay uniform. Prior, incumbent and model thus all contribute. (NePS's reference code instead
  replaces the whole policy by a GP whose acquisition is weighted by the prior; we keep
  PriorBand's weights, whose robustness to a bad prior comes from its exploration, and make
  that exploration informed.) Before the model exists every job equals PriorBand's.

Both keep the engine's contract: every decision is a function of the history and the seed
(the model is refitted from the finished trials at each ask; memoisation only saves time),
failed trials are never promoted (they enter the model as infinitely bad observations, as in
BOHB's reference code), and pending trials are simply not yet observations.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np

from hnas.search.model import (
    BANDWIDTH_FACTOR,
    CANDIDATES,
    MIN_BANDWIDTH,
    TOP_FRACTION,
    DensityModel,
    FittedModel,
    Observation,
    check_fraction,
)
from hnas.search.optimizers import OPTIMIZERS, HistoryIndex, Hyperband, PriorBand
from hnas.search.space import SearchSpace

#: BOHB's share of uniform configurations (hpbandster's ``random_fraction``).
RANDOM_FRACTION = 1.0 / 3.0


def observations_by_rung(index: HistoryIndex) -> dict[int, list[Observation]]:
    """Every finished trial as a model observation, grouped by rung (failed ones as +inf)."""
    by_rung: dict[int, list[Observation]] = defaultdict(list)
    for trial in index.trials:
        if trial.state == "success":
            by_rung[trial.rung].append(Observation(trial.trial_id, trial.config, trial.loss))
        elif trial.state == "failed":
            by_rung[trial.rung].append(Observation(trial.trial_id, trial.config, math.inf))
    return by_rung


class _ModelSampling:
    """What both optimizers add to their base class: the density model, its settings, and
    BOHB's rule for a new configuration (model unless a random_fraction draw says uniform)."""

    def __init__(self, space: SearchSpace, *, random_fraction: float = RANDOM_FRACTION,
                 min_points: int | None = None, top_fraction: float = TOP_FRACTION,
                 candidates: int = CANDIDATES, bandwidth_factor: float = BANDWIDTH_FACTOR,
                 min_bandwidth: float = MIN_BANDWIDTH, **base_options: Any):
        """``base_options`` (fidelities, eta, seed, promotion) go to Hyperband / PriorBand."""
        super().__init__(space, **base_options)
        check_fraction("random_fraction", random_fraction)
        self.random_fraction = float(random_fraction)
        self.model = DensityModel(space, min_points=min_points, top_fraction=top_fraction,
                                  candidates=candidates, bandwidth_factor=bandwidth_factor,
                                  min_bandwidth=min_bandwidth, seed=self.seed)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "random_fraction": self.random_fraction, **self.model.settings()}

    def fitted_model(self, index: HistoryIndex) -> FittedModel | None:
        """The model of the highest rung with enough finished observations, if any."""
        return self.model.fit_highest(observations_by_rung(index))

    def _model_or_uniform(self, rng: np.random.Generator,
                          index: HistoryIndex) -> tuple[dict[str, Any], str]:
        """No draw is spent before the model exists, so until then jobs equal the base
        optimizer's."""
        fitted = self.fitted_model(index)
        if fitted is None or rng.random() < self.random_fraction:
            return self.space.sample_uniform(rng), "random"
        return fitted.propose(rng, self.model.candidates), "model"


class BOHB(_ModelSampling, Hyperband):
    """Hyperband whose new configurations come from BOHB's density model (module docstring)."""

    name = "bohb"

    def _sample(self, rng: np.random.Generator, rung: int,
                index: HistoryIndex) -> tuple[dict[str, Any], str]:
        return self._model_or_uniform(rng, index)


class PriorBandBO(_ModelSampling, PriorBand):
    """PriorBand whose uniform share goes to BOHB's sampler once a rung has
    ``min_points + 2`` finished observations (module docstring)."""

    name = "priorband-bo"

    def _explore(self, rng: np.random.Generator,
                 index: HistoryIndex) -> tuple[dict[str, Any], str]:
        """PriorBand's p_random share."""
        return self._model_or_uniform(rng, index)


OPTIMIZERS.update({BOHB.name: BOHB, PriorBandBO.name: PriorBandBO})
