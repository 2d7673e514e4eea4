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


def _spec(n_stages=5):
    from hnas.cfgunet import spec_from_tree

    plan = isotropic_plan(n_stages, patch=64)
    return plan, spec_from_tree(parse(make_grammar(plan), default_architecture(plan)), plan)


def test_network_table_lists_every_stage_with_map_sizes():
    from hnas.viz.diagrams import network_text

    plan, spec = _spec()
    lines = network_text(spec, plan.patch_size).splitlines()
    encoder = [line for line in lines if line.startswith("encoder  ")]
    decoder = [line for line in lines if line.startswith("decoder  ")]
    assert len(encoder) == 5 and len(decoder) == 4
    assert encoder[-1].split()[-1] == "4x4x4"  # 64 / 2^4
    assert decoder[-1].split()[1] == "0" and decoder[-1].split()[-1] == "64x64x64"
    assert "deep supervision on" in lines[-1]


def test_network_graph_is_a_u_with_skips_and_outputs():
    from hnas.viz.diagrams import network_graph

    plan, spec = _spec()
    source = network_graph(spec, plan.patch_size).source
    assert source.count("label=skip") == 4
    assert source.count("rank=same") == 4
    assert source.count("classes") == 4  # deep supervision: one output per decoder stage
