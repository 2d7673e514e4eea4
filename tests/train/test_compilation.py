"""torch.compile on request: training and prediction call the compiled network, checkpoints stay plain, failures fall back."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import untrained_checkpoint

from hnas.cfgunet import build, compile_architecture
from hnas.errors import SearchError, TrainingError
from hnas.grammar import default_architecture, make_grammar
from hnas.pipeline.layout import RunFolder
from hnas.pipeline.run import RESUME_CONTRACT, SearchSettings
from hnas.pipeline.search import resumed_settings
from hnas.train import Predictor, train_fold
from hnas.train.checkpoint import load_checkpoint, save_checkpoint
from hnas.train.compilation import (COMPILED_PREFIX, CompiledNetwork, CompileFallbackWarning, uncompiled,
                                    without_compiled_prefix)
from hnas.train.config import TrainConfig
from hnas.train.trainer import Trainer

from .conftest import tiny_plan


class CompileSpy:
    """Stands in for ``torch.compile``: records what it compiled and each call's mode, then runs the module."""

    def __init__(self, error: Exception | None = None):
        self.compiled: list[torch.nn.Module] = []
        self.calls: list[tuple[bool, bool]] = []  # (training, deep supervision) per call
        self.error = error

    def __call__(self, module, *args, **kwargs):
        self.compiled.append(module)

        def compiled(*inputs):
            self.calls.append((module.training, module.decoder.deep_supervision))
            if self.error is not None:
                raise self.error
            return module(*inputs)
        return compiled


@pytest.fixture
def spy(monkeypatch):
    spy = CompileSpy()
    monkeypatch.setattr(torch, "compile", spy)
    return spy


def _network(seed=0, dropout_rate=0.0):
    plan = tiny_plan()
    spec = compile_architecture(make_grammar(plan), default_architecture(plan), plan, dropout_rate=dropout_rate)
    torch.manual_seed(seed)
    return build(spec), spec


def _batch():
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(2, 1, 16, 16, 16, generator=generator)
    return image, torch.randint(0, 3, (2, 1, 16, 16, 16), generator=generator).float()


def _trainer(network, spec, **options):
    return Trainer(network, TrainConfig(), n_outputs=spec.n_stages - 1, device="cpu", max_epochs=4, **options)


@pytest.mark.parametrize("compile", [False, True])
def test_the_trainer_steps_through_torch_compile_only_when_asked(spy, compile):
    network, spec = _network()
    trainer = _trainer(network, spec, compile=compile)
    trainer.step(*_batch())
    assert spy.compiled == ([network] if compile else [])
    assert spy.calls == ([(True, True)] if compile else [])
    assert trainer.network is network  # the eager module stays the trainer's network
    assert not any(key.startswith(COMPILED_PREFIX) for key in trainer.state_dict()["model"])


@pytest.mark.slow
def test_training_and_validating_a_setup_with_compile_use_it_and_save_a_plain_checkpoint(spy, tiny_setup, tmp_path):
    setup = replace(tiny_setup, iterations_per_epoch=1, validation_cases=1, validation_iterations=1, compile=True)
    result = train_fold({"aug_factor": 0.0}, 1, tmp_path / "model", setup=setup)
    assert len(spy.compiled) == 1
    modes = set(spy.calls)
    assert (True, True) in modes  # training steps
    assert (False, True) in modes  # the epoch's validation patches (deep supervision on, as nnU-Net)
    assert (False, False) in modes  # the sliding-window validation of whole cases
    weights = load_checkpoint(result.checkpoint)["trainer"]["model"]
    assert weights and not any(key.startswith(COMPILED_PREFIX) for key in weights)
    assert "torch.compile" in (tmp_path / "model" / "training_log.txt").read_text().splitlines()[4]
    calls = len(spy.calls)
    Predictor(result.checkpoint, device="cpu")  # an eager predictor loads the compiled training's checkpoint
    assert len(spy.calls) == calls and len(spy.compiled) == 1


def test_a_setup_refuses_a_compile_that_is_not_a_bool(tiny_setup):
    with pytest.raises(TrainingError, match="compile is 'yes'; expected True or False"):
        replace(tiny_setup, compile="yes")


@pytest.mark.parametrize("compile", [False, True])
def test_the_predictor_predicts_through_torch_compile_only_when_asked(spy, tmp_path, compile):
    checkpoint = untrained_checkpoint(tmp_path / "checkpoint.pt", tiny_plan(), seed=1)
    predictor = Predictor(checkpoint, device="cpu", compile=compile)
    probabilities = predictor.probabilities(np.ones((1, 20, 20, 20), np.float32), (1.0, 1.0, 1.0))
    assert probabilities.shape == (3, 20, 20, 20)
    assert spy.compiled == ([predictor.network] if compile else [])
    assert set(spy.calls) == ({(False, False)} if compile else set())
    predictor.set_compile(not compile)  # an ensemble's members are switched one by one
    assert predictor.forward.is_compiled == (not compile)


def test_a_compile_failure_falls_back_to_eager_with_one_warning_and_the_same_step(monkeypatch):
    from torch._dynamo.exc import TorchDynamoException

    spy = CompileSpy(TorchDynamoException("InvalidCxxCompiler: No working C++ compiler found"))
    monkeypatch.setattr(torch, "compile", spy)
    eager_network, spec = _network(seed=3)
    compiled_network, _ = _network(seed=3)
    eager, compiled = _trainer(eager_network, spec), _trainer(compiled_network, spec, compile=True)
    with pytest.warns(CompileFallbackWarning, match="torch.compile failed on HnasUNet .*No working C\\+\\+ compiler"):
        loss = compiled.step(*_batch())
    assert float(loss) == float(eager.step(*_batch()))
    for ours, theirs in zip(compiled_network.parameters(), eager_network.parameters()):
        assert torch.equal(ours, theirs)  # redone eagerly: one optimizer step, not two
    assert not compiled.forward.is_compiled
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compiled.step(*_batch())  # eager from now on, no second warning
    assert len(spy.calls) == 1


def test_torch_compile_raising_at_once_falls_back_too(monkeypatch):
    def refuse(module, *args, **kwargs):
        raise RuntimeError("Python 3.14+ is not supported by torch.compile")

    monkeypatch.setattr(torch, "compile", refuse)
    network, _ = _network()
    with pytest.warns(CompileFallbackWarning, match="not supported by torch.compile"):
        forward = CompiledNetwork(network, True)
    assert not forward.is_compiled
    image, _ = _batch()
    network.eval()
    assert torch.equal(forward(image)[0], network(image)[0])


def test_an_error_of_the_network_itself_is_not_taken_for_a_compile_failure(monkeypatch):
    monkeypatch.setattr(torch, "compile", CompileSpy(ValueError("bad input")))
    forward = CompiledNetwork(_network()[0], True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="bad input"):
            forward(_batch()[0])
    assert forward.is_compiled


def test_checkpoints_hold_the_eager_keys_even_for_an_already_compiled_network(tmp_path):
    network, spec = _network()
    plain_keys = list(network.state_dict())
    wrapped = torch.compile(network)  # lazy: nothing is compiled until it is called
    assert list(wrapped.state_dict())[0].startswith(COMPILED_PREFIX)
    trainer = _trainer(wrapped, spec)
    assert trainer.network is uncompiled(wrapped) is network
    assert list(trainer.state_dict()["model"]) == plain_keys
    assert list(without_compiled_prefix(wrapped.state_dict())) == plain_keys
    # a checkpoint saved from a compiled wrapper (another program's habit) loads too
    checkpoint = untrained_checkpoint(tmp_path / "checkpoint.pt", tiny_plan(), seed=2)
    payload = load_checkpoint(checkpoint)
    payload["trainer"]["model"] = {COMPILED_PREFIX + key: value for key, value in payload["trainer"]["model"].items()}
    prefixed = save_checkpoint(tmp_path / "prefixed.pt", {k: v for k, v in payload.items() if not k.startswith("format")})
    loaded, expected = Predictor(prefixed, device="cpu").network.state_dict(), payload_weights(checkpoint)
    assert list(loaded) == list(expected) and all(torch.equal(loaded[k], expected[k]) for k in expected)
    resumed = _trainer(_network(seed=9)[0], spec)
    resumed.load_state_dict({**trainer.state_dict(), "model": wrapped.state_dict()})
    assert all(torch.equal(a, b) for a, b in zip(resumed.network.parameters(), network.parameters()))


def payload_weights(checkpoint):
    return load_checkpoint(checkpoint)["trainer"]["model"]


def test_compile_is_a_stored_search_setting_that_a_resume_must_match(tmp_path):
    assert "compile" in RESUME_CONTRACT
    SearchSettings(compile=True).save(tmp_path)
    assert SearchSettings.load(tmp_path).compile is True
    RunFolder(tmp_path).database.touch()
    assert resumed_settings(tmp_path, {}).compile is True  # a resume trains as the run did
    assert resumed_settings(tmp_path, {"compile": True, "budget": 5.0}).compile is True
    with pytest.raises(SearchError, match="--compile False given, the run has True"):
        resumed_settings(tmp_path, {"compile": False})
    stored = json.loads((tmp_path / "run.json").read_text())
    (tmp_path / "run.json").write_text(json.dumps({**stored, "compile": "yes"}))
    with pytest.raises(SearchError, match="has compile 'yes'; expected true or false"):
        SearchSettings.load(tmp_path)
    del stored["compile"]  # a run written before hnas could compile trained eagerly
    (tmp_path / "run.json").write_text(json.dumps(stored))
    assert SearchSettings.load(tmp_path).compile is False


@pytest.mark.very_slow
def test_a_tiny_network_really_compiles_and_trains_like_eager():
    """Real torch.compile (Inductor, C++ on the CPU) of the tests' tiny U-Net: two steps, as eager."""
    eager_network, spec = _network(seed=5)
    compiled_network, _ = _network(seed=5)
    eager, compiled = _trainer(eager_network, spec), _trainer(compiled_network, spec, compile=True)
    image, target = _batch()
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileFallbackWarning)
        for _ in range(2):
            assert float(compiled.step(image, target)) == pytest.approx(float(eager.step(image, target)), rel=1e-4)
    assert compiled.forward.is_compiled
    for ours, theirs in zip(compiled_network.parameters(), eager_network.parameters()):
        assert torch.allclose(ours, theirs, atol=1e-5)
    assert not any(key.startswith(COMPILED_PREFIX) for key in compiled.state_dict()["model"])


def test_the_commands_take_compile_and_leave_it_unset_when_not_given(tmp_path):
    from hnas.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["search"]).compile is None  # a resume then takes run.json's
    assert parser.parse_args(["search", "--compile"]).compile is True
    assert parser.parse_args(["train", "--run", "r", "--epochs", "1"]).compile is None  # the run's
    assert parser.parse_args(["train", "--run", "r", "--epochs", "1", "--no-compile"]).compile is False
    out = str(tmp_path / "out")
    assert parser.parse_args(["predict", "--model", "m.pt", "-o", out]).compile is False
    assert parser.parse_args(["predict", "--model", "m.pt", "-o", out, "--compile"]).compile is True
