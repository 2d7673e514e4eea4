"""Search configs -> trainer settings and networks (the search-space names of docs/references.md, NAS mapping, errors)."""

from __future__ import annotations

import pytest

from hnas.cfgunet import compile_architecture
from hnas.errors import SearchSpaceError
from hnas.grammar import default_architecture, make_grammar
from hnas.train.config import PipelineConfig, TrainConfig, network_choice, train_config, with_features

from .conftest import tiny_plan


def test_defaults_are_nnunets():
    config = train_config({})
    assert config == TrainConfig()
    assert (config.optimizer, config.momentum, config.initial_lr, config.lr_scheduler) == ("SGD", 0.99, 1e-2, "PolyLR")
    assert (config.weight_decay, config.foreground_oversampling, config.loss) == (3e-5, 0.33, "DiceCE")


@pytest.mark.parametrize("key, value", [
    ("optimizer", "RMSprop"), ("initial_lr", 0.0), ("initial_lr", float("nan")), ("lr_scheduler", "Step"),
    ("foreground_oversampling", 1.5), ("loss", "Focal"), ("aug_factor", -1.0), ("momentum", 1.0),
    ("dropout_rate", 1.0), ("weight_decay", "small"),
])
def test_invalid_values_name_key_and_value(key, value):
    with pytest.raises(SearchSpaceError) as error:
        train_config({key: value})
    assert repr(key) in str(error.value) and repr(value) in str(error.value)


def test_unknown_key_is_refused():
    with pytest.raises(SearchSpaceError, match="learning_rate"):
        train_config({"learning_rate": 0.1})


def test_momentum_is_ignored_for_adam():
    assert train_config({"optimizer": "Adam", "momentum": 0.9}).optimizer == "Adam"


def test_default_network_is_nnunets():
    plan = tiny_plan()
    grammar = make_grammar(plan)
    choice = network_choice({}, plan, grammar)
    assert choice.architecture == default_architecture(plan)
    assert choice.plan == plan and choice.dropout_rate == 0.0


def test_explicit_architecture_wins_and_keeps_dropout_rate():
    plan = tiny_plan()
    grammar = make_grammar(plan)
    sentence = default_architecture(plan, n_stages=2)
    choice = network_choice({"architecture": sentence, "dropout_rate": 0.2}, plan, grammar)
    assert (choice.architecture, choice.dropout_rate) == (sentence, 0.2)
    with pytest.raises(SearchSpaceError, match="NAS keys"):
        network_choice({"architecture": sentence, "encoder_type": "conv"}, plan, grammar)


def test_nas_keys_change_blocks_layers_and_features():
    plan = tiny_plan(base_features=32, max_features=320, features_per_stage=(32, 64, 128))
    grammar = make_grammar(plan)
    config = {"encoder_type": "residual", "model_scale": 2.0, "base_features": 16, "max_features": 40,
              "activation": "GELU", "normalization": "BatchNorm", "dropout_rate": 0.1}
    choice = network_choice(config, plan, grammar)
    assert choice.plan.features_per_stage == (16, 32, 40)
    assert (choice.plan.base_features, choice.plan.max_features) == (16, 40)
    assert choice.architecture == ("unet res_encoder batch_norm gelu dropout 2b down 6b down 8b "
                                   "conv_decoder batch_norm gelu dropout up 2b up 2b")
    spec = compile_architecture(grammar, choice.architecture, choice.plan, dropout_rate=choice.dropout_rate)
    assert spec.features_per_stage == (16, 32, 40) and spec.encoder.blocks_per_stage == (2, 6, 8)


def test_nas_features_scale_with_a_smaller_preset():
    plan = with_features(tiny_plan(), 8, 64)  # the CPU preset's features
    choice = network_choice({"base_features": 64, "max_features": 640, "model_scale": 0.5}, plan, make_grammar(plan))
    assert choice.plan.base_features == 16 and choice.plan.max_features == 128
    assert "1b" in choice.architecture and "2b" not in choice.architecture


@pytest.mark.parametrize("key, value", [("model_scale", 3.0), ("encoder_type", "dense"), ("activation", "Swish"),
                                        ("normalization", "GroupNorm"), ("base_features", 0)])
def test_invalid_nas_values(key, value):
    plan = tiny_plan()
    with pytest.raises(SearchSpaceError, match=key):
        network_choice({key: value}, plan, make_grammar(plan))


def tiny_plan_2d() -> "Plan":
    return tiny_plan(dims=2, patch_size=(16, 16), spacing=(1.0, 1.0), median_shape=(22, 22),
                     strides=((1, 1), (2, 2), (2, 2)), kernel_sizes=((3, 3),) * 3, batch_size=8)


def test_pipeline_defaults_keep_nnunets_3d_plan():
    plan = tiny_plan()
    grammar = make_grammar(plan)
    choice = network_choice({"loss": "DiceCE", "network_dims": "3d", "intensity_normalization": "nnunet",
                             "spacing_factor": 1.0}, plan, grammar)
    assert choice.plan == plan and choice.grammar == grammar
    assert choice.architecture == default_architecture(plan)


def test_pipeline_picks_the_2d_plan_and_its_default_network():
    plan, plan_2d = tiny_plan(), tiny_plan_2d()
    grammar, grammar_2d = make_grammar(plan), make_grammar(plan_2d)
    choice = network_choice({"network_dims": "2d"}, plan, grammar, plan_2d=plan_2d, grammar_2d=grammar_2d)
    assert choice.plan == plan_2d and choice.grammar == grammar_2d
    spec = compile_architecture(choice.grammar, choice.architecture, choice.plan)
    assert spec.dims == 2 and spec.kernel_sizes[0] == (3, 3)


def test_pipeline_2d_without_a_2d_plan_is_refused_clearly():
    plan = tiny_plan()
    with pytest.raises(SearchSpaceError, match="no 2D plan"):
        network_choice({"network_dims": "2d"}, plan, make_grammar(plan))


def test_pipeline_spacing_factor_and_normalisation_change_the_plan_only_there():
    plan = tiny_plan(spacing=(2.0, 1.0, 1.0))
    choice = network_choice({"spacing_factor": 1.5, "intensity_normalization": "minmax"}, plan, make_grammar(plan))
    assert choice.plan.spacing == (3.0, 1.5, 1.5)
    assert choice.plan.normalization == ("minmax",)
    assert choice.plan.patch_size == plan.patch_size and choice.architecture == default_architecture(plan)


def test_architecture_sentences_stay_3d():
    plan, plan_2d = tiny_plan(), tiny_plan_2d()
    with pytest.raises(SearchSpaceError, match="3D grammar"):
        network_choice({"architecture": default_architecture(plan), "network_dims": "2d"}, plan, make_grammar(plan),
                       plan_2d=plan_2d, grammar_2d=make_grammar(plan_2d))


@pytest.mark.parametrize("key, value", [("network_dims", "2.5d"), ("intensity_normalization", "histogram"),
                                        ("spacing_factor", 0.0), ("spacing_factor", "coarse")])
def test_invalid_pipeline_values_name_key_and_value(key, value):
    with pytest.raises(SearchSpaceError) as error:
        PipelineConfig.from_config({key: value})
    assert repr(key) in str(error.value) and repr(value) in str(error.value)


def _residual_plan(plan, **changes):
    from dataclasses import replace

    return replace(plan, planner="resenc_m", **changes)


def test_residual_encoders_train_with_the_resenc_plans_patch_and_batch():
    plan = tiny_plan()
    grammar = make_grammar(plan)
    residual = _residual_plan(plan, batch_size=plan.batch_size * 8)
    nas = network_choice({"encoder_type": "residual"}, plan, grammar, residual_plan=residual)
    assert nas.plan.batch_size == plan.batch_size * 8 and nas.plan.patch_size == residual.patch_size
    sentence = default_architecture(plan, encoder="residual")
    explicit = network_choice({"architecture": sentence}, plan, grammar, residual_plan=residual)
    assert explicit.plan.batch_size == plan.batch_size * 8


def test_conv_encoders_keep_the_default_plan():
    plan = tiny_plan()
    grammar = make_grammar(plan)
    residual = _residual_plan(plan, batch_size=plan.batch_size * 8)
    assert network_choice({}, plan, grammar, residual_plan=residual).plan == plan
    assert network_choice({"encoder_type": "conv"}, plan, grammar, residual_plan=residual).plan.batch_size == \
        plan.batch_size


def test_a_resenc_plan_of_another_topology_is_not_used():
    plan = tiny_plan()
    grammar = make_grammar(plan)
    other = _residual_plan(plan, batch_size=plan.batch_size * 8, strides=tuple((1,) * plan.dims for _ in plan.strides))
    choice = network_choice({"encoder_type": "residual"}, plan, grammar, residual_plan=other)
    assert choice.plan.batch_size == plan.batch_size
