"""The training objective: preprocess, train a compiled U-Net for a budget, validate, predict.

Typical use (what ``hnas search`` does)::

    preset = cpu_preset()                      # or gpu_preset() / preset("auto")
    setup = TrainSetup.from_preset(preset, dataset=folder, plan=plan, grammar=grammar, cache_dir=cache)
    prepare(setup)                             # preprocess once (cached by the plan's key)
    objective = TrainObjective(setup)          # hnas.search.run(objective, space, ...)

``evaluate`` is the objective's core; ``train_fold`` trains one configuration from scratch;
``predict`` segments new images with a checkpoint. ``config``, ``preprocessing`` and
``presets`` do not import torch; the other names load it on first access.
"""

from hnas.train.config import (NetworkChoice, PipelineConfig, TrainConfig, nas_network, network_choice, train_config,
                               with_features)
from hnas.train.preprocessing import (PreprocessedDataset, load_preprocessed, preprocess_dataset, preprocess_image,
                                      restore_label)
from hnas.train.presets import CPU, NNUNET, ScalePreset, cpu_preset, gpu_preset, preset

_TORCH_EXPORTS = {
    "Result": "hnas.train.objective", "TrainObjective": "hnas.train.objective", "TrainSetup": "hnas.train.objective",
    "evaluate": "hnas.train.objective", "prepare": "hnas.train.objective", "train_fold": "hnas.train.objective",
    "Trainer": "hnas.train.trainer", "InputLimits": "hnas.train.prediction", "Predictor": "hnas.train.prediction", "predict": "hnas.train.prediction",
    "load_checkpoint": "hnas.train.checkpoint", "checkpoint_path": "hnas.train.checkpoint",
    "validate": "hnas.train.inference",
}

__all__ = [
    "CPU", "InputLimits", "NNUNET", "NetworkChoice", "PipelineConfig", "PreprocessedDataset", "Predictor", "Result", "ScalePreset", "TrainConfig",
    "TrainObjective", "TrainSetup", "Trainer", "checkpoint_path", "cpu_preset", "evaluate",
    "gpu_preset", "load_checkpoint", "load_preprocessed", "nas_network", "network_choice", "predict", "prepare",
    "preprocess_dataset", "preprocess_image", "preset", "restore_label", "train_config", "train_fold", "validate",
    "with_features",
]


def __getattr__(name):
    """Torch-side names load on first access, so the torch-free parts import quickly."""
    if name in _TORCH_EXPORTS:
        import importlib

        return getattr(importlib.import_module(_TORCH_EXPORTS[name]), name)
    raise AttributeError(f"module 'hnas.train' has no attribute {name!r}")
