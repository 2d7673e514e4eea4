"""UNetSpec: JSON round trip, validation errors that name the field, torch-free import."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hnas.cfgunet import DecoderSpec, EncoderSpec, UNetSpec, compile_architecture
from hnas.errors import SpecError
from hnas.grammar import GrammarOptions, make_grammar

from .cfgunet_helpers import random_sentence, tiny_plan

ENCODER = EncoderSpec(kind="residual", norm="batch", nonlin="prelu", dropout=True, blocks_per_stage=(1, 2, 3),
                      pool="max", block="bottleneck", squeeze_excitation=True)
DECODER = DecoderSpec(kind="residual", norm="instance", nonlin="gelu", dropout=False, blocks_per_stage=(2, 1))
SPEC = UNetSpec(dims=3, input_channels=2, n_classes=4, n_stages=3, features_per_stage=(8, 16, 32),
                strides=((1, 1, 1), (1, 2, 2), (2, 2, 2)), kernel_sizes=((1, 3, 3), (3, 3, 3), (3, 3, 3)),
                encoder=ENCODER, decoder=DECODER, dropout_rate=0.35, deep_supervision=False)


def test_json_round_trip_is_exact_and_hashable():
    text = SPEC.to_json()
    again = UNetSpec.from_json(text)
    assert again == SPEC and hash(again) == hash(SPEC)
    assert isinstance(again.strides[1], tuple) and isinstance(again.encoder.blocks_per_stage, tuple)
    assert json.loads(text)["encoder"]["pool"] == "max"
    assert UNetSpec.from_dict(json.loads(SPEC.to_json(indent=None))) == SPEC


def test_round_trip_of_random_compiled_specs():
    rng = np.random.default_rng(7)
    plan = tiny_plan(5, 3)
    grammar = make_grammar(plan, GrammarOptions.extended())
    for _ in range(50):
        spec = compile_architecture(grammar, random_sentence(grammar, rng), plan,
                                    dropout_rate=float(rng.uniform(0, 0.5)), deep_supervision=bool(rng.integers(2)))
        assert UNetSpec.from_json(spec.to_json()) == spec


def test_numpy_numbers_become_plain_python():
    """Planners compute with numpy; a spec built from numpy values equals (and hashes as) the plain one."""
    spec = dataclasses.replace(SPEC, dims=np.int64(3), n_stages=np.int32(3), dropout_rate=np.float32(0.25),
                               features_per_stage=tuple(np.array([8, 16, 32])),
                               strides=[list(np.array(s)) for s in SPEC.strides])
    plain = dataclasses.replace(SPEC, dropout_rate=0.25)
    assert spec == plain and hash(spec) == hash(plain)
    assert type(spec.dims) is int and type(spec.features_per_stage[0]) is int and type(spec.strides[1][2]) is int
    assert type(spec.dropout_rate) is float
    assert UNetSpec.from_json(spec.to_json()) == plain


def test_defaults_are_the_hnas_space_values():
    spec = UNetSpec(**{f.name: getattr(SPEC, f.name) for f in dataclasses.fields(SPEC)
                       if f.name not in ("dropout_rate", "deep_supervision")})
    assert spec.dropout_rate == 0.2 and spec.deep_supervision is True
    encoder = EncoderSpec("conv", "instance", "leaky_relu", False, (2, 2, 2))
    assert (encoder.pool, encoder.block, encoder.squeeze_excitation) == ("conv", "basic", False)


def test_derived_values():
    assert SPEC.total_strides == (2, 4, 4)
    assert SPEC.bottleneck_channels == (2, 4, 8)
    assert dataclasses.replace(SPEC, encoder=dataclasses.replace(ENCODER, block="basic")).bottleneck_channels is None


def _with(**changes) -> dict:
    data = SPEC.to_dict()
    for key, value in changes.items():
        if "__" in key:
            outer, inner = key.split("__")
            data[outer][inner] = value
        else:
            data[key] = value
    return data


@pytest.mark.parametrize("changes, field", [
    (dict(dims=4), "dims=4"),
    (dict(input_channels=0), "input_channels=0"),
    (dict(n_classes=True), "n_classes=True"),
    (dict(n_stages=1, features_per_stage=[8], strides=[[1, 1, 1]], kernel_sizes=[[3, 3, 3]],
          encoder__blocks_per_stage=[1], decoder__blocks_per_stage=[]), "n_stages=1"),
    (dict(features_per_stage=[8, 16]), "features_per_stage"),
    (dict(features_per_stage=[8, 0, 32]), "features_per_stage"),
    (dict(strides=[[1, 1], [2, 2], [2, 2]]), "strides[0]"),
    (dict(strides=2), "spec.strides=2; expected one list of 3 integers per stage"),
    (dict(kernel_sizes="3x3x3"), "spec.kernel_sizes='3x3x3'"),
    (dict(features_per_stage=32), "features_per_stage=32"),
    (dict(strides=[[1, 1, 1], [1, 2, 2], [2, 0, 2]]), "strides[2]"),
    (dict(kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 2, 3]]), "kernel_sizes[2]=(3, 2, 3)"),
    (dict(encoder__kind="transformer"), "encoder.kind='transformer'"),
    (dict(encoder__norm="group"), "encoder.norm='group'"),
    (dict(decoder__nonlin="swish"), "decoder.nonlin='swish'"),
    (dict(decoder__dropout="yes"), "decoder.dropout='yes'"),
    (dict(encoder__pool="strided"), "encoder.pool='strided'"),
    (dict(encoder__block="wide"), "encoder.block='wide'"),
    (dict(encoder__squeeze_excitation=1), "encoder.squeeze_excitation=1"),
    (dict(encoder__blocks_per_stage=[1, 2]), "encoder.blocks_per_stage"),
    (dict(encoder__blocks_per_stage=[1, 0, 2]), "encoder.blocks_per_stage"),
    (dict(decoder__blocks_per_stage=[1, 1, 1]), "decoder.blocks_per_stage"),
    (dict(encoder__kind="conv"), "encoder.kind='conv' has no residual blocks"),
    (dict(dropout_rate=1.0), "dropout_rate=1.0"),
    (dict(dropout_rate="0.2"), "dropout_rate='0.2'"),
    (dict(deep_supervision=None), "deep_supervision=None"),
    (dict(features_per_stage=[2, 16, 32]), "too narrow for bottleneck"),
])
def test_validation_names_field_and_value(changes, field):
    with pytest.raises(SpecError) as info:
        UNetSpec.from_dict(_with(**changes))
    assert field in str(info.value)


@pytest.mark.parametrize("data, message", [
    ({**SPEC.to_dict(), "colour": "red"}, "unknown fields ['colour']"),
    ({k: v for k, v in SPEC.to_dict().items() if k != "strides"}, "missing fields ['strides']"),
    (_with(encoder__extra=1), "spec.encoder has unknown fields ['extra']"),
    (_with(encoder=[1, 2]), "spec.encoder must be a mapping"),
    ([1, 2], "must be read from a dict"),
])
def test_from_dict_rejects_bad_shapes(data, message):
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        UNetSpec.from_dict(data)


def test_from_json_rejects_non_json():
    with pytest.raises(SpecError, match="must be JSON text"):
        UNetSpec.from_json("{not json")


def test_spec_side_imports_no_torch():
    code = ("import sys; import hnas.cfgunet as c; from hnas.cfgunet import cost, compile_architecture, UNetSpec;"
            "import hnas.cfgunet.spec, hnas.cfgunet.compiler, hnas.cfgunet.cost;"
            "assert 'torch' not in sys.modules, 'torch was imported'; print('ok')")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


JUNK = st.one_of(st.none(), st.booleans(), st.integers(-3, 400), st.floats(allow_nan=True), st.text(max_size=5),
                 st.lists(st.integers(-1, 4), max_size=4),
                 st.lists(st.lists(st.integers(0, 3), max_size=4), max_size=7),
                 st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
PATHS = [(k,) for k in SPEC.to_dict()] + [("encoder", k) for k in SPEC.to_dict()["encoder"]] + \
    [("decoder", k) for k in SPEC.to_dict()["decoder"]]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.sampled_from(PATHS), JUNK)
def test_any_bad_field_raises_only_spec_error(path, value):
    data = SPEC.to_dict()
    target = data if len(path) == 1 else data[path[0]]
    target[path[-1]] = value
    try:
        UNetSpec.from_dict(data)
    except SpecError as error:
        assert path[-1] in str(error), (path, value, str(error))
