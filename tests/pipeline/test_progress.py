"""The search's progress bar, which moves within a trial (hnas.pipeline.progress)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hnas.pipeline.progress import SearchProgressBar
from hnas.train.objective import IterationProgress


@pytest.fixture
def bar():
    bar = SearchProgressBar(budget=3.0, max_trials=None, terminal=True)
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


# ---------------------------------------------------------------- one training's progress (issue 17)


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_training_off_a_terminal_prints_lines_not_frames():
    import io

    from hnas.pipeline.progress import TrainingProgress

    out = io.StringIO()
    progress = TrainingProgress("default_9ep fold 0", terminal=False, stream=out, line_seconds=30.0)
    progress.clock = clock = _Clock()
    progress.started = progress.written = 0.0
    for step in range(1, 101):
        clock.now = step * 1.0  # one second per iteration
        progress.iteration(step, 100)
        if step == 50:
            progress.say("epoch 1/2: train loss 0.412")
    progress.close()
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines[0] == "default_9ep fold 0: iteration 30/100 (30%), 00:30 elapsed, ETA 01:10"
    assert "epoch 1/2: train loss 0.412" in lines and lines[-1].startswith("default_9ep fold 0: iteration 100/100")
    assert len(lines) == 5  # 30, 60, 90 s, the epoch line and the last step


def test_a_training_on_a_terminal_moves_a_bar_and_writes_lines_above_it():
    import io

    from hnas.pipeline.progress import TrainingProgress

    out = io.StringIO()
    progress = TrainingProgress("retrain trial 3", terminal=True, stream=out)
    progress.iteration(5, 20)
    assert progress.bar.total == 20 and progress.bar.n == 5
    progress.iteration(3, 8)  # the next fit (a new epoch range): the bar starts over
    assert progress.bar.total == 8 and progress.bar.n == 3
    progress.say("validating 2 cases")
    progress.close()
    assert "validating 2 cases\n" in out.getvalue()


def test_the_search_off_a_terminal_prints_a_line_per_finished_trial():
    import io

    out = io.StringIO()
    bar = SearchProgressBar(budget=3.0, max_trials=None, stream=out)
    assert not bar.terminal  # a StringIO is no terminal
    bar.update(SimpleNamespace(budget_used=1.0, finished=1, failed=0, incumbent=SimpleNamespace(loss=0.25)))
    bar.iteration(IterationProgress(trial_id=2, epochs=3, iteration=1, iterations=10, budget=0.5))  # < 30 s: quiet
    bar.close()
    assert out.getvalue() == "search: budget 1.00/3; trials 1 ok/0 failed, best Dice 0.750\n"


def test_the_search_bar_names_the_validation_phase(bar):
    bar.validating(4, 2)
    assert "trial 4: validating 2 case(s)" in bar.bar.postfix
