"""`hnas search --resume`: the stored settings are the contract. A changed one is refused, naming the
field, the stored value and the given one, and the refusal leaves the run folder as it was."""

from __future__ import annotations

import pytest

from hnas.cli import main
from hnas.errors import SearchError
from hnas.pipeline.run import SearchSettings
from hnas.pipeline.search import search

from .run_folders import settings_for, snapshot


# field, the stored value (run_folders.settings_for), a changed one
CHANGES = [
    ("seed", 0, 1),
    ("optimizer", "random", "hyperband"),
    ("space", "hpo+hnas", "hpo"),
    ("confidence", "medium", "high"),
    ("min_epochs", 1, 2),
    ("max_epochs", 3, 9),
    ("eta", 3, 2),
    ("max_stages", 2, 3),
    ("fold", 0, 1),
    ("iterations_per_epoch", 1, 2),
    ("preset", "cpu", "nnunet"),
]


@pytest.mark.parametrize("field, stored_value, given", CHANGES, ids=[c[0] for c in CHANGES])
def test_resume_refuses_a_changed_setting_and_changes_nothing(stored, run_dir, fake, field, stored_value, given):
    before = snapshot(run_dir)
    with pytest.raises(SearchError, match="cannot resume") as error:
        search(settings_for(stored[0], max_trials=6, **{field: given}), run_dir, resume=True, progress=False)
    message = str(error.value)
    assert field in message and repr(stored_value) in message and repr(given) in message
    assert snapshot(run_dir) == before


def test_resume_names_every_changed_setting(stored, run_dir, fake):
    with pytest.raises(SearchError) as error:
        search(settings_for(stored[0], fold=2, iterations_per_epoch=5), run_dir, resume=True, progress=False)
    assert "fold: stored 0, given 2" in str(error.value)
    assert "iterations_per_epoch: stored 1, given 5" in str(error.value)


def test_resume_with_the_same_settings_and_larger_limits_continues(stored, run_dir, fake):
    kept = {p: p.read_bytes() for p in run_dir.glob("trials/*/checkpoint.pt")}
    settings = SearchSettings.load(run_dir)
    summary = search(settings_for(stored[0], max_trials=5), run_dir, resume=True, progress=False)
    assert len(summary.history) == 5
    assert {p: p.read_bytes() for p in kept} == kept  # earlier trials' checkpoints untouched
    assert SearchSettings.load(run_dir) == settings  # run.json still holds what the run started with


def test_cli_resume_with_another_fold_exits_1_naming_the_field(capsys, stored, run_dir, fake):
    before = snapshot(run_dir)
    argv = ["search", "--dataset", stored[0], "--max-stages", "2", "--space", "hpo+hnas", "--optimizer", "random",
            "--preset", "cpu", "--min-epochs", "1", "--max-epochs", "3", "--eta", "3", "--iterations-per-epoch", "1",
            "--max-trials", "6", "--fold", "3", "--run-dir", run_dir, "--resume", "--no-progress"]
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 1 and "fold: stored 0, given 3" in err and err.count("\n") == 1
    assert snapshot(run_dir) == before


def test_resume_refuses_a_dataset_that_plans_other_networks(stored, run_dir, fake, tmp_path):
    from hnas.data import make_synthetic_dataset

    other = make_synthetic_dataset(tmp_path / "other", n_cases=5, shape=(40, 20, 32), seed=2)
    before = snapshot(run_dir)
    with pytest.raises(SearchError, match="plan.json and grammar.lark differ.*patch_size"):
        search(settings_for(other, max_trials=6), run_dir, resume=True, progress=False)
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("content", ["{not json", '["a list"]', '{"seed": 0, "colour": "red"}'])
def test_resume_names_a_broken_run_json(stored, run_dir, fake, content):
    (run_dir / "run.json").write_text(content)
    before = snapshot(run_dir)
    with pytest.raises(SearchError, match="is not the run.json of an hnas search") as error:
        search(settings_for(stored[0], max_trials=6), run_dir, resume=True, progress=False)
    assert str(run_dir / "run.json") in str(error.value)
    assert snapshot(run_dir) == before
