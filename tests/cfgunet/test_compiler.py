"""Derivation -> UNetSpec: the Transformer on trees and inside the LALR parse agree."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lark import Token, Tree

from conftest import isotropic_plan
from hnas.cfgunet import (
    DecoderSpec,
    EncoderSpec,
    SpecTransformer,
    UNetSpec,
    compile_architecture,
    spec_from_tree,
)
from hnas.errors import InvalidArchitecture, SpecError
from hnas.grammar import GrammarOptions, default_architecture, grammar_info, make_grammar, parse, stage_range

from .cfgunet_helpers import make_test_plan, random_sentence, tiny_plan

OPTIONS = {"paper": GrammarOptions(), "extended": GrammarOptions.extended()}


def test_default_conv_architecture_is_nnunets_network(hippocampus_plan):
    plan = hippocampus_plan
    spec = compile_architecture(make_grammar(plan), default_architecture(plan), plan)
    assert spec == UNetSpec(
        dims=3, input_channels=1, n_classes=3, n_stages=4, features_per_stage=(32, 64, 128, 256),
        strides=((1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2)), kernel_sizes=((3, 3, 3),) * 4,
        encoder=EncoderSpec("conv", "instance", "leaky_relu", False, (2, 2, 2, 2)),
        decoder=DecoderSpec("conv", "instance", "leaky_relu", False, (2, 2, 2)),
        dropout_rate=0.2, deep_supervision=True)


def test_default_residual_architecture_is_resenc_m(hippocampus_plan):
    plan = hippocampus_plan
    spec = compile_architecture(make_grammar(plan), default_architecture(plan, encoder="residual"), plan)
    assert spec.encoder == EncoderSpec("residual", "instance", "leaky_relu", False, (1, 3, 4, 6))
    assert spec.decoder == DecoderSpec("conv", "instance", "leaky_relu", False, (1, 1, 1))


def test_every_choice_reaches_the_spec():
    plan = isotropic_plan(4)
    grammar = make_grammar(plan, GrammarOptions.extended())
    text = ("unet res_encoder batch_norm prelu dropout max_pool bottleneck_block se 2b down 5b down 1b "
            "res_decoder instance_norm gelu no_dropout up 4b up 3b")
    spec = compile_architecture(grammar, text, plan, dropout_rate=0.4, deep_supervision=False)
    assert spec.encoder == EncoderSpec("residual", "batch", "prelu", True, (2, 5, 1), pool="max", block="bottleneck",
                                       squeeze_excitation=True)
    assert spec.decoder == DecoderSpec("residual", "instance", "gelu", False, (4, 3))
    assert (spec.dropout_rate, spec.deep_supervision) == (0.4, False)
    assert spec_from_tree(parse(grammar, text), plan, dropout_rate=0.4, deep_supervision=False) == spec


def test_fewer_stages_take_the_plans_first_entries():
    plan = make_test_plan([(1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2)], [(1, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3)],
                          (16, 32, 64, 128), patch=(32, 64, 64))
    grammar = make_grammar(plan)
    spec = compile_architecture(grammar, default_architecture(plan, n_stages=2), plan)
    assert spec.n_stages == 2
    assert spec.features_per_stage == (16, 32)
    assert spec.strides == ((1, 1, 1), (1, 2, 2)) and spec.kernel_sizes == ((1, 3, 3), (3, 3, 3))


@pytest.mark.parametrize("n", range(2, 9))
@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_inline_compile_equals_tree_transform(n, options):
    rng = np.random.default_rng(100 + n)
    plan = isotropic_plan(n, patch=256)
    grammar = make_grammar(plan, options)
    for _ in range(40):
        text = random_sentence(grammar, rng)
        spec = compile_architecture(grammar, text, plan)
        assert spec == spec_from_tree(parse(grammar, text), plan)
        assert spec.n_stages in stage_range(n)
        assert spec.features_per_stage == plan.features_per_stage[:spec.n_stages]
        assert spec.strides == plan.strides[:spec.n_stages]
        assert len(spec.decoder.blocks_per_stage) == spec.n_stages - 1
        words = text.split()
        assert spec.encoder.kind == ("conv" if words[1] == "conv_encoder" else "residual")
        decoder_at = next(i for i, w in enumerate(words) if w.endswith("_decoder"))
        assert spec.encoder.blocks_per_stage == _block_counts(words[:decoder_at])
        assert spec.decoder.blocks_per_stage == _block_counts(words[decoder_at:])


def _block_counts(words) -> tuple[int, ...]:
    return tuple(int(w[:-1]) for w in words if w[:-1].isdigit() and w.endswith("b"))


def test_transformer_dispatches_numbered_rules_through_default():
    plan = tiny_plan(3, 2)
    tree = parse(make_grammar(plan), default_architecture(plan))
    assert {t.data for t in tree.iter_subtrees()} >= {"net3", "conv_encoder3", "conv_block2", "dec_block1"}
    spec = SpecTransformer(plan, dropout_rate=0.1, deep_supervision=False).transform(tree)
    assert isinstance(spec, UNetSpec) and spec.dropout_rate == 0.1 and not spec.deep_supervision


@pytest.mark.parametrize("text", [
    "unet conv_encoder instance_norm relu down",
    "unet foo",
    "",
    "unet conv_encoder instance_norm leaky_relu no_dropout 2b down 2b conv_decoder",
])
def test_bad_text_raises_the_grammars_error(text):
    plan = isotropic_plan(4)
    grammar = make_grammar(plan)
    with pytest.raises(InvalidArchitecture) as expected:
        parse(grammar, text)
    with pytest.raises(InvalidArchitecture) as got:
        compile_architecture(grammar, text, plan)
    assert str(got.value) == str(expected.value)
    assert (got.value.token, got.value.position, got.value.expected) == \
        (expected.value.token, expected.value.position, expected.value.expected)


def test_non_string_is_invalid_architecture():
    plan = isotropic_plan(4)
    with pytest.raises(InvalidArchitecture, match="must be a string"):
        compile_architecture(make_grammar(plan), None, plan)


def test_plan_with_too_few_stages_is_named():
    grammar = make_grammar(isotropic_plan(6))
    small = isotropic_plan(4)
    with pytest.raises(SpecError, match="has 6 stages but plan 'Isotropic' has only 4"):
        compile_architecture(grammar, default_architecture(isotropic_plan(6)), small)


def test_missing_plan_is_named():
    plan = isotropic_plan(4)
    with pytest.raises(SpecError, match="a Plan is needed"):
        compile_architecture(make_grammar(plan), default_architecture(plan), plan.to_dict())


def test_spec_from_tree_rejects_foreign_input():
    plan = isotropic_plan(4)
    with pytest.raises(SpecError, match="expected a derivation tree"):
        spec_from_tree(default_architecture(plan), plan)
    with pytest.raises(SpecError, match="rule 'expression' is not part of an hnas grammar"):
        spec_from_tree(Tree("expression", [Token("NUMBER", "1")]), plan)
    with pytest.raises(SpecError, match="rule 'enc_norm' failed"):
        spec_from_tree(Tree("enc_norm", [Token("GROUP_NORM", "group_norm")]), plan)
    with pytest.raises(SpecError, match="its root is 'enc_nonlin'"):
        spec_from_tree(Tree("enc_nonlin", [Token("RELU", "relu")]), plan)


FUZZ_PLAN = isotropic_plan(3)
FUZZ_GRAMMAR = make_grammar(FUZZ_PLAN, GrammarOptions.extended())
FUZZ_WORDS = sorted(grammar_info(FUZZ_GRAMMAR).words.values()) + ["bogus", "2B"]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.one_of(st.lists(st.sampled_from(FUZZ_WORDS), max_size=30).map(" ".join),
                 st.integers(0, 10**6).map(lambda seed: random_sentence(FUZZ_GRAMMAR, np.random.default_rng(seed)))))
def test_fuzzed_text_compiles_or_raises_invalid_architecture(text):
    try:
        spec = compile_architecture(FUZZ_GRAMMAR, text, FUZZ_PLAN)
    except InvalidArchitecture:
        return
    assert spec == spec_from_tree(parse(FUZZ_GRAMMAR, text), FUZZ_PLAN)
