"""Fixtures the reliability tests share: a stored run folder (made once per module) and its copies."""

from __future__ import annotations

import pytest

from .run_folders import copy_run, fake_training, make_stored_run


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """(dataset, run folder) of a finished search; tests work on copies of the folder."""
    return make_stored_run(tmp_path_factory.mktemp("stored"))


@pytest.fixture
def dataset(stored):
    return stored[0]


@pytest.fixture
def run_dir(stored, tmp_path):
    return copy_run(stored[1], tmp_path / "run")


@pytest.fixture
def fake(monkeypatch):
    fake_training(monkeypatch)
