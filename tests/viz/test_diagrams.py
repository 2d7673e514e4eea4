"""Derivation diagrams: graphviz output when `dot` exists, text otherwise."""

from __future__ import annotations

import pytest

from conftest import isotropic_plan
from hnas.grammar import default_architecture, make_grammar, parse
from hnas.viz import diagrams
from hnas.viz.diagrams import RenderError, derivation_graph, derivation_text, render

PLAN = isotropic_plan(4)
TREE = parse(make_grammar(PLAN), default_architecture(PLAN))


def test_text_tree_shows_rules_and_choices():
    text = derivation_text(TREE)
    lines = text.splitlines()
    assert lines[0] == "architecture"
    assert "          enc_norm = instance_norm" in lines  # a choice shows its word after '='
    assert "          'conv_encoder'" in lines  # fixed words are quoted
    assert sum("conv_block" in line for line in lines) == 4
    assert sum("dec_block" in line for line in lines) == 3


def test_graph_has_a_node_per_rule_and_word():
    graph = derivation_graph(TREE, title="default")
    n_nodes = len(list(TREE.iter_subtrees())) + len(list(TREE.scan_values(lambda v: True)))
    assert graph.source.count("shape=box") + graph.source.count("shape=ellipse") == n_nodes
    assert "label=default" in graph.source


@pytest.mark.skipif(not diagrams.has_dot(), reason="graphviz 'dot' not installed (make system-deps)")
@pytest.mark.parametrize("suffix", ["svg", "png"])
def test_render_with_dot(tmp_path, suffix):
    out = render(derivation_graph(TREE), tmp_path / f"tree.{suffix}", text_fallback=derivation_text(TREE))
    assert out == tmp_path / f"tree.{suffix}"
    assert out.stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"tree.{suffix}"]
    if suffix == "svg":
        assert "<svg" in out.read_text() and "instance_norm" in out.read_text()


def test_render_without_dot_writes_text_and_source(tmp_path, monkeypatch):
    monkeypatch.setattr(diagrams, "has_dot", lambda: False)
    out = render(derivation_graph(TREE), tmp_path / "tree.svg", text_fallback=derivation_text(TREE))
    assert out == tmp_path / "tree.txt"
    assert out.read_text().startswith("architecture")
    assert (tmp_path / "tree.gv").read_text().startswith("digraph")


def test_unknown_format_is_named(tmp_path):
    with pytest.raises(RenderError, match=r"suffix '\.jpg'"):
        render(derivation_graph(TREE), tmp_path / "tree.jpg", text_fallback="")
