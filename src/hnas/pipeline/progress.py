"""The search's progress bar: budget (or trials) done, failures and the best Dice, moved by training steps."""

from __future__ import annotations

import time

from tqdm.auto import tqdm


class SearchProgressBar:
    """tqdm bar over the budget (or trials), showing trials, failures and the best Dice so far.

    It also moves with the running trial's training steps (``iteration``), so a trial of
    minutes does not look like a hang.
    """

    REDRAW_SECONDS = 0.5  # GPU steps come faster than a terminal needs redrawing

    def __init__(self, budget: float | None, max_trials: int | None):
        total = budget if budget is not None else max_trials
        self.by_budget = budget is not None
        self.finished = 0.0  # budget (or trials) of the finished trials
        self.status = "trials 0 ok/0 failed, best Dice -"
        self.clock = time.monotonic
        self.drawn = self.clock()
        self.bar = tqdm(total=total, unit="budget" if self.by_budget else "trial",
                        bar_format="{l_bar}{bar}| {n:.2f}/{total_fmt} [{elapsed}<{remaining}{postfix}]")

    def update(self, progress) -> None:
        """A trial finished (the search engine's Progress)."""
        self.finished = progress.budget_used if self.by_budget else progress.finished + progress.failed
        best = "-" if progress.incumbent is None else f"{1 - progress.incumbent.loss:.3f}"
        self.status = f"trials {progress.finished} ok/{progress.failed} failed, best Dice {best}"
        self._draw(self.finished, self.status)

    def iteration(self, step) -> None:
        """A training step of the running trial (hnas.train.IterationProgress)."""
        share = step.budget if self.by_budget else 1.0
        if self.bar.total and self.finished + share > self.bar.total:
            # The search issues a last trial while budget is left, so it may end past the budget
            # (3.33 of 3.0): the bar grows to show that trial's steps instead of sitting at 100%.
            self.bar.total = round(self.finished + share, 2)  # tqdm prints the total as it is: 3.33, not 3.3333...
        if step.iteration < step.iterations and self.clock() - self.drawn < self.REDRAW_SECONDS:
            return
        self._draw(self.finished + share * step.iteration / step.iterations,
                   f"{self.status}; trial {step.trial_id} ({step.epochs} epochs): "
                   f"iteration {step.iteration}/{step.iterations}")

    def _draw(self, done: float, postfix: str) -> None:
        self.bar.n = min(done, self.bar.total) if self.bar.total else done
        self.bar.set_postfix_str(postfix, refresh=False)
        self.bar.refresh()
        self.drawn = self.clock()

    def close(self) -> None:
        self.bar.close()
