"""The search's progress bar, which moves within a trial (hnas.pipeline.progress)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hnas.pipeline.progress import SearchProgressBar
from hnas.train.objective import IterationProgress


@pytest.fixture
def bar():
    bar = SearchProgressBar(budget=3.0, max_trials=None)
    yield bar
    bar.close()


def test_progress_bar_moves_with_the_running_trials_iterations(bar):
    bar.update(SimpleNamespace(budget_used=1.0, finished=1, failed=0, incumbent=SimpleNamespace(loss=0.25)))
    bar.REDRAW_SECONDS = 0.0
    bar.iteration(IterationProgress(trial_id=1, epochs=3, iteration=5, iterations=10, budget=0.5))

    assert bar.bar.n == pytest.approx(1.25)
    assert "best Dice 0.750" in bar.bar.postfix and "trial 1 (3 epochs): iteration 5/10" in bar.bar.postfix
    bar.iteration(IterationProgress(trial_id=1, epochs=3, iteration=10, iterations=10, budget=0.5))
    assert bar.bar.n == pytest.approx(1.5)


def test_progress_bar_redraws_at_most_twice_a_second_but_always_a_trials_last_step(bar):
    bar.REDRAW_SECONDS = 3600.0
    bar.iteration(IterationProgress(trial_id=0, epochs=9, iteration=1, iterations=72, budget=1.0))
    assert bar.bar.n == 0
    bar.iteration(IterationProgress(trial_id=0, epochs=9, iteration=72, iterations=72, budget=1.0))
    assert bar.bar.n == pytest.approx(1.0)


def test_progress_bar_grows_for_a_last_trial_that_ends_past_the_budget(bar):
    bar.update(SimpleNamespace(budget_used=2.9, finished=13, failed=0, incumbent=None))
    bar.REDRAW_SECONDS = 0.0
    bar.iteration(IterationProgress(trial_id=13, epochs=9, iteration=50, iterations=100, budget=1.0))

    assert bar.bar.total == pytest.approx(3.9) and bar.bar.n == pytest.approx(3.4)  # moving, not stuck at 3.0


def test_a_grown_progress_bar_prints_its_total_rounded(bar):
    bar.update(SimpleNamespace(budget_used=3.0 - 1 / 9, finished=13, failed=0, incumbent=None))
    bar.REDRAW_SECONDS = 0.0
    bar.iteration(IterationProgress(trial_id=13, epochs=9, iteration=1, iterations=100, budget=4 / 9))
    assert bar.bar.total == 3.33 and "/3.33 " in str(bar.bar)  # not 3.333333333333333
