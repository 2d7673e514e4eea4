"""`hnas report`: read run folders and hand them to the report writer (:mod:`hnas.viz.report`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hnas.errors import SearchError
from hnas.pipeline.layout import RunFolder
from hnas.planning import Plan
from hnas.search import RunStore, load_run
from hnas.viz.report import ReportRun, render_report, run_label


def load_report_run(run_dir: str | Path) -> ReportRun:
    """Read a run folder; SearchError when it holds no search (plan and grammar are optional)."""
    folder = RunFolder(run_dir)
    summary = load_run(folder.root)
    with RunStore.open_existing(folder.root) as store:
        metadata = store.metadata()
        pruned = store.pruned_configurations()  # sampled configurations --gpu-memory refused
    settings = _read_json(folder.settings)
    plan = Plan.load(folder.plan) if folder.plan.is_file() else None
    grammar = folder.grammar.read_text() if folder.grammar.is_file() else None
    return ReportRun(folder.root, run_label(metadata, settings), summary, metadata, settings, plan, grammar,
                     pruned=pruned)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SearchError(f"{str(path)!r} is not valid JSON: {exc}") from None


def write_report(run_dirs: Sequence[str | Path], out_dir: str | Path) -> Path:
    """Write the report of ``run_dirs`` (several runs are overlaid) into ``out_dir``; returns index.html."""
    if not run_dirs:
        raise SearchError("a report needs at least one run folder")
    return render_report([load_report_run(run_dir) for run_dir in run_dirs], out_dir)
