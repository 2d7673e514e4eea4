"""The generated grammar: paper productions, LALR for every N, golden files, sizes."""

from __future__ import annotations

import os
from pathlib import Path

import lark
import numpy as np
import pytest

from conftest import isotropic_plan
from hnas.errors import GrammarError, InvalidArchitecture
from hnas.grammar import (
    GrammarOptions,
    default_architecture,
    grammar_hash,
    grammar_info,
    grammar_options,
    load_grammar,
    make_grammar,
    parse,
    stage_range,
    unparse,
)

GOLDEN = Path(__file__).parent / "golden"
OPTIONS = [GrammarOptions(), GrammarOptions.extended()]


@pytest.mark.parametrize("n", range(2, 9))
@pytest.mark.parametrize("options", OPTIONS, ids=["paper", "extended"])
def test_builds_with_lalr_for_every_stage_count(n, options):
    grammar = make_grammar(isotropic_plan(n), options)
    load_grammar(grammar)  # raises GrammarError on any LALR conflict
    for encoder in ("conv", "residual"):
        sentence = default_architecture(isotropic_plan(n), options, encoder=encoder)
        assert unparse(parse(grammar, sentence)) == sentence


@pytest.mark.parametrize("n,expected", [(4, 3.7e7), (6, 7.1e10), (7, 3.4e12)])
def test_search_space_sizes_match_the_paper(n, expected):
    size = grammar_info(make_grammar(isotropic_plan(n))).count_sentences()
    assert size == pytest.approx(expected, rel=0.02)


def test_stage_range_keeps_at_least_half():
    assert list(stage_range(6)) == [3, 4, 5, 6]
    assert list(stage_range(5)) == [3, 4, 5]
    assert list(stage_range(2)) == [2]  # one stage is no U-Net


def test_hippocampus_default_is_the_design_example(hippocampus_plan):
    assert default_architecture(hippocampus_plan) == (
        "unet conv_encoder instance_norm leaky_relu no_dropout 2b down 2b down 2b down 2b "
        "conv_decoder instance_norm leaky_relu no_dropout up 2b up 2b up 2b")


def test_residual_default_uses_resenc_m_blocks(hippocampus_plan):
    assert default_architecture(hippocampus_plan, encoder="residual") == (
        "unet res_encoder instance_norm leaky_relu no_dropout 1b down 3b down 4b down 6b "
        "conv_decoder instance_norm leaky_relu no_dropout up 1b up 1b up 1b")


def test_paper_block_ranges():
    info = grammar_info(make_grammar(isotropic_plan(6)))
    assert info.choices["conv_block1"].values == (1, 2, 3, 4)
    assert info.choices["dec_block5"].values == (1, 2, 3, 4)
    assert [len(info.choices[f"res_block{i}"].labels) for i in range(1, 7)] == [2, 6, 8, 12, 12, 12]
    assert info.choices["enc_nonlin"].labels == ("leaky_relu", "relu", "elu", "prelu", "gelu")
    assert info.choices["network"].values == (3, 4, 5, 6)
    assert info.choices["network"].labels[info.choices["network"].default] == "net6"


def test_extended_options_add_only_dna_buildable_choices():
    info = grammar_info(make_grammar(isotropic_plan(5), GrammarOptions.extended()))
    assert info.choices["enc_pool"].labels == ("conv_pool", "max_pool", "avg_pool")
    assert info.choices["res_block_type"].labels == ("basic_block", "bottleneck_block")
    assert info.choices["enc_se"].labels == ("no_se", "se")
    assert info.choices["decoder5"].labels == ("conv_decoder5", "res_decoder5")


def test_max_scale_widens_block_ranges():
    info = grammar_info(make_grammar(isotropic_plan(4), GrammarOptions(max_scale=3)))
    assert info.choices["conv_block2"].values == (1, 2, 3, 4, 5, 6)
    assert len(info.choices["res_block2"].labels) == 9


def test_generation_is_deterministic_and_hash_tracks_content(hippocampus_plan):
    a, b = make_grammar(hippocampus_plan), make_grammar(hippocampus_plan)
    assert a == b and grammar_hash(a) == grammar_hash(b)
    assert grammar_hash(a) != grammar_hash(make_grammar(hippocampus_plan, GrammarOptions.extended()))


def test_hash_ignores_the_start_line_so_older_runs_still_resume(hippocampus_plan):
    grammar = make_grammar(hippocampus_plan)
    assert "start: architecture\n" in grammar
    written_before_the_start_line = grammar.replace("start: architecture\n", "")
    assert grammar_hash(written_before_the_start_line) == grammar_hash(grammar)


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_bad_max_scale_is_refused(bad):
    with pytest.raises(GrammarError, match="max_scale"):
        GrammarOptions(max_scale=bad)


def test_unknown_option_names_it():
    with pytest.raises(GrammarError, match="pool_type"):
        GrammarOptions.from_dict({"pool_type": "max"})


def test_too_many_stages_is_refused():
    with pytest.raises(GrammarError, match="13 stages"):
        make_grammar(isotropic_plan(13))


def test_default_with_stage_count_outside_range(hippocampus_plan):
    with pytest.raises(GrammarError, match="n_stages=1"):
        default_architecture(hippocampus_plan, n_stages=1)
    with pytest.raises(GrammarError, match="n_stages=5"):
        default_architecture(hippocampus_plan, n_stages=5)
    assert default_architecture(hippocampus_plan, n_stages=2).count("down") == 1


GOLDEN_CASES = {
    "hippocampus_4stages_paper": (lambda: isotropic_plan(4, name="Dataset004_Hippocampus"), GrammarOptions()),
    "isotropic_6stages_paper": (lambda: isotropic_plan(6), GrammarOptions()),
    "isotropic_5stages_extended": (lambda: isotropic_plan(5), GrammarOptions.extended()),
}


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_golden_grammars(name):
    """Generated grammars change only on purpose: rerun with HNAS_UPDATE_GOLDEN=1 to accept."""
    make_plan, options = GOLDEN_CASES[name]
    text = make_grammar(make_plan(), options)
    path = GOLDEN / f"{name}.lark"
    if os.environ.get("HNAS_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.is_file(), f"missing golden file {path}; run with HNAS_UPDATE_GOLDEN=1"
    assert text == path.read_text()


@pytest.mark.parametrize("options", OPTIONS + [GrammarOptions(max_scale=3, pooling=True)])
def test_options_are_recorded_in_the_grammar(options):
    assert grammar_options(make_grammar(isotropic_plan(4), options)) == options


PLAIN_LARK_OPTIONS = OPTIONS + [
    GrammarOptions(max_scale=1), GrammarOptions(max_scale=3), GrammarOptions(residual_decoder=True),
    GrammarOptions(pooling=True), GrammarOptions(bottleneck=True), GrammarOptions(squeeze_excitation=True),
]


@pytest.mark.parametrize("n", [2, 5, 12])
@pytest.mark.parametrize("options", PLAIN_LARK_OPTIONS, ids=lambda o: "-".join(
    f"{k}={v}" for k, v in sorted(vars(o).items()) if v != getattr(GrammarOptions(), k)) or "paper")
def test_plain_lark_loads_the_grammar_and_gives_our_trees(n, options):
    """A grammar file is usable without hnas: Lark's defaults (start rule `start`, its own lexer)."""
    from hnas.sampling import UniformSampler

    plan = isotropic_plan(n)
    grammar = make_grammar(plan, options)
    plain = lark.Lark(grammar, parser="lalr")
    sampler = UniformSampler(grammar)
    rng = np.random.default_rng(n)
    sentences = [default_architecture(plan, options, encoder=e) for e in ("conv", "residual")]
    sentences += [sampler.sample_string(rng) for _ in range(10)]
    for sentence in sentences:
        tree = plain.parse(sentence.replace(" ", "\n ", 2))  # Lark's %ignore WS, as our word split
        assert tree.data == "start" and len(tree.children) == 1
        assert tree.children[0] == parse(grammar, sentence), sentence


def test_plain_lark_refuses_what_we_refuse(hippocampus_plan):
    grammar = make_grammar(hippocampus_plan)
    plain = lark.Lark(grammar, parser="lalr")
    too_deep = default_architecture(isotropic_plan(5))
    for bad in (too_deep, default_architecture(hippocampus_plan).replace(" no_dropout", "", 1)):
        with pytest.raises(InvalidArchitecture):
            parse(grammar, bad)
        with pytest.raises(lark.exceptions.UnexpectedInput):
            plain.parse(bad)
