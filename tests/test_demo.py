"""`make demo`'s pieces that run in seconds: the default-vs-incumbent lines and the progress bar
that moves within a trial. (The demo itself takes minutes: README 'Quick start' has its numbers.)"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hnas.demo import default_vs_incumbent
from hnas.runs import _ProgressBar
from hnas.search import make_space, run
from hnas.train.objective import IterationProgress


def _objective(context) -> dict:
    """The default learning rate (1e-2) loses to larger ones, so the search beats it."""
    loss = 0.5 - 0.05 * (context.config["initial_lr"] * 100) ** 0.5 + 0.1 / context.fidelity
    return {"loss": min(max(loss, 0.01), 0.99), "cost": float(context.fidelity)}


def test_default_and_incumbent_dice_are_shown_side_by_side(tmp_path):
    run(_objective, make_space("hpo"), optimizer="priorband", max_trials=12, min_fidelity=1, max_fidelity=9, eta=3,
        run_dir=tmp_path, seed=0)
    text = default_vs_incumbent(tmp_path)

    default_line, incumbent_line, fastest_line = text.splitlines()[1:]
    assert default_line.split()[:3] == ["nnU-Net", "default", "0.539"]  # trial 0: lr 1e-2 at 9 epochs
    assert "(trial 0, 9 epochs" in default_line
    assert incumbent_line.split()[0] == "incumbent" and float(incumbent_line.split()[1]) >= 0.539
    # cost = epochs here: a larger learning rate is as good as the default after fewer epochs
    assert fastest_line.split()[:6] == ["fastest", "within", "0.01", "of", "the", "default"]
    dice, epochs = float(fastest_line.split()[6]), int(fastest_line.split("epochs")[0].split()[-1])
    assert dice >= 0.539 - 0.01 and epochs < 9


def test_no_fastest_line_when_nothing_close_to_the_default_is_cheaper(tmp_path):
    def default_is_best_and_cheapest(context) -> dict:
        default = context.config["initial_lr"] == make_space("hpo").default_config()["initial_lr"]
        return {"loss": 0.2 if default else 0.8, "cost": 1.0 if default else 5.0}

    run(default_is_best_and_cheapest, make_space("hpo"), optimizer="priorband", max_trials=6, min_fidelity=1,
        max_fidelity=9, eta=3, run_dir=tmp_path, seed=0)
    lines = default_vs_incumbent(tmp_path).splitlines()
    assert len(lines) == 3 and "fastest" not in "\n".join(lines)


@pytest.fixture
def bar():
    bar = _ProgressBar(budget=3.0, max_trials=None)
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
