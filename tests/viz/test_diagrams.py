"""Derivation diagrams: graphviz output when `dot` exists, text otherwise."""

from __future__ import annotations

import re

import pytest
from lark import Token

from conftest import isotropic_plan
from hnas.grammar import GrammarOptions, default_architecture, make_grammar, parse
from hnas.viz import diagrams
from hnas.viz.diagrams import (
    RenderError,
    collapsed_stages,
    compact_derivation,
    compact_derivation_graph,
    derivation_graph,
    derivation_text,
    render,
    render_derivation,
)

PLAN = isotropic_plan(4)
TREE = parse(make_grammar(PLAN), default_architecture(PLAN))
#: A report page is ~800 pt wide; the full tree of a 6-stage default is ~2,500 pt.
PAGE_WIDTH_PT = 800
needs_dot = pytest.mark.skipif(not diagrams.has_dot(), reason="graphviz 'dot' not installed (make system-deps)")


def default_tree(n_stages: int, encoder: str = "conv", options: GrammarOptions | None = None):
    plan = isotropic_plan(n_stages)
    return parse(make_grammar(plan, options), default_architecture(plan, options, encoder=encoder))


def svg_width_pt(path) -> float:
    """The width graphviz writes on the root element: <svg width="643pt" ...>."""
    return float(re.search(r'<svg width="([\d.]+)pt"', path.read_text()).group(1))


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


@needs_dot
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


def test_compact_tree_collapses_the_per_stage_rules():
    runs = collapsed_stages(default_tree(6))
    assert [(r.name, r.n_stages, r.groups) for r in runs] == [("conv_block1-6", 6, ((1, 6, "2b"),)),
                                                              ("dec_block1-5", 5, ((1, 5, "2b"),))]
    residual = collapsed_stages(default_tree(6, "residual"))[0]  # ResEnc M: 1, 3, 4, 6, 6, 6 blocks
    assert residual.lines() == ["res_block1 = 1b", "res_block2 = 3b", "res_block3 = 4b", "res_block4-6 = 6b"]


def test_compact_tree_merges_chains_and_choices_and_keeps_every_word():
    tree = default_tree(6, "residual", GrammarOptions.extended())
    nodes = list(compact_derivation(tree).walk())
    assert [n.kind for n in nodes] == ["rule", "rule", "rule", "choices", "stages", "rule", "choices", "stages"]
    assert nodes[1].lines == ("network -> net6",)
    assert nodes[2].lines == ("encoder6 -> res_encoder6", "'res_encoder', 'down' x5")
    assert nodes[3].lines[:2] == ("enc_norm = instance_norm", "enc_nonlin = leaky_relu")
    source = compact_derivation_graph(tree).source
    assert all(str(word) in source for word in tree.scan_values(lambda v: isinstance(v, Token)))


def test_a_tree_without_numbered_siblings_collapses_nothing():
    from lark import Tree

    tree = Tree("root", [Tree("a", [Token("A", "x")]), Tree("b1", [Token("B", "y")])])
    assert collapsed_stages(tree) == []
    assert [n.lines for n in compact_derivation(tree).walk()] == [("root",), ("a = x", "b1 = y")]


@needs_dot
@pytest.mark.parametrize("n_stages", [4, 6])
@pytest.mark.parametrize("encoder", ["conv", "residual"])
def test_compact_picture_fits_page_width_and_full_one_is_kept(tmp_path, n_stages, encoder):
    tree = default_tree(n_stages, encoder)
    pictures = render_derivation(tree, tmp_path / "tree.svg", title="PriorBand (hpo+hnas): trial 17")
    assert pictures.compact == tmp_path / "tree.svg" and pictures.full == tmp_path / "tree_full.svg"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tree.svg", "tree_full.svg"]
    assert svg_width_pt(pictures.compact) < PAGE_WIDTH_PT < svg_width_pt(pictures.full)  # ~640 vs 1,800-2,500
    assert [r.name for r in pictures.stage_runs][0].endswith(f"_block1-{n_stages}")
    assert pictures.full.read_text().count("<g id=\"node") == pictures.full_nodes


def test_without_dot_only_the_text_tree_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(diagrams, "has_dot", lambda: False)
    pictures = render_derivation(TREE, tmp_path / "tree.svg")
    assert pictures.compact == tmp_path / "tree.txt" and pictures.full is None
    assert pictures.compact.read_text() == derivation_text(TREE) + "\n"


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
