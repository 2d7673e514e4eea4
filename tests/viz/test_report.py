"""The report's rendering: a self-contained folder whose HTML shows every image and the best trials.

Reading run folders (`hnas report`'s `load_report_run`, `write_report`) is tested in tests/pipeline/test_report.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from hnas.errors import SearchError
from hnas.pipeline.report import load_report_run, write_report
from hnas.search import load_run
from hnas.viz import diagrams
from hnas.viz.report import best_trials, default_config, default_trial, render_report

from .run_helpers import make_run
from .test_plots import assert_picture


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return make_run(root / "priorband"), make_run(root / "random", optimizer="random", max_trials=12)


@pytest.fixture(scope="module")
def many_trials_run(tmp_path_factory):
    """20 trials of the hpo space: 7 parameters enter fANOVA, so 14 make it reliable."""
    return make_run(tmp_path_factory.mktemp("runs") / "hpo", optimizer="random", space="hpo", max_trials=20)


def images_of(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', html)


def links_of(html: str) -> list[str]:
    return re.findall(r'<a href="([^"]+)"', html)


def svg_width_pt(path) -> float:
    return float(re.search(r'<svg width="([\d.]+)pt"', path.read_text()).group(1))


def test_report_of_two_runs_is_self_contained(tmp_path, two_runs):
    index = write_report(list(two_runs), tmp_path / "report")
    out = index.parent
    assert index.name == "index.html" and (out / "index.md").is_file()
    html, markdown = index.read_text(), (out / "index.md").read_text()
    # every image the HTML shows or links is in the folder, and every image in the folder is shown or linked
    shown, linked = images_of(html), links_of(html)
    pictures = sorted(p.name for p in out.iterdir() if p.suffix in (".png", ".svg"))
    assert sorted(shown + linked) == pictures and len(shown + linked) == len(set(shown + linked))
    assert {"cost_over_time.png", "pareto.png", "run1_importance.png", "run2_importance.png"} <= set(shown)
    for name in shown + linked:
        assert f"]({name})" in markdown
        if name.endswith(".png"):
            assert_picture(out / name)
    # both curves are labelled by optimizer and space; the default configuration is PriorBand's first job
    assert "PriorBand (hpo+hnas)" in html and "random search (hpo+hnas)" in html
    assert "PriorBand (hpo+hnas): default configuration = trial 0" in html
    assert "random search (hpo+hnas): the default configuration was not evaluated" in html
    assert "fANOVA (optuna FanovaImportanceEvaluator" in html


def test_best_trials_tables_list_the_trial_ids(tmp_path, two_runs):
    html = write_report(list(two_runs), tmp_path / "report").read_text()
    for run_dir in two_runs:
        best = best_trials(load_run(run_dir).history)
        assert best and best[0].trial_id == load_run(run_dir).incumbent.trial_id
        table = html.split(f"Folder {run_dir}")[1].split("Best trials")[1].split("</table>")[0]
        ids = [int(row) for row in re.findall(r"<tr><td>\d+</td><td>(\d+)</td>", table)]
        assert ids == [t.trial_id for t in best]


@pytest.mark.skipif(not diagrams.has_dot(), reason="graphviz 'dot' not installed (make system-deps)")
def test_incumbent_diagrams_are_svg_with_dot(tmp_path, two_runs):
    out = write_report([two_runs[0]], tmp_path / "report").parent
    incumbent = load_run(two_runs[0]).incumbent
    for name in ("run1_derivation.svg", "run1_derivation_full.svg", "run1_network.svg"):
        svg = (out / name).read_text()
        assert svg.lstrip().startswith("<?xml") and f"trial {incumbent.trial_id}" in svg


@pytest.mark.skipif(not diagrams.has_dot(), reason="graphviz 'dot' not installed (make system-deps)")
def test_derivation_is_compact_and_links_the_full_tree(tmp_path, two_runs):
    index = write_report([two_runs[0]], tmp_path / "report")
    html, out = index.read_text(), index.parent
    assert "run1_derivation.svg" in images_of(html) and links_of(html) == ["run1_derivation_full.svg"]
    assert re.search(r'<a href="run1_derivation_full.svg">Full derivation tree \(\d+ nodes', html)
    assert "[Full derivation tree (" in (out / "index.md").read_text()
    assert re.search(r"collapsed: conv_block1-\d \(\d stages\)|collapsed: res_block1-\d \(\d stages\)", html)
    assert svg_width_pt(out / "run1_derivation.svg") < 800
    assert svg_width_pt(out / "run1_derivation.svg") < svg_width_pt(out / "run1_derivation_full.svg")


def test_without_dot_the_diagrams_are_text(tmp_path, two_runs, monkeypatch):
    monkeypatch.setattr(diagrams, "has_dot", lambda: False)
    index = write_report([two_runs[0]], tmp_path / "report")
    html = index.read_text()
    assert not any(name.endswith(".svg") for name in images_of(html)) and links_of(html) == []
    assert "enc_norm = " in html  # the derivation's text tree
    assert html.count("side     stage  blocks") == 1  # the network table, once


def test_default_configuration_is_found_by_sampler_or_by_value(two_runs):
    run = load_report_run(two_runs[0])
    default = default_config(run.metadata["space"])
    assert default["optimizer"] == "SGD" and default["momentum"] == 0.99 and default["initial_lr"] == 0.01
    trial = default_trial(run)
    assert trial.job.sampler in ("default", "promotion") and dict(trial.config) == default


def test_importance_from_few_trials_is_shown_with_a_warning(tmp_path, two_runs):
    index = write_report([two_runs[1]], tmp_path / "report")  # 12 trials, 12 parameters
    html, markdown = index.read_text(), (index.parent / "index.md").read_text()
    section = html.split("Hyperparameter importance")[1]
    assert '<p class="warning"><strong>Warning:</strong> Unreliable: computed from 12 trials: unreliable below 24' \
        in section
    assert section.index('class="warning"') < section.index("run1_importance.png")  # beside, and still shown
    assert "> **Warning:** Unreliable: computed from 12 trials" in markdown


def test_importance_from_enough_trials_has_no_warning(tmp_path, many_trials_run):
    html = write_report([many_trials_run], tmp_path / "report").read_text()
    assert "run1_importance.png" in images_of(html)
    assert "fANOVA (optuna FanovaImportanceEvaluator, 64 trees) over the 20 successful trials" in html
    assert "Warning:" not in html and "unreliable" not in html


def test_report_without_optuna_says_how_to_get_importance(tmp_path, two_runs, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    html = write_report([two_runs[1]], tmp_path / "report").read_text()
    assert "Not computed: hyperparameter importance needs optuna and scikit-learn" in html
    assert "run1_importance.png" not in html and "pareto.png" in html


def test_report_does_not_import_torch():
    code = "import sys, hnas.viz.report; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_a_report_folder_that_is_a_file_is_refused(tmp_path, two_runs):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SearchError, match="is a file"):
        render_report([load_report_run(two_runs[0])], tmp_path / "file")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (optional check)")
def test_html_renders_in_headless_chromium(tmp_path, two_runs):
    index = write_report(list(two_runs), tmp_path / "report")
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1200,2400", index.as_uri()], check=True, capture_output=True, timeout=60)
    assert_picture(shot)
