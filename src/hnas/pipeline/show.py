"""`hnas show`: an architecture string's derivation tree, network table, parameters and FLOPs, and pictures."""

from __future__ import annotations

from pathlib import Path

from hnas.cfgunet import cost, spec_from_tree
from hnas.grammar import default_architecture, grammar_options, parse, unparse
from hnas.pipeline.text import key_value_table
from hnas.planning import Plan
from hnas.viz.diagrams import derivation_text, network_graph, network_text, render, render_derivation


def resolve_architecture(plan: Plan, grammar: str, text: str) -> str:
    """'default' means nnU-Net's own network for the plan."""
    return default_architecture(plan, grammar_options(grammar)) if text.strip() == "default" else text


def describe_architecture(grammar: str, plan: Plan, text: str, *, dropout_rate: float = 0.2) -> str:
    """What `hnas show` prints: derivation tree, network table, parameters and FLOPs."""
    tree = parse(grammar, resolve_architecture(plan, grammar, text))
    spec = spec_from_tree(tree, plan, dropout_rate=dropout_rate)
    measured = cost(spec, plan.patch_size)
    summary = key_value_table([
        ("architecture", unparse(tree)),
        ("stages", str(spec.n_stages)),
        ("parameters", f"{measured.parameters:,}"),
        ("FLOPs / patch", f"{measured.flops / 1e9:,.2f} GFLOP (forward, patch {'x'.join(map(str, plan.patch_size))})"),
        ("activations", f"{measured.activation_bytes / 2**20:,.1f} MiB (forward, float32, batch 1)"),
    ])
    return "\n\n".join([derivation_text(tree), network_text(spec, plan.patch_size), summary])


def render_architecture(grammar: str, plan: Plan, text: str, path: Path) -> list[Path]:
    """Draw the derivation tree to ``path`` (compact: readable at page width), the full tree to
    ``<stem>_full<suffix>`` and the network to ``<stem>_network<suffix>``."""
    tree = parse(grammar, resolve_architecture(plan, grammar, text))
    spec = spec_from_tree(tree, plan)
    network_path = path.with_name(f"{path.stem}_network{path.suffix}")
    pictures = render_derivation(tree, path)
    network = render(network_graph(spec, plan.patch_size), network_path,
                     text_fallback=network_text(spec, plan.patch_size))
    return [pictures.compact, *([pictures.full] if pictures.full else []), network]
