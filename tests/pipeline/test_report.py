"""`hnas report`: reading run folders (settings, plan and grammar optional) and writing their report.

The report's rendering is tested in tests/viz/test_report.py.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from hnas.errors import SearchError
from hnas.pipeline.report import load_report_run, write_report
from viz.run_helpers import GRAMMAR, PLAN, make_run, synthetic_objective


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("runs") / "random", optimizer="random", max_trials=6)


def test_a_run_folder_is_read_with_its_settings_plan_and_grammar(run_dir):
    run = load_report_run(run_dir)
    assert run.run_dir == run_dir and run.label == "random search (hpo+hnas)"
    assert run.settings["optimizer"] == "random" and run.plan == PLAN and run.grammar == GRAMMAR
    assert len(run.summary.history) == 6


def test_a_damaged_run_json_is_named(tmp_path, run_dir):
    import shutil

    copy = shutil.copytree(run_dir, tmp_path / "copy")
    (copy / "run.json").write_text("{damaged")
    with pytest.raises(SearchError, match=r"run\.json' is not valid JSON"):
        load_report_run(copy)


def failing_objective(context):
    if context.trial_id % 4 == 1:
        raise RuntimeError("out of memory (synthetic)")
    return synthetic_objective(context)


def test_bare_engine_run_and_failed_trials(tmp_path):
    run_dir = make_run(tmp_path / "bare", optimizer="random", max_trials=8, objective=failing_objective,
                       settings_file=False)
    html = write_report([run_dir], tmp_path / "report").read_text()
    assert "No diagrams: the run folder has no plan.json/grammar.lark" in html
    assert "2 failed trial(s)" in html and "trial 1: RuntimeError: out of memory (synthetic)" in html
    assert "architecture: no grammar.lark/plan.json" in html  # excluded from the importance, with the reason
    assert "random search</td>" in html  # labelled by optimizer only (no run.json)


def test_report_errors(tmp_path):
    with pytest.raises(SearchError, match="at least one run"):
        write_report([], tmp_path / "report")
    with pytest.raises(SearchError, match="holds no search"):
        write_report([tmp_path], tmp_path / "report")


def test_hnas_report_does_not_import_torch():
    code = "import sys, hnas.pipeline.report; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
