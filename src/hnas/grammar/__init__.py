"""Plan -> Lark grammar text; architecture strings <-> derivation trees.

No torch here: the grammar side stays fast to import and testable without a GPU.
"""

from hnas.grammar.choices import Choice, GrammarInfo, Symbol, grammar_info
from hnas.grammar.generator import (
    GrammarOptions,
    default_architecture,
    grammar_hash,
    grammar_options,
    make_grammar,
    stage_range,
)
from hnas.grammar.parsing import load_grammar, parse, unparse

__all__ = [
    "Choice", "GrammarInfo", "GrammarOptions", "Symbol", "default_architecture",
    "grammar_hash", "grammar_options", "grammar_info", "load_grammar", "make_grammar", "parse", "stage_range",
    "unparse",
]
