"""parse/unparse: canonical round trips and errors that point at the offending word."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import isotropic_plan
from hnas.errors import GrammarError, InvalidArchitecture
from hnas.grammar import default_architecture, load_grammar, make_grammar, parse, unparse

PLAN = isotropic_plan(4)
GRAMMAR = make_grammar(PLAN)
DEFAULT = default_architecture(PLAN)
WORDS = sorted(set(DEFAULT.split()) | {"res_encoder", "batch_norm", "gelu", "dropout", "1b", "12b", "up", "down"})


def test_unparse_is_canonical_whitespace():
    messy = "  " + DEFAULT.replace(" ", " \n\t ", 3) + "\n"
    assert unparse(parse(GRAMMAR, messy)) == DEFAULT


def test_tree_records_every_choice():
    tree = parse(GRAMMAR, DEFAULT)
    rules = {t.data for t in tree.iter_subtrees()}
    assert {"architecture", "network", "net4", "conv_encoder4", "enc_norm", "dec_dropout", "conv_block4",
            "dec_block3"} <= rules


def test_unexpected_word_names_word_position_and_expectation():
    bad = DEFAULT.replace("leaky_relu no_dropout 2b", "leaky_relu 2b", 1)
    with pytest.raises(InvalidArchitecture) as info:
        parse(GRAMMAR, bad)
    err = info.value
    assert err.token == "2b" and err.position == 4
    assert set(err.expected) == {"dropout", "no_dropout"}
    assert "'2b' at position 4" in str(err) and "no_dropout" in str(err)


def test_unknown_word_is_named():
    with pytest.raises(InvalidArchitecture, match=r"unknown word 'swish' at position 3"):
        parse(GRAMMAR, DEFAULT.replace("leaky_relu", "swish", 1))


def test_glued_words_are_not_split():
    with pytest.raises(InvalidArchitecture, match="unknown word 'unetconv_encoder'"):
        parse(GRAMMAR, DEFAULT.replace("unet ", "unet", 1))


def test_too_short_says_what_comes_next():
    with pytest.raises(InvalidArchitecture, match="ends too early after 3 words; expected one of: elu, gelu, leaky_relu, prelu, relu"):
        parse(GRAMMAR, "unet conv_encoder instance_norm")


def test_too_many_stages_for_this_grammar():
    five = default_architecture(isotropic_plan(5))
    with pytest.raises(InvalidArchitecture) as info:
        parse(GRAMMAR, five)
    assert info.value.token in {"down", "5b"} or "down" in str(info.value)


def test_block_count_out_of_range_for_stage():
    res = default_architecture(PLAN, encoder="residual").replace("1b down", "3b down", 1)
    with pytest.raises(InvalidArchitecture, match=r"'3b' at position 5 \(character 53\); expected one of: 1b, 2b$"):
        parse(GRAMMAR, res)


def test_non_string_input():
    with pytest.raises(InvalidArchitecture, match="must be a string"):
        parse(GRAMMAR, 42)


def test_invalid_grammar_text():
    with pytest.raises(GrammarError, match="does not build with Lark"):
        load_grammar("architecture: (")


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from(WORDS + ["bogus", "", "2B"]), max_size=40))
def test_fuzzed_word_sequences_only_raise_invalid_architecture(words):
    text = " ".join(words)
    try:
        assert unparse(parse(GRAMMAR, text)) == " ".join(text.split())
    except InvalidArchitecture as err:
        assert err.position is None or 0 <= err.position <= len(text.split())


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.text(max_size=120))
def test_fuzzed_text_only_raises_invalid_architecture(text):
    try:
        parse(GRAMMAR, text)
    except InvalidArchitecture:
        pass


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.integers(0, len(DEFAULT.split()) - 1), st.sampled_from(WORDS))
def test_single_word_substitutions(position, word):
    words = DEFAULT.split()
    words[position] = word
    text = " ".join(words)
    try:
        assert unparse(parse(GRAMMAR, text)) == text
    except InvalidArchitecture as err:
        assert err.position is not None and err.position <= position + 1
