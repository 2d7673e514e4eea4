"""`hnas export-nnunet`: a run's incumbent (or any trial) as a configuration of nnU-Net's plans."""

from __future__ import annotations

from pathlib import Path

from hnas.cfgunet import UNetSpec, compile_architecture
from hnas.cfgunet.nnunet_export import export_nnunet
from hnas.errors import SearchError
from hnas.grammar import grammar_hash
from hnas.pipeline.layout import RunFolder
from hnas.pipeline.run import pick_trial, stored_plans, stored_residual_plan
from hnas.planning import Plan
from hnas.search import Trial
from hnas.train.config import network_choice


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
               configuration_name: str = "3d_fullres_hnas", base_configuration: str = "3d_fullres") -> Path:
    """Write nnU-Net's plans with the run's trial added as ``configuration_name``; returns the file."""
    run_dir = Path(run_dir)
    trial, spec, plan = trial_network(run_dir, trial_id)
    record = {
        "source": str(run_dir), "trial_id": trial.trial_id, "epochs": trial.fidelity,
        "dice": None if trial.loss is None else 1.0 - trial.loss, "runtime_s": trial.cost,
        "architecture": trial.config.get("architecture") or (trial.extra or {}).get("architecture"),
        "hyperparameters": {k: v for k, v in trial.config.items() if k != "architecture"},
        "grammar_sha256": grammar_hash(RunFolder(run_dir).grammar.read_text()),
        "note": "nnU-Net's default nnUNetTrainer trains with its own optimizer, schedule, loss and augmentation; "
                "'hyperparameters' are the searched values for a trainer that reads them",
    }
    return export_nnunet(spec, plans_json, out_json, configuration_name=configuration_name,
                         base_configuration=base_configuration, plan=plan, record=record)
