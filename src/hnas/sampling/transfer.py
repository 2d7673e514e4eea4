"""An architecture of one dataset's grammar carried onto another dataset's grammar (docs/transfer.md).

Grammars differ between datasets in their stage count N (and dims, defaults and options). A
derivation of a source grammar with N stages becomes a derivation of a target grammar with N'
stages by relative depth:

* the network depth: the source's deepest stage k-1 sits at relative depth (k-1)/(N-1); the
  target takes the nearest of its N' stages as its deepest (kept inside its stage range);
* blocks per stage: target stage j of k' (relative depth j/(k'-1)) takes the block count of the
  source stage nearest in relative depth, clipped to what the target offers there; decoder
  stages are mapped the same way among themselves, from the full-resolution one down;
* every other choice (encoder and decoder type, norms, nonlinearities, dropout, pooling, ...)
  keeps the source's word when the target grammar offers it, else takes the target's default.

Choices are made one per target rule, so the result is a derivation of the target grammar by
construction (``parse(target, unparse(tree)) == tree``). Each choice not carried as it was is
reported, so the caller can say so. No torch here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from lark import Tree

from hnas.grammar.parsing import parse, unparse
from hnas.sampling.structure import GrammarStructure, structure_of

_STAGE_BLOCKS = re.compile(r"^(conv_block|res_block|dec_block)(\d+)$")
_TYPED_PART = re.compile(r"^(encoder|decoder)(\d+)$")
_NETWORK = "network"


@dataclass(frozen=True)
class TransferredArchitecture:
    """A derivation of the target grammar, and the choices it could not carry as they were."""

    tree: Tree
    architecture: str
    notes: tuple[str, ...]


@dataclass(frozen=True)
class _Reading:
    """What a source derivation chose, in grammar-independent terms."""

    n_stages: int | None  # the grammar's N (its largest network)
    depth: int | None  # the derivation's k
    parts: dict[str, str]  # 'encoder'/'decoder' -> 'conv_encoder', 'res_decoder', ...
    blocks: dict[str, list[float]]  # 'conv_block'/'res_block'/'dec_block' -> counts, stage 1 first
    words: dict[str, str]  # other choices: rule -> label (enc_norm -> instance_norm)


def transfer_architecture(source_grammar: str, source: Tree | str, target_grammar: str) -> TransferredArchitecture:
    """``source`` (a derivation or sentence of ``source_grammar``) as a derivation of ``target_grammar``."""
    tree = parse(source_grammar, source) if isinstance(source, str) else source
    reading = _read(structure_of(source_grammar), tree)
    target = structure_of(target_grammar)
    chooser = _Chooser(target, reading)
    mapped = _derive(target, target.start, chooser.pick)
    notes = chooser.notes + _left_behind(reading, _read(target, mapped), target, mapped, chooser.notes)
    return TransferredArchitecture(mapped, unparse(mapped), tuple(notes))


def _left_behind(source: _Reading, result: _Reading, target: GrammarStructure, tree: Tree,
                 noted: list[str]) -> list[str]:
    """Source choices the target grammar has no choice for: a part it offers only one way, a word it lacks."""
    notes = [f"{kind}: {label!r} is not offered, took {result.parts.get(kind)!r}"
             for kind, label in source.parts.items()
             if result.parts.get(kind) != label and not any(note.startswith(kind) for note in noted)]
    used = {rule for rule, _ in target.used_alternatives(tree)}
    notes += [f"{rule}: the target grammar has no such choice, {label!r} left out"
              for rule, label in source.words.items() if rule not in used]
    return notes


def nearest_stage(index: int, count: int, source_count: int) -> int:
    """The source stage (of ``source_count``) nearest in relative depth to stage ``index`` of ``count``.

    Relative depth is index/(count-1); a single stage sits at depth 0. Exact ties go to the deeper
    stage. Integer arithmetic, so no rounding error decides a tie.
    """
    if count <= 1 or source_count <= 1:
        return 0
    return (2 * index * (source_count - 1) + (count - 1)) // (2 * (count - 1))


def _read(structure: GrammarStructure, tree: Tree) -> _Reading:
    network = structure.choices.get(_NETWORK)
    n_stages = int(max(network.values)) if network is not None and network.is_ordinal else None
    depth, parts, words = None, {}, {}
    blocks: dict[str, dict[int, float]] = {}
    for rule, alternative in structure.used_alternatives(tree):
        choice = structure.choices[rule]
        label = choice.labels[alternative]
        if rule == _NETWORK and choice.is_ordinal:
            depth = int(choice.values[alternative])
        elif (typed := _TYPED_PART.match(rule)) is not None:
            parts[typed.group(1)] = _strip_stage(label)
        elif (stage := _STAGE_BLOCKS.match(rule)) is not None and choice.is_ordinal:
            blocks.setdefault(stage.group(1), {})[int(stage.group(2))] = choice.values[alternative]
        elif choice.size > 1:
            words.setdefault(rule, label)
    ordered = {kind: [counts[i] for i in sorted(counts)] for kind, counts in blocks.items()}
    return _Reading(n_stages, depth, parts, ordered, words)


def _strip_stage(label: str) -> str:
    return re.sub(r"\d+$", "", label)


class _Chooser:
    """Picks each target choice from the reading, noting every one not carried as it was."""

    def __init__(self, target: GrammarStructure, reading: _Reading):
        self.target = target
        self.reading = reading
        self.notes: list[str] = []
        network = target.choices.get(_NETWORK)
        self.depth: int | None = None  # the target network's k', decided before its blocks (preorder)
        if network is not None and network.is_ordinal:
            self.depth = int(network.values[self._network_index(network, note=network.size > 1)])

    def pick(self, rule: str) -> int:
        choice = self.target.choices[rule]
        if rule == _NETWORK and self.depth is not None:
            return choice.values.index(self.depth)
        if (typed := _TYPED_PART.match(rule)) is not None:
            wanted = self.reading.parts.get(typed.group(1))
            return self._by_label(rule, None if wanted is None else f"{wanted}{typed.group(2)}")
        if (stage := _STAGE_BLOCKS.match(rule)) is not None and choice.is_ordinal and self.depth is not None:
            return self._blocks(rule, stage.group(1), int(stage.group(2)))
        return self._by_label(rule, self.reading.words.get(rule))

    def _network_index(self, choice, *, note: bool) -> int:
        """The target depth: the stage nearest in relative depth to the source's deepest one, inside the range."""
        reading, values = self.reading, [int(v) for v in choice.values]
        if reading.depth is None or reading.n_stages is None:
            if note:
                self._default_for(_NETWORK, "the source has no stage count")
            return self._default(choice)
        deepest = nearest_stage(reading.depth - 1, reading.n_stages, max(values)) + 1
        index = min(range(len(values)), key=lambda i: (abs(values[i] - deepest), -values[i]))
        if note and values[index] != deepest:
            self.notes.append(f"{_NETWORK}: {deepest} stages are outside the target's {min(values)}..{max(values)}, "
                              f"took {values[index]}")
        return index

    def _blocks(self, rule: str, kind: str, stage: int) -> int:
        counts = self.reading.blocks.get(kind)
        if not counts:
            return self._default_for(rule, "not in the source")
        if kind == "dec_block":  # decoder rules count from the bottleneck up: dec_block1 is the deepest
            n_target = self.depth - 1
            level = n_target - stage
            wanted = counts[len(counts) - 1 - nearest_stage(level, n_target, len(counts))]
        else:
            wanted = counts[nearest_stage(stage - 1, self.depth, len(counts))]
        values = self.target.choices[rule].values
        index = min(range(len(values)), key=lambda i: (abs(values[i] - wanted), values[i]))
        if values[index] != wanted:
            self.notes.append(f"{rule}: {_count(wanted)} blocks are outside the target's "
                              f"{_count(min(values))}..{_count(max(values))}, took {_count(values[index])}")
        return index

    def _by_label(self, rule: str, label: str | None) -> int:
        choice = self.target.choices[rule]
        if label is None:
            return self._default_for(rule, "not in the source")
        if label in choice.labels:
            return choice.labels.index(label)
        return self._default_for(rule, f"{label!r} is not offered")

    def _default_for(self, rule: str, why: str) -> int:
        choice = self.target.choices[rule]
        index = self._default(choice)
        self.notes.append(f"{rule}: {why}, took the target's default {choice.labels[index]!r}")
        return index

    @staticmethod
    def _default(choice) -> int:
        return choice.default if choice.default is not None else 0


def _count(value: float) -> str:
    return f"{value:g}"


def _derive(structure: GrammarStructure, rule: str, pick: Callable[[str], int]) -> Tree:
    """The derivation of ``rule`` taking ``pick(choice)`` at every choice, top-down (as parse() builds trees)."""
    alternative = pick(rule) if structure.is_choice(rule) else 0
    children = [_derive(structure, item, pick) if is_rule else item
                for is_rule, item in structure.alternatives[rule][alternative]]
    return Tree(structure.rule_token[rule], children)
