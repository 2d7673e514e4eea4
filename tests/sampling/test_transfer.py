"""Carrying a derivation from one dataset's grammar onto another's (hnas.sampling.transfer)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from conftest import isotropic_plan
from hnas.grammar import make_grammar, parse, unparse
from hnas.grammar.generator import stage_range
from hnas.sampling import UniformSampler
from hnas.sampling.transfer import nearest_stage, transfer_architecture

from .helpers import OPTIONS, STAGE_COUNTS, grammar_for

DIMS = (2, 3)
SEEDS_PER_PAIR = 3  # 49 stage pairs x 4 dims pairs x 3 = 588 (source, target) pairs


def _grammar(n: int, dims: int, options: str) -> str:
    return grammar_for(n, options) if dims == 3 else _grammar_2d(n, options)


_CACHE_2D: dict = {}


def _grammar_2d(n: int, options: str) -> str:
    if (n, options) not in _CACHE_2D:
        _CACHE_2D[n, options] = make_grammar(isotropic_plan(n, dims=2), OPTIONS[options])
    return _CACHE_2D[n, options]


def _words(sentence: str) -> list[str]:
    return sentence.split()


def _decoder_at(words: list[str]) -> int:
    return next(i for i, word in enumerate(words) if word.endswith("_decoder"))


def test_every_transfer_is_a_derivation_of_the_target_grammar():
    """Over 588 (source, target) pairs: N, N' in 2..8, 2d and 3d both ways, paper and extended grammars."""
    pairs = 0
    for (n, n_target), (dims, dims_target) in itertools.product(
            itertools.product(STAGE_COUNTS, STAGE_COUNTS), itertools.product(DIMS, DIMS)):
        for seed in range(SEEDS_PER_PAIR):
            rng = np.random.default_rng([n, n_target, dims, dims_target, seed])
            options, options_target = (list(OPTIONS)[int(i)] for i in rng.integers(0, 2, size=2))
            source = _grammar(n, dims, options)
            target = _grammar(n_target, dims_target, options_target)
            sentence = UniformSampler(source).sample_string(rng)
            result = transfer_architecture(source, sentence, target)
            assert parse(target, result.architecture) == result.tree, (sentence, result.architecture)
            assert unparse(result.tree) == result.architecture
            words, mapped = _words(sentence), _words(result.architecture)
            assert mapped[1] == words[1]  # the encoder type: both grammars offer both
            assert mapped[2:5] == words[2:5]  # encoder norm, nonlinearity, dropout
            assert mapped.count("down") + 1 in stage_range(n_target)
            decoder, decoder_target = _decoder_at(words), _decoder_at(mapped)
            assert mapped[decoder_target + 1:decoder_target + 4] == words[decoder + 1:decoder + 4]
            pairs += 1
    assert pairs >= 500


@pytest.mark.parametrize("n", STAGE_COUNTS)
@pytest.mark.parametrize("options", OPTIONS)
def test_the_same_grammar_maps_a_derivation_to_itself(n, options):
    grammar = grammar_for(n, options)
    sampler = UniformSampler(grammar)
    for seed in range(40):
        tree = sampler.sample(np.random.default_rng(seed))
        result = transfer_architecture(grammar, tree, grammar)
        assert result.tree == tree
        assert result.notes == ()


def test_six_stages_onto_four_by_relative_depth():
    """The docs/transfer.md example: ResEnc M blocks of six stages onto four, decoder likewise."""
    source = make_grammar(isotropic_plan(6))
    sentence = ("unet res_encoder batch_norm gelu dropout 1b down 3b down 4b down 6b down 6b down 6b "
                "conv_decoder instance_norm elu no_dropout up 4b up 3b up 2b up 1b up 1b")
    result = transfer_architecture(source, sentence, make_grammar(isotropic_plan(4)))
    # encoder stages 0..3 sit at depths 0, 1/3, 2/3, 1 -> source stages 0, 2 (5/3), 3 (10/3, nearer 3), 5
    assert result.architecture == ("unet res_encoder batch_norm gelu dropout 1b down 4b down 6b down 6b "
                                   "conv_decoder instance_norm elu no_dropout up 4b up 2b up 1b")
    assert result.notes == ()


def test_a_shallower_derivation_keeps_its_relative_depth():
    """k = 4 of N = 8 (deepest stage at 3/7) onto N' = 4: the stage nearest 3/7 x 3 = 1.3 is stage 1, so two
    stages; each takes the source stage at its end (stage 0 and the deepest)."""
    source = grammar_for(8)
    sentence = ("unet conv_encoder instance_norm leaky_relu no_dropout 1b down 2b down 3b down 4b "
                "conv_decoder instance_norm leaky_relu no_dropout up 3b up 2b up 1b")
    result = transfer_architecture(source, sentence, grammar_for(4))
    assert result.architecture == ("unet conv_encoder instance_norm leaky_relu no_dropout 1b down 4b "
                                   "conv_decoder instance_norm leaky_relu no_dropout up 1b")
    assert result.notes == ()


def test_blocks_beyond_the_target_range_are_clipped_and_named():
    source = grammar_for(6)
    sentence = ("unet res_encoder instance_norm leaky_relu no_dropout 2b down 3b down 4b down 12b down 12b down 12b "
                "conv_decoder instance_norm leaky_relu no_dropout up 1b up 1b up 1b up 1b up 1b")
    result = transfer_architecture(source, sentence, grammar_for(2))
    assert result.architecture.startswith("unet res_encoder instance_norm leaky_relu no_dropout 2b down 6b ")
    assert result.notes == ("res_block2: 12 blocks are outside the target's 1..6, took 6",)


def test_choices_the_target_lacks_fall_back_to_its_defaults_and_are_named():
    extended = grammar_for(4, "extended")
    sentence = ("unet res_encoder instance_norm relu dropout max_pool bottleneck_block se 1b down 3b down 4b down 6b "
                "res_decoder batch_norm relu no_dropout up 1b up 1b up 1b")
    result = transfer_architecture(extended, sentence, grammar_for(4))
    assert result.architecture == ("unet res_encoder instance_norm relu dropout 1b down 3b down 4b down 6b "
                                   "conv_decoder batch_norm relu no_dropout up 1b up 1b up 1b")
    assert result.notes == ("decoder: 'res_decoder' is not offered, took 'conv_decoder'",
                            "enc_pool: the target grammar has no such choice, 'max_pool' left out",
                            "res_block_type: the target grammar has no such choice, 'bottleneck_block' left out",
                            "enc_se: the target grammar has no such choice, 'se' left out")
    back = transfer_architecture(grammar_for(4), result.architecture, extended)
    assert {note.split(":")[0] for note in back.notes} == {"enc_pool", "res_block_type", "enc_se"}


@pytest.mark.parametrize("index, count, source_count, expected", [
    (0, 4, 6, 0), (1, 4, 6, 2), (2, 4, 6, 3), (3, 4, 6, 5),  # 5/3 -> 2, 10/3 -> 3
    (1, 3, 2, 1),  # 1/2 x 1 = 0.5: a tie goes to the deeper stage
    (0, 1, 5, 0), (2, 5, 1, 0)])
def test_nearest_stage_by_relative_depth(index, count, source_count, expected):
    assert nearest_stage(index, count, source_count) == expected
