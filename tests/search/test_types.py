import subprocess
import sys
from pathlib import Path

import pytest

from hnas.search import Job, Trial

SRC = Path(__file__).resolve().parents[2] / "src"


def test_trial_outcomes():
    job = Job(4, {"x": 1}, 3.0, rung=1, bracket=0, parent_id=2, sampler="promotion")
    pending = Trial.pending(job)
    assert (pending.state, pending.trial_id, pending.parent_id, pending.is_finished) == \
        (pending.state, 4, 2, False)
    done = pending.succeeded(0.2, 5.0, {"dice": [0.8]}, worker="w")
    assert (done.state, done.objectives, done.extra, done.worker) == \
        ("success", (0.2, 5.0), {"dice": [0.8]}, "w")
    failed = pending.failed("boom")
    assert (failed.state, failed.error, failed.loss) == ("failed", "boom", None)
    with pytest.raises(ValueError, match="no objectives"):
        failed.objectives


def test_non_finite_results_become_failures():
    trial = Trial.pending(Job(0, {}, 1.0, rung=0)).succeeded(float("nan"), 1.0)
    assert trial.state == "failed" and "non-finite" in trial.error


def test_search_package_imports_neither_torch_nor_dask():
    code = ("import sys, hnas.search; heavy = [m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'dask', 'distributed', 'hnas.cfgunet', 'hnas.train')]; print(heavy)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"PYTHONPATH": str(SRC)}, check=True)
    assert result.stdout.strip() == "[]"
