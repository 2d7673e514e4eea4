"""evaluate(): train, checkpoint, continue, validate; the search adapter; checkpoints load weights-only."""

from __future__ import annotations

import pickle
from dataclasses import replace

import pytest
import torch

from hnas.cfgunet import UNetSpec, build, compile_architecture
from hnas.errors import SearchSpaceError, TrainingError
from hnas.grammar import default_architecture, make_grammar
from hnas.search.executors import TrialContext
from hnas.train import TrainObjective, TrainSetup, evaluate, load_checkpoint, train_fold
from hnas.train import objective as objective_module
from hnas.train.checkpoint import CHECKPOINT_NAME
from hnas.train.objective import release_cached_gpu_memory
from hnas.train.training_log import PROGRESS_PLOT_NAME, TRAINING_LOG_NAME, format_epoch

from .conftest import tiny_plan_2d

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CONFIG = {"optimizer": "SGD", "momentum": 0.99, "initial_lr": 0.01, "lr_scheduler": "PolyLR", "weight_decay": 3e-5,
          "foreground_oversampling": 0.5, "loss": "DiceCE", "aug_factor": 1.0}


@pytest.fixture(scope="module")
def one_go(tiny_setup, tmp_path_factory):
    """Four epochs in one run (the reference for continuation)."""
    return evaluate(CONFIG, None, 4, None, tmp_path_factory.mktemp("one_go"), setup=tiny_setup)


def test_evaluate_returns_sane_values(one_go, tiny_setup):
    assert 0.0 <= one_go.loss <= 1.0 and one_go.loss == pytest.approx(1.0 - one_go.mean_dice)
    assert set(one_go.dice_per_class) == {"organ", "substructure"}
    assert one_go.epochs == 4 and one_go.runtime > 0 and one_go.train_loss is not None
    assert one_go.validation_cases == 2 and one_go.flops > 0
    plan = tiny_setup.plan
    spec = compile_architecture(tiny_setup.grammar, default_architecture(plan), plan, dropout_rate=0.0)
    assert one_go.parameters == sum(p.numel() for p in build(spec).parameters())
    assert one_go.checkpoint.name == CHECKPOINT_NAME and one_go.checkpoint.is_file()
    objective = one_go.to_objective()
    assert objective["loss"] == one_go.loss and objective["cost"] == one_go.runtime
    assert objective["architecture"] == default_architecture(plan)


def test_continuing_from_a_checkpoint_equals_training_in_one_go(one_go, tiny_setup, tmp_path):
    first = evaluate(CONFIG, None, 2, None, tmp_path / "rung0", setup=tiny_setup)
    second = evaluate(CONFIG, None, 4, first.checkpoint, tmp_path / "rung1", setup=tiny_setup)
    assert second.epochs == 4 and first.epochs == 2
    assert second.runtime > first.runtime  # accumulated over both rungs
    continued = load_checkpoint(second.checkpoint)["trainer"]
    reference = load_checkpoint(one_go.checkpoint)["trainer"]
    assert continued["train_losses"][:2] == pytest.approx(load_checkpoint(first.checkpoint)["trainer"]["train_losses"])
    assert continued["train_losses"] == pytest.approx(reference["train_losses"], rel=1e-5)
    for name, tensor in reference["model"].items():
        assert torch.allclose(continued["model"][name], tensor, rtol=1e-4, atol=1e-6), name
    assert second.mean_dice == pytest.approx(one_go.mean_dice, abs=1e-4)


def test_checkpoints_hold_only_weights_only_types(one_go):
    payload = torch.load(one_go.checkpoint, weights_only=True)
    assert payload["trainer"]["epoch"] == 4 and payload["architecture"] == one_go.architecture
    assert set(payload) >= {"trainer", "config", "spec", "plan", "normalization", "labels"}


def _epoch_lines(folder) -> list[str]:
    return [line for line in (folder / TRAINING_LOG_NAME).read_text().splitlines() if line.startswith("epoch ")]


def test_the_trial_folder_gets_a_training_log_and_a_progress_plot(one_go):
    folder = one_go.checkpoint.parent
    text = (folder / TRAINING_LOG_NAME).read_text()
    assert text.startswith("hnas training log: Dataset900_SyntheticBrain, fold 0\n")
    assert f"architecture: {one_go.architecture}\n" in text and '"loss": "DiceCE"' in text
    assert "4 epochs x 2 training + 1 validation iterations" in text
    assert "pseudo Dice classes: organ, substructure" in text
    assert [line.split(":")[0] for line in _epoch_lines(folder)] == [f"epoch {e}/4" for e in (1, 2, 3, 4)]
    picture = (folder / PROGRESS_PLOT_NAME).read_bytes()
    assert picture.startswith(PNG_SIGNATURE) and len(picture) > 10_000


def test_a_continued_trial_logs_its_parents_epochs_too(tiny_setup, tmp_path):
    setup = replace(tiny_setup, iterations_per_epoch=1, validation_cases=1)
    records, validations = [], []
    first = evaluate(CONFIG, None, 2, None, tmp_path / "rung0", setup=setup, on_epoch=records.append,
                     on_validation=validations.append)
    assert _epoch_lines(tmp_path / "rung0") == [format_epoch(r) for r in records] and len(records) == 2
    assert validations == [1]
    evaluate(CONFIG, None, 3, first.checkpoint, tmp_path / "rung1", setup=setup, on_epoch=records.append)
    assert [r.epoch for r in records] == [1, 2, 3]  # the continuation reports its own epoch only
    assert _epoch_lines(tmp_path / "rung1") == [format_epoch(r) for r in records]
    history = torch.load(tmp_path / "rung1" / CHECKPOINT_NAME, weights_only=True)["trainer"]["history"]
    assert [entry["epoch"] for entry in history] == [1, 2, 3]
    assert (tmp_path / "rung1" / PROGRESS_PLOT_NAME).read_bytes().startswith(PNG_SIGNATURE)


def test_the_epoch_validation_does_not_change_training(one_go, tiny_setup, tmp_path):
    plain = evaluate(CONFIG, None, 2, None, tmp_path, setup=replace(tiny_setup, validation_iterations=0,
                                                                    validation_cases=1))
    trainer = load_checkpoint(plain.checkpoint)["trainer"]
    assert trainer["train_losses"] == load_checkpoint(one_go.checkpoint)["trainer"]["train_losses"][:2]  # exactly
    assert [(entry["val_loss"], entry["pseudo_dice"]) for entry in trainer["history"]] == [(None, {})] * 2
    assert "+ 0 validation iterations" in (tmp_path / TRAINING_LOG_NAME).read_text()


def test_a_foreign_file_is_not_a_checkpoint(tmp_path):
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(TrainingError, match="not an hnas checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(TrainingError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_continuation_refuses_a_different_configuration(one_go, tiny_setup, tmp_path):
    with pytest.raises(TrainingError, match="cannot continue it with"):
        evaluate({**CONFIG, "initial_lr": 0.1}, None, 4, one_go.checkpoint, tmp_path, setup=tiny_setup)
    with pytest.raises(TrainingError, match="only 2"):
        evaluate(CONFIG, None, 2, one_go.checkpoint, tmp_path, setup=tiny_setup)


def test_invalid_config_and_epochs_are_named(tiny_setup, tmp_path):
    with pytest.raises(SearchSpaceError, match="'loss' is 'Focal'"):
        evaluate({"loss": "Focal"}, None, 1, None, tmp_path, setup=tiny_setup)
    with pytest.raises(TrainingError, match="epochs is 1.5"):
        evaluate({}, None, 1.5, None, tmp_path, setup=tiny_setup)
    with pytest.raises(TrainingError, match="fold 7"):
        replace(tiny_setup, fold=7)


def test_objective_adapter_trains_and_promotes(tiny_setup, tmp_path):
    epochs, validations = [], []
    objective = TrainObjective(replace(tiny_setup, iterations_per_epoch=1, validation_cases=1),
                               on_epoch=lambda trial, record: epochs.append((trial, record.epoch)),
                               on_validation=lambda trial, n_cases: validations.append((trial, n_cases)))
    config = {**CONFIG, "aug_factor": 0.0, "architecture": default_architecture(tiny_setup.plan, n_stages=2),
              "dropout_rate": 0.2}
    context = TrialContext(trial_id=0, config=config, fidelity=1.0, max_fidelity=3.0, rung=0, bracket=0,
                           trial_dir=tmp_path / "00000")
    first = objective(context)
    assert 0.0 <= first["loss"] <= 1.0 and first["cost"] > 0 and first["epochs"] == 1
    assert first["architecture"] == config["architecture"]
    promoted = TrialContext(trial_id=1, config=config, fidelity=3.0, max_fidelity=3.0, rung=1, bracket=0,
                            trial_dir=tmp_path / "00001", parent_id=0, previous_trial_dir=tmp_path / "00000",
                            previous_cost=first["cost"], previous_fidelity=1.0)
    second = objective(promoted)
    assert second["epochs"] == 3 and second["cost"] > first["cost"]
    assert load_checkpoint(tmp_path / "00001")["trainer"]["seed"] == load_checkpoint(tmp_path / "00000")["trainer"]["seed"]
    assert epochs == [(0, 1), (1, 2), (1, 3)] and validations == [(0, 1), (1, 1)]
    assert len(load_checkpoint(tmp_path / "00001")["trainer"]["history"]) == 3


def test_the_objective_pickles_without_hooks(tiny_setup):
    """Worker processes and Dask receive the objective pickled; their hooks are None."""
    objective = pickle.loads(pickle.dumps(TrainObjective(tiny_setup)))
    assert objective.setup == tiny_setup and objective.on_epoch is None and objective.on_validation is None


def test_objective_reports_training_steps_with_the_budget_they_add(tiny_setup, tmp_path):
    steps = []
    objective = TrainObjective(replace(tiny_setup, iterations_per_epoch=2, validation_cases=1), steps.append)
    config = {**CONFIG, "aug_factor": 0.0}
    objective(TrialContext(trial_id=0, config=config, fidelity=1.0, max_fidelity=4.0, rung=0, bracket=0,
                           trial_dir=tmp_path / "00000"))
    objective(TrialContext(trial_id=1, config=config, fidelity=4.0, max_fidelity=4.0, rung=1, bracket=0,
                           trial_dir=tmp_path / "00001", parent_id=0, previous_trial_dir=tmp_path / "00000",
                           previous_fidelity=1.0))
    first, promoted = [s for s in steps if s.trial_id == 0], [s for s in steps if s.trial_id == 1]
    assert [(s.iteration, s.iterations, s.epochs, s.budget) for s in first] == [(1, 2, 1, 0.25), (2, 2, 1, 0.25)]
    assert [s.iteration for s in promoted] == [1, 2, 3, 4, 5, 6]  # the promotion trains epochs 2..4 only
    assert {(s.iterations, s.epochs, s.budget) for s in promoted} == {(6, 4, 0.75)}


def test_nas_configs_train_their_network(tiny_setup, tmp_path):
    config = {"aug_factor": 0.0, "optimizer": "AdamW", "initial_lr": 1e-3, "encoder_type": "residual",
              "model_scale": 0.5, "base_features": 64, "max_features": 640, "activation": "PReLU",
              "normalization": "BatchNorm", "dropout_rate": 0.1}
    result = evaluate(config, None, 1, None, tmp_path, setup=replace(tiny_setup, iterations_per_epoch=1,
                                                                      validation_cases=1))
    assert result.architecture.startswith("unet res_encoder batch_norm prelu dropout 1b down 2b down 2b")
    spec = UNetSpec.from_json(load_checkpoint(result.checkpoint)["spec"])
    assert spec.features_per_stage == (8, 16, 32)  # 64/640 on nnU-Net's 32/320 scale, on a 4/16 plan
    assert spec.encoder.norm == "batch" and spec.encoder.nonlin == "prelu" and spec.dropout_rate == 0.1


def test_train_fold_runs_its_own_schedule(tiny_setup, tmp_path):
    result = train_fold({"aug_factor": 0.0, "lr_scheduler": "CosineAnnealing"}, 1, tmp_path,
                        setup=replace(tiny_setup, iterations_per_epoch=1, validation_cases=1))
    assert result.epochs == 1 and load_checkpoint(result.checkpoint)["trainer"]["max_epochs"] == 1


def test_setup_validates_its_fields(tiny_setup):
    with pytest.raises(TrainingError, match="iterations_per_epoch"):
        replace(tiny_setup, iterations_per_epoch=0)
    with pytest.raises(TrainingError, match="validation_iterations is -1"):
        replace(tiny_setup, validation_iterations=-1)
    assert replace(tiny_setup, iterations_per_epoch=250).effective_validation_iterations == 50
    assert replace(tiny_setup, validation_iterations=0).effective_validation_iterations == 0
    with pytest.raises(TrainingError, match="device 'tpu'"):
        replace(tiny_setup, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match="CUDA is not available"):
            replace(tiny_setup, device="cuda")
    assert isinstance(tiny_setup, TrainSetup) and tiny_setup.effective_batch_size == 2


@pytest.mark.slow
def test_hippocampus_fold_trains_and_validates(hippocampus_dir, tmp_path):
    from hnas.data.cache import fingerprint_of
    from hnas.grammar import make_grammar
    from hnas.planning import make_plan
    from hnas.train import cpu_preset

    plan = make_plan(fingerprint_of(hippocampus_dir))
    setup = TrainSetup.from_preset(cpu_preset(), dataset=hippocampus_dir, plan=plan, grammar=make_grammar(plan),
                                   cache_dir=tmp_path / "cache", iterations_per_epoch=2, validation_cases=3)
    result = train_fold({}, 2, tmp_path / "trial", setup=setup)
    assert result.epochs == 2 and result.validation_cases == 3 and 0.0 <= result.loss <= 1.0
    assert set(result.dice_per_class) == {"Anterior", "Posterior"}


def test_a_2d_plan_trains_and_validates_on_volumes(tiny_setup, tmp_path):
    plan = tiny_plan_2d()
    setup = replace(tiny_setup, plan=plan, grammar=make_grammar(plan))
    result = evaluate(CONFIG, None, 1, None, tmp_path, setup=setup)
    assert result.epochs == 1 and result.validation_cases == 2 and result.train_loss is not None
    assert 0.0 <= result.mean_dice <= 1.0 and result.loss == pytest.approx(1.0 - result.mean_dice)
    assert result.flops > 0 and result.parameters > 0
    spec = UNetSpec.from_json(load_checkpoint(result.checkpoint)["spec"])
    assert spec.dims == 2


# ---------------------------------------------------------------- device checks and GPU memory, on the CPU

def _one_visible_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


def test_a_cuda_index_beyond_the_visible_gpus_is_refused(tiny_setup, monkeypatch):
    _one_visible_gpu(monkeypatch)
    with pytest.raises(TrainingError, match=r"device 'cuda:7' asks for GPU 7 but 1 CUDA device\(s\) are visible.*"
                                            r"'cuda:0'..'cuda:0'"):
        replace(tiny_setup, device="cuda:7")
    with pytest.raises(TrainingError, match="GPU 1 but 1"):
        replace(tiny_setup, device="cuda:1")


def test_visible_cuda_devices_are_accepted(tiny_setup, monkeypatch):
    _one_visible_gpu(monkeypatch)
    assert replace(tiny_setup, device="cuda:0").torch_device() == torch.device("cuda", 0)
    assert replace(tiny_setup, device="cuda").torch_device() == torch.device("cuda")


def test_the_cuda_cache_is_emptied_only_on_cuda(monkeypatch):
    emptied = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    release_cached_gpu_memory(torch.device("cpu"))
    assert emptied == []
    release_cached_gpu_memory(torch.device("cuda", 0))
    assert emptied == [True]


def test_every_trial_releases_the_gpu_memory_it_cached_failed_ones_too(tiny_setup, tmp_path, monkeypatch):
    released = []
    monkeypatch.setattr(objective_module, "release_cached_gpu_memory", released.append)
    objective = TrainObjective(replace(tiny_setup, iterations_per_epoch=1, validation_cases=1,
                                       validation_iterations=0))
    context = TrialContext(trial_id=0, config={**CONFIG, "aug_factor": 0.0}, fidelity=1.0, max_fidelity=1.0, rung=0,
                           bracket=0, trial_dir=tmp_path / "00000")
    objective(context)
    assert released == [torch.device("cpu")]
    with pytest.raises(SearchSpaceError):
        objective(replace(context, trial_id=1, config={"loss": "Focal"}, trial_dir=tmp_path / "00001"))
    assert released == [torch.device("cpu")] * 2
