"""`hnas sample`: architecture strings drawn uniformly or from the prior around nnU-Net's defaults."""

from __future__ import annotations

import warnings

import numpy as np

from hnas.grammar import parse
from hnas.sampling import Prior, PriorSampler, UniformSampler


class PriorWarning(UserWarning):
    """A prior was asked for but the grammar cannot centre it (sampling is uniform there)."""


def sample(grammar: str, n: int, *, seed: int = 0, uniform: bool = False, confidence: str = "medium",
           centre: str | None = None) -> list[str]:
    """``n`` sentences, uniform per production or from the prior around nnU-Net's defaults (or ``centre``).

    The prior's centres are the grammar's ``//@ default`` annotations; a grammar without them
    (hand-written, or stripped) can only be sampled uniformly, which is said, not done silently.
    ``centre`` (a sentence of ``grammar``, e.g. another run's incumbent carried over by
    ``--prior-from``) moves the centre of every choice it makes.
    """
    rng = np.random.default_rng(seed)
    if uniform:
        sampler = UniformSampler(grammar)
    else:
        prior = Prior.from_grammar(grammar, confidence)
        if centre is not None:
            prior = prior.centered_on(parse(grammar, centre))
        else:
            _warn_uncentred(prior, confidence)
        sampler = PriorSampler(prior)
    return [sampler.sample_string(rng) for _ in range(n)]


def _warn_uncentred(prior, confidence: str) -> None:
    """Generated grammars annotate the choices nnU-Net decides (others stay uniform by design);
    a grammar with no annotation at all gives a uniform prior whatever the confidence."""
    if prior.structure.choices and not prior.centres:
        warnings.warn(f"the grammar has no '//@ default' annotations, so the {confidence!r} prior is uniform (like "
                      "--uniform); generate the grammar with `hnas grammar` to sample around nnU-Net's defaults",
                      PriorWarning, stacklevel=3)
