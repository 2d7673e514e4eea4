"""`hnas status`: running, finished and failed trials of a run, and the best so far (no torch needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hnas.search import RunStore, Trial, load_run
from hnas.search.feasibility import pruned_summary


def trial_row(trial: Trial) -> dict[str, Any]:
    """One trial as a table row (notebooks and benchmarks put these in a DataFrame)."""
    extra = dict(trial.extra or {})
    return {"trial": trial.trial_id, "state": trial.state, "epochs": trial.fidelity, "rung": trial.rung,
            "dice": None if trial.loss is None else 1 - trial.loss, "runtime_s": trial.cost,
            "parameters": extra.get("parameters"), "sampler": trial.job.sampler, "parent": trial.parent_id,
            "error": trial.error, "imported_from": imported_from(trial)}


def imported_from(trial: Trial) -> str | None:
    """``RUN:TRIAL`` for a trial a warm start imported (its source run folder's name and trial id there)."""
    if trial.imported is None:
        return None
    return f"{Path(trial.imported.run).name}:{trial.imported.trial_id}"


def describe_trial(trial) -> str:
    config = {k: v for k, v in trial.config.items() if k != "architecture"}
    architecture = trial.config.get("architecture") or (trial.extra or {}).get("architecture", "(nnU-Net default)")
    dice = "-" if trial.loss is None else f"{1 - trial.loss:.4f}"
    cost = "-" if trial.cost is None else f"{trial.cost:.1f} s"
    return (f"trial {trial.trial_id} ({trial.state}, {trial.fidelity:g} epochs): Dice {dice}, training {cost}\n"
            f"  architecture: {architecture}\n  hyperparameters: {json.dumps(config, sort_keys=True, default=str)}")


TABLE_COLUMNS = ("trial", "epochs", "rung", "state", "Dice", "runtime s", "sampler", "parent")
#: The column a warm-started run's table adds: where each imported trial came from.
IMPORTED_COLUMN = "imported from"


def trial_table(trials: list[Trial]) -> str:
    """Every trial as one aligned row (id, fidelity, Dice, runtime, state, sampler), as `hnas status` prints it.

    A warm-started run's table says where each imported trial came from (``RUN:TRIAL``).
    """
    imports = any(trial.imported is not None for trial in trials)
    rows = [TABLE_COLUMNS + ((IMPORTED_COLUMN,) if imports else ())]
    for trial in trials:
        state = {"pending": "running", "success": "finished"}.get(trial.state, trial.state)
        rows.append((str(trial.trial_id), f"{trial.fidelity:g}", str(trial.rung), state,
                     "-" if trial.loss is None else f"{1 - trial.loss:.4f}",
                     "-" if trial.cost is None else f"{trial.cost:.1f}", trial.job.sampler or "-",
                     "-" if trial.parent_id is None else str(trial.parent_id))
                    + ((imported_from(trial) or "-",) if imports else ()))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.rjust(w) if i in (0, 1, 2, 4, 5, 7) else cell.ljust(w)
                               for i, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in rows)


def pruning_line(run_dir: Path) -> str | None:
    """The run's filter (--gpu-memory) and how many sampled configurations it pruned; None without one."""
    with RunStore.open_existing(run_dir) as store:
        return pruned_summary(store.metadata().get("config_filter"), store.pruned_configurations())


def status_text(run_dir: Path) -> str:
    """What `hnas status` prints: counts, every trial as a table, running trials, the best so far, failures."""
    summary = load_run(run_dir)
    running = [t for t in summary.history if t.state == "pending"]
    imported = [t for t in summary.history if t.imported is not None]
    lines = [f"run {run_dir}: {len(summary.successes)} finished, {len(summary.failures)} failed, "
             f"{len(running)} running or interrupted, budget used {summary.budget_used:.2f}"]
    if imported:
        sources = sorted({t.imported.run for t in imported})
        lines.append(f"warm start: {len(imported)} of these trials imported (budget not counted) from "
                     + ", ".join(sources))
    pruned = pruning_line(run_dir)
    if pruned:
        lines.append(pruned)
    if summary.history:
        lines += ["", trial_table(list(summary.history)), ""]
    for trial in running:
        lines.append(f"  running: trial {trial.trial_id} at {trial.fidelity:g} epochs (rung {trial.rung})")
    if summary.incumbent is not None:
        lines.append("best so far: " + describe_trial(summary.incumbent))
    for trial in summary.failures:
        lines.append(f"  failed: trial {trial.trial_id}: {trial.error}")
    return "\n".join(lines)
