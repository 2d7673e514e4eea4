"""Shared by the pipeline tests: a small synthetic dataset and a CLI call that must succeed."""

from __future__ import annotations

import pytest

from hnas.cli import main


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    """Five 24x28x26 synthetic cases: enough for nnU-Net's five folds."""
    from hnas.data import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("data"), n_cases=5, shape=(24, 28, 26), seed=3)


def run_cli(capsys, *argv):
    """Run `hnas ARGV`, insist on exit 0 and return what it printed."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out
