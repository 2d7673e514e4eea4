"""`hnas search --resume`: the stored settings are the contract. A changed one is refused, naming the
field, the stored value and the given one, and the refusal leaves the run folder as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from hnas.cli import main
from hnas.errors import SearchError
from hnas.pipeline.run import SearchSettings
from hnas.pipeline.search import search
from hnas.search import load_run

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
    assert code == 1 and "--fold 3 given, the run has 0" in err and err.count("\n") == 1
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


# ---------------------------------------------------------------- resume by run folder alone (issue 17)


def _resume_cli(capsys, run_dir, *flags):
    code = main(["search", "--resume", str(run_dir), "--no-progress", *map(str, flags)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_resume_by_folder_alone_takes_every_stored_setting(capsys, stored, run_dir, fake, tmp_path, monkeypatch):
    kept = SearchSettings.load(run_dir)
    monkeypatch.chdir(tmp_path)  # the stored dataset path is absolute: any working folder works
    code, out, err = _resume_cli(capsys, run_dir, "--max-trials", "5")
    assert code == 0, err
    assert "fold 0, seed 0" in out and "hpo+hnas" in out and "random" in out
    assert len(load_run(run_dir).history) == 5
    assert SearchSettings.load(run_dir) == kept  # run.json keeps what the run started with


def test_resume_with_run_dir_and_bare_resume_is_the_same(capsys, stored, run_dir, fake):
    code = main(["search", "--run-dir", str(run_dir), "--resume", "--max-trials", "4", "--no-progress"])
    assert code == 0, capsys.readouterr().err


@pytest.mark.parametrize("flags, named", [
    (("--fold", "2"), "--fold 2 given, the run has 0"),
    (("--max-stages", "3", "--seed", "7"), "--max-stages 3 given, the run has 2; --seed 7 given, the run has 0"),
    (("--preset", "nnunet"), "--preset 'nnunet' given, the run has 'cpu'"),
    (("--space", "hpo"), "--space 'hpo' given, the run has 'hpo+hnas'"),
])
def test_resume_refuses_a_flag_that_differs_from_the_stored_run_naming_both(capsys, stored, run_dir, fake, flags,
                                                                             named):
    before = snapshot(run_dir)
    code, out, err = _resume_cli(capsys, run_dir, *flags)
    assert code == 1 and named in err and err.count("\n") == 1, err
    assert snapshot(run_dir) == before


def test_resume_with_the_stored_values_given_again_and_larger_limits_continues(capsys, stored, run_dir, fake):
    code, out, err = _resume_cli(capsys, run_dir, "--fold", "0", "--seed", "0", "--preset", "auto",
                                 "--max-trials", "4", "--workers", "1", "--dataset", stored[0])
    assert code == 0, err


def test_resume_refuses_another_dataset_naming_the_stored_one(capsys, stored, run_dir, fake, tmp_path):
    from hnas.data import make_synthetic_dataset

    other = make_synthetic_dataset(tmp_path / "other", n_cases=5, shape=(24, 28, 26), seed=3)
    before = snapshot(run_dir)
    code, out, err = _resume_cli(capsys, run_dir, "--dataset", other)
    assert code == 1 and f"--dataset {str(other.resolve())!r} given, the run searched" in err, err
    assert str(SearchSettings.load(run_dir).dataset) in err
    assert snapshot(run_dir) == before


def test_resume_accepts_a_moved_dataset_with_the_same_content(capsys, stored, run_dir, fake, tmp_path):
    import json
    import shutil

    moved = tmp_path / "moved" / Path(stored[0]).name
    shutil.copytree(stored[0], moved)
    run_json = run_dir / "run.json"
    settings = json.loads(run_json.read_text())
    settings["dataset"] = str(tmp_path / "gone" / Path(stored[0]).name)  # the folder the search ran on is gone
    run_json.write_text(json.dumps(settings))
    code, out, err = _resume_cli(capsys, run_dir, "--dataset", moved, "--max-trials", "4")
    assert code == 0, err
    (moved / "labelsTr" / sorted(p.name for p in (moved / "labelsTr").iterdir())[0]).write_bytes(b"edited")
    code, out, err = _resume_cli(capsys, run_dir, "--dataset", moved, "--max-trials", "5")
    assert code == 1 and "holds other cases or labels" in err


def test_resume_of_a_folder_without_a_run_is_refused_by_name(capsys, tmp_path):
    code, out, err = _resume_cli(capsys, tmp_path / "nothing")
    assert code == 1 and "holds no search to resume" in err and str(tmp_path / "nothing") in err
    assert not (tmp_path / "nothing").exists()


def test_resume_and_run_dir_naming_two_folders_is_refused(capsys, run_dir, tmp_path):
    code = main(["search", "--resume", str(run_dir), "--run-dir", str(tmp_path / "other"), "--no-progress"])
    assert code == 1 and "name two folders" in capsys.readouterr().err


def test_resume_with_a_split_refuses_one_the_run_did_not_use(capsys, stored, run_dir, fake, tmp_path):
    import json

    from hnas.data import fold_split, load_dataset

    ids = load_dataset(stored[0]).case_ids
    default = tmp_path / "default.json"
    default.write_text(json.dumps([{"train": list(fold_split(ids, k)[0]), "val": list(fold_split(ids, k)[1])}
                                   for k in range(5)]))
    code, out, err = _resume_cli(capsys, run_dir, "--splits", default, "--max-trials", "4")
    assert code == 0, err  # nnU-Net's own split written out: the one the run used
    other = tmp_path / "other.json"
    ids = sorted(ids)
    other.write_text(json.dumps([{"train": [c for c in ids if c != ids[k]], "val": [ids[k]]} for k in range(5)]))
    code, out, err = _resume_cli(capsys, run_dir, "--splits", other)
    assert code == 1 and "its folds differ from the run's (nnU-Net's default split)" in err
