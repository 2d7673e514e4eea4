"""A grammar compiled for sampling: derivation tables for trees and a flat program for strings.

Sampling works on these tables instead of on Lark's objects. Two things make it fast:

* every derivation draws at most ``max_draws(rule)`` uniforms, so a sampler asks the Generator
  for one array of them and consumes it in preorder (the string and the tree path consume it in
  the same order, so both give the same sentence for the same seed);
* the string program inlines every nonterminal that has a single alternative and merges runs
  of fixed words, so only real choices cost any work.

Trees are built exactly as :func:`hnas.grammar.parse` builds them (``keep_all_tokens``: rule
nodes are ``Tree(Token('RULE', name), children)``, terminals are shared ``Token(NAME, word)``),
so ``tree == parse(grammar, unparse(tree))`` holds for every sample.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

from lark import Token, Tree

from hnas.errors import GrammarError, InvalidArchitecture
from hnas.grammar.choices import Choice, GrammarInfo, grammar_info
from hnas.grammar.parsing import load_grammar

#: (is_rule, name-or-token): a rule name to expand, or the shared terminal token to emit.
Item = tuple[bool, "str | Token"]
#: Child indices from the root down to a node.
Path = tuple[int, ...]


@dataclass(frozen=True)
class Cumulative:
    """Cumulative probabilities of one prior, laid out for both sampling paths.

    ``by_rule[rule]`` is None for rules with one alternative (no draw); otherwise upper bin
    edges ending exactly at 1.0 so ``bisect_right(edges, u)`` maps u in [0, 1) to an index.
    """

    by_rule: dict[str, list[float] | None]
    by_choice: list[list[float]]  # indexed like GrammarStructure.choice_rules


class GrammarStructure:
    """Everything a sampler needs to know about one grammar text (build with :func:`structure_of`)."""

    def __init__(self, grammar: str):
        _check_trees_keep_every_rule(grammar)
        self.grammar = grammar
        self.info: GrammarInfo = grammar_info(grammar)
        self.start = str(self.info.start)
        # Plain-str keys: grammar_info's keys are lark Tokens, whose Python-level __eq__ slows lookups.
        self.choices: dict[str, Choice] = {str(rule): choice for rule, choice in self.info.choices.items()}
        self.rule_token = {rule: Token("RULE", rule) for rule in self.choices}
        self.terminal_token = {name: Token(name, word) for name, word in self.info.words.items()}
        self.alternatives: dict[str, tuple[tuple[Item, ...], ...]] = {
            rule: tuple(tuple(self._item(str(s.name), s.is_terminal) for s in alt) for alt in choice.alternatives)
            for rule, choice in self.choices.items()}
        self.production_index: dict[str, dict[tuple[str, ...], int]] = {
            rule: {tuple(str(s.name) for s in alt): i for i, alt in enumerate(choice.alternatives)}
            for rule, choice in self.choices.items()}
        self.leaf_tokens: dict[str, tuple[Token, ...] | None] = {
            rule: tuple(alt[0][1] for alt in alts) if all(len(a) == 1 and not a[0][0] for a in alts) else None
            for rule, alts in self.alternatives.items()}
        self.choice_rules: tuple[str, ...] = tuple(r for r, c in self.choices.items() if c.size > 1)
        self.choice_id = {rule: i for i, rule in enumerate(self.choice_rules)}
        self._max_draws: dict[str, int] = {}
        for rule in self.choices:
            self.max_draws(rule)
        self._program = _StringProgram(self)

    def _item(self, name: str, is_terminal: bool) -> Item:
        if is_terminal:
            if name not in self.terminal_token:
                raise GrammarError(f"terminal {name!r} is not a fixed word; sampling needs string terminals")
            return (False, self.terminal_token[name])
        return (True, name)

    def is_choice(self, rule: str) -> bool:
        return rule in self.choice_id

    def max_draws(self, rule: str, _visiting: frozenset[str] = frozenset()) -> int:
        """Most uniforms any derivation from ``rule`` consumes (one per real choice)."""
        if rule in self._max_draws:
            return self._max_draws[rule]
        if rule in _visiting:
            raise GrammarError(f"rule {rule!r} is recursive; sampling needs a grammar with finite sentences")
        visiting = _visiting | {rule}
        most = max(sum(self.max_draws(name, visiting) for is_rule, name in alt if is_rule)
                   for alt in self.alternatives[rule])
        self._max_draws[rule] = most + (1 if self.is_choice(rule) else 0)
        return self._max_draws[rule]

    # -- trees ---------------------------------------------------------------------------------

    def alternative_of(self, node: Tree) -> int:
        """Index of the production ``node`` uses; InvalidArchitecture if the grammar has none."""
        try:
            rule = str(node.data)
            names = tuple([c.type if isinstance(c, Token) else str(c.data) for c in node.children])
        except AttributeError:
            raise InvalidArchitecture(f"{node!r} is not a derivation tree (lark Trees of rule nodes with Tree "
                                      "and Token children, as parse() returns)") from None
        table = self.production_index.get(rule)
        if table is None:
            raise InvalidArchitecture(f"tree node {rule!r} is not a rule of the grammar", token=rule)
        if names not in table:
            expected = tuple(" ".join(k) for k in table)
            raise InvalidArchitecture(f"tree node {rule!r} has children {' '.join(names)!r}; "
                                      f"expected one of {list(expected)}", token=rule, expected=expected)
        return table[names]

    def check_derivation_root(self, tree: Tree) -> None:
        root = getattr(tree, "data", None)
        if root != self.start:
            raise InvalidArchitecture(f"a derivation starts at {self.start!r}; got a tree rooted at {root!r} "
                                      f"({type(tree).__name__})", token=None if root is None else str(root))

    def used_alternatives(self, tree: Tree) -> list[tuple[str, int]]:
        """(rule, alternative index) of every node of a derivation, in preorder (log_prob's lean path)."""
        self.check_derivation_root(tree)
        out: list[tuple[str, int]] = []
        self._collect_alternatives(tree, out)
        return out

    def _collect_alternatives(self, node: Tree, out: list[tuple[str, int]]) -> None:
        out.append((str(node.data), self.alternative_of(node)))
        for child in node.children:
            if isinstance(child, Tree):
                self._collect_alternatives(child, out)

    def choices_made(self, tree: Tree) -> list[tuple[str, int]]:
        """(rule, alternative index) of every real choice (> 1 alternative) a derivation makes, in preorder.

        A production distribution's likelihood and its fitted counts depend only on these: a rule
        with one alternative contributes log 1 and is no choice to count.
        """
        is_choice = self.choice_id.__contains__
        return [(rule, alternative) for rule, alternative in self.used_alternatives(tree) if is_choice(rule)]

    def productions(self, tree: Tree):
        """(rule, alternative index, path) of every node of a derivation, in preorder."""
        self.check_derivation_root(tree)
        stack: list[tuple[Tree, Path]] = [(tree, ())]
        while stack:
            node, path = stack.pop()
            yield str(node.data), self.alternative_of(node), path
            for i in range(len(node.children) - 1, -1, -1):
                child = node.children[i]
                if isinstance(child, Tree):
                    stack.append((child, path + (i,)))

    def build_tree(self, rule: str, edges: dict[str, list[float] | None], draws: Sequence[float],
                   position: int = 0) -> tuple[Tree, int]:
        """Derive ``rule`` top-down, taking alternatives from ``draws[position:]`` in preorder."""
        cumulative = edges[rule]
        alternative = 0
        if cumulative is not None:
            alternative = bisect_right(cumulative, draws[position])
            position += 1
        return self._build_children(rule, alternative, edges, draws, position)

    def _build_children(self, rule: str, alternative: int, edges, draws, position: int) -> tuple[Tree, int]:
        leaf_tokens, rule_token = self.leaf_tokens, self.rule_token
        children: list = []
        for is_rule, item in self.alternatives[rule][alternative]:
            if not is_rule:
                children.append(item)
            elif (tokens := leaf_tokens[item]) is not None:  # a word choice: no call needed
                cumulative = edges[item]
                if cumulative is None:
                    children.append(Tree(rule_token[item], [tokens[0]]))
                else:
                    children.append(Tree(rule_token[item], [tokens[bisect_right(cumulative, draws[position])]]))
                    position += 1
            else:
                child, position = self.build_tree(item, edges, draws, position)
                children.append(child)
        return Tree(rule_token[rule], children), position

    def build_forced(self, rule: str, alternative: int, edges: dict[str, list[float] | None],
                     draws: Sequence[float]) -> Tree:
        """Derive ``rule`` with its top production fixed to ``alternative``; the rest from ``draws``."""
        return self._build_children(rule, alternative, edges, draws, 0)[0]

    # -- strings -------------------------------------------------------------------------------

    def sample_string(self, cumulative: Cumulative, draws: Sequence[float]) -> str:
        return self._program.sentence(cumulative.by_choice, draws)


class _StringProgram:
    """The grammar flattened to choices: each alternative is a tuple of fixed text and choice ids.

    Single-alternative rules are inlined, adjacent words pre-joined, and "leaf" choices (all
    alternatives a single word) resolved in their parent's loop without a call.
    """

    def __init__(self, structure: GrammarStructure):
        self.structure = structure
        rules = structure.choice_rules
        self.alternatives = [tuple(self._flatten(alt) for alt in structure.alternatives[r]) for r in rules]
        self.leaf_words = [tuple(alt[0] if len(alt) == 1 and isinstance(alt[0], str) else None for alt in alts)
                           for alts in self.alternatives]
        self.is_leaf = [all(w is not None for w in words) for words in self.leaf_words]
        self.root = self._flatten(structure.alternatives[structure.start][0]) \
            if not structure.is_choice(structure.start) else (structure.choice_id[structure.start],)

    def _flatten(self, alternative: tuple[Item, ...]) -> tuple:
        pieces: list = []
        self._inline(alternative, pieces)
        merged: list = []
        for piece in pieces:
            if isinstance(piece, str) and merged and isinstance(merged[-1], str):
                merged[-1] = f"{merged[-1]} {piece}"
            else:
                merged.append(piece)
        return tuple(merged)

    def _inline(self, alternative: tuple[Item, ...], pieces: list) -> None:
        structure = self.structure
        for is_rule, item in alternative:
            if not is_rule:
                pieces.append(str(item))
            elif structure.is_choice(item):
                pieces.append(structure.choice_id[item])
            else:
                self._inline(structure.alternatives[item][0], pieces)

    def sentence(self, edges: list[list[float]], draws: Sequence[float]) -> str:
        words: list[str] = []
        self._emit(self.root, edges, draws, 0, words)
        return " ".join(words)

    def _emit(self, program: tuple, edges, draws, position: int, words: list[str]) -> int:
        is_leaf, leaf_words, alternatives = self.is_leaf, self.leaf_words, self.alternatives
        for item in program:
            if item.__class__ is str:
                words.append(item)
            elif is_leaf[item]:
                words.append(leaf_words[item][bisect_right(edges[item], draws[position])])
                position += 1
            else:
                chosen = alternatives[item][bisect_right(edges[item], draws[position])]
                position = self._emit(chosen, edges, draws, position + 1, words)
        return position


@lru_cache(maxsize=32)
def structure_of(grammar: str) -> GrammarStructure:
    """The (cached) sampling tables of a grammar text."""
    return GrammarStructure(grammar)


def copy_tree(tree: Tree) -> Tree:
    """A fresh copy of every Tree node; tokens are immutable and stay shared (as parse() does)."""
    return Tree(tree.data, [copy_tree(c) if isinstance(c, Tree) else c for c in tree.children])


def node_at(tree: Tree, path: Path) -> Tree:
    for index in path:
        tree = tree.children[index]
    return tree


def replaced(tree: Tree, path: Path, subtree: Tree) -> Tree:
    """A copy of ``tree`` with the node at ``path`` replaced by (a copy of) ``subtree``."""
    if not path:
        return copy_tree(subtree)
    result = copy_tree(tree)
    node_at(result, path[:-1]).children[path[-1]] = copy_tree(subtree)
    return result


def _check_trees_keep_every_rule(grammar: str) -> None:
    """Samplers build every rule node; Lark would inline ``_rule``/``?rule`` ones when parsing."""
    for rule in load_grammar(grammar).rules:
        name = rule.origin.name
        if name.startswith("_") or rule.options.expand1:
            raise GrammarError(f"rule {name!r} is inlined by Lark (a '_' or '?' rule); sampling needs "
                               "grammars whose parse trees keep every rule")
