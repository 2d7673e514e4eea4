"""`hnas search --warm-start RUN ...`: refusals in one line with nothing written; status and report show imports."""

from __future__ import annotations

import json

import pytest

from hnas.pipeline import search as search_module
from hnas.pipeline.report import write_report
from hnas.pipeline.status import status_text
from hnas.search import load_run

from reliability.run_folders import FakeObjective, fake_training, run_cli, settings_for, snapshot, tiny_dataset

FLAGS = ("--max-stages", "2", "--space", "hpo+hnas", "--optimizer", "hyperband", "--confidence", "medium",
         "--preset", "cpu", "--min-epochs", "1", "--max-epochs", "3", "--eta", "3", "--iterations-per-epoch", "1",
         "--no-progress")


class DiesOnTheFirstTrial(FakeObjective):
    def __call__(self, context):
        raise KeyboardInterrupt  # the search process dies: its only trial stays pending


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """(dataset, a finished 4-trial Hyperband run, a run whose only trial never finished)."""
    root = tmp_path_factory.mktemp("warm")
    dataset = tiny_dataset(root / "data")
    with pytest.MonkeyPatch.context() as patch:
        fake_training(patch)
        settings = settings_for(dataset, optimizer="hyperband", max_trials=4)
        search_module.search(settings, root / "source", progress=False)
        patch.setattr(search_module, "TrainObjective", DiesOnTheFirstTrial)
        with pytest.raises(KeyboardInterrupt):
            search_module.search(settings, root / "unfinished", progress=False)
    return dataset, root / "source", root / "unfinished"


def test_a_warm_started_search_imports_records_and_shows_the_trials(stored, tmp_path, monkeypatch, capsys):
    dataset, source, _ = stored
    fake_training(monkeypatch)
    before = snapshot(source)
    run_dir = tmp_path / "new"
    code, out, err = run_cli(capsys, "search", "--dataset", dataset, *FLAGS, "--max-trials", "2", "--warm-start",
                             source, "--run-dir", run_dir)
    assert code == 0, err
    assert f"warm start: importing the finished trials of {source.resolve()}" in out
    assert json.loads((run_dir / "run.json").read_text())["warm_start"] == [str(source.resolve())]
    history = load_run(run_dir).history
    assert [t.imported.trial_id for t in history[:4]] == [0, 1, 2, 3] and len(history) == 6
    assert not any(t.is_imported for t in history[4:])
    assert snapshot(source) == before  # only read
    status = status_text(run_dir)
    assert "warm start: 4 of these trials imported (budget not counted)" in status
    assert "imported from" in status and f"{source.name}:3" in status
    index = write_report([run_dir], tmp_path / "report")
    markdown = index.with_suffix(".md").read_text()
    assert "warm-started, its first 4 trials are imported" in markdown and f"imported from {source.name}:" in markdown

    # a resume imports nothing again; other --warm-start runs than the recorded ones are refused
    code, out, err = run_cli(capsys, "search", "--resume", run_dir, "--max-trials", "3", "--no-progress")
    assert code == 0, err
    resumed = load_run(run_dir).history
    assert len(resumed) == 7 and sum(t.is_imported for t in resumed) == 4 and resumed[:6] == history
    code, out, err = run_cli(capsys, "search", "--resume", run_dir, "--max-trials", "4", "--warm-start", run_dir,
                             "--no-progress")
    assert code == 1 and "--warm-start" in err and len(err.strip().splitlines()) == 1


def test_warm_start_refusals_are_one_line_and_write_nothing(stored, tmp_path, monkeypatch, capsys):
    dataset, source, unfinished = stored
    fake_training(monkeypatch)
    other_data = tiny_dataset(tmp_path / "other", n_cases=6)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("not a run")
    cases = [
        ((), [tmp_path / "missing"], "is not a folder"),
        ((), [tmp_path / "foreign"], "is not an hnas run folder"),
        ((), [unfinished], "has no finished trial"),
        (("--fold", "1"), [source], "its --fold differs (0 there, 1 here)"),
        (("--max-epochs", "9"), [source], "differs"),
        (("--space", "hpo"), [source], "its --space differs ('hpo+hnas' there, 'hpo' here)"),
        ((), [source, source], "named twice"),
    ]
    for extra, sources, message in cases:
        argv = ["search", "--dataset", dataset, *FLAGS, *extra, "--max-trials", "1", "--run-dir", tmp_path / "new",
                "--warm-start", *sources]
        code, out, err = run_cli(capsys, *argv)
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, (message, err)
        assert not (tmp_path / "new").exists()
    code, out, err = run_cli(capsys, "search", "--dataset", other_data, *FLAGS, "--max-trials", "1", "--run-dir",
                             tmp_path / "new", "--warm-start", source)
    assert code == 1 and "it searched another dataset" in err and "--prior-from" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "new").exists()
