"""The choice structure of a grammar: one `Choice` per nonterminal, read from the text.

Samplers and priors work on this table instead of Lark's internals. Defaults and ordinal
values come from the grammar's ``//@`` annotations, so a grammar file alone carries
everything a prior centred on nnU-Net's defaults needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from hnas.errors import GrammarError
from hnas.grammar.parsing import load_grammar

_ANNOTATION = re.compile(r"^//@\s+(default|ordinal)\s+(\S+)\s+(.+?)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Symbol:
    name: str
    is_terminal: bool


@dataclass(frozen=True)
class Choice:
    """The alternatives of one nonterminal.

    ``labels`` name alternatives for people and priors: the word of a single-terminal
    alternative, the rule name of a single-nonterminal one. ``values`` are set for ordinal
    choices (stage and block counts), ``default`` is the index of nnU-Net's choice.
    """

    rule: str
    alternatives: tuple[tuple[Symbol, ...], ...]
    labels: tuple[str, ...]
    values: tuple[float, ...] | None = None
    default: int | None = None

    @property
    def size(self) -> int:
        return len(self.alternatives)

    @property
    def is_ordinal(self) -> bool:
        return self.values is not None

    def index_of(self, label: str) -> int:
        try:
            return self.labels.index(label)
        except ValueError:
            raise GrammarError(f"{label!r} is not an alternative of {self.rule!r}; "
                               f"expected one of {list(self.labels)}") from None


@dataclass(frozen=True)
class GrammarInfo:
    start: str
    choices: dict[str, Choice]
    words: dict[str, str]  # terminal name -> word

    def count_sentences(self, rule: str | None = None) -> int:
        """Number of distinct sentences derivable from ``rule`` (the search-space size)."""
        return _count(self, rule or self.start, {})


@lru_cache(maxsize=32)
def grammar_info(grammar: str) -> GrammarInfo:
    parser = load_grammar(grammar)
    alternatives: dict[str, list[tuple[Symbol, ...]]] = {}
    for rule in parser.rules:
        symbols = tuple(Symbol(str(s.name), s.is_term) for s in rule.expansion)
        alternatives.setdefault(str(rule.origin.name), []).append(symbols)
    words = {t.name: t.pattern.value for t in parser.terminals if t.pattern.type == "str"}
    defaults, ordinals = _annotations(grammar)
    choices = {}
    for name, alts in alternatives.items():
        labels = tuple(_label(alt, words) for alt in alts)
        choices[name] = _choice(name, tuple(alts), labels, defaults.get(name), ordinals.get(name))
    return GrammarInfo(start="architecture", choices=choices, words=words)


def _label(alternative: tuple[Symbol, ...], words: dict[str, str]) -> str:
    if len(alternative) == 1:
        symbol = alternative[0]
        return words.get(symbol.name, symbol.name) if symbol.is_terminal else symbol.name
    return " ".join(words.get(s.name, s.name) if s.is_terminal else s.name for s in alternative)


def _choice(name, alternatives, labels, default_label, values) -> Choice:
    if values is not None and len(values) != len(alternatives):
        raise GrammarError(f"ordinal annotation of {name!r} lists {len(values)} values for "
                           f"{len(alternatives)} alternatives")
    default = None
    if default_label is not None:
        if default_label not in labels:
            raise GrammarError(f"default {default_label!r} of {name!r} is not one of its alternatives {list(labels)}")
        default = labels.index(default_label)
    return Choice(name, alternatives, labels, values, default)


def _annotations(grammar: str) -> tuple[dict[str, str], dict[str, tuple[float, ...]]]:
    defaults: dict[str, str] = {}
    ordinals: dict[str, tuple[float, ...]] = {}
    for kind, rule, rest in _ANNOTATION.findall(grammar):
        if kind == "default":
            defaults[rule] = rest
        else:
            try:
                ordinals[rule] = tuple(float(v) for v in rest.split())
            except ValueError:
                raise GrammarError(f"ordinal annotation of {rule!r} has a non-numeric value: {rest!r}") from None
    return defaults, ordinals


def _count(info: GrammarInfo, rule: str, memo: dict[str, int]) -> int:
    if rule not in memo:
        total = 0
        for alternative in info.choices[rule].alternatives:
            product = 1
            for symbol in alternative:
                if not symbol.is_terminal:
                    product *= _count(info, symbol.name, memo)
            total += product
        memo[rule] = total
    return memo[rule]
