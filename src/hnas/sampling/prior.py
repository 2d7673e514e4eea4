"""Priors over a grammar's productions (docs/references.md, "Prior constants"; values in hnas.priors).

A `Prior` gives every nonterminal a probability vector over its alternatives. It is centred
on one alternative per choice (nnU-Net's default from the grammar's ``//@ default``
annotations, or an incumbent's choice after :meth:`Prior.centered_on`):

* categorical choices: the centre weighs 2 / 4 / 6 (low / medium / high), every other
  alternative 1, then normalise;
* ordinal choices (``//@ ordinal``: stage and block counts): a normal centred on the centre's
  value with std = (upper - lower) x 0.5 / 0.25 / 0.125, each value getting the mass of its
  bucket (unit-wide for consecutive integers) and the masses renormalised (truncation).

Choices without a centre are uniform. Priors live beside the grammar, not inside it: Lark
priorities cannot express them.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from functools import cached_property
from types import MappingProxyType

import numpy as np
from lark import Tree

from hnas.errors import SamplingError
from hnas.grammar.choices import Choice
from hnas.priors import CATEGORICAL_CENTRE_WEIGHT, CONFIDENCES, STD_FRACTION
from hnas.sampling.structure import Cumulative, GrammarStructure, structure_of

UNIFORM = "uniform"


def rule_vector(vectors: Mapping[str, np.ndarray], rule: str) -> np.ndarray:
    """``vectors[rule]``; a name that is no nonterminal is refused with the grammar's rules."""
    try:
        return vectors[rule]
    except KeyError:
        raise SamplingError(f"{rule!r} is not a nonterminal of the grammar; expected one of "
                            f"{sorted(vectors)}") from None


def categorical_probabilities(size: int, centre: int | None, confidence: str | None) -> np.ndarray:
    """Centre weighs 2/4/6 against 1 for every other alternative; uniform without a centre."""
    weights = np.ones(size)
    if centre is not None and confidence is not None:
        weights[centre] = CATEGORICAL_CENTRE_WEIGHT[confidence]
    return weights / weights.sum()


def ordinal_probabilities(values: tuple[float, ...], centre: int | None, confidence: str | None) -> np.ndarray:
    """Bucket masses of a normal truncated to the values' range (see the module docstring)."""
    values_array = np.asarray(values, dtype=float)
    lower, upper = values_array.min(), values_array.max()
    if centre is None or confidence is None or upper == lower:
        return np.full(len(values), 1.0 / len(values))
    low_edges, high_edges = _bucket_edges(values_array)
    std = (upper - lower) * STD_FRACTION[confidence]
    mean = values_array[centre]
    mass = _normal_cdf((high_edges - mean) / std) - _normal_cdf((low_edges - mean) / std)
    return mass / mass.sum()


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    """Standard normal CDF via math.erfc (exact in the tails; spares sampling scipy's 0.5 s import)."""
    return np.array([0.5 * math.erfc(-value / math.sqrt(2.0)) for value in z])


def _bucket_edges(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each value's bucket: up to the midpoints with its neighbours, half a gap past the ends.

    For consecutive integers these are the unit-wide buckets [v - 0.5, v + 0.5].
    """
    order = np.argsort(values)
    ordered = values[order]
    if np.any(np.diff(ordered) == 0):
        raise SamplingError(f"ordinal values {values.tolist()} repeat a value; expected distinct values")
    midpoints = (ordered[1:] + ordered[:-1]) / 2
    low = np.concatenate([[ordered[0] - (midpoints[0] - ordered[0])], midpoints])
    high = np.concatenate([midpoints, [ordered[-1] + (ordered[-1] - midpoints[-1])]])
    low_edges, high_edges = np.empty_like(values), np.empty_like(values)
    low_edges[order], high_edges[order] = low, high
    return low_edges, high_edges


def choice_probabilities(choice: Choice, centre: int | None, confidence: str | None) -> np.ndarray:
    if choice.size == 1:
        return np.ones(1)
    if choice.is_ordinal:
        return ordinal_probabilities(choice.values, centre, confidence)
    return categorical_probabilities(choice.size, centre, confidence)


def check_confidence(confidence: str) -> str:
    if confidence not in CONFIDENCES:
        raise SamplingError(f"prior confidence {confidence!r} is not one of {list(CONFIDENCES)}")
    return confidence


class Prior:
    """Production probabilities of one grammar, centred on one alternative per choice.

    Build it with :meth:`from_grammar` (centred on the grammar's defaults), :meth:`uniform`,
    or :meth:`centered_on` (the incumbent-centred prior PriorBand weighs against this one).
    ``confidence`` is None for the uniform prior.
    """

    def __init__(self, grammar: str, confidence: str | None, centres: Mapping[str, int]):
        self.grammar = grammar
        self.confidence = None if confidence is None else check_confidence(confidence)
        self.structure: GrammarStructure = structure_of(grammar)
        choices = self.structure.choices
        for rule, index in centres.items():
            if rule not in choices or not 0 <= index < choices[rule].size:
                raise SamplingError(f"prior centre {rule!r} -> alternative {index!r} is not in the grammar")
        self.centres: Mapping[str, int] = MappingProxyType(dict(centres))
        self._probabilities = {rule: choice_probabilities(choice, self.centres.get(rule), self.confidence)
                               for rule, choice in choices.items()}
        for vector in self._probabilities.values():
            vector.setflags(write=False)

    @classmethod
    def from_grammar(cls, grammar: str, confidence: str = "medium") -> "Prior":
        """Centred on the grammar's ``//@ default`` annotations (nnU-Net's choices)."""
        check_confidence(confidence)
        choices = structure_of(grammar).choices
        centres = {rule: c.default for rule, c in choices.items() if c.default is not None}
        return cls(grammar, confidence, centres)

    @classmethod
    def uniform(cls, grammar: str) -> "Prior":
        """Every alternative of every choice equally likely (random search's distribution)."""
        return cls(grammar, None, {})

    @property
    def is_uniform(self) -> bool:
        return self.confidence is None

    def probabilities(self, rule: str) -> np.ndarray:
        """Read-only probability vector over ``rule``'s alternatives (grammar order)."""
        return rule_vector(self._probabilities, rule)

    def centered_on(self, tree: Tree) -> "Prior":
        """The same family re-centred on the alternatives ``tree`` uses.

        Choices the tree does not use keep their centre; where a rule occurs more than once, its
        first occurrence (preorder) wins. The uniform prior has no centre and stays uniform.
        """
        used: dict[str, int] = {}
        for rule, alternative in self.structure.used_alternatives(tree):  # validates the tree
            if self.structure.is_choice(rule):
                used.setdefault(rule, alternative)
        if self.is_uniform:
            return self
        return Prior(self.grammar, self.confidence, {**self.centres, **used})

    def log_prob(self, tree: Tree) -> float:
        """Sum of the log probabilities of the productions ``tree`` uses."""
        logs = self._log_probabilities
        return math.fsum(logs[rule][alternative] for rule, alternative in self.structure.used_alternatives(tree))

    def mode(self) -> Tree:
        """The derivation taking every choice's most probable alternative, top-down.

        This is the per-choice mode (nnU-Net's default for a prior from the grammar), not the
        single most probable sentence: that one would favour derivations with fewer choices.
        Ties (all of them, for the uniform prior) go to the centre, then to the grammar's default.
        """
        edges = {rule: self._mode_edges(rule) for rule in self._probabilities}
        tree, _ = self.structure.build_tree(self.structure.start, edges, _ZeroDraws())
        return tree

    def _mode_edges(self, rule: str) -> list[float] | None:
        vector = self._probabilities[rule]
        if len(vector) == 1:
            return None
        best = int(np.argmax(vector))
        for preferred in (self.centres.get(rule), self.structure.choices[rule].default):
            if preferred is not None and vector[preferred] == vector[best]:
                best = preferred
                break
        return [0.0 if i < best else 1.0 for i in range(len(vector))]

    @cached_property
    def _log_probabilities(self) -> dict[str, list[float]]:
        with np.errstate(divide="ignore"):
            return {rule: np.log(vector).tolist() for rule, vector in self._probabilities.items()}

    @cached_property
    def cumulative(self) -> Cumulative:
        """Bin edges for the samplers (computed once per prior)."""
        by_rule = {rule: cumulative_edges(vector) for rule, vector in self._probabilities.items()}
        return Cumulative(by_rule, [by_rule[rule] for rule in self.structure.choice_rules])

    @cached_property
    def identity(self) -> str:
        """sha256 of the grammar text, the confidence and the centres: equal priors, equal ids."""
        description = json.dumps({"confidence": self.confidence or UNIFORM,
                                  "centres": {} if self.is_uniform else dict(sorted(self.centres.items()))},
                                 sort_keys=True)
        return hashlib.sha256(f"{self.grammar}\n//prior {description}".encode()).hexdigest()

    def __reduce__(self):
        """Pickle as (grammar, confidence, centres): tables are rebuilt (and cached) on arrival."""
        return (Prior, (self.grammar, self.confidence, dict(self.centres)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Prior) and self.identity == other.identity

    def __hash__(self) -> int:
        return hash(self.identity)

    def __repr__(self) -> str:
        return f"Prior(confidence={self.confidence or UNIFORM!r}, grammar sha256={self.identity[:12]}...)"


def log_prob(tree: Tree, prior: Prior) -> float:
    """Log probability of a derivation under ``prior``: the sum over its productions."""
    return prior.log_prob(tree)


def cumulative_edges(vector: np.ndarray) -> list[float] | None:
    """Sampling edges of a probability vector (None for a single alternative: no draw spent)."""
    if len(vector) == 1:
        return None
    edges = np.cumsum(vector).tolist()
    edges[-1] = 1.0
    return edges


class _ZeroDraws:
    """Endless draws of 0.0: with 0/1 edges every choice takes its marked alternative."""

    def __getitem__(self, index: int) -> float:
        return 0.0
