"""--preprocessing-workers: a run.json setting a resume may change, in no cache key, refused when not positive."""

from __future__ import annotations

import json

import pytest

from hnas.cli import build_parser
from hnas.errors import SearchError
from hnas.pipeline.layout import RunFolder
from hnas.pipeline.run import RESUME_CONTRACT, SearchSettings
from hnas.pipeline.search import resumed_settings


@pytest.mark.parametrize("command", [["search"], ["train", "--run", "r", "--epochs", "1"]])
def test_the_flag_takes_a_positive_integer_and_names_a_bad_value(command, capsys):
    parser = build_parser()
    assert parser.parse_args([*command, "--preprocessing-workers", "3"]).preprocessing_workers == 3
    assert parser.parse_args(command).preprocessing_workers is None  # the default: from the cores
    for bad in ("0", "-1", "2.5", "many"):
        with pytest.raises(SystemExit):
            parser.parse_args([*command, "--preprocessing-workers", bad])
        assert f"expected a positive integer, got {bad!r}" in capsys.readouterr().err


def test_it_is_stored_and_a_resume_keeps_or_changes_it(tmp_path):
    assert "preprocessing_workers" not in RESUME_CONTRACT  # it changes no voxel
    SearchSettings(preprocessing_workers=3).save(tmp_path)
    assert SearchSettings.load(tmp_path).preprocessing_workers == 3
    RunFolder(tmp_path).database.touch()
    assert resumed_settings(tmp_path, {}).preprocessing_workers == 3
    assert resumed_settings(tmp_path, {"preprocessing_workers": 5}).preprocessing_workers == 5
    stored = json.loads((tmp_path / "run.json").read_text())
    del stored["preprocessing_workers"]  # a run written before the flag: the default
    (tmp_path / "run.json").write_text(json.dumps(stored))
    assert SearchSettings.load(tmp_path).preprocessing_workers is None


@pytest.mark.parametrize("value, message", [(0, "preprocessing_workers is 0; expected a positive integer"),
                                            ("4", "has preprocessing_workers '4'; expected an integer or null"),
                                            (True, "has preprocessing_workers True; expected an integer or null")])
def test_a_bad_stored_value_is_refused_naming_it(tmp_path, value, message):
    SearchSettings().save(tmp_path)
    stored = json.loads((tmp_path / "run.json").read_text())
    (tmp_path / "run.json").write_text(json.dumps({**stored, "preprocessing_workers": value}))
    with pytest.raises(SearchError, match=message):
        SearchSettings.load(tmp_path)
