"""`hnas status`: the per-trial table (id, fidelity, Dice, runtime, state, sampler) read from the database."""

from __future__ import annotations

from hnas.pipeline.status import TABLE_COLUMNS, trial_table
from hnas.search.types import Job, Trial


def _trial(trial_id, fidelity, rung, sampler, parent=None):
    return Trial.pending(Job(trial_id=trial_id, config={}, fidelity=fidelity, rung=rung, bracket=0,
                             parent_id=parent, sampler=sampler))


def test_every_trial_is_one_row_with_its_state_dice_runtime_and_sampler():
    trials = [_trial(0, 1, 0, "default").succeeded(0.25, 12.34),
              _trial(1, 1, 0, "prior").failed("out of memory"),
              _trial(2, 3, 1, "promotion", parent=0),
              _trial(10, 3, 1, "random").succeeded(0.5, 100.0)]
    lines = trial_table(trials).splitlines()
    assert lines[0].split() == ["trial", "epochs", "rung", "state", "Dice", "runtime", "s", "sampler", "parent"]
    assert [line.split() for line in lines[1:]] == [
        ["0", "1", "0", "finished", "0.7500", "12.3", "default", "-"],
        ["1", "1", "0", "failed", "-", "-", "prior", "-"],
        ["2", "3", "1", "running", "-", "-", "promotion", "0"],
        ["10", "3", "1", "finished", "0.5000", "100.0", "random", "-"]]
    assert len({len(line) for line in lines[:1]}) == 1 and len(TABLE_COLUMNS) == 8
    assert lines[1].index("finished") == lines[4].index("finished")  # aligned columns
