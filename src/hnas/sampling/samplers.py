"""Samplers of derivations and the two variation operators (mutation, crossover).

Every sampler follows one small protocol (:class:`Sampler`), so search code can swap them and
one contract test suite covers all. Randomness always comes from an explicit
``numpy.random.Generator``; a sampler asks it for one array of uniforms per derivation, and the
tree and string paths consume it identically, so ``unparse(s.sample(rng(seed))) ==
s.sample_string(rng(seed))``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Protocol, runtime_checkable

import numpy as np
from lark import Tree

from hnas.errors import SamplingError
from hnas.sampling.prior import Prior
from hnas.sampling.structure import Path, node_at, replaced

#: Resampling a subtree is retried this often before the node's current alternative is excluded.
MUTATION_ATTEMPTS = 16


@runtime_checkable
class Sampler(Protocol):
    """Draws derivations of one grammar."""

    grammar: str

    def sample(self, rng: np.random.Generator) -> Tree:
        """A derivation tree, equal to ``parse(grammar, unparse(tree))``."""

    def sample_string(self, rng: np.random.Generator) -> str:
        """The sentence of the derivation ``sample`` would draw, without building a tree."""

    def log_prob(self, tree: Tree) -> float:
        """Log probability that this sampler draws ``tree``."""


class PriorSampler:
    """Top-down derivation: each choice drawn from the prior's probabilities."""

    def __init__(self, prior: Prior):
        if not isinstance(prior, Prior):
            raise SamplingError(f"PriorSampler needs a Prior, got {type(prior).__name__} {prior!r}")
        self.prior = prior
        self.grammar = prior.grammar
        self._structure = prior.structure
        self._cumulative = prior.cumulative
        self._draws = self._structure.max_draws(self._structure.start)

    def sample(self, rng: np.random.Generator) -> Tree:
        draws = check_rng(rng).random(self._draws).tolist()
        tree, _ = self._structure.build_tree(self._structure.start, self._cumulative.by_rule, draws)
        return tree

    def sample_string(self, rng: np.random.Generator) -> str:
        draws = check_rng(rng).random(self._draws).tolist()
        return self._structure.sample_string(self._cumulative, draws)

    def log_prob(self, tree: Tree) -> float:
        return self.prior.log_prob(tree)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.prior!r})"


class UniformSampler(PriorSampler):
    """Random search's sampler: every alternative of every production equally likely."""

    def __init__(self, grammar: str):
        super().__init__(Prior.uniform(grammar))


def check_rng(rng: object) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise SamplingError(f"expected a numpy.random.Generator (np.random.default_rng(seed)), "
                            f"got {type(rng).__name__} {rng!r}")
    return rng


def mutate(tree: Tree, rng: np.random.Generator, prior: Prior) -> Tree:
    """Resample the subtree of one random choice node (> 1 alternative) from ``prior``.

    The child never equals the parent: the subtree is redrawn until it differs, and after
    ``MUTATION_ATTEMPTS`` draws the node's current alternative is excluded. Pass
    ``Prior.uniform(grammar)`` for uniform resampling. The parent is not modified.
    """
    check_rng(rng)
    structure = prior.structure
    candidates = [(rule, alternative, path) for rule, alternative, path in structure.productions(tree)
                  if structure.is_choice(rule)]
    if not candidates:
        raise SamplingError("this architecture has no choice with more than one alternative, so no "
                            "mutation can differ from it (the grammar has a single sentence)")
    rule, current, path = candidates[int(rng.integers(len(candidates)))]
    old = node_at(tree, path)
    edges = prior.cumulative.by_rule
    for _ in range(MUTATION_ATTEMPTS):
        draws = rng.random(structure.max_draws(rule)).tolist()
        new, _ = structure.build_tree(rule, edges, draws)
        if new != old:
            return replaced(tree, path, new)
    alternative = _other_alternative(prior.probabilities(rule), current, rng)
    draws = rng.random(structure.max_draws(rule)).tolist()
    return replaced(tree, path, structure.build_forced(rule, alternative, edges, draws))


def _other_alternative(probabilities: np.ndarray, current: int, rng: np.random.Generator) -> int:
    """An alternative other than ``current``, by the prior renormalised over the others."""
    weights = np.array(probabilities, dtype=float)
    weights[current] = 0.0
    if weights.sum() <= 0.0:
        weights = np.ones_like(weights)
        weights[current] = 0.0
    return int(rng.choice(len(weights), p=weights / weights.sum()))


def crossover(tree_a: Tree, tree_b: Tree, rng: np.random.Generator) -> Tree:
    """``tree_a`` with one of its subtrees replaced by a subtree of ``tree_b`` with the same head.

    Both subtrees derive from the same nonterminal, so the child is a valid derivation. Among
    all same-head pairs the child is drawn uniformly from those that differ from both parents.
    If there are none (the parents differ in one subtree only), the child is a copy of
    ``tree_b``; if the parents are equal, a copy of them. The parents are not modified.
    """
    check_rng(rng)
    paths_b = _paths_by_rule(tree_b)
    pairs = [(path_a, path_b) for rule, paths_a in _paths_by_rule(tree_a).items()
             for path_a in paths_a if path_a for path_b in paths_b.get(rule, ())]  # root swap = tree_b
    fallback = None
    for index in rng.permutation(len(pairs)):
        path_a, path_b = pairs[index]
        donor = node_at(tree_b, path_b)
        if donor == node_at(tree_a, path_a):
            continue
        child = replaced(tree_a, path_a, donor)
        if child != tree_b:
            return child
        fallback = child
    return fallback if fallback is not None else replaced(tree_a, (), tree_a)


def _paths_by_rule(tree: Tree) -> dict[str, list[Path]]:
    paths: dict[str, list[Path]] = defaultdict(list)
    stack: list[tuple[Tree, Path]] = [(tree, ())]
    while stack:
        node, path = stack.pop()
        paths[str(node.data)].append(path)
        for i, child in enumerate(node.children):
            if isinstance(child, Tree):
                stack.append((child, path + (i,)))
    return paths
