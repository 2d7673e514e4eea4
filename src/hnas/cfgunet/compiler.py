"""Derivation -> UNetSpec: one ``lark.Transformer`` with a method per grammar rule.

The same transformer serves two paths:

* :func:`spec_from_tree` walks a derivation tree (from ``hnas.grammar.parse`` or a sampler);
* :func:`compile_architecture` runs it *inside* Lark's LALR parser (``Lark(transformer=...)``),
  so no tree is built at all. That path is what the search uses per trial, and it must keep
  sample -> string -> spec above 5,000 per second. Inside the parser the transformer stops at
  the plan-free :class:`Network`, so one cached parser per grammar serves every plan and every
  dropout rate; :func:`assemble_spec` adds the Plan's topology afterwards.

Rules carry stage numbers (``conv_encoder6``, ``dec_block3``); ``__default__`` strips the
number and dispatches to the method of the base name. Strides, kernels and features are
not in the sentence: they are the Plan's first k entries for a k-stage network.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple

import lark
from lark import Lark, Transformer, Tree

from hnas.cfgunet.spec import DEFAULT_DROPOUT_RATE, DecoderSpec, EncoderSpec, UNetSpec
from hnas.errors import HnasError, InvalidArchitecture, SpecError
from hnas.grammar.parsing import WordLexer, load_grammar, parse  # the same word lexer as parse()
from hnas.planning.plan import Plan

# grammar word -> UNetSpec value, where the two differ
_NORMS = {"instance_norm": "instance", "batch_norm": "batch"}
_POOLS = {"conv_pool": "conv", "max_pool": "max", "avg_pool": "avg"}
_BLOCK_TYPES = {"basic_block": "basic", "bottleneck_block": "bottleneck"}
_NUMBERED_RULE = re.compile(r"^([a-z_]+)(\d+)$")


class Network(NamedTuple):
    """What a sentence chooses (the Plan adds the topology)."""

    encoder: EncoderSpec
    decoder: DecoderSpec


class SpecTransformer(Transformer):
    """Turns a derivation of an hnas grammar into the UNetSpec it describes for ``plan``."""

    def __init__(self, plan: Plan | None, *, dropout_rate: float = DEFAULT_DROPOUT_RATE,
                 deep_supervision: bool = True):
        super().__init__(visit_tokens=False)
        self.plan = plan
        self.dropout_rate = dropout_rate
        self.deep_supervision = deep_supervision

    def __default__(self, data, children, meta):
        """Numbered rules (``net6``, ``conv_block2``) share the method of their base name."""
        return getattr(self, _base_rule(str(data)))(children)

    # ---------------------------------------------------------------- structure

    def architecture(self, children):
        return assemble_spec(children[-1], self.plan, dropout_rate=self.dropout_rate,
                             deep_supervision=self.deep_supervision)

    def network(self, children):
        return children[0]

    def net(self, children):
        return Network(children[0], children[1])

    def encoder(self, children):
        return children[0]

    def decoder(self, children):
        return children[0]

    def conv_encoder(self, children):
        return _encoder("conv", children)

    def res_encoder(self, children):
        return _encoder("residual", children)

    def conv_decoder(self, children):
        return _decoder("conv", children)

    def res_decoder(self, children):
        return _decoder("residual", children)

    # ---------------------------------------------------------------- choices

    def conv_block(self, children):
        return _block_count(children[0])

    res_block = dec_block = conv_block

    def enc_norm(self, children):
        return "norm", _NORMS[children[0]]

    dec_norm = enc_norm

    def enc_nonlin(self, children):
        return "nonlin", str(children[0])

    dec_nonlin = enc_nonlin

    def enc_dropout(self, children):
        return "dropout", children[0] == "dropout"

    dec_dropout = enc_dropout

    def enc_pool(self, children):
        return "pool", _POOLS[children[0]]

    def res_block_type(self, children):
        return "block", _BLOCK_TYPES[children[0]]

    def enc_se(self, children):
        return "squeeze_excitation", children[0] == "se"


class _InlineSpecTransformer(SpecTransformer):
    """Runs inside the parser, shared by every plan: stops at the plan-free :class:`Network`."""

    def __init__(self):
        super().__init__(None)

    def architecture(self, children):
        return children[-1]


def assemble_spec(network: Network, plan: Plan, *, dropout_rate: float = DEFAULT_DROPOUT_RATE,
                  deep_supervision: bool = True) -> UNetSpec:
    """The spec of ``network`` on ``plan``: a k-stage network takes the Plan's first k stages."""
    if not isinstance(plan, Plan):
        raise SpecError(f"a Plan is needed to compile an architecture, got {type(plan).__name__} {plan!r:.80}")
    k = len(network.encoder.blocks_per_stage)
    if k > plan.n_stages:
        raise SpecError(f"the architecture has {k} stages but plan {plan.dataset_name!r} has only {plan.n_stages}; "
                        f"expected a grammar made from this plan")
    return UNetSpec(
        dims=plan.dims, input_channels=plan.n_input_channels, n_classes=plan.n_classes, n_stages=k,
        features_per_stage=plan.features_per_stage[:k], strides=plan.strides[:k],
        kernel_sizes=plan.kernel_sizes[:k], encoder=network.encoder, decoder=network.decoder,
        dropout_rate=dropout_rate, deep_supervision=deep_supervision)


def spec_from_tree(tree: Tree, plan: Plan, *, dropout_rate: float = DEFAULT_DROPOUT_RATE,
                   deep_supervision: bool = True) -> UNetSpec:
    """UNetSpec of a derivation tree (``hnas.grammar.parse`` or a sampler's output)."""
    if not isinstance(tree, Tree):
        raise SpecError(f"expected a derivation tree (lark.Tree), got {type(tree).__name__} {tree!r:.80}")
    transformer = SpecTransformer(plan, dropout_rate=dropout_rate, deep_supervision=deep_supervision)
    try:
        spec = transformer.transform(tree)
    except lark.exceptions.VisitError as exc:
        if isinstance(exc.orig_exc, HnasError):
            raise exc.orig_exc from None
        raise SpecError(f"tree is not a derivation of an hnas grammar: rule {exc.rule!r} failed "
                        f"({type(exc.orig_exc).__name__}: {exc.orig_exc})") from None
    if not isinstance(spec, UNetSpec):
        raise SpecError(f"tree is not a derivation of an hnas grammar: its root is {tree.data!r}, "
                        f"expected 'architecture'")
    return spec


def compile_architecture(grammar: str, text: str, plan: Plan, *, dropout_rate: float = DEFAULT_DROPOUT_RATE,
                         deep_supervision: bool = True) -> UNetSpec:
    """UNetSpec of an architecture string, transformed during the LALR parse (no tree).

    Invalid text raises the grammar's :class:`InvalidArchitecture` (word, position, expected).
    """
    if not isinstance(text, str):
        parse(grammar, text)  # raises the grammar's own error for non-strings
    try:
        network = _inline_parser(grammar).parse(text)
    except InvalidArchitecture:
        raise
    except lark.exceptions.LarkError as exc:
        parse(grammar, text)  # the slow path that locates the offending word and raises
        raise InvalidArchitecture(f"invalid architecture {text!r}: {exc}") from None
    return assemble_spec(network, plan, dropout_rate=dropout_rate, deep_supervision=deep_supervision)


@lru_cache(maxsize=32)
def _inline_parser(grammar: str) -> Lark:
    """One parser per grammar: the transformer it runs is plan-free, so plans can share it.

    The numbered rules get direct aliases of their base methods, so the parser calls them
    without going through ``__default__`` (that dispatch was a fifth of the compile time).
    """
    rules = {str(rule.origin.name) for rule in load_grammar(grammar).rules}  # GrammarError if broken
    aliases = {name: getattr(SpecTransformer, _base_rule(name)) for name in rules
               if not hasattr(SpecTransformer, name)}
    transformer = type("_GrammarSpecTransformer", (_InlineSpecTransformer,), aliases)()
    return Lark(grammar, start="architecture", parser="lalr", lexer=WordLexer, keep_all_tokens=True,
                propagate_positions=False, maybe_placeholders=False, transformer=transformer)


@lru_cache(maxsize=None)
def _base_rule(rule: str) -> str:
    match = _NUMBERED_RULE.match(rule)
    if match is None or not hasattr(SpecTransformer, match.group(1)):
        raise SpecError(f"rule {rule!r} is not part of an hnas grammar; expected rules such as "
                        f"'net4', 'conv_encoder4' or 'dec_block2'")
    return match.group(1)


def _block_count(token) -> int:
    """'3b' -> 3."""
    return int(token[:-1])


def _settings_and_blocks(children) -> tuple[dict, tuple[int, ...]]:
    settings, blocks = {}, []
    for child in children:
        if type(child) is int:
            blocks.append(child)
        elif type(child) is tuple:
            settings[child[0]] = child[1]
    return settings, tuple(blocks)


def _encoder(kind: str, children) -> EncoderSpec:
    settings, blocks = _settings_and_blocks(children)
    return EncoderSpec(kind=kind, blocks_per_stage=blocks, **settings)


def _decoder(kind: str, children) -> DecoderSpec:
    settings, blocks = _settings_and_blocks(children)
    return DecoderSpec(kind=kind, blocks_per_stage=blocks, **settings)
