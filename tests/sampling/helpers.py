"""Grammars shared by the sampling tests (hand-built plans, cached: building a grammar costs ms)."""

from __future__ import annotations

import math
from functools import lru_cache

from conftest import isotropic_plan
from hnas.grammar import GrammarOptions, make_grammar

OPTIONS = {"paper": GrammarOptions(), "extended": GrammarOptions.extended()}
STAGE_COUNTS = range(2, 9)


@lru_cache(maxsize=None)
def grammar_for(n_stages: int, options: str = "paper") -> str:
    return make_grammar(isotropic_plan(n_stages), OPTIONS[options])


def bucket_mass(value: int, centre: int, lower: int, upper: int, std: float) -> float:
    """Truncated-normal mass of value's unit bucket, written out with math.erf (independent of the code)."""
    def cdf(x: float) -> float:
        return 0.5 * (1.0 + math.erf((x - centre) / (std * math.sqrt(2.0))))
    total = cdf(upper + 0.5) - cdf(lower - 0.5)
    return (cdf(value + 0.5) - cdf(value - 0.5)) / total


TOY_SINGLE_SENTENCE = """
architecture: A b
b: B
A: "a"
B: "b"
%import common.WS
%ignore WS
"""

TOY_RECURSIVE = """
architecture: A b
b: B | B b
A: "a"
B: "b"
%import common.WS
%ignore WS
"""

TOY_INLINED = """
architecture: A _b
_b: B | A
A: "a"
B: "b"
%import common.WS
%ignore WS
"""
