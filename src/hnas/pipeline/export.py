"""`hnas export-nnunet`: a run's incumbent (or any trial) as a configuration of nnU-Net's plans.

nnU-Net trains an exported configuration at the scale the run searched at: the run's features, patch
and batch go into the plans. A run searched at another scale preset than nnU-Net's own (``cpu``: features
8..64, batch 2, a patch of at most 48^3) is refused unless asked for (``allow_preset``), and every value
the export replaces in nnU-Net's configuration is returned, so the command can say what changed.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from hnas.cfgunet import UNetSpec, compile_architecture
from hnas.cfgunet.nnunet_export import NnUNetExport, prepare_export
from hnas.errors import SearchError
from hnas.grammar import grammar_hash
from hnas.pipeline.layout import RunFolder
from hnas.pipeline.run import pick_trial, stored_plans, stored_preset, stored_residual_plan
from hnas.planning import Plan
from hnas.search import Trial
from hnas.train.config import network_choice
from hnas.train.presets import NNUNET, ScalePreset

#: The only preset whose networks are at nnU-Net's scale (``gpu`` is stored under this name too).
NNUNET_SCALE = NNUNET.name


class PresetScaleError(SearchError):
    """A run searched at another scale than nnU-Net's would be exported at that scale."""


class ExportWarning(UserWarning):
    """An export that goes on, at a scale the user should know about."""


def trial_network(run_dir: Path, trial_id: int | None = None) -> tuple[Trial, UNetSpec, Plan]:
    """``(trial, spec, plan)``: the network a run's trial trained, by the objective's own rule."""
    folder = RunFolder(run_dir)
    missing = [path.name for path in (folder.plan, folder.grammar, folder.database) if not path.is_file()]
    if missing:
        raise SearchError(f"{str(run_dir)!r} is not an hnas run folder (missing {missing}); expected the "
                          "--run-dir of an `hnas search`")
    trial = pick_trial(run_dir, trial_id)
    plan, grammar, plan_2d, grammar_2d = stored_plans(run_dir)
    choice = network_choice(trial.config, plan, grammar, plan_2d=plan_2d, grammar_2d=grammar_2d,
                            residual_plan=stored_residual_plan(run_dir, None))
    spec = compile_architecture(choice.grammar, choice.architecture, choice.plan, dropout_rate=choice.dropout_rate,
                                deep_supervision=True)
    return trial, spec, choice.plan


def export_run(run_dir: Path, plans_json: Path, out_json: Path, *, trial_id: int | None = None,
               configuration_name: str = "3d_fullres_hnas", base_configuration: str = "3d_fullres",
               allow_preset: bool = False) -> NnUNetExport:
    """Write nnU-Net's plans with the run's trial added as ``configuration_name``.

    Returns the export: its ``path`` and the nnU-Net values it ``replaced``. A run searched at a
    scale preset other than nnU-Net's is refused (nothing written) unless ``allow_preset``.
    """
    run_dir = Path(run_dir)
    trial, spec, plan = trial_network(run_dir, trial_id)
    preset = stored_preset(run_dir, None)  # None: a run written before hnas stored preset.json
    export = prepare_export(spec, plans_json, configuration_name=configuration_name,
                            base_configuration=base_configuration, plan=plan,
                            record=_trial_record(run_dir, trial, preset))
    check_scale(run_dir, preset, plan, allow_preset)
    return export.write(out_json)


def _trial_record(run_dir: Path, trial: Trial, preset: ScalePreset | None) -> dict:
    """What the exported configuration came from, kept under its ``"hnas"`` key."""
    return {
        "source": str(run_dir), "trial_id": trial.trial_id, "epochs": trial.fidelity,
        "dice": None if trial.loss is None else 1.0 - trial.loss, "runtime_s": trial.cost,
        "architecture": trial.config.get("architecture") or (trial.extra or {}).get("architecture"),
        "hyperparameters": {k: v for k, v in trial.config.items() if k != "architecture"},
        "grammar_sha256": grammar_hash(RunFolder(run_dir).grammar.read_text()),
        "preset": None if preset is None else preset.name,
        "note": "nnU-Net's default nnUNetTrainer trains with its own optimizer, schedule, loss and augmentation; "
                "'hyperparameters' are the searched values for a trainer that reads them",
    }


def check_scale(run_dir: Path, preset: ScalePreset | None, plan: Plan, allow_preset: bool) -> None:
    """Refuse (or, when allowed, warn about) exporting a network searched at another scale than nnU-Net's."""
    if preset is None:
        warnings.warn(f"run {str(run_dir)!r} has no preset.json, so the scale it was searched at is unknown; check "
                      "the replaced values against nnU-Net's before training", ExportWarning, stacklevel=3)
    elif preset.name != NNUNET_SCALE and not allow_preset:
        raise PresetScaleError(f"run {str(run_dir)!r} was searched with scale preset {preset.name!r} "
                               f"({preset_changes(preset, plan)}), so nnU-Net would train the exported network at "
                               "that scale; expected a run searched with --preset nnunet, or --allow-preset to "
                               "export it as it is")
    elif preset.name != NNUNET_SCALE:
        warnings.warn(f"the exported network keeps scale preset {preset.name!r} ({preset_changes(preset, plan)}), "
                      "not nnU-Net's scale; nnUNetv2_train trains it as it is", ExportWarning, stacklevel=3)


def preset_changes(preset: ScalePreset, plan: Plan) -> str:
    """What ``preset`` changes of nnU-Net's plan, in words: ``features 8..64, batch 2, patch at most 48^3``."""
    changes = []
    if preset.base_features is not None:
        top = "" if preset.max_features is None else preset.max_features
        changes.append(f"features {preset.base_features}..{top}")
    batch = preset.batch_size_2d if plan.dims == 2 else preset.batch_size
    if batch is not None:
        changes.append(f"batch {batch}")
    if preset.max_patch_voxels is not None:
        changes.append(f"patch at most {_voxels(preset.max_patch_voxels, plan.dims)} voxels")
    return ", ".join(changes) or "no features, batch or patch"


def _voxels(count: int, dims: int) -> str:
    """``48^3`` for a cube's voxel count, else the count."""
    side = round(count ** (1 / dims))
    return f"{side}^{dims}" if side ** dims == count else str(count)
