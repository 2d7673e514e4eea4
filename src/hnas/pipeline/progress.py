"""Progress of searches and trainings: a bar on a terminal, plain lines in a log file.

The search's bar shows budget (or trials) done, failures and the best Dice, moved by training
steps; a training's (a fold, a retrain) shows its iterations with an ETA and prints one line per
epoch above it. When the output is not a terminal (redirected to a file, a batch job's log) no
carriage-return frames are written: a line at most every :data:`LINE_SECONDS` instead.
"""

from __future__ import annotations

import shutil
import sys
import time

from tqdm.auto import tqdm

#: Seconds between two progress lines when the output is not a terminal (a log stays readable).
LINE_SECONDS = 30.0


def on_terminal(stream=None) -> bool:
    """Whether ``stream`` (default stderr, where progress goes) is a terminal that can redraw a bar."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


class SearchProgressBar:
    """tqdm bar over the budget (or trials), showing trials, failures and the best Dice so far.

    It also moves with the running trial's training steps (``iteration``), so a trial of
    minutes does not look like a hang.
    """

    REDRAW_SECONDS = 0.5  # GPU steps come faster than a terminal needs redrawing

    def __init__(self, budget: float | None, max_trials: int | None, *, terminal: bool | None = None, stream=None):
        total = budget if budget is not None else max_trials
        self.by_budget = budget is not None
        self.finished = 0.0  # budget (or trials) of the finished trials
        self.status = "trials 0 ok/0 failed, best Dice -"
        self.clock = time.monotonic
        self.drawn = self.clock()
        self.terminal = on_terminal(stream) if terminal is None else terminal
        self.stream = stream
        if not self.terminal:
            self.REDRAW_SECONDS = LINE_SECONDS
        self.bar = tqdm(total=total, unit="budget" if self.by_budget else "trial", file=stream,
                        bar_format="{l_bar}{bar}| {n:.2f}/{total_fmt} [{elapsed}<{remaining}{postfix}]",
                        disable=not self.terminal)

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

    def validating(self, trial_id: int, n_cases: int) -> None:
        """The running trial finished training and validates (minutes on large cases): say so."""
        self._draw(self.bar.n, f"{self.status}; trial {trial_id}: validating {n_cases} case(s)")

    def _draw(self, done: float, postfix: str) -> None:
        self.bar.n = min(done, self.bar.total) if self.bar.total else done
        self.drawn = self.clock()
        if not self.terminal:
            total = f"/{self.bar.total:g}" if self.bar.total else ""
            unit = "budget" if self.by_budget else "trials"
            print(f"search: {unit} {self.bar.n:.2f}{total}; {postfix}", file=self.stream or sys.stderr, flush=True)
            return
        self.bar.set_postfix_str(postfix, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


class TrainingProgress:
    """One configuration's training (a fold, a retrain): iterations with an ETA, and its epoch lines.

    ``iteration(done, total)`` is the trainer's step hook; ``say(line)`` prints an epoch line or
    names a phase ("validating 4 cases") above the bar. On a terminal a tqdm bar; otherwise a
    line at most every ``line_seconds`` and at the last step.
    """

    def __init__(self, label: str, *, terminal: bool | None = None, stream=None, line_seconds: float = LINE_SECONDS):
        self.label = label
        self.stream = sys.stdout if stream is None else stream  # with the epoch lines, as nnU-Net prints them
        self.terminal = on_terminal(self.stream) if terminal is None else terminal
        self.line_seconds = line_seconds
        self.clock = time.monotonic
        self.started = self.written = self.clock()
        # a terminal that reports no width (0 columns) would hide the bar: take shutil's fallback then
        self.bar = tqdm(total=None, desc=label, unit="it", file=self.stream, ncols=shutil.get_terminal_size().columns,
                        disable=not self.terminal,
                        mininterval=SearchProgressBar.REDRAW_SECONDS)

    def iteration(self, done: int, total: int) -> None:
        if self.terminal:
            if self.bar.total != total:
                self.bar.reset(total=total)
            self.bar.update(done - self.bar.n)
            return
        now = self.clock()
        if done < total and now - self.written < self.line_seconds:
            return
        self.written = now
        elapsed = now - self.started
        eta = elapsed / done * (total - done) if done else 0.0
        self._print(f"{self.label}: iteration {done}/{total} ({100 * done / total:.0f}%), {_duration(elapsed)} "
                    f"elapsed, ETA {_duration(eta)}")

    def hooks(self) -> dict:
        """The training hooks (``train_fold``'s keywords) that move this display: steps, epoch lines, validation."""
        from hnas.train.training_log import format_epoch

        return {"on_iteration": self.iteration,
                "on_epoch": lambda record: self.say(f"{self.label}: {format_epoch(record)}"),
                "on_validation": lambda n: self.say(f"{self.label}: validating {n} case(s) (sliding window)")}

    def say(self, line: str) -> None:
        if self.terminal:
            self.bar.write(line, file=self.stream)
        else:
            self._print(line)

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def close(self) -> None:
        self.bar.close()
