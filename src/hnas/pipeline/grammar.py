"""`hnas grammar`: the Lark grammar of a plan, checked by building nnU-Net's network on the plan first."""

from __future__ import annotations

from hnas.cfgunet import compile_architecture, cost
from hnas.grammar import GrammarOptions, default_architecture, make_grammar
from hnas.planning import Plan


def grammar_for(plan: Plan, *, extended: bool = False) -> str:
    """The plan's grammar; the plan is checked first by compiling nnU-Net's default network on it,
    so a broken plan file fails in `hnas grammar` exactly as it would in `hnas show`."""
    check_plan(plan)
    return make_grammar(plan, GrammarOptions.extended() if extended else GrammarOptions())


def check_plan(plan: Plan) -> None:
    """Raise the compiler's error (naming the field) when no network can be built on ``plan``."""
    grammar = make_grammar(plan, GrammarOptions())
    cost(compile_architecture(grammar, default_architecture(plan, GrammarOptions()), plan), plan.patch_size)
